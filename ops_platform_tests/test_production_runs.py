"""Every job launched the way production launches it: ``python -m ops_platform.dev`` (one code
server, dagster-webserver and dagster-daemon, as ``make dev`` and ``deploy/`` start them) on
PostgreSQL instance storage (``deploy/dagster.postgres.yaml``), with S3 (moto) and Slack (the test
server) configured. Runs are launched over GraphQL, queued, and executed by the daemon in a run
worker, so op outputs go through the filesystem IO manager (pickled), not memory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ops_platform_tests.conftest import free_port, psql
from ops_platform_tests.restore_e2e_helpers import (
    BUCKET,
    PREFIX,
    ROOT,
    ROWS,
    confirmation,
    content,
    create_live,
    database_names,
    drop_database,
    make_env,
    run_sql_as,
    s3_client,
    s3_keys,
    url_for,
)
from ops_platform_tests.waiting import wait_for
from ops_platform_tests.webserver import graphql, launch, run_errors, stop, wait_for_run, wait_until_up

LIVE = PREFIX + "prodshape"
ANALYTICS = PREFIX + "prodshape_analytics"
COPY = PREFIX + "prodshape_copy"
NIGHTLY = [PREFIX + f"prodshape_fleet_{number}" for number in range(3)]  # server "nightly", every minute
OFFSITE_BUCKET = BUCKET + "-offsite"
INSTANCE_DATABASE = PREFIX + "instance"
S3_PREFIX = "prodshape"


@pytest.fixture(scope="module")
def platform(tmp_path_factory, moto_server, slack_server_session):
    """The platform as make dev runs it, on PostgreSQL instance storage, with S3 and Slack set."""
    root = tmp_path_factory.mktemp("production_runs")
    home = root / "home"
    home.mkdir(mode=0o700)
    shutil.copy(ROOT / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    drop_database(INSTANCE_DATABASE)
    psql(f'CREATE DATABASE "{INSTANCE_DATABASE}"')
    create_live(LIVE)
    create_live(ANALYTICS, customers=20, orders=30)
    for name in NIGHTLY:
        create_live(name, customers=10, orders=20)
    (root / "ops_platform.yaml").write_text(f"""
targets:
  analytics:
    url_env: ANALYTICS_DATABASE_URL
    schedule: '0 4 * * *'
servers:
  nightly:
    url_env: NIGHTLY_SERVER_URL
    databases: ["{PREFIX}prodshape_fleet_*"]
    schedule: '* * * * *'
destinations:
  offsite:
    s3_bucket: {OFFSITE_BUCKET}
    endpoint_url_env: OFFSITE_S3_ENDPOINT
