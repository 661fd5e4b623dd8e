"""A fleet from ops_platform.yaml: a server whose databases (new ones included) are targets, backed
up, listed and restored by name with the real CLI; target_discovery_sensor keeping the ``targets``
partitions in step with the server and announcing a database found or gone, once; a server's
schedule backing up what it finds at its tick."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import dagster as dg
import pytest

from ops_platform_tests.conftest import DB_PASSWORD, DB_USER, PG_HOST, PG_PORT
from ops_platform_tests.restore_e2e_helpers import (
    Site,
    content,
    create_live,
    database_names,
    drop_database,
    make_env,
)

PREFIX = f"ops_fl_{os.getpid()}_"
ORDERS, USERS, LATER = PREFIX + "orders", PREFIX + "users", PREFIX + "later"
SERVER_URL = f"postgresql://{DB_USER}:{DB_PASSWORD}@{PG_HOST}:{PG_PORT}/postgres"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Server ``shop`` holding this module's databases, in a file; an operator's shell for it."""
    root = tmp_path_factory.mktemp("fleet")
    for name in (ORDERS, USERS):
        create_live(name)
    config = root / "ops_platform.yaml"
    config.write_text(f"""
servers:
  shop:
    url_env: SHOP_SERVER_URL
    databases: ["{PREFIX}*"]
    exclude: ["*_copy"]
    schedule: "0 1 * * *"
""")
    env = make_env(root / "home", root / "backups", {})
    env.update({"OPS_PLATFORM_CONFIG": str(config), "SHOP_SERVER_URL": SERVER_URL})
    yield Site(root / "home", root / "backups", env, ORDERS), config
    for name in database_names(PREFIX):
        drop_database(name)


def test_a_servers_databases_are_backed_up_listed_and_restored_by_name(fleet):
    site, _ = fleet
    target = f"shop.{ORDERS}"
    listed = site.cli("targets", "list")
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith(target) and "server shop" in line for line in listed.stdout.splitlines()), listed.stdout

    backup = site.cli("backup", target)
    assert backup.returncode == 0, backup.stderr
    backup_id = backup.stdout.split()[1]
    assert backup_id.startswith(f"{target}-")
    assert (site.backup_dir / target / f"{backup_id}.dump.zst").is_file()
    (entry,) = site.backups(target)
    assert entry["id"] == backup_id and entry["environment"] == target and entry["verified"]

    copy = PREFIX + "orders_copy"
    restored = site.cli("restore", "latest", target, "--target-database", copy)
    assert restored.returncode == 0, restored.stderr
    assert content(copy) == content(ORDERS)
    bad = site.cli("backup", "shop.Not-A-Name")
    assert bad.returncode == 2 and "unknown environment" in bad.stderr


def test_health_of_a_fleet_target_checks_its_database_now(fleet):
    """``ops-platform health <server>.<database>``: the database answers now (exit 0) or not (exit 1,
    the reason without the server's password); a name that is no target is bad input (exit 2)."""
    site, _ = fleet
    healthy = site.cli("health", f"shop.{ORDERS}")
    assert healthy.returncode == 0, healthy.stderr
    assert f"shop.{ORDERS}: healthy" in healthy.stdout and "SELECT 1 succeeded" in healthy.stdout
    gone = site.cli("health", f"shop.{PREFIX}dropped", "--json")
    assert gone.returncode == 1, gone.stderr
    summary = json.loads(gone.stdout)
    assert summary["status"] == "unhealthy" and "does not exist" in summary["checks"][0]["reason"]
    assert DB_PASSWORD not in gone.stdout + gone.stderr + healthy.stdout + healthy.stderr
    unknown = site.cli("health", "shop.Not-A-Name")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr


