"""backup_freshness_sensor: one alert when backups stop, a daily reminder, one "fresh again"."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg

from ops_platform.defs.alerts import freshness as freshness_sensors
from ops_platform.defs.resources import BackupBucketResource, BackupStorageResource, OpsSlackResource
from ops_platform.lib import freshness
from ops_platform.lib.artifacts import Manifest, make_backup_id, utc_iso
from ops_platform.lib.messages.freshness import freshness_message
from ops_platform.lib.stores import LocalStore
from ops_platform_tests.conftest import platform_resources


def committed_backup(store: LocalStore, environment: str, created: datetime, verified: bool = True) -> Manifest:
    backup_id = make_backup_id(environment, created)
    manifest = Manifest(id=backup_id, environment=environment, kind="scheduled", created_at=utc_iso(created),
                        database="app", server_version="15", pg_dump_version="15", compression="zstd",
                        compression_level=3, artifact=f"{backup_id}.dump.zst", raw_bytes=10, stored_bytes=5,
                        sha256="00" * 32, duration_seconds=1.0, verified=verified)
    store.env_dir(environment).mkdir(parents=True, exist_ok=True)
    store.path(environment, manifest.artifact).write_bytes(b"x" * 5)
    store.write_manifest(manifest)
    return manifest


def tick(cursor, slack, backup_dir):
    context = dg.build_sensor_context(cursor=cursor, resources=platform_resources(
        slack=slack, backup_storage=BackupStorageResource(backup_dir=str(backup_dir)),
        backup_bucket=BackupBucketResource()))
    freshness_sensors.backup_freshness_sensor(context)
    return context.cursor


def test_stale_backups_alert_once_survive_a_restart_and_recover(tmp_path, slack_server):
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url)
    store = LocalStore(tmp_path)
    now = datetime.now(timezone.utc)
    committed_backup(store, "production", now - timedelta(hours=2))
    committed_backup(store, "staging", now - timedelta(hours=30))
    committed_backup(store, "staging", now - timedelta(hours=1), verified=False)

    cursor = tick(None, slack, tmp_path)
    assert len(slack_server.texts()) == 1
    assert "No fresh backup of staging" in slack_server.texts()[0] and "1d 6h old (limit 26 hours)" in slack_server.texts()[0]

    cursor = tick(cursor, slack, tmp_path)  # a new context with the stored cursor, as after a restart
    assert len(slack_server.texts()) == 1

    committed_backup(store, "staging", now)
    tick(cursor, slack, tmp_path)
    assert len(slack_server.texts()) == 2 and "fresh again" in slack_server.texts()[1]


def test_no_backup_at_all_is_stale_and_reminders_are_daily():
    now = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
    state: dict = {}
    first = freshness.evaluate("production", [], now, timedelta(hours=26), state)
    assert first.kind == freshness.STALE and "no verified backup at all" in freshness_message(first, timedelta(hours=26)).text
    assert freshness.evaluate("production", [], now + timedelta(hours=23), timedelta(hours=26), state) is None
    reminder = freshness.evaluate("production", [], now + timedelta(hours=24), timedelta(hours=26), state)
    assert reminder.kind == freshness.REMINDER


def test_corrupt_cursor_starts_over():
    assert freshness.load_state("{not json") == {} and freshness.load_state("[1]") == {}


def test_bad_max_age_setting_fails_the_tick_with_a_clear_error(tmp_path, slack_server, monkeypatch):
    import pytest

    from ops_platform.config import ConfigError

    monkeypatch.setenv("BACKUP_MAX_AGE_HOURS", "soon")
    with pytest.raises(ConfigError, match="BACKUP_MAX_AGE_HOURS must be an integer"):
        tick(None, OpsSlackResource(webhook_url=slack_server.webhook_url), tmp_path)
