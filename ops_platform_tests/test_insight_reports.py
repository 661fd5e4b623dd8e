"""The morning digest and the weekly report for a quiet week and a bad week, with secrets planted
in the environment and in the data that must never reach the text."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from ops_platform.config import ConfigError
from ops_platform.lib.insight.backup_history import BackupRun, DrillResult, summarize_backups
from ops_platform.lib.insight.conditions import StatsThresholds, evaluate
from ops_platform.lib.insight.database_stats import (
    ConnectionStats,
    DatabaseAge,
    DatabaseSnapshot,
    SessionInfo,
    StatementStats,
    TableStats,
)
from ops_platform.lib.insight.deployments import DeploymentRecord, summarize_deployments
from ops_platform.lib.insight.uptime import uptime_from_results
from ops_platform.lib.messages.reports import (
    DigestSettings,
    EnvironmentReport,
    OpenIncident,
    attention_items,
    render_digest,
    render_digest_markdown,
    render_weekly_report,
)
from ops_platform_tests.test_insight_backup_history import manifest

NOW = datetime(2026, 1, 12, 9, 0, tzinfo=timezone.utc)
TOKEN = "tok-Insight-Fake-9Q7Z2"
DB_SECRET = "pw-Insight-Db-4471"
MB = 1024 * 1024


@pytest.fixture(autouse=True)
def planted_secrets(monkeypatch):
    monkeypatch.setenv("INSIGHT_FAKE_API_TOKEN", TOKEN)
    monkeypatch.setenv("PRODUCTION_DATABASE_URL", f"postgresql://app:{DB_SECRET}@db.internal:5432/app")


def snapshot(at: datetime, size: int, tables: dict[str, int], *, idle_minutes: float | None = None,
             connections: int = 20, statements=(), hit=1_000_000, read=10_000) -> DatabaseSnapshot:
    idle = None if idle_minutes is None else SessionInfo(4242, "app", "worker", "app", "idle in transaction",
                                                         idle_minutes * 60, idle_minutes * 60)
    return DatabaseSnapshot(
        database="app", collected_at=at.isoformat().replace("+00:00", "Z"), server_version="15.20",
        server_version_num=150020, in_recovery=False, size_bytes=size,
        connections=ConnectionStats(100, 3, 0, connections, {"active": connections}),
        counters={"database_oid": 1, "blks_hit": hit, "blks_read": read, "deadlocks": 1, "temp_bytes": 5 * MB,
                  "temp_files": 2, "transactions": 10_000, "stats_reset": None},
        oldest_transaction=idle, oldest_idle_in_transaction=idle,
        database_ages=[DatabaseAge("app", 5_000_000, 10)],
        tables=[TableStats("public", name, total, total // 2, total // 3, total - total // 2 - total // 3, 1000)
                for name, total in tables.items()],
        table_count=len(tables), statements=list(statements))


def health(outage_steps: int):
    """A week of 5-minute checks for api, frontend and redis; api down for ``outage_steps`` checks."""
    start = NOW.timestamp() - 7 * 86400
    for i in range(2016):
        at = start + i * 300
        for component in ("api", "frontend", "redis"):
            ok = not (component == "api" and 1000 <= i < 1000 + outage_steps)
            yield (at, "production", component, ok, 0.04 if component != "api" else 0.12)


def quiet_week() -> EnvironmentReport:
    manifests = [manifest(d + 0.3) for d in range(30)]
    before = snapshot(NOW - timedelta(days=7), 500 * MB, {"orders": 300 * MB, "customers": 100 * MB})
    now = snapshot(NOW, 510 * MB, {"orders": 306 * MB, "customers": 101 * MB}, hit=2_000_000, read=12_000,
                   statements=[StatementStats(1, "SELECT * FROM orders WHERE id = $1", 90_000, 45_000.0, 0.5, 90_000)])
    return EnvironmentReport(
        "production", backup_expected_after=NOW - timedelta(hours=10),
        backups=summarize_backups("production", manifests, [], [DrillResult(NOW - timedelta(days=3), "production",
                                                                           True, manifests[3].id, 240.0)], NOW),
        deployments=summarize_deployments("production", [DeploymentRecord(NOW - timedelta(days=2), "production",
                                                                          "1.4.0", "succeeded")], NOW),
        checks=evaluate(now, StatsThresholds(), before.size_bytes),
        uptime=uptime_from_results(health(0), NOW), snapshot=now, snapshot_before=before)


def bad_week() -> EnvironmentReport:
    manifests = [manifest(d + 2) for d in range(30)]  # nothing in the last two days
    runs = [BackupRun(NOW - timedelta(hours=6), "production", False,
                      f"pg_dump failed: connection to postgresql://app:{DB_SECRET}@db.internal/app refused")]
    drills = [DrillResult(NOW - timedelta(hours=3), "production", False, reason=f"S3 denied token {TOKEN}")]
    deployments = [DeploymentRecord(NOW - timedelta(hours=20), "production", "1.5.0", "rolled_back",
                                    f"health never reported 1.5.0; hook said Authorization: Bearer {TOKEN}")]
    before = snapshot(NOW - timedelta(days=1), 500 * MB, {"orders": 300 * MB})
    now = snapshot(NOW, 700 * MB, {"orders": 480 * MB, "events": 50 * MB}, idle_minutes=45, connections=90,
                   statements=[StatementStats(7, f"ALTER ROLE app PASSWORD '{DB_SECRET}'", 1, 5.0, 5.0, 0),
                               StatementStats(8, "SELECT pg_sleep($1)", 10, 90_000.0, 9000.0, 10)])
    return EnvironmentReport(
        "production", backup_expected_after=NOW - timedelta(hours=10),
        backups=summarize_backups("production", manifests, runs, drills, NOW),
        deployments=summarize_deployments("production", deployments, NOW),
        open_incidents=[OpenIncident("production", {"api": f"HTTP 503 from https://api.example.com/health?token={TOKEN}"},
                                     NOW.timestamp() - 2 * 3600)],
        checks=evaluate(now, StatsThresholds(), before.size_bytes),
        uptime=uptime_from_results(health(6), NOW), snapshot=now, snapshot_before=before)


def assert_no_secret(*texts: str):
    for text in texts:
        assert TOKEN not in text and DB_SECRET not in text


def test_quiet_day_digest_is_one_line_or_nothing():
    report = quiet_week()
    assert attention_items(report, NOW) == []
    message = render_digest([report, EnvironmentReport("staging")], NOW)
    assert message.text == ":white_check_mark: Ops digest for 2026-01-12: nothing needs attention (production, staging)."
    assert render_digest([report], NOW, silence_quiet_days=True) is None


def test_bad_day_digest_lists_everything_that_needs_attention_without_secrets():
    message = render_digest([bad_week(), replace(quiet_week(), environment="staging")], NOW)
    text = message.text
    assert text.startswith(":sunrise: *Ops digest for 2026-01-12*: 7 items need attention")
    for expected in ("1 backup run failed in the last 24 h: pg_dump failed",
                     ("the newest verified backup `production-20260110T090000Z` is 2d 0h old; one was expected "
                      "after 2026-01-11T23:00:00Z"),
                     "the restore drill failed: S3 denied token ***",
                     "incident open for 2h 00m: api: HTTP 503 from https://api.example.com/health?token=***",
                     "database check *connections*: 90 of 97 usable connections in use",
                     "database check *idle_in_transaction*: pid 4242 (application worker, user app) idle in transaction for 45m 00s",
                     "deployment of `1.5.0` failed and was rolled back: health never reported 1.5.0",
                     "*staging*: nothing needs attention"):
        assert expected in text
    assert "dead_tuples" not in text and "database_growth" not in text  # warnings wait for the weekly report
    assert_no_secret(text, str(message.blocks))


def test_quiet_weekly_report():
    report = render_weekly_report([quiet_week()], NOW)
    markdown = report.markdown
    assert markdown.startswith("# Weekly operations report, 2026-01-05 – 2026-01-12\n")
    for expected in ("## production", "### Uptime and incidents", "| api | 100.00 % | 100.00 % | 100.00 % | 0 |",
                     "1 deployment verified: 1 succeeded, 0 failed", "| made | 7 | 30 |", "| verified | 7 | 30 |",
                     "Held: 2.9 GB locally (30 backups), 2.9 GB in S3 (30 backups).",
                     "Last successful restore drill: 2026-01-09T09:00:00Z",
                     "`app` (PostgreSQL 15.20): 510.0 MB, 10.0 MB (+2.0 %) since 2026-01-05T09:00:00Z",
                     "| public.orders | 306.0 MB | 6.0 MB (+2.0 %) | 1,000 |", "All database checks pass.",
                     "cache hit ratio 99.80 %", "| 45.0s | 90,000 | 0.5 ms | `SELECT * FROM orders WHERE id = $1` |"):
        assert expected in markdown, expected
    assert report.slack.text.splitlines()[1] == (
        "*production*: lowest availability 100.00 % (api), 0 incidents; 1 deployment (0 failed, 0 rolled back); "
        "backups 7/7 verified, 0 failed runs; last good drill 2026-01-09; database 510.0 MB (+2.0 %)")


def test_bad_weekly_report_shows_the_trouble_without_secrets():
    report = render_weekly_report([bad_week()], NOW)
    markdown, slack = report.markdown, report.slack.text
    for expected in ("| api | 100.00 % | 99.70 % | 99.70 % | 1 | 30m 00s | 30m 00s | 30m 00s | 120 ms | 120 ms | 100 % |",
                     "Open incident: api, for 2h 00m.",
                     "1 deployment verified: 0 succeeded, 1 failed (1 rolled back, 0 rollbacks failed).",
                     "| failed runs | 1 | 1 |", "The latest drill (2026-01-12T06:00:00Z) failed: S3 denied token ***.",
                     "700.0 MB, 200.0 MB (+40.0 %)", "| public.events | 50.0 MB | new in the top list |",
                     "**database_growth** (warn)", "**connections** (error)",
                     "`ALTER ROLE (text not shown)`", "| 1m 30s | 10 | 9000.0 ms | `SELECT pg_sleep($1)` |"):
        assert expected in markdown, expected
    assert "lowest availability 99.70 % (api), 1 incident; 1 incident still open" in slack
    assert "failing checks: connections, idle_in_transaction, database_growth" in slack
    assert len(slack) < 1000
    assert_no_secret(markdown, slack, str(report.slack.blocks))


def test_weekly_report_with_nothing_known():
    report = render_weekly_report([EnvironmentReport("staging")], NOW)
    assert "No health-check history." in report.markdown and "No database snapshot." in report.markdown
    assert report.slack.text.endswith("*staging*: no data")


def test_digest_settings_from_the_environment():
    assert DigestSettings.from_environ({}) == DigestSettings(False)
    assert DigestSettings.from_environ({"DIGEST_SILENCE_QUIET_DAYS": "1"}) == DigestSettings(True)
    with pytest.raises(ConfigError, match="^DIGEST_SILENCE_QUIET_DAYS must be an integer, got 'yes'$"):
        DigestSettings.from_environ({"DIGEST_SILENCE_QUIET_DAYS": "yes"})


def test_backups_are_only_expected_where_they_are_scheduled_and_stale_data_is_named():
    unscheduled = replace(bad_week(), backup_expected_after=None, open_incidents=[], checks=[], deployments=None)
    items = attention_items(unscheduled, NOW)
    assert not any("verified backup" in item for item in items)  # no schedule: no freshness expectation
    assert any("backup run failed" in item for item in items)
    empty = EnvironmentReport("staging", backup_expected_after=NOW - timedelta(hours=10),
                              backups=summarize_backups("staging", [], [], [], NOW),
                              data_problems=["uptime of staging was last computed 3d 0h ago"])
    assert attention_items(empty, NOW) == [":grey_question: uptime of staging was last computed 3d 0h ago",
                                           ":hourglass: there is no verified backup at all"]
    weekly = render_weekly_report([empty], NOW)
    assert "> - uptime of staging was last computed 3d 0h ago" in weekly.markdown
    assert "1 data problem" in weekly.slack.text


def test_open_incidents_and_stopped_sweeps_from_the_health_sensor_cursor():
    import json

    from ops_platform.lib.insight.open_incidents import from_health_cursor

    cursor = json.dumps({"after": 9, "tracker": {"environments": {
        "production": {"incident": {"started_at": 1000.0, "components": ["api", "redis"], "announced": True},
                       "components": {"api": {"failures": 4, "reason": "HTTP 503"},
                                      "redis": {"failures": 0, "reason": "PING timed out"}}},
        "staging": {"incident": {"started_at": 2000.0, "components": ["api"], "announced": False},
                    "components": {"api": {"failures": 2, "reason": "HTTP 500"}}}}},
        "watch": {"incident": {"condition": "stopped", "started_at": NOW.timestamp() - 3600, "announced": True}}})
    incidents, problem = from_health_cursor(cursor, NOW.timestamp())
    assert [(i.environment, i.components, i.started_at) for i in incidents] == [("production", {"api": "HTTP 503"}, 1000.0)]
    assert problem == ("health checks have stopped since 2026-01-12 08:00 UTC (1h 00m): uptime and incidents are "
                       "not being recorded")
    assert from_health_cursor("not json", 0.0) == ([], None) and from_health_cursor(None, 0.0) == ([], None)


def test_the_digest_as_markdown():
    markdown = render_digest_markdown([bad_week(), EnvironmentReport("staging")], NOW)
    assert markdown.startswith("# Morning digest, 2026-01-12\n\n## production\n\n- 1 backup run failed")
    assert "- database check **connections**: 90 of 97 usable connections in use" in markdown
    assert "## staging\n\nNothing needs attention." in markdown
    assert_no_secret(markdown)


def fleet_report(name: str, *, failed_reason: str | None = None, incident: bool = False,
                 unverified: bool = False) -> EnvironmentReport:
    """A target backed up half an hour ago; a failed run, an open incident or an unverified newest backup."""
    manifests = [manifest(0.02, environment=name)]
    if unverified:
        manifests.append(manifest(0.01, environment=name, verified=False))
    runs = [BackupRun(NOW - timedelta(hours=2), name, False, failed_reason)] if failed_reason else []
    return EnvironmentReport(
        name, backup_expected_after=NOW - timedelta(hours=8),
        backups=summarize_backups(name, manifests, runs, [], NOW),
        open_incidents=[OpenIncident(name, {"postgres": "database does not exist"}, NOW.timestamp() - 3600)]
        if incident else [])


def test_a_fleet_digest_groups_the_quiet_targets_and_lists_the_others_most_urgent_first():
    reports = [fleet_report(f"shop.db{i:03d}") for i in range(96)]
    reports[10] = fleet_report("shop.db010", unverified=True)
    reports[20] = fleet_report("shop.db020", failed_reason="pg_dump: connection refused")
    reports[30] = fleet_report("shop.db030", incident=True)
    reports[40] = fleet_report("shop.db040", failed_reason="disk full", unverified=True)
    reports += [EnvironmentReport(name) for name in ("production", "staging", "development", "analytics")]

    message = render_digest(reports, NOW)

    lines = message.text.splitlines()
    assert lines[0] == ":sunrise: *Ops digest for 2026-01-12*: 5 items need attention in 4 targets of 100"
    assert lines[1] == (":white_check_mark: 92 targets backed up on schedule, all verified; "
                        "4 targets without a schedule or a backup, nothing failed")
    assert [line for line in lines if line.startswith("*")] == [
        "*shop.db030*", "*shop.db040*", "*shop.db020*", "*shop.db010*"]
    assert lines[lines.index("*shop.db040*") + 1].startswith("• :x: 1 backup run failed")
    assert "shop.db011" not in message.text and "production" not in message.text
    markdown = render_digest_markdown(reports, NOW)
    assert markdown.index("## shop.db030") < markdown.index("## shop.db010")
    assert "shop.db011" in markdown.split("## Nothing needs attention")[1]


def test_a_long_fleet_digest_is_cut_into_sections_within_slacks_limits():
    reason = "pg_dump: error: query failed: " + "x" * 180
    reports = [fleet_report(f"shop.db{i:03d}", failed_reason=reason) for i in range(100)]

    message = render_digest(reports, NOW, link="http://dagster.example/assets/ops_report")

    assert 1 < len(message.blocks) <= 50
    assert all(len(block["text"]["text"]) <= 3000 for block in message.blocks)
    assert message.text.count("• :x:") == 20
    assert "…and 80 more targets needing attention: shop.db020, shop.db021" in message.text
    assert message.blocks[-1]["text"]["text"].endswith("<http://dagster.example/assets/ops_report|Full digest in Dagster>")


def test_a_fleet_weekly_report_tables_the_quiet_targets():
    reports = [fleet_report(f"shop.db{i:03d}") for i in range(99)] + [
        fleet_report("shop.db099", failed_reason="pg_dump: connection refused")]

    weekly = render_weekly_report(reports, NOW)

    assert weekly.slack.text.splitlines()[1:] == [
        ":white_check_mark: 99 targets backed up on schedule, all verified",
        "*shop.db099*: backups 1/1 verified, 1 failed run; no good drill on record"]
    assert "## shop.db099" in weekly.markdown and "## shop.db000" not in weekly.markdown
    assert "| shop.db000 | 1/1 |" in weekly.markdown


def test_the_reports_cover_the_environments_then_every_target_expected_on_its_schedule():
    from ops_platform.lib.insight.fleet import ReportTarget, report_targets
    from ops_platform.lib.targets import SERVER_PROBLEM, Problem, Target, TargetsResult

    live = TargetsResult([Target("production", "environment", "0 2 * * *", "PRODUCTION_DATABASE_URL"),
                          Target("analytics", "file", "0 4 * * *", "ANALYTICS_URL"),
                          Target("shop.orders", "discovered:shop", "0 1 * * *", "SHOP_URL", "shop", "orders")],
                         [Problem(SERVER_PROBLEM, "server eu: cannot connect", "eu")])
    registered = ["production", "shop.orders", "shop.gone", "eu.tenant", "analytics"]

    found = report_targets(["production", "development"], registered, live, {"shop": "0 1 * * *", "eu": "0 3 * * *"})

    assert found == [ReportTarget("production", "0 2 * * *", True), ReportTarget("development", None, True),
                     ReportTarget("analytics", "0 4 * * *"), ReportTarget("eu.tenant", "0 3 * * *"),
                     ReportTarget("shop.gone", None), ReportTarget("shop.orders", "0 1 * * *")]
