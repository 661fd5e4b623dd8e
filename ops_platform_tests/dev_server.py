"""`make dev` for the end-to-end tests of the first hour: the real Makefile target (the demo
database, one code server, dagster-webserver and dagster-daemon through ``python -m ops_platform.dev``)
on a free port, in a process group of its own so the test stops it as Ctrl-C would; the UI driven
in Chromium, and the state read back over GraphQL."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ops_platform_tests.conftest import free_port
from ops_platform_testkit.webserver_process import CHROMIUM, CHROMIUM_FLAGS, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
CLI = str(Path(sys.executable).parent / "ops-platform")
SETTING_PREFIXES = ("AWS_", "SLACK_", "DAGSTER_", "BACKUP_", "HEALTH_", "RESTORE_", "DEPLOY_", "DRILL_", "OPS_",
                    "PRODUCTION_", "STAGING_", "PYTEST_", "MAKE", "MFLAGS")
SETTING_NAMES = ("DATABASE_URL", "REDIS_URL", "API_URL", "FRONTEND_URL", "MIGRATE_COMMAND", "ROLLBACK_COMMAND",
                 "ROLLBACK_WEBHOOK_URL", "RESTORE_CHECKS_FILE", "ENVIRONMENT_LOCK_WAIT_SECONDS",
                 "RUN_DEAD_AFTER_SECONDS", "PGPASSWORD")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def shell_without_settings(**settings: str) -> dict[str, str]:
    """The variables of a newcomer's shell: nothing of the platform's configuration, then ``settings``."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(SETTING_PREFIXES) and key not in SETTING_NAMES}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def copy_checkout(destination: Path) -> Path:
    """The project's files in a folder of another name, as a clone would hold them."""
    shutil.copytree(ROOT, destination, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".dagster_home", "__pycache__", ".pytest_cache", ".hypothesis", "*.egg-info",
        "bench_results", "*.pyc"))
    return destination


