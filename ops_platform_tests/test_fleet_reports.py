"""A fleet of 100 targets in the reports and the health sweep: the three environments, 30 real
small databases on a server of ops_platform.yaml (created by this module on one connection and
dropped after) and 67 file targets (one a real database, the others names only: the reports read
their backups, not their databases). The digest through the real Slack client to the test server
(refusing blocks beyond Slack's limits) groups the quiet targets in one line and lists the failing
ones, most urgent first; the health sweep connects to every fleet database and a database that
is gone opens an incident after 3 failed sweeps, which the digest then lists first; database
statistics and backup history materialize for a file target and a discovered one; fleet_uptime
puts the gone database first, and the weekly report shows its uptime."""

from __future__ import annotations

import importlib
import os
from datetime import datetime, timezone

import dagster as dg
import psycopg
import pytest

from ops_platform.defs.environments import TARGETS, ensure_partitions
from ops_platform.defs.resources import BackupStorageResource
from ops_platform.lib.tags import PARTITION
from ops_platform_tests.conftest import DB_PASSWORD, DB_USER, PG_HOST, PG_PORT, TEST_DATABASES, platform_resources
from ops_platform_tests.dagster_private import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    RegisteredCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteRepositoryOrigin,
    SensorInstigatorData,
)
from ops_platform_tests.insight_helpers import add_run, hours_ago, posted, run_job, run_report, write_backup

PREFIX = f"ops_fr_{os.getpid()}_"
SERVER_DATABASES = [f"{PREFIX}{index:02d}" for index in range(30)]
FILE_TARGETS = [f"app{index:02d}" for index in range(67)]
APPS = f"{PREFIX}apps"
SERVER_URL = f"postgresql://{DB_USER}:{DB_PASSWORD}@{PG_HOST}:{PG_PORT}/postgres"
APPS_URL = f"postgresql://{DB_USER}:{DB_PASSWORD}@{PG_HOST}:{PG_PORT}/{APPS}"
ENVIRONMENTS = tuple(TEST_DATABASES)
GONE = f"fleet.{SERVER_DATABASES[7]}"
FAILED_BACKUP, STALE, FAILED_DRILL, UNVERIFIED = f"fleet.{SERVER_DATABASES[5]}", "app10", "app20", "app30"