def test_discovery_registers_partitions_and_announces_a_database_found_or_gone_once(fleet, monkeypatch,
                                                                                     slack_server):
    from ops_platform.defs.environments import TARGETS
    from ops_platform.defs.fleet.sensors import target_discovery_sensor
    from ops_platform.defs.resources import OpsSlackResource

    site, config = fleet
    monkeypatch.setenv("OPS_PLATFORM_CONFIG", str(config))
    monkeypatch.setenv("SHOP_SERVER_URL", SERVER_URL)
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url, max_retries=0)

    def tick(instance, cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"slack": slack}) as context:
            result = target_discovery_sensor(context)
        for request in result.dynamic_partitions_requests:  # as the daemon applies them
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        return result

    with dg.instance_for_test() as instance:
        first = tick(instance, None)
        partitions = instance.get_dynamic_partitions(TARGETS)
        assert {f"shop.{ORDERS}", f"shop.{USERS}"} <= set(partitions) and "development" in partitions
        assert slack_server.texts() == []  # what exists at the first tick is no news
        create_live(LATER)
        second = tick(instance, first.cursor)
        assert f"shop.{LATER}" in instance.get_dynamic_partitions(TARGETS)
        (found,) = slack_server.texts()
        assert f"New database shop.{LATER} found* on server shop, first backup at " in found
        drop_database(LATER)
        third = tick(instance, second.cursor)
        gone = slack_server.texts()[1:]
        assert len(gone) == 1 and f"Database shop.{LATER} is gone* from server shop" in gone[0]
        assert f"shop.{LATER}" in instance.get_dynamic_partitions(TARGETS)  # its backups stay under retention
        tick(instance, third.cursor)
        assert len(slack_server.texts()) == 2

        # A server that cannot be reached: its databases are not taken for gone.
        monkeypatch.setenv("SHOP_SERVER_URL", f"postgresql://{DB_USER}@127.0.0.1:1/postgres")
        unreachable = tick(instance, third.cursor)
        assert len(slack_server.texts()) == 2 and "shop" in unreachable.skip_reason.skip_message
        assert f"shop.{ORDERS}" in json.loads(unreachable.cursor)["known"]


def test_a_servers_schedule_backs_up_what_it_finds_at_the_tick_in_one_run(fleet, monkeypatch):
    """The tick asks for one fleet_backup_job run with every database found (not a run per
    database); each step's backup is a materialization of database_backup for its target and an
    entry of its backup history, as a backup_job run's is."""
    from ops_platform.definitions import defs
    from ops_platform.defs.environments import TARGETS
    from ops_platform.defs.fleet.schedules import fleet_retention_schedule, server_backup_schedule
    from ops_platform.defs.insight import records
    from ops_platform.lib.redact import Redactor
    from ops_platform.lib.targets import load_platform_config

    site, config = fleet
    for key, value in site.env.items():
        monkeypatch.setenv(key, value)
    for key in [key for key in os.environ if key not in site.env]:
        monkeypatch.delenv(key)
    schedule = server_backup_schedule(load_platform_config(), "shop")
    assert schedule.name == "fleet_shop_backup_schedule" and schedule.cron_schedule == "0 1 * * *"
    assert schedule.job_name == "fleet_backup_job"
    targets = sorted([f"shop.{ORDERS}", f"shop.{USERS}"])
    with dg.instance_for_test() as instance:
        tick = datetime(2026, 12, 4, 6, 0, tzinfo=timezone.utc)
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
            request = schedule(context)
        assert isinstance(request, dg.RunRequest)
        assert sorted(request.run_config["ops"]["fleet_backup_targets"]["config"]["targets"]) == targets
        assert set(targets) <= set(instance.get_dynamic_partitions(TARGETS))
        assert request.tags["ops_platform/backup_kind"] == "scheduled" and request.tags["ops_platform/server"] == "shop"
        assert request.run_key == "shop-backup-2026-12-04T06:00:00+00:00"

        started = datetime.now(timezone.utc)
        definitions = defs()
        retention = dg.AssetSelection.assets("backup_retention")
        before = dg.evaluate_automation_conditions(defs=definitions, instance=instance, asset_selection=retention)
        job = definitions.resolve_job_def("fleet_backup_job")
        result = job.execute_in_process(run_config=request.run_config, tags={**job.tags, **request.tags},
                                        instance=instance)
        assert result.success
        # each step ran its target's retention after the backup, as backup_job does: no run per database follows
        after = dg.evaluate_automation_conditions(defs=definitions, instance=instance, asset_selection=retention,
                                                  cursor=before.cursor)
        assert after.total_requested == 0
        for target in targets:
            (entry,) = [found for found in site.backups(target) if found["kind"] == "scheduled"]
            assert entry["verified"]
            materialized = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("database_backup"), asset_partitions=[target]),
                limit=1).records
            assert materialized and materialized[0].asset_materialization.metadata["backup_id"].value == entry["id"]
            retained = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("backup_retention"), asset_partitions=[target]),
                limit=1).records
            assert retained and retained[0].run_id == result.run_id
            (run,) = records.backup_runs(instance, target, started, Redactor.from_environ())
            assert run.success and run.environment == target
        # the morning's fleet retention finds every database of the night already retained
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime.now(timezone.utc)) as context:
            morning = fleet_retention_schedule(context)
        assert isinstance(morning, dg.SkipReason) and "retained in the last 12 h" in morning.skip_message



