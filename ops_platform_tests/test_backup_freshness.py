"""backup_freshness_sensor: one alert when backups stop, a daily reminder, one "fresh again"."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg

from ops_platform.defs.alerts import freshness as freshness_sensors
from ops_platform.defs.resources import (
    BackupBucketResource,
    BackupStorageResource,
    OpsSlackResource,
)
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
    text = slack_server.texts()[0]
    assert "No fresh backup of staging" in text and "1d 6h old" in text and "with 3 h of grace" in text

    cursor = tick(cursor, slack, tmp_path)  # a new context with the stored cursor, as after a restart
    assert len(slack_server.texts()) == 1

    committed_backup(store, "staging", now)
    tick(cursor, slack, tmp_path)
    assert len(slack_server.texts()) == 2 and "fresh again" in slack_server.texts()[1]


def test_no_backup_at_all_is_stale_and_reminders_are_daily():
    now = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
    expected, grace = now - timedelta(hours=5), timedelta(hours=3)
    state: dict = {}
    first = freshness.evaluate("production", [], now, expected, grace, state)
    assert first.kind == freshness.STALE and "no verified backup at all" in freshness_message(first).text
    assert freshness.evaluate("production", [], now + timedelta(hours=23), expected, grace, state) is None
    reminder = freshness.evaluate("production", [], now + timedelta(hours=24), expected, grace, state)
    assert reminder.kind == freshness.REMINDER


NEW_YORK = "America/New_York"


def test_the_limit_follows_the_schedule_across_both_clock_changes():
    grace = timedelta(hours=3)
    # Spring forward (2026-03-08): 02:00 does not exist, the run fires at 03:00 EDT = 07:00 UTC.
    assert freshness.last_expected_run("0 2 * * *", NEW_YORK, datetime(2026, 3, 8, 12, tzinfo=timezone.utc),
                                       grace) == datetime(2026, 3, 8, 7, tzinfo=timezone.utc)
    # Fall back (2026-11-01): 02:00 EST = 07:00 UTC, 25 hours after the previous day's 02:00 EDT.
    assert freshness.last_expected_run("0 2 * * *", NEW_YORK, datetime(2026, 11, 1, 12, tzinfo=timezone.utc),
                                       grace) == datetime(2026, 11, 1, 7, tzinfo=timezone.utc)
    assert freshness.last_expected_run("0 2 * * *", NEW_YORK, datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc),
                                       grace) == datetime(2026, 10, 31, 6, tzinfo=timezone.utc)


def test_a_long_backup_on_the_night_clocks_go_back_is_no_false_alarm(tmp_path):
    store = LocalStore(tmp_path)
    previous = committed_backup(store, "production", datetime(2026, 10, 31, 6, 0, 20, tzinfo=timezone.utc))
    now = datetime(2026, 11, 1, 9, 45, tzinfo=timezone.utc)  # 27.7 h later; tonight's backup still runs
    expected = freshness.last_expected_run("0 2 * * *", NEW_YORK, now, timedelta(hours=3))
    assert freshness.evaluate("production", [previous], now, expected, timedelta(hours=3), {}) is None
    late = datetime(2026, 11, 1, 10, 5, tzinfo=timezone.utc)  # 02:00 EST + 3 h of grace has passed
    expected = freshness.last_expected_run("0 2 * * *", NEW_YORK, late, timedelta(hours=3))
    assert freshness.evaluate("production", [previous], late, expected, timedelta(hours=3), {}).kind == freshness.STALE


def test_a_slow_slack_never_doubles_a_post(tmp_path, slack_server, monkeypatch):
    from ops_platform.defs.alerts import outbox

    monkeypatch.setattr(outbox, "POST_BUDGET_SECONDS", 1.0)
    slack_server.delay_seconds = 0.6
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url, token="xoxb-1", channel="#ops",
                             base_url=slack_server.api_url)
    cursor = tick(None, slack, tmp_path)  # production and staging: no backup at all, both stale
    first = len(slack_server.texts())
    assert 0 < first < 4  # the budget ran out before every destination got both alerts
    slack_server.delay_seconds = 0
    cursor = tick(cursor, slack, tmp_path)
    tick(cursor, slack, tmp_path)
    texts = slack_server.texts()
    assert len(texts) == 4 and len(set(texts)) == 2  # each alert exactly once per destination


def test_corrupt_cursor_starts_over():
    assert freshness.load_state("{not json") == {} and freshness.load_state("[1]") == {}


def test_bad_setting_fails_the_tick_with_a_clear_error(tmp_path, slack_server, monkeypatch):
    import pytest

    from ops_platform.config import ConfigError

    monkeypatch.setenv("BACKUP_FRESHNESS_GRACE_HOURS", "soon")
    with pytest.raises(ConfigError, match="BACKUP_FRESHNESS_GRACE_HOURS must be an integer"):
        tick(None, OpsSlackResource(webhook_url=slack_server.webhook_url), tmp_path)


def test_the_sensor_says_what_it_watches_and_a_scheduled_environment_never_backed_up_alerts_at_once(
        tmp_path, slack_server, monkeypatch):
    """Development has no schedule: it is backed up on demand and not watched, and the skip
    message says so instead of "fresh". A scheduled environment with no backup at all is the most
    urgent case: it alerts on the first tick."""
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url)

    def skip_message(cursor=None):
        context = dg.build_sensor_context(cursor=cursor, resources=platform_resources(
            slack=slack, backup_storage=BackupStorageResource(backup_dir=str(tmp_path)),
            backup_bucket=BackupBucketResource()))
        return freshness_sensors.backup_freshness_sensor(context).skip_message, context.cursor

    monkeypatch.setattr(freshness_sensors, "ENVIRONMENT_NAMES", ["development"])
    message, _ = skip_message()
    assert message == ("nothing to check (no environment has a backup schedule to watch; development is backed "
                       "up on demand (no schedule), so not watched)")
    assert slack_server.texts() == []

    monkeypatch.setattr(freshness_sensors, "ENVIRONMENT_NAMES", ["production", "development"])
    message, cursor = skip_message()
    assert message == ("production backups: stale (watching production; development is backed up on demand "
                       "(no schedule), so not watched)")
    [alert] = slack_server.texts()
    assert "production" in alert and "no verified backup at all" in alert
    message, _ = skip_message(cursor)
    assert message.startswith("backups and drills are fresh or already reported (watching production;")


def test_other_crons_name_their_last_fire_time():
    now = datetime(2026, 12, 3, 18, 40, 30, tzinfo=timezone.utc)  # 13:40:30 in New York
    assert freshness.last_expected_run("0 */6 * * *", NEW_YORK, now, timedelta(hours=3)) == \
        datetime(2026, 12, 3, 11, tzinfo=timezone.utc)  # 06:00 EST; 12:00 EST is within the grace
    assert freshness.last_expected_run("* * * * *", NEW_YORK, now, timedelta(0)) == \
        datetime(2026, 12, 3, 18, 40, tzinfo=timezone.utc)


def test_a_target_found_after_its_last_scheduled_run_waits_for_its_first_night():
    now = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
    expected, grace = now - timedelta(hours=5), timedelta(hours=3)
    assert freshness.evaluate("shop.new", [], now, expected, grace, {}, known_since=now - timedelta(hours=1)) is None
    late = freshness.evaluate("shop.old", [], now, expected, grace, {}, known_since=now - timedelta(days=2))
    assert late.kind == freshness.STALE


def test_the_fleets_scheduled_targets_are_watched_too(tmp_path, slack_server, monkeypatch):
    """A target of ops_platform.yaml with a schedule is watched like production: no alert before
    its first scheduled run, one when the run came and no backup did, "fresh again" after one, and
    its state forgotten once it leaves the file."""
    import json

    config = tmp_path / "ops_platform.yaml"
    config.write_text("targets:\n  analytics:\n    url_env: ANALYTICS_URL\n    schedule: '0 4 * * *'\n")
    monkeypatch.setenv("OPS_PLATFORM_CONFIG", str(config))
    monkeypatch.setenv("ANALYTICS_URL", "postgresql://nobody@127.0.0.1:9/analytics")
    monkeypatch.setattr(freshness_sensors, "ENVIRONMENT_NAMES", ["development"])
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url)
    backups = tmp_path / "backups"

    def tick_with(cursor):
        context = dg.build_sensor_context(cursor=cursor, resources=platform_resources(
            slack=slack, backup_storage=BackupStorageResource(backup_dir=str(backups)),
            backup_bucket=BackupBucketResource()))
        return freshness_sensors.backup_freshness_sensor(context).skip_message, context.cursor

    message, cursor = tick_with(None)
    assert message.startswith("backups and drills are fresh or already reported") and "1 target(s)" in message
    assert slack_server.texts() == []

    state = json.loads(cursor)
    state["known"]["analytics"] = utc_iso(datetime.now(timezone.utc) - timedelta(days=2))
    message, cursor = tick_with(json.dumps(state))
    assert message.startswith("analytics backups: stale")
    [alert] = slack_server.texts()
    assert "analytics" in alert and "no verified backup at all" in alert

    committed_backup(LocalStore(backups), "analytics", datetime.now(timezone.utc))
    _, cursor = tick_with(cursor)
    assert len(slack_server.texts()) == 2 and "fresh again" in slack_server.texts()[1]

    config.write_text("targets: {}\n")
    _, cursor = tick_with(cursor)
    assert "analytics" not in json.dumps(json.loads(cursor))