""")
    client = s3_client()
    for bucket in (BUCKET, OFFSITE_BUCKET):
        if bucket not in [found["Name"] for found in client.list_buckets()["Buckets"]]:
            client.create_bucket(Bucket=bucket)
    env = make_env(home, root / "backups", {"development": LIVE}, s3_prefix=S3_PREFIX,
                   slack_webhook=slack_server_session.webhook_url)
    env.update({"DAGSTER_POSTGRES_URL": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{INSTANCE_DATABASE}",
                "AWS_ENDPOINT_URL_S3": moto_server, "OPS_PLATFORM_CONFIG": str(root / "ops_platform.yaml"),
                "ANALYTICS_DATABASE_URL": url_for(ANALYTICS), "NIGHTLY_SERVER_URL": url_for("postgres"),
                "OFFSITE_S3_ENDPOINT": moto_server})
    port = free_port()
    log = root / "platform.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "ops_platform.dev", "--host", "127.0.0.1", "--port",
                                    str(port)], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, timeout=180)
        yield url, env, root, log
    finally:
        stop([process])
        for name in database_names(LIVE):
            drop_database(name)
        drop_database(INSTANCE_DATABASE)
        for name in NIGHTLY:
            drop_database(name)


def _succeeded(url: str, run_id: str, log: Path) -> dict:
    run, statuses = wait_for_run(url, run_id, timeout=180)
    assert run["status"] == "SUCCESS", (statuses[-3:], run_errors(url, run_id), log.read_text()[-2000:])
    return run


FLEET_RUNS = """
query FleetRuns {
  runsOrError(filter: {pipelineName: "fleet_backup_job"}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""

SCHEDULE = """
query Schedule($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) { ... on Schedule { id scheduleState { status } } }
}"""

STOP_SCHEDULE = """
mutation Stop($id: String!) {
  stopRunningSchedule(id: $id) { ... on ScheduleStateResult { scheduleState { status } } }
}"""

BACKUP_MATERIALIZATIONS = """
query Materializations($partitions: [String!]) {
  assetOrError(assetKey: {path: ["database_backup"]}) {
    ... on Asset { assetMaterializations(partitions: $partitions) { runId partition } }
  }
}"""


def test_a_servers_tick_backs_up_its_databases_in_one_run_through_the_daemon(platform, slack_server_session):
    """A server's schedule (every minute here) as the daemon runs it: one fleet_backup_job run for
    every database found, executed by a run worker, each backup in S3 and in the off-site
    destination, verified, and recorded on database_backup for its target; one Slack message."""
    url, _, _, log = platform
    selector = {"repositoryLocationName": "ops_platform", "repositoryName": "__repository__",
                "scheduleName": "fleet_nightly_backup_schedule"}
    schedule = graphql(url, SCHEDULE, {"selector": selector})["scheduleOrError"]
    assert schedule["scheduleState"]["status"] == "RUNNING", schedule
    run = wait_for(lambda: next(iter(graphql(url, FLEET_RUNS)["runsOrError"]["results"]), None), 150,
                   "the daemon launched the server's fleet_backup_job run", interval=2)
    graphql(url, STOP_SCHEDULE, {"id": schedule["id"]})  # one tick is the test; the next would add a run a minute
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags["ops_platform/server"] == "nightly" and tags["ops_platform/backup_kind"] == "scheduled"
    _succeeded(url, run["runId"], log)

    client = s3_client()
    offsite = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=OFFSITE_BUCKET)
               for item in page.get("Contents", [])]
    targets = [f"nightly.{name}" for name in NIGHTLY]
    for target in targets:
        manifests = [key for key in s3_keys(client, f"{S3_PREFIX}/{target}") if key.endswith(".manifest.json")]
        assert len(manifests) == 1, manifests
        manifest = json.loads(client.get_object(Bucket=BUCKET, Key=manifests[0])["Body"].read())
        assert manifest["verified"] and manifest["kind"] == "scheduled"
        offsite_copy = next(copy for copy in manifest["copies"] if copy["name"] == "offsite")
        assert offsite_copy["verified"], manifest["copies"]
        assert any(key.endswith(manifests[0].rsplit("/", 1)[1]) for key in offsite), offsite
    found = graphql(url, BACKUP_MATERIALIZATIONS, {"partitions": targets})["assetOrError"]["assetMaterializations"]
    assert sorted(entry["partition"] for entry in found if entry["runId"] == run["runId"]) == sorted(targets)
    (summary,) = [text for text in slack_server_session.texts() if "database backups succeeded" in text]
    assert f"*{len(targets)} database backups succeeded*" in summary and all(target in summary for target in targets)


def test_backup_job_runs_through_the_daemon_into_s3(platform, slack_server_session):
    url, _, root, log = platform
    run_id = launch(url, "backup_job", "development")
    _succeeded(url, run_id, log)
    keys = s3_keys(s3_client(), S3_PREFIX)
    assert any(key.endswith(".dump.zst") for key in keys) and any(key.endswith(".manifest.json") for key in keys)
    assert any("Database backup succeeded" in text for text in slack_server_session.texts())