def superuser(sql_statements: list[str]) -> None:
    """Statements on one autocommit connection (CREATE/DROP DATABASE cannot run in a transaction)."""
    with psycopg.connect(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres", autocommit=True) as connection:
        for statement in sql_statements:
            connection.execute(statement)


@pytest.fixture(scope="module")
def fleet_file(tmp_path_factory):
    """30 empty databases owned by the test role on the local server, and the file naming them
    (server ``fleet``) with 67 file targets; and a smaller file for the health sweep, with the
    server and the one file target whose database exists (one more, which the server leaves out)."""
    everything = [*SERVER_DATABASES, APPS]
    superuser([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in everything]
              + [f'CREATE DATABASE "{name}" OWNER {DB_USER}' for name in everything])
    config = tmp_path_factory.mktemp("fleet_reports") / "ops_platform.yaml"
    lines = ["servers:", "  fleet:", "    url_env: FLEET_SERVER_URL", f'    databases: ["{PREFIX}*"]',
             '    exclude: ["*_apps"]', '    schedule: "0 1 * * *"', "targets:"]
    for name in FILE_TARGETS:
        lines += [f"  {name}:", f"    url_env: FLEET_{name.upper()}_URL", '    schedule: "0 4 * * *"']
    config.write_text("\n".join(lines) + "\n")
    (config.parent / "health.yaml").write_text("\n".join(lines[:lines.index("targets:") + 1]) + "\n"
                                               + '  app03:\n    url_env: FLEET_APP03_URL\n')
    yield config
    superuser([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in everything])


@pytest.fixture
def fleet(fleet_file, monkeypatch, instance, tmp_path, s3_bucket):
    """The file in use, every target registered (as target_discovery_sensor does), a fresh
    verified backup of every scheduled target; the instance and the backup storage. The
    environments' databases are the server's maintenance database (reachable, and a statistics
    snapshot of it passes)."""
    from ops_platform.lib.targets import load_targets

    monkeypatch.setenv("OPS_PLATFORM_CONFIG", str(fleet_file))
    monkeypatch.setenv("FLEET_SERVER_URL", SERVER_URL)
    for variable in ("PRODUCTION_DATABASE_URL", "STAGING_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.setenv(variable, SERVER_URL)
    for name in FILE_TARGETS:
        monkeypatch.setenv(f"FLEET_{name.upper()}_URL", APPS_URL if name == "app03" else
                           f"postgresql://{DB_USER}:{DB_PASSWORD}@{PG_HOST}:{PG_PORT}/{PREFIX}never_{name}")
    found = load_targets()
    assert not found.problems, found.problems
    assert len(found.names) == 100
    ensure_partitions(instance, found.names)
    root = tmp_path / "backups"
    for name in found.names:
        if name != "development":
            write_backup(root, name, hours_ago(0.5))
    return instance, BackupStorageResource(backup_dir=str(root)), root


def test_the_digest_of_100_targets_groups_the_quiet_ones_and_lists_the_failing_most_urgent_first(
        fleet, slack_resource, slack_server):
    instance, storage, root = fleet
    add_run(instance, "backup_job", tags={PARTITION: FAILED_BACKUP})
    for manifest in (root / STALE).glob("*.manifest.json"):
        manifest.unlink()
    write_backup(root, STALE, hours_ago(72))
    write_backup(root, FAILED_DRILL, hours_ago(20), drill={
        "at": hours_ago(2).isoformat().replace("+00:00", "Z"), "passed": False, "summary": "row counts differ",
        "run_id": "drill-run"})
    write_backup(root, UNVERIFIED, hours_ago(0.2), verified=False)
    slack_server.enforce_block_limits = True

    result = run_report(instance, "digest", backup_storage=storage, slack=slack_resource)

    assert result.success
    [text] = posted(slack_server)
    lines = text.splitlines()
    assert lines[0].endswith("attention in 4 targets of 100")
    assert lines[1] == (":white_check_mark: 95 targets backed up on schedule, all verified; "
                        "1 target without a schedule or a backup, nothing failed")
    listed = [line.strip("*") for line in lines if line.startswith("*")]
    assert listed == [STALE, FAILED_BACKUP, FAILED_DRILL, UNVERIFIED]
    assert "backup run failed in the last 24 h" in text and "row counts differ" in text
    assert f"the newest backup `{UNVERIFIED}-" in text and "is not verified" in text
    assert "app11" not in text and "development" not in text
    markdown = result.output_for_node("ops_report")
    assert "## Nothing needs attention" in markdown and "production, staging, development, app00, " in markdown
    assert f"## {STALE}" in markdown and "## app11" not in markdown
    [materialization] = result.asset_materializations_for_node("ops_report")
    assert materialization.metadata["targets"].value == 100
    assert materialization.metadata["targets_needing_attention"].value == 4


def test_a_long_digest_stays_within_slacks_limits_and_names_the_rest(fleet, slack_resource, slack_server):
    instance, storage, _ = fleet
    failing = FILE_TARGETS[:45]
    for name in failing:
        add_run(instance, "backup_job", tags={PARTITION: name})
    slack_server.enforce_block_limits = True

    result = run_report(instance, "digest", backup_storage=storage, slack=slack_resource)

    assert result.success
    [text] = posted(slack_server)
    assert "attention in 45 targets of 100" in text
    assert f"…and 25 more targets needing attention: {', '.join(failing[20:32])} and 13 more" in text
    assert "54 targets backed up on schedule, all verified" in text


def test_the_weekly_report_of_100_targets_tables_the_quiet_ones(fleet, slack_resource, slack_server):
    instance, storage, _ = fleet
    add_run(instance, "backup_job", tags={PARTITION: FAILED_BACKUP})

    result = run_report(instance, "weekly", backup_storage=storage, slack=slack_resource)

    assert result.success
    [text] = posted(slack_server)
    assert ":white_check_mark: 98 targets backed up on schedule, all verified" in text
    assert f"*{FAILED_BACKUP}*: backups 1/1 verified, 1 failed run" in text
    assert len(text.splitlines()) <= 5
    markdown = result.output_for_node("ops_report")
    assert f"## {FAILED_BACKUP}" in markdown and "## app11" not in markdown
    assert "| app11 | 1/1 |" in markdown


def test_statistics_and_backup_history_materialize_for_a_file_target_and_a_discovered_database(fleet):
    instance, storage, _ = fleet
    for name in ("app03", f"fleet.{SERVER_DATABASES[3]}"):
        stats = run_job(instance, "database_stats_job", name)
        assert stats.success, name
        [materialization] = stats.asset_materializations_for_node("database_stats")
        assert materialization.partition == name
        assert materialization.metadata["database_size_bytes"].value > 0
        history = run_job(instance, "insight_history_job", name, backup_storage=storage)
        [materialization] = history.asset_materializations_for_node("backup_history")
        assert materialization.metadata["verified_1d"].value == 1


def test_the_fleet_schedules_cover_every_target(fleet):
    from ops_platform.defs.insight.database_stats import fleet_database_stats_schedule
    from ops_platform.defs.insight.history import insight_history_schedule

    instance, _, _ = fleet
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime.now(timezone.utc)) as context:
        stats = fleet_database_stats_schedule(context)
        history = insight_history_schedule(context)
    assert len(stats) == 97 and {request.partition_key for request in stats} == set(
        instance.get_dynamic_partitions(TARGETS)) - set(ENVIRONMENTS)
    assert len(history) == 100
    fleet_history = [request for request in history if request.partition_key not in ENVIRONMENTS]
    assert all(request.asset_selection == [dg.AssetKey("backup_history")] for request in fleet_history)


@pytest.fixture
def fleet_health(fleet, fleet_file, monkeypatch):
    """The health definitions as the code location builds them with the health file in use (the
    fleet's check exists only with a file); built again without it afterwards."""
    from ops_platform.defs.health import assets as health_assets
    from ops_platform.defs.health import sensors as health_sensors

    monkeypatch.setenv("OPS_PLATFORM_CONFIG", str(fleet_file.parent / "health.yaml"))
    for prefix in ("PRODUCTION_", "STAGING_", ""):
        for variable in ("API_URL", "FRONTEND_URL", "REDIS_URL"):
            monkeypatch.delenv(prefix + variable, raising=False)
    reloaded = importlib.reload(health_assets)
    yield reloaded, health_sensors
    monkeypatch.undo()
    importlib.reload(health_assets)


def test_the_health_sweep_checks_every_fleet_database_and_a_gone_one_alerts_after_3_failures(
        fleet, fleet_file, fleet_health, slack_resource, slack_server, monkeypatch):
    from ops_platform.lib.probes import HEALTHY

    instance, storage, _ = fleet
    health_assets, health_sensors = fleet_health
    definitions = dg.Definitions(asset_checks=[health_assets.health_checks], jobs=[health_assets.health_check_job],
                                 resources=platform_resources())
    job = definitions.resolve_job_def("health_check_job")
    config = {"ops": {"health_checks": {"config": {"timeout_seconds": 3.0, "degraded_ms": 10_000}}}}
    cursor = None

    def sweep_and_tick():
        nonlocal cursor
        result = job.execute_in_process(instance=instance, run_config=config)
        assert result.success
        context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                          resources=platform_resources(slack=slack_resource))
        health_sensors.health_alert_sensor(context)
        cursor = context.cursor
        [evaluation] = [e for e in result.get_asset_check_evaluations()
                        if e.asset_key == health_assets.FLEET_KEY]
        return evaluation

    first = sweep_and_tick()
    answers = first.metadata["targets"].value
    assert sorted(answers) == sorted(["app03", *(f"fleet.{name}" for name in SERVER_DATABASES)])
    assert all(answer[0] == HEALTHY for answer in answers.values()), first.description
    assert first.passed
    superuser([f'DROP DATABASE "{GONE.split(".", 1)[1]}" WITH (FORCE)'])
    for attempt in range(3):
        evaluation = sweep_and_tick()
        assert not evaluation.passed and GONE in evaluation.description
        assert evaluation.metadata["failing"].value == 1
        incidents = [t for t in posted(slack_server) if GONE in t]
        assert bool(incidents) == (attempt == 2), posted(slack_server)
    assert "does not exist" in evaluation.metadata["targets"].value[GONE][1]
    state = instance.get_latest_materialization_event(health_assets.FLEET_KEY).asset_materialization
    assert state.metadata["status"].value == "unhealthy" and state.metadata["failing"].value == 1
    assert evaluation.metadata["latency_ms"].value < 3000
    origin = RemoteInstigatorOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("ops_platform"),
                                                           "__repository__"), "health_alert_sensor")
    instance.add_instigator_state(InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING,
                                                  SensorInstigatorData(cursor=cursor)))
    monkeypatch.setenv("OPS_PLATFORM_CONFIG", str(fleet_file))
    slack_server.reset()

    result = run_report(instance, "digest", backup_storage=storage, slack=slack_resource)

    assert result.success
    [text] = posted(slack_server)
    listed = [line.strip("*") for line in text.splitlines() if line.startswith("*")]
    assert listed and listed[0] == GONE and "incident open for" in text, text

    from ops_platform.defs.insight.history import fleet_uptime

    [uptime] = dg.materialize([fleet_uptime], instance=instance).asset_materializations_for_node("fleet_uptime")
    rows = [row.data for row in uptime.metadata["by_database"].records]
    assert uptime.metadata["databases"].value == 31 and uptime.metadata["results_read"].value == 4 * 31
    assert rows[0]["target"] == GONE and rows[0]["incidents_7d"] == 1 and rows[0]["open_outage"]
    assert rows[0]["availability_7d"] != "100.00 %" and {row["availability_7d"] for row in rows[1:]} == {"100.00 %"}
    assert uptime.metadata["least_available_7d"].value == [GONE]
    slack_server.reset()
    weekly = run_report(instance, "weekly", backup_storage=storage, slack=slack_resource)
    markdown = weekly.output_for_node("ops_report")
    assert f"## {GONE}" in markdown and "| app03 | 1/1 |" in markdown and "| 100.00 % |" in markdown
    assert "| postgres |" in markdown.split(f"## {GONE}")[1].split("\n## ")[0]  # its uptime, in its section
