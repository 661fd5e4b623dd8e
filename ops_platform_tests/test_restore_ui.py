"""``restore_job`` launched from the UI's side: the real dagster-webserver and dagster-daemon on
one instance, a backup made with the CLI, the run launched over GraphQL with launchpad config
and the partition tag, queued and then run by the daemon; its steps and the ``database`` asset's
materialization read back over GraphQL."""

from __future__ import annotations

import subprocess

import pytest

from ops_platform_tests.conftest import DB_PASSWORD
from ops_platform_tests.restore_e2e_helpers import (
    BIN,
    PREFIX,
    ROOT,
    ROWS,
    Site,
    confirmation,
    content,
    create_live,
    database_names,
    drop_database,
    fingerprint,
    make_env,
    run_sql_as,
)
from ops_platform_tests.webserver import (
    LAUNCH_RUN,
    WORKSPACE,
    graphql,
    start_webserver,
    stop,
    wait_for_run,
    wait_until_up,
)

LIVE = PREFIX + "ui"
STEPS = ["resolve_restore", "fetch_backup", "take_safety_backup", "restore_database", "run_migrations",
         "verify_restore", "swap_into_place"]


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


FAILURES = """
query Failures($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection {
      events { __typename ... on ExecutionStepFailureEvent { stepKey failureMetadata { description } } }
    }
  }
}"""

RUNS = """
{
  runsOrError { ... on Runs { results { runId jobName status } } }
  permissions { permission value }
}"""


def launch_params(**config) -> dict:
    return {
        "selector": {"repositoryLocationName": "ops_platform", "repositoryName": "__repository__",
                     "jobName": "restore_job"},
        "runConfigData": {"ops": {"resolve_restore": {"config": {"backup": "latest", **config}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "development"}]},
    }


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
    logs = root / "logs"
    logs.mkdir()
    url, webserver = start_webserver(env, logs / "webserver.log")
    with open(logs / "daemon.log", "w") as daemon_log:
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=daemon_log)
    try:
        wait_until_up(url)
        yield url, site, backup_id, expected
    finally:
        stop([webserver, daemon])
        for name in database_names(LIVE):
            drop_database(name)


@pytest.fixture(scope="module")
def read_only_ui(dagster_ui):
    """A second webserver on the same instance, started with --read-only: for people who should
    see runs but not launch them."""
    url, site, _, _ = dagster_ui
    read_only, process = start_webserver(site.env, site.home.parent / "logs" / "webserver-read-only.log", "--read-only")
    try:
        wait_until_up(read_only)
        yield read_only
    finally:
        stop([process])


def test_restore_job_launched_over_graphql_runs_from_the_queue(dagster_ui, slack_server):
    url, site, backup_id, expected = dagster_ui
    before = fingerprint(LIVE)
    launched = graphql(url, LAUNCH_RUN, {"params": launch_params(confirm=confirmation(backup_id, LIVE))})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    run, statuses = wait_for_run(url, run_id)
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


def test_replacing_the_database_from_the_ui_needs_the_typed_confirmation(dagster_ui, slack_server):
    """Launched without the confirmation, with the environment's name, or with the phrase the
    Launchpad remembers from the restore before (the database it named has been replaced since):
    the run is refused at its first step, saying what to type, and nothing on the server changed."""
    url, _, backup_id, _ = dagster_ui
    before, names = fingerprint(LIVE), database_names(LIVE)
    phrase = confirmation(backup_id, LIVE)
    remembered = phrase.rsplit("#", 1)[0] + "#1"
    runs = {}
    for confirm, said in (("", "nothing was typed"), ("development", "got 'development'"),
                          (remembered, f"got '{remembered}'")):
        launched = graphql(url, LAUNCH_RUN, {"params": launch_params(confirm=confirm)})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        runs[launched["run"]["runId"]] = said
    for run_id, said in runs.items():
        run, _ = wait_for_run(url, run_id)
        assert run["status"] == "FAILURE"
        steps = {step["stepKey"]: step["status"] for step in run["stepStats"]}
        assert steps.pop("resolve_restore") == "FAILURE" and "SUCCESS" not in steps.values(), run["stepStats"]
        events = graphql(url, FAILURES, {"runId": run_id})["logsForRun"]["events"]
        [failure] = [event for event in events if event["__typename"] == "ExecutionStepFailureEvent"]
        assert failure["stepKey"] == "resolve_restore"
        assert (f"restore of development was refused: replacing development's database {LIVE} needs confirm: "
                f"'{phrase}' (the backup to restore, over the database as it is now; {said}); nothing was touched"
                in failure["failureMetadata"]["description"]), failure
    assert fingerprint(LIVE) == before and database_names(LIVE) == names
    assert not [text for text in slack_server.texts() if "Restore" in text]


def test_a_read_only_webserver_shows_the_runs_and_refuses_to_launch(dagster_ui, read_only_ui):
    url, site, _, _ = dagster_ui
    before = graphql(read_only_ui, RUNS)
    shown = {run["runId"]: run["jobName"] for run in before["runsOrError"]["results"]}
    assert {run.run_id for run in site.runs()} == set(shown) and "backup_job" in shown.values()
    assert {p["permission"]: p["value"] for p in before["permissions"]}["launch_pipeline_execution"] is False

    refused = graphql(read_only_ui, LAUNCH_RUN, {"params": launch_params(confirm="anything")})["launchRun"]
    assert refused["__typename"] == "UnauthorizedError", refused
    assert len(graphql(url, RUNS)["runsOrError"]["results"]) == len(shown)