def test_a_target_of_the_file_is_backed_up_through_the_daemon(platform):
    """A target of ops_platform.yaml is a partition as soon as make dev starts (the environments and
    the file's targets are registered then; the discovery sensor adds what it finds on servers)."""
    url, _, _, log = platform
    run_id = launch(url, "backup_job", "analytics")
    _succeeded(url, run_id, log)
    keys = s3_keys(s3_client(), S3_PREFIX)
    assert any(key.startswith(f"{S3_PREFIX}/analytics/analytics-") and key.endswith(".manifest.json") for key in keys)


def test_restore_job_from_s3_into_a_new_database_through_the_daemon(platform, slack_server_session):
    """The local copy is gone, so the copy comes from S3; the state the steps hand each other is
    pickled between them by the run worker's IO manager."""
    url, _, root, log = platform
    expected = content(LIVE)
    shutil.rmtree(root / "backups" / "development")
    run_id = launch(url, "restore_job", "development",
                    {"ops": {"resolve_restore": {"config": {"backup": "latest", "target_database": COPY}}}})
    _succeeded(url, run_id, log)
    assert content(COPY) == expected
    assert sum(int(value.split(":")[0]) for value in content(COPY).values() if ":" in value) == ROWS


def test_restore_job_replaces_the_environment_after_its_confirmation(platform, slack_server_session):
    """Launched without the confirmation, the run is refused and says the phrase; launched with
    it, the environment is replaced; the same config launched again is refused."""
    url, _, _, log = platform
    expected = content(LIVE)
    run_sql_as(LIVE, "INSERT INTO customers (email) VALUES ('after-the-backup@example.com');")
    config = {"backup": "latest"}
    refused, _ = wait_for_run(url, launch(url, "restore_job", "development",
                                           {"ops": {"resolve_restore": {"config": config}}}), timeout=180)
    assert refused["status"] == "FAILURE"
    (backup_id,) = [entry["id"] for entry in backups_in_s3()]
    config["confirm"] = confirmation(backup_id, LIVE)
    run_id = launch(url, "restore_job", "development", {"ops": {"resolve_restore": {"config": config}}})
    _succeeded(url, run_id, log)
    assert content(LIVE) == expected
    assert [name for name in database_names(LIVE) if "__pre_restore_" in name]
    replayed, _ = wait_for_run(url, launch(url, "restore_job", "development",
                                            {"ops": {"resolve_restore": {"config": config}}}), timeout=180)
    assert replayed["status"] == "FAILURE" and content(LIVE) == expected


def backups_in_s3() -> list[dict]:
    client = s3_client()
    keys = [key for key in s3_keys(client, S3_PREFIX) if key.endswith(".manifest.json") and "/development/" in key]
    manifests = [json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()) for key in keys]
    return [manifest for manifest in manifests if manifest["kind"] != "pre-restore"]


def test_restore_drill_runs_through_the_daemon(platform):
    url, _, _, log = platform
    run_id = launch(url, "restore_drill_job", "development")
    _succeeded(url, run_id, log)
    assert not [name for name in database_names(LIVE) if "__drill" in name]


FLEET_UPTIME = """
query FleetUptime {
  assetOrError(assetKey: {path: ["fleet_uptime"]}) {
    ... on Asset { assetMaterializations { runId metadataEntries { label } } }
  }
}"""


def test_fleet_uptime_runs_through_the_daemon(platform):
    """fleet_uptime as its schedule launches it: a run worker reads the fleet_databases check's
    history from the PostgreSQL instance and records a table for the server's databases."""
    url, _, _, log = platform
    run_id = launch(url, "fleet_uptime_job")
    _succeeded(url, run_id, log)
    (materialization,) = graphql(url, FLEET_UPTIME)["assetOrError"]["assetMaterializations"]
    assert materialization["runId"] == run_id
    assert "by_database" in [entry["label"] for entry in materialization["metadataEntries"]]
