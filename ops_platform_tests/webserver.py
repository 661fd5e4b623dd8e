"""A real dagster-webserver for the UI tests, its GraphQL endpoint, and the Chromium they drive."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from ops_platform_testkit.webserver_process import (  # noqa: F401 - the UI tests import them from here
    BIN,
    CHROMIUM,
    CHROMIUM_FLAGS,
    ROOT,
    WORKSPACE,
    start_webserver,
    stop,
)
from ops_platform_testkit.webserver_process import wait_until_up as server_answers


def wait_until_up(url: str, timeout: float = 120) -> None:
    if not server_answers(url, timeout):
        pytest.fail(f"dagster-webserver at {url} did not start within {timeout:g} s")


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


RUN_ERRORS = """
query Errors($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename
      ... on MessageEvent { message level }
      ... on ExecutionStepFailureEvent { stepKey error { message stack } }
      ... on RunFailureEvent { error { message stack } }
      ... on EngineEvent { error { message stack } } } }
  }
}"""


def run_errors(url: str, run_id: str) -> list[str]:
    """What a failed run's event log says went wrong: its errors and its ERROR-level messages."""
    found = []
    for event in graphql(url, RUN_ERRORS, {"runId": run_id})["logsForRun"].get("events", []):
        error = event.get("error")
        if error:
            found.append(f"{event['__typename']}: {error['message']}{''.join(error.get('stack') or [])[-1500:]}")
        elif event.get("level") == "ERROR":
            found.append(f"{event['__typename']}: {event['message']}")
    return found


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
