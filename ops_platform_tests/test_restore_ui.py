"""``restore_job`` launched from the UI's side: the real dagster-webserver and dagster-daemon on
one instance, a backup made with the CLI, the run launched over GraphQL with launchpad config
and the partition tag, queued and then run by the daemon; its steps and the ``database`` asset's
materialization read back over GraphQL."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from ops_platform_tests.conftest import DB_PASSWORD, free_port
from ops_platform_tests.restore_e2e_helpers import (
    BIN,
    PREFIX,
    ROOT,
    ROWS,
    Site,
    content,
    create_live,
    database_names,
    drop_database,
    fingerprint,
    make_env,
    run_sql_as,
)

LIVE = PREFIX + "ui"
STEPS = ["resolve_restore", "fetch_backup", "take_safety_backup", "restore_database", "run_migrations",
         "verify_restore", "swap_into_place"]

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""

RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status tags { key value } stepStats { stepKey status startTime endTime } }
  }
}"""

MATERIALIZATIONS = """
{
  assetOrError(assetKey: {path: ["database"]}) {
    ... on Asset {
      assetMaterializations(partitions: ["development"]) {
        runId partition
        metadataEntries {
          label
          ... on TextMetadataEntry { text }
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
        }
      }
    }
  }
}"""


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory, slack_server_session):
    """One development backup made from the CLI, then the webserver and the daemon on its instance."""
    root = tmp_path_factory.mktemp("restore_ui")
    create_live(LIVE)
    env = make_env(root / "home", root / "backups", {"development": LIVE},
                   slack_webhook=slack_server_session.webhook_url)
    site = Site(root / "home", root / "backups", env, LIVE)
    backup_id = site.backup()  # also gives the instance the project's dagster.yaml (run queue, limits)
    expected = content(LIVE)
    run_sql_as(LIVE, "INSERT INTO customers (email) VALUES ('after@example.com');")
    port = free_port()
    logs = root / "logs"
    logs.mkdir()
    with open(logs / "webserver.log", "w") as web_log, open(logs / "daemon.log", "w") as daemon_log:
        processes = [
            subprocess.Popen([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT,
                             env=env, stdout=subprocess.DEVNULL, stderr=web_log),
            subprocess.Popen([str(BIN / "dagster-daemon"), "run"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=daemon_log),
        ]
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("dagster-webserver did not start within 120 s")
        yield url, site, backup_id, expected
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for name in database_names(LIVE):
            drop_database(name)


def test_restore_job_launched_over_graphql_runs_from_the_queue(dagster_ui, slack_server):
    url, site, backup_id, expected = dagster_ui
    before = fingerprint(LIVE)
    params = {
        "selector": {"repositoryLocationName": "ops_platform", "repositoryName": "__repository__",
                     "jobName": "restore_job"},
        "runConfigData": {"ops": {"resolve_restore": {"config": {"backup": "latest", "confirm": "development"}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "development"}]},
    }
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    deadline, statuses = time.monotonic() + 90, []
    while time.monotonic() < deadline:
        run = graphql(url, RUN, {"runId": run_id})["runOrError"]
        statuses.append(run["status"])
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(0.5)
    assert run["status"] == "SUCCESS", (statuses[-5:], (site.home.parent / "logs" / "daemon.log").read_text()[-3000:])
    assert "QUEUED" in statuses or statuses[0] in ("QUEUED", "STARTING", "STARTED")

    steps = {step["stepKey"]: step for step in run["stepStats"]}
    assert set(steps) == set(STEPS)
    for step in steps.values():
        assert step["status"] == "SUCCESS" and step["endTime"] >= step["startTime"] > 0
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags["dagster/partition"] == "development"

    materializations = graphql(url, MATERIALIZATIONS)["assetOrError"]["assetMaterializations"]
    (restored,) = [m for m in materializations if m["runId"] == run_id]
    assert restored["partition"] == "development"
    metadata = {entry["label"]: entry.get("text", entry.get("intValue", entry.get("floatValue")))
                for entry in restored["metadataEntries"]}
    assert metadata["backup_id"] == backup_id and metadata["rows_verified"] == ROWS
    assert metadata["duration_seconds"] > 0 and metadata["kept_database"].startswith(f"{LIVE}__pre_restore_")

    assert content(LIVE) == expected
    (kept,) = [name for name in database_names(LIVE) if "__pre_restore_" in name]
    assert fingerprint(kept) == before
    texts = [text for text in slack_server.texts() if "Restore" in text]
    assert len(texts) == 2 and "Restore started" in texts[0] and "Restore succeeded" in texts[1]
    assert backup_id in texts[1]
    assert DB_PASSWORD not in slack_server.all_bodies() and DB_PASSWORD not in site.run_texts()
