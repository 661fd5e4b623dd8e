"""The backup_retention asset, its place after database_backup, its schedules and the CLI."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from ops_platform.cli import main
from ops_platform.config import ENVIRONMENT_PREFIXES
from ops_platform.defs.backups import assets as backup_assets
from ops_platform.defs.resources import BackupBucketResource, BackupStorageResource
from ops_platform.defs.retention import assets as retention_assets
from ops_platform.defs.retention import schedules as retention_schedules
from ops_platform.lib.stores import LocalStore, S3Store
from ops_platform_tests.conftest import (
    DB_PASSWORD,
    DB_USER,
    PG_HOST,
    PG_PORT,
    S3_BUCKET,
    SAMPLE_SCHEMA,
    platform_resources,
    psql,
)
from ops_platform_tests.test_retention_stores import put_backup

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def private_database(monkeypatch):
    """A uniquely named database for an environment, with the sample tables (or none), so these
    tests do not race other test runs that reset the shared test databases."""
    created = []

    def make(environment: str, empty: bool = False) -> str:
        name = f"ops_test_retention_{environment}_{uuid.uuid4().hex[:8]}"
        psql(f'CREATE DATABASE "{name}" OWNER {DB_USER}')
        created.append(name)
        if not empty:
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG_HOST, "-U", DB_USER, "-d", name,
                            "-c", SAMPLE_SCHEMA.format(customers=50, orders=200)], check=True, capture_output=True)
        monkeypatch.setenv(f"{ENVIRONMENT_PREFIXES[environment]}DATABASE_URL",
                           f"postgresql://{DB_USER}:{DB_PASSWORD}@{PG_HOST}:{PG_PORT}/{name}")
        return name

    yield make
    for name in created:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed_old_backups(backup_dir, s3_client, environment: str, count: int = 10) -> list[str]:
    local, s3 = LocalStore(backup_dir), S3Store(s3_client, S3_BUCKET, "backups")
    return [put_backup(NOW - timedelta(days=40 + n), local=local, s3=s3, environment=environment)
            for n in range(count)]


def materialize(assets, environment, instance, slack, backup_dir, run_config=None):
    resources = platform_resources(slack=slack, backup_storage=BackupStorageResource(backup_dir=str(backup_dir)),
                                   backup_bucket=BackupBucketResource(bucket=S3_BUCKET))
    return dg.materialize(assets, partition_key=environment, instance=instance, raise_on_error=False,
                          resources=resources, run_config=run_config)


def ids_in(backup_dir, environment) -> list[str]:
    return [m.id for m in LocalStore(backup_dir).list_manifests(environment).manifests]


def test_retention_runs_after_a_good_backup(private_database, instance, slack_resource, slack_server, backup_dir,
                                           s3_bucket):
    private_database("production")
    old = seed_old_backups(backup_dir, s3_bucket, "production")
    result = materialize([backup_assets.database_backup, retention_assets.backup_retention], "production",
                         instance, slack_resource, backup_dir)
    assert result.success
    new_id = result.asset_materializations_for_node("database_backup")[0].metadata["backup_id"].value
    metadata = result.asset_materializations_for_node("backup_retention")[0].metadata
    assert metadata["kept"].value == 7 and metadata["deleted"].value == 4
    assert metadata["newest_kept"].value == new_id and metadata["oldest_kept"].value == old[5]
    assert metadata["bytes_freed"].value > 4 * 2 * 64  # four backups, two copies each, plus manifests
    assert ids_in(backup_dir, "production") == [new_id] + old[:6]
    assert {f"backups/production/{old[-1]}.dump.zst"}.isdisjoint(
        {item["Key"] for item in s3_bucket.list_objects_v2(Bucket=S3_BUCKET)["Contents"]})
    retention_texts = [text for text in slack_server.texts() if "Backup retention" in text]
    assert len(retention_texts) == 2  # bot message and webhook
    assert "deleted 4" in retention_texts[0] and old[-1] in retention_texts[0]


def real_backups(environment: str, backup_dir, s3_client, days_old: list[int]) -> list[str]:
    """Backups made by the real pipeline from the environment's database, dated in the past."""
    from ops_platform.config import get_environment
    from ops_platform.lib.backup import perform_backup

    local, s3 = LocalStore(backup_dir), S3Store(s3_client, S3_BUCKET, "backups")
    return [perform_backup(get_environment(environment), local, s3, kind="scheduled",
                           now=lambda days=days: NOW - timedelta(days=days)).manifest.id for days in days_old]


