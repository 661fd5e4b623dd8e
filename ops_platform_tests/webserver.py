"""A real dagster-webserver for the UI tests, its GraphQL endpoint, and the Chromium they drive."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ops_platform_tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = ROOT / "workspace.yaml"  # the code location, under its name, as every webserver loads it
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


def start_webserver(env: dict, log: Path | None, *options: str) -> tuple[str, subprocess.Popen]:
    """dagster-webserver on a free loopback port, loading the project's workspace.yaml (not yet up: see
    ``wait_until_up``)."""
    port = free_port()
    with open(log if log else "/dev/null", "w") as stderr:
        process = subprocess.Popen([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                                    "-w", str(WORKSPACE), *options],
                                   cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    return f"http://127.0.0.1:{port}", process


def wait_until_up(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"dagster-webserver at {url} did not start within {timeout:g} s")


def stop(processes) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve(env: dict, log: Path | None = None):
    """A generator for module fixtures: yields the URL of a running webserver, stops it after."""
    url, process = start_webserver(env, log)
    try:
        wait_until_up(url)
        yield url
    finally:
        stop([process])


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""


RUN_STATUS = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status tags { key value } stepStats { stepKey status startTime endTime } }
  }
}"""


def launch(url: str, job: str, partition: str | None = None, run_config: dict | None = None) -> str:
    """Launch ``job`` over GraphQL as the Launchpad does (queued; the daemon runs it); its run id."""
    tags = [{"key": "dagster/partition", "value": partition}] if partition else []
    params = {"selector": {"repositoryLocationName": "ops_platform", "repositoryName": "__repository__",
                           "jobName": job},
              "runConfigData": run_config or {}, "executionMetadata": {"tags": tags}}
    launched = graphql(url, LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def wait_for_run(url: str, run_id: str, timeout: float = 90) -> tuple[dict, list[str]]:
    """The run once it has ended, and the statuses seen on the way."""
    deadline, statuses = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        run = graphql(url, RUN_STATUS, {"runId": run_id})["runOrError"]
        statuses.append(run["status"])
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return run, statuses
        time.sleep(0.5)
    pytest.fail(f"run {run_id} did not finish within {timeout:g} s: {statuses[-5:]}")
