"""Backup history and deployment summaries on fabricated manifests, runs and drills."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ops_platform.lib.artifacts import Manifest, make_backup_id, utc_iso
from ops_platform.lib.insight.backup_history import BackupRun, DrillResult, summarize_backups
from ops_platform.lib.insight.deployments import DeploymentRecord, summarize_deployments

NOW = datetime(2026, 1, 12, 9, 0, tzinfo=timezone.utc)
MB = 1024 * 1024


def manifest(days_ago: float, *, environment="production", stored=100 * MB, duration=60.0, verified=True,
             s3=True, kind="scheduled") -> Manifest:
    created = NOW - timedelta(days=days_ago)
    backup_id = make_backup_id(environment, created)
    locations = [f"/backups/{environment}/{backup_id}.dump.zst"]
    if s3:
        locations.append(f"s3://bucket/backups/{environment}/{backup_id}.dump.zst")
    return Manifest(id=backup_id, environment=environment, kind=kind, created_at=utc_iso(created), database="app",
                    server_version="15.20", pg_dump_version="15.20", compression="zstd", compression_level=3,
                    artifact=f"{backup_id}.dump.zst", raw_bytes=stored * 3, stored_bytes=stored, sha256="0" * 64,
                    duration_seconds=duration, verified=verified, locations=locations)


def sample_manifests():
    """A daily backup for 30 days (days 1..30 ago), growing 1 MB and 1 s a day into the present;
    the one 2 days ago failed verification; the 20 older than 10 days are local only."""
    return [manifest(day + 0.5, stored=(200 - day) * MB, duration=100.0 - day, verified=day != 2, s3=day <= 10)
            for day in range(30)] + [manifest(1, environment="staging")]


def test_made_verified_failed_over_1_7_and_30_days():
    runs = [BackupRun(NOW - timedelta(days=3), "production", False, "pg_dump: connection refused"),
            BackupRun(NOW - timedelta(days=20), "production", False, "disk full"),
            BackupRun(NOW - timedelta(days=1), "staging", False, "other environment")]
    history = summarize_backups("production", sample_manifests(), runs, [], NOW)
    day, week, month = history.window(1), history.window(7), history.window(30)
    assert (day.made, day.verified, day.failed) == (1, 1, 0)
    assert (week.made, week.verified, week.failed) == (7, 6, 1)
    assert week.last_failure_reason == "pg_dump: connection refused"
    assert (month.made, month.verified, month.failed) == (30, 29, 2)


def test_size_and_duration_trends_newest_against_oldest():
    week = summarize_backups("production", sample_manifests(), [], [], NOW).window(7)
    assert week.newest_bytes == 200 * MB
    assert week.size_change_percent == round(100 * (200 - 194) / 194, 2)
    assert week.duration_change_percent == round(100 * (100 - 94) / 94, 2)
    assert week.mean_duration_seconds == 97.0


def test_newest_verified_age_and_bytes_held_locally_and_in_s3():
    history = summarize_backups("production", sample_manifests(), [], [], NOW)
    assert history.newest_verified_age_seconds == 0.5 * 86400
    assert history.newest_verified_id == make_backup_id("production", NOW - timedelta(days=0.5))
    assert history.local_count == 30 and history.s3_count == 11
    assert history.local_bytes == sum((200 - d) * MB for d in range(30))
    assert history.s3_bytes == sum((200 - d) * MB for d in range(11))


def test_last_successful_drill_even_when_the_latest_failed():
    drills = [DrillResult(NOW - timedelta(days=10), "production", True, "production-20260102T090000Z", 300.0),
              DrillResult(NOW - timedelta(hours=5), "production", False, reason="restore timed out"),
              DrillResult(NOW - timedelta(hours=1), "staging", True)]
    history = summarize_backups("production", sample_manifests(), [], drills, NOW)
    assert history.last_successful_drill_at == utc_iso(NOW - timedelta(days=10))
    assert history.last_successful_drill_backup == "production-20260102T090000Z"
    assert history.last_drill_success is False and history.last_drill_reason == "restore timed out"


def test_no_backups_at_all():
    history = summarize_backups("production", [], [], [], NOW)
    assert history.newest_verified_id is None and history.newest_verified_age_seconds is None
    assert history.window(7).made == 0 and history.window(7).size_change_percent is None
    assert history.to_dict()["windows"][0]["days"] == 1


def test_deployment_summary_counts_outcomes_in_the_period():
    records = [DeploymentRecord(NOW - timedelta(days=1), "production", "1.4.0", "succeeded"),
               DeploymentRecord(NOW - timedelta(days=2), "production", "1.3.9", "rolled_back", "health never 1.3.9"),
               DeploymentRecord(NOW - timedelta(days=3), "production", "1.3.8", "rollback_failed", "hook 500"),
               DeploymentRecord(NOW - timedelta(days=4), "production", "1.3.7", "failed", "timeout"),
               DeploymentRecord(NOW - timedelta(days=9), "production", "1.3.0", "failed", "old"),
               DeploymentRecord(NOW - timedelta(days=1), "staging", "1.4.0", "failed", "other environment")]
    summary = summarize_deployments("production", records, NOW, days=7)
    assert (summary.verifications, summary.succeeded, summary.failed) == (4, 1, 3)
    assert (summary.rolled_back, summary.rollback_failed) == (1, 1)
    assert [f["version"] for f in summary.failures] == ["1.3.9", "1.3.8", "1.3.7"]