def test_keep_min_1_keeps_the_intact_backup_and_alerts_once_about_the_corrupt_ones(
        private_database, monkeypatch, instance, slack_resource, slack_server, backup_dir, s3_bucket):
    """The issue's case: the newest artifact byte-flipped, the second truncated to half, and
    BACKUP_KEEP_MIN=1. Today the corrupt newest is kept as the floor and the intact ones deleted."""
    private_database("production")
    monkeypatch.setenv("BACKUP_KEEP_MIN", "1")
    ids = real_backups("production", backup_dir, s3_bucket, [40, 41, 42, 43])
    flipped = backup_dir / "production" / f"{ids[0]}.dump.zst"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    truncated = backup_dir / "production" / f"{ids[1]}.dump.zst"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])

    result = materialize([retention_assets.backup_retention], "production", instance, slack_resource, backup_dir)
    assert result.success
    metadata = result.asset_materializations_for_node("backup_retention")[0].metadata
    assert [entry["id"] for entry in metadata["deleted_backups"].value] == [ids[3]]
    assert metadata["newest_kept"].value == metadata["oldest_kept"].value == ids[2]
    assert [(c["id"], c["location"]) for c in metadata["corrupt_backups"].value] == [(ids[0], "local"), (ids[1], "local")]
    assert {(c["id"], c["location"], c["status"]) for c in metadata["rechecked"].value} >= {
        (ids[2], "local", "ok"), (ids[2], "s3", "ok")}
    assert sum("left for a person" in warning for warning in metadata["warnings"].value) == 2
    assert ids_in(backup_dir, "production") == ids[:3]
    texts = [text for text in slack_server.texts() if "Backup retention" in text]
    assert len(texts) == 2  # bot message and webhook
    assert "2 corrupt backup copies found" in texts[0] and "deleted 1" in texts[0]
    assert ids[0] in texts[0] and ids[1] in texts[0] and "a person should look" in texts[0]

    # The next day there is again something to delete: the same copies are re-checked and reported
    # in the run, but not alerted again.
    slack_server.reset()
    older = put_backup(NOW - timedelta(days=50), local=LocalStore(backup_dir),
                       s3=S3Store(s3_bucket, S3_BUCKET, "backups"))
    result = materialize([retention_assets.backup_retention], "production", instance, slack_resource, backup_dir)
    assert result.success
    metadata = result.asset_materializations_for_node("backup_retention")[0].metadata
    assert [entry["id"] for entry in metadata["deleted_backups"].value] == [older]
    assert len(metadata["corrupt_backups"].value) == 2
    assert sum("left for a person" in warning for warning in metadata["warnings"].value) == 2
    texts = [text for text in slack_server.texts() if "Backup retention" in text]
    assert len(texts) == 2 and "deleted 1" in texts[0] and "corrupt" not in texts[0]
    assert ids_in(backup_dir, "production") == ids[:3]


def test_retention_is_skipped_after_a_backup_that_failed_its_blocking_check(
        private_database, instance, slack_resource, backup_dir, s3_bucket):
    private_database("staging", empty=True)
    old = seed_old_backups(backup_dir, s3_bucket, "staging")
    result = materialize([backup_assets.database_backup, retention_assets.backup_retention], "staging",
                         instance, slack_resource, backup_dir)
    assert not result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["not_empty"] is False
    assert result.asset_materializations_for_node("backup_retention") == []
    assert set(old) <= set(ids_in(backup_dir, "staging"))