def test_a_fleet_night_says_its_retention_in_its_one_message(fleet, monkeypatch, slack_server):
    """Each target's retention runs in the night's run without a Slack message of its own (a
    night of 100 databases would post 100); the run's one message counts what retention deleted."""
    from ops_platform.definitions import defs
    from ops_platform.lib.artifacts import Manifest, make_backup_id, utc_iso
    from ops_platform.lib.stores import LocalStore

    site, _ = fleet
    for key, value in {**site.env, "SLACK_WEBHOOK_URL": slack_server.webhook_url}.items():
        monkeypatch.setenv(key, value)
    for key in [key for key in os.environ if key not in site.env and key != "SLACK_WEBHOOK_URL"]:
        monkeypatch.delenv(key)
    target = f"shop.{USERS}"
    store = LocalStore(site.backup_dir)
    created = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)
    backup_id = make_backup_id(target, created)
    store.env_dir(target).mkdir(parents=True, exist_ok=True)
    store.path(target, f"{backup_id}.dump.zst").write_bytes(b"x" * 5)
    store.write_manifest(Manifest(id=backup_id, environment=target, kind="scheduled", created_at=utc_iso(created),
                                  database=USERS, server_version="15", pg_dump_version="15", compression="zstd",
                                  compression_level=2, artifact=f"{backup_id}.dump.zst", raw_bytes=10,
                                  stored_bytes=5, sha256="00" * 32, duration_seconds=1.0, verified=False))
    with dg.instance_for_test() as instance:
        result = defs().resolve_job_def("fleet_backup_job").execute_in_process(
            run_config={"ops": {"fleet_backup_targets": {"config": {"targets": [target]}}}}, instance=instance)
    assert result.success
    assert not store.path(target, f"{backup_id}.dump.zst").exists()  # the old unverified backup is gone
    texts = slack_server.texts()
    assert not [text for text in texts if "Backup retention" in text], texts
    (summary,) = [text for text in texts if "*1 database backup succeeded*" in text]
    assert "retention: 1 older backup(s) deleted" in summary and target in summary


@dg.op
def _sees_its_runs_heartbeat(context) -> None:
    from ops_platform.lib.tags import HEARTBEAT, HEARTBEAT_OF

    tags = context.instance.get_run_by_id(context.run_id).tags
    assert tags.get(HEARTBEAT) and tags.get(HEARTBEAT_OF) == context.run_id, tags


def _beating_executor():
    from ops_platform.defs.run_guards import beating

    return beating(dg.in_process_executor)


@dg.job(executor_def=_beating_executor())
def _beating_job():
    _sees_its_runs_heartbeat()


def test_a_fleet_run_beats_from_its_coordinator_and_is_marked_dead_once_silent():
    """The process orchestrating a fleet run's steps beats the run's heartbeat before any step
    runs (a fleet run whose steps wait in a Celery queue is alive); a fleet run that fell silent
    is marked failed by dead_run_sensor, naming its server."""
    from ops_platform.defs.alerts.dead_runs import dead_run_sensor
    from ops_platform.lib.tags import HEARTBEAT, HEARTBEAT_OF, SERVER
    from ops_platform_tests.conftest import platform_resources

    with dg.instance_for_test() as instance:
        with dg.execute_job(dg.reconstructable(_beating_job), instance=instance) as result:
            assert result.success

        silent = instance.create_run_for_job(_fleet_backup_job_started, tags={SERVER: "shop"})
        instance.handle_run_event(silent.run_id, dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_START.value, job_name=silent.job_name))
        with dg.build_sensor_context(instance=instance, resources=platform_resources()) as context:
            assert "no dead runs" in dead_run_sensor(context).skip_message  # it has just started
        instance.add_run_tags(silent.run_id, {HEARTBEAT: "2026-01-01T00:00:00Z", HEARTBEAT_OF: silent.run_id})
        with dg.build_sensor_context(instance=instance, resources=platform_resources()) as context:
            assert "marked 1 dead run(s) failed" in dead_run_sensor(context).skip_message
        assert instance.get_run_by_id(silent.run_id).status == dg.DagsterRunStatus.FAILURE
        failure = instance.get_records_for_run(silent.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records[-1]
        message = failure.event_log_entry.dagster_event.message
        assert "fleet_backup_job of server shop" in message and "no sign of life since 2026-01-01" in message


@dg.job(name="fleet_backup_job")
def _fleet_backup_job_started():
    pass