@dataclass
class DevServer:
    """``make dev`` running in ``checkout`` on ``url``; its whole output in ``log``."""

    checkout: Path
    env: dict[str, str]
    url: str
    log: Path
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                              timeout=60)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    def log_text(self) -> str:
        return ANSI.sub("", self.log.read_text(errors="replace"))

    def stop(self) -> None:
        """Ctrl-C to the whole process group (make, the launcher, the webserver, the daemon and its
        runs), as a terminal sends it; SIGKILL if anything is left after a minute."""
        with _suppress_missing():
            os.killpg(self.process.pid, signal.SIGINT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (self.process.poll() is None or _group_alive(self.process.pid)):
            time.sleep(0.5)
        if _group_alive(self.process.pid):
            with _suppress_missing():
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


class _suppress_missing:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is ProcessLookupError


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def start_make_dev(checkout: Path, env: dict[str, str], log: Path, timeout: float = 180) -> DevServer:
    """``make dev`` as a newcomer types it, with this test run's virtualenv (``-o`` keeps make from
    rebuilding it) and a free port."""
    port = free_port()
    with open(log, "w") as output:
        process = subprocess.Popen(["make", "--no-print-directory", "-o", f"{VENV}/bin/dagster", "dev",
                                    f"VENV={VENV}", f"DEV_PORT={port}"],
                                   cwd=checkout, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = DevServer(checkout, env, f"http://127.0.0.1:{port}", log, process)
    if wait_until_up(server.url, timeout, process):
        return server
    if process.poll() is not None:
        raise AssertionError(f"make dev exited with {process.returncode}:\n{server.log_text()[-3000:]}")
    server.stop()
    raise AssertionError(f"make dev did not serve the UI within {timeout:.0f} s:\n{server.log_text()[-3000:]}")


RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs { results { runId jobName status startTime endTime
                            assetSelection { path } tags { key value } } }
  }
}"""


def runs(server: DevServer, partition: str = "development") -> list[dict]:
    """Runs of the partition, newest first, with their tags as a dict."""
    data = server.graphql(RUNS, {"filter": {"tags": [{"key": "dagster/partition", "value": partition}]}})
    found = data["runsOrError"]["results"]
    for run in found:
        run["tags"] = {tag["key"]: tag["value"] for tag in run["tags"]}
        run["assets"] = sorted("/".join(key["path"]) for key in run["assetSelection"] or [])
    return found


def code_location_status(server: DevServer, name: str = "ops_platform") -> tuple[str, str]:
    """(load status, what loaded: RepositoryLocation or PythonError) of the code location."""
    data = server.graphql("""{ workspaceOrError { ... on Workspace { locationEntries {
        name loadStatus locationOrLoadError { __typename } } } } }""")
    entry = next(e for e in data["workspaceOrError"]["locationEntries"] if e["name"] == name)
    return entry["loadStatus"], (entry["locationOrLoadError"] or {}).get("__typename", "")


def run_status(server: DevServer, run_id: str) -> str:
    data = server.graphql("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id})
    return data["runOrError"]["status"]


def partition_statuses(server: DevServer, asset: str) -> dict[str, list[str]]:
    data = server.graphql("""query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
        assetPartitionStatuses { ... on DefaultPartitionStatuses {
          materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions } } } } }""",
                          {"key": {"path": [asset]}})
    return data["assetNodeOrError"]["assetPartitionStatuses"]


def latest_check(server: DevServer, check: str, asset: str = "database_backup") -> dict:
    data = server.graphql("""query($key: AssetKeyInput!, $check: String!) {
        assetCheckExecutions(assetKey: $key, checkName: $check, limit: 1) { runId status } }""",
                          {"key": {"path": [asset]}, "check": check})
    executions = data["assetCheckExecutions"]
    return executions[0] if executions else {}


def materializations(server: DevServer, asset: str, partition: str = "development") -> list[dict]:
    data = server.graphql("""query($key: AssetKeyInput!, $partitions: [String!]) {
        assetOrError(assetKey: $key) { ... on Asset { assetMaterializations(partitions: $partitions) {
          runId timestamp metadataEntries { label ... on TextMetadataEntry { text }
            ... on TimestampMetadataEntry { timestamp } ... on IntMetadataEntry { intValue } } } } } }""",
                          {"key": {"path": [asset]}, "partitions": [partition]})
    return (data["assetOrError"] or {}).get("assetMaterializations") or []


def sensor_ticks(server: DevServer, sensor: str) -> list[float]:
    """Timestamps of the sensor's recent ticks, newest first."""
    data = server.graphql("""query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
        ... on Sensor { sensorState { ticks(limit: 20) { timestamp status } } } } }""",
                          {"selector": {"repositoryLocationName": "ops_platform", "repositoryName": "__repository__",
                                        "sensorName": sensor}})
    return [tick["timestamp"] for tick in data["sensorOrError"]["sensorState"]["ticks"]]


def open_browser(playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    return browser, browser.new_page(viewport={"width": 1400, "height": 900})


def dismiss_welcome(page) -> None:
    """The "Join the Dagster community" dialog a new instance shows once, a moment after the page loads."""
    page.get_by_role("button", name=re.compile("Materialize|Reload definitions|Launch Run")).first.wait_for(
        timeout=60_000)
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=8000)
    except Exception:  # noqa: BLE001 - not shown: nothing to dismiss
        return
    skip.click()
    skip.wait_for(state="hidden", timeout=10_000)


def materialize_from_the_asset_page(page, url: str, asset: str = "database_backup",
                                    partition: str = "development") -> str:
    """Assets -> ``asset`` -> Materialize… -> the partition -> Launch 1 run, as a person clicks it.
    Returns the short run id the UI reports."""
    page.goto(f"{url}/assets/{asset}")
    dismiss_welcome(page)
    page.get_by_role("button", name="Materialize…").click(timeout=60_000)
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="All").click(timeout=30_000)
    dialog.get_by_text(partition).first.wait_for(timeout=30_000)
    dialog.get_by_role("button", name="Launch 1 run").click(timeout=30_000)
    launched = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    launched.first.wait_for(timeout=60_000)
    return re.search(r"Launched run ([0-9a-f]{8})", launched.first.inner_text()).group(1)


def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("OPS_UI_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