def test_nothing_deleted_means_no_slack_message(instance, slack_resource, slack_server, backup_dir, s3_bucket):
    local = LocalStore(backup_dir)
    for n in range(3):
        put_backup(NOW - timedelta(days=n + 1), local=local)
    result = materialize([retention_assets.backup_retention], "production", instance, slack_resource, backup_dir)
    assert result.success
    assert result.asset_materializations_for_node("backup_retention")[0].metadata["deleted"].value == 0
    assert slack_server.texts() == []


def test_retention_drops_scratch_databases_a_killed_restore_or_drill_left(private_database, instance, slack_resource,
                                                                         slack_server, backup_dir, s3_bucket):
    """A restore or drill killed mid-way leaves <db>__restore_<stamp>: retention drops it and says
    so; one whose restore is still running (its lock held) is left alone."""
    from ops_platform.lib.restore import databases

    live = private_database("staging")
    url = f"postgresql://{DB_USER}:{DB_PASSWORD}@{PG_HOST}:{PG_PORT}/{live}"
    left = [databases.scratch_name(live, "20260101T000000Z"), databases.scratch_name(live + "__drill", "20260101T000000Z")]
    running = databases.scratch_name(live + "__other", "20260101T000000Z")
    for name in [*left, running]:
        psql(f'CREATE DATABASE "{name}" OWNER {DB_USER}')

    def existing() -> list[str]:
        wanted = ", ".join(f"'{name}'" for name in [*left, running])
        return [name for name in [*left, running]
                if name in psql(f"SELECT datname FROM pg_database WHERE datname IN ({wanted})").splitlines()]

    try:
        with databases.restore_lock(url, live + "__drill"):
            held = materialize([retention_assets.backup_retention], "staging", instance, slack_resource, backup_dir)
        assert held.success
        assert existing() == [left[1], running]  # the drill's lock is held: its scratch is in use
        result = materialize([retention_assets.backup_retention], "staging", instance, slack_resource, backup_dir)
        assert result.success
        metadata = result.asset_materializations_for_node("backup_retention")[0].metadata
        assert metadata["dropped_leftovers"].value == [left[1]]
        assert existing() == [running]
        assert any(f"`{left[0]}`" in text and "left by a stopped restore or drill" in text
                   for text in slack_server.texts())
    finally:
        for name in [*left, running]:
            psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_oldest_and_newest_kept_say_so_when_no_verified_backup_is_kept(instance, slack_resource, backup_dir,
                                                                       s3_bucket, monkeypatch, capsys):
    """Never a blank value on the asset page: the ids, or in words that none is kept; null in --json."""
    result = materialize([retention_assets.backup_retention], "production", instance, slack_resource, backup_dir)
    metadata = result.asset_materializations_for_node("backup_retention")[0].metadata
    assert metadata["oldest_kept"].value == metadata["newest_kept"].value == "none: no verified backup is kept"
    monkeypatch.setenv("BACKUP_DIR", str(backup_dir))
    assert main(["retention", "production", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["oldest_kept"] is None and summary["newest_kept"] is None and summary["kept"] == 0


def test_bad_setting_fails_the_run_with_one_line_and_deletes_nothing(monkeypatch, instance, slack_resource,
                                                                     backup_dir, s3_bucket):
    old = seed_old_backups(backup_dir, s3_bucket, "production")
    monkeypatch.setenv("BACKUP_RETENTION_DAYS", "-5")
    result = materialize([retention_assets.backup_retention], "production", instance, slack_resource, backup_dir)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_failure_data.user_failure_data.description == (
        "retention for production: BACKUP_RETENTION_DAYS must be >= 1, got -5")
    assert ids_in(backup_dir, "production") == old


def test_as_of_in_the_future_is_refused_by_the_asset(instance, slack_resource, backup_dir, s3_bucket):
    old = seed_old_backups(backup_dir, s3_bucket, "production")
    config = {"ops": {"backup_retention": {"config": {"as_of": "2099-01-01T00:00:00Z"}}}}
    result = materialize([retention_assets.backup_retention], "production", instance, slack_resource, backup_dir,
                         run_config=config)
    assert not result.success
    assert ids_in(backup_dir, "production") == old


def test_daily_schedules_are_running_and_keyed_by_time():
    by_name = {s.name: s for s in retention_schedules.retention_schedules}
    assert set(by_name) == {"production_retention_schedule", "staging_retention_schedule",
                            "development_retention_schedule"}
    schedule = by_name["production_retention_schedule"]
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "30 4 * * *" and schedule.execution_timezone == "America/New_York"
    when = datetime(2026, 3, 8, 9, 30, tzinfo=timezone.utc)
    with dg.instance_for_test() as instance, dg.build_schedule_context(
            instance=instance, scheduled_execution_time=when) as context:
        request = schedule(context)
        assert "production" in instance.get_dynamic_partitions("targets")
    assert request.partition_key == "production"
    assert request.run_key == f"production-retention-{when.isoformat()}"
    assert schedule.job_name == "retention_job"


# The CLI.

@pytest.fixture
def cli_store(monkeypatch, backup_dir, s3_bucket):
    monkeypatch.setenv("BACKUP_DIR", str(backup_dir))
    return seed_old_backups(backup_dir, s3_bucket, "production")


def test_cli_dry_run_prints_the_plan_and_deletes_nothing(cli_store, backup_dir, capsys):
    assert main(["retention", "production", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("DELETE ") == 3 and out.count("KEEP ") == 7
    assert "3 to delete" in out
    assert "SIZE is every file of the backup in every location (artifacts and manifests)" in out
    assert f"re-checked against their manifests before deleting: {cli_store[0]} (local ok, s3 ok)" in out
    assert ids_in(backup_dir, "production") == cli_store

    as_of = (NOW - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert main(["retention", "production", "--dry-run", "--as-of", as_of, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["as_of"] == as_of and plan["summary"]["deleted"] == 0
    assert all(item["reason"].startswith("within the 30-day") for item in plan["items"])
    assert {f["location"] for f in plan["items"][0]["files"]} == {"local", "s3"}
    assert ids_in(backup_dir, "production") == cli_store


def test_cli_applies_the_plan_as_a_dagster_run(cli_store, backup_dir, capsys):
    assert main(["retention", "production", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["deleted"] == 3 and summary["kept"] == 7
    assert [entry["id"] for entry in summary["deleted_backups"]] == cli_store[7:]
    assert ids_in(backup_dir, "production") == cli_store[:7]
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(summary["run_id"])
    assert run.job_name == "retention_job" and run.tags["dagster/partition"] == "production"


@pytest.mark.parametrize("argv, env, message", [
    (["retention", "production", "--dry-run", "--as-of", "last tuesday"], {},
     "--as-of must be an ISO-8601 time such as 2027-01-15T00:00:00Z, got 'last tuesday'"),
    (["retention", "production", "--as-of", "2027-02-30"], {}, "--as-of must be an ISO-8601 time"),
    (["retention", "production"], {"BACKUP_KEEP_MIN": "-2"}, "BACKUP_KEEP_MIN must be >= 1, got -2"),
    (["retention", "production", "--dry-run"], {"PRODUCTION_BACKUP_RETENTION_DAYS": "thirty"},
     "PRODUCTION_BACKUP_RETENTION_DAYS must be an integer, got 'thirty'"),
    (["retention", "qa", "--dry-run"], {}, "unknown environment 'qa'"),
    (["retention", "production", "--as-of", "2099-01-01T00:00:00Z"], {}, "refusing to apply retention as of"),
])
def test_cli_bad_input_is_one_line_and_deletes_nothing(backup_dir, capsys, monkeypatch, argv, env, message):
    monkeypatch.setenv("BACKUP_DIR", str(backup_dir))
    monkeypatch.delenv("AWS_S3_BUCKET")
    local = LocalStore(backup_dir)
    cli_store = [put_backup(NOW - timedelta(days=40 + n), local=local) for n in range(10)]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err
    assert "Traceback" not in captured.err
    assert ids_in(backup_dir, "production") == cli_store
