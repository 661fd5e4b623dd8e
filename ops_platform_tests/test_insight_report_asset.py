"""ops_report through ops_report_job and the real Slack client: a quiet morning (one line, or
nothing), a bad morning (failed backup, rolled-back deployment, open health incident, failing
database check), and the weekly report kept as the asset's Markdown, with no secret in any body."""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest

from ops_platform.defs.backups.assets import backup_job, database_backup
from ops_platform.defs.retention.assets import backup_retention
from ops_platform.defs.deployments.jobs import verify_deployment_job
from ops_platform.defs.health import sensors as health_sensors
from ops_platform.defs.insight import report as report_defs
from ops_platform.defs.resources import BackupStorageResource, OpsSlackResource
from ops_platform_tests.conftest import (
    DB_PASSWORD,
    SLACK_TOKEN,
    database_url,
    free_port,
    platform_resources,
    reset_database,
)
from ops_platform_tests.dagster_private import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    RegisteredCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteRepositoryOrigin,
    SensorInstigatorData,
)
from ops_platform_tests.insight_helpers import (
    failure_description,
    hours_ago,
    posted,
    record_health,
    run_job,
    run_report,
    run_stats,
    write_backup,
)

ENVIRONMENTS = ("production", "staging", "development")
PLANTED = "tok-Insight-Report-5Rq9"


@pytest.fixture(scope="module", autouse=True)
def test_databases():
    for environment in ENVIRONMENTS:
        reset_database(environment)
    yield


@pytest.fixture
def bot_slack(slack_server):
    return OpsSlackResource(token=SLACK_TOKEN, base_url=slack_server.api_url, channel="#ops", max_retries=1)


@pytest.fixture
def quiet_instance(instance, tmp_path):
    """Fresh backups of the scheduled environments, and every upstream materialized once."""
    root = tmp_path / "backups"
    for environment in ("production", "staging"):
        write_backup(root, environment, hours_ago(1))
    storage = BackupStorageResource(backup_dir=str(root))
    for environment in ENVIRONMENTS:
        assert run_stats(instance, environment).success
        assert run_job(instance, "insight_history_job", environment, backup_storage=storage).success
    return instance, storage


def report_markdown(result) -> tuple[str, dict]:
    [materialization] = result.asset_materializations_for_node("ops_report")
    return result.output_for_node("ops_report"), materialization.metadata


def test_a_quiet_morning_is_one_line_or_nothing(quiet_instance, bot_slack, slack_server, monkeypatch):
    instance, storage = quiet_instance
    result = run_report(instance, "digest", slack=bot_slack, backup_storage=storage)
    assert result.success
    [text] = posted(slack_server)
    assert text.startswith(":white_check_mark: Ops digest for ") and text.endswith(
        ": nothing needs attention (production, staging, development).")
    markdown, metadata = report_markdown(result)
    assert metadata["kind"].value == "digest" and metadata["posted"].value is True
    assert metadata["attention_items"].value == 0 and "Nothing needs attention." in markdown
    slack_server.reset()
    monkeypatch.setenv("DIGEST_SILENCE_QUIET_DAYS", "1")
    result = run_report(instance, "digest", slack=bot_slack, backup_storage=storage)
    assert result.success and posted(slack_server) == []
    assert report_markdown(result)[1]["posted"].value is False


def _fail_a_backup(instance, monkeypatch, storage):
    """A real backup_job run of staging against an unreachable server whose URL holds the password."""
    monkeypatch.setenv("STAGING_DATABASE_URL", f"postgresql://ops_test:{DB_PASSWORD}@127.0.0.1:{free_port()}/app")
    job = dg.Definitions(assets=[database_backup, backup_retention], jobs=[backup_job],
                         resources=platform_resources(slack=OpsSlackResource(), backup_storage=storage)
                         ).resolve_job_def("backup_job")
    assert not job.execute_in_process(instance=instance, partition_key="staging", raise_on_error=False).success
    monkeypatch.setenv("STAGING_DATABASE_URL", database_url("staging"))


def _roll_back_a_deployment(instance, monkeypatch, health_server):
    monkeypatch.setenv("PRODUCTION_API_URL", health_server.url)
    monkeypatch.setenv("PRODUCTION_ROLLBACK_COMMAND", "echo restoring the previous release")
    health_server.version = "1.4.9"
    result = verify_deployment_job.execute_in_process(
        instance=instance, raise_on_error=False, resources=platform_resources(slack=OpsSlackResource()),
        run_config={"ops": {"verify_deployment": {"config": {
            "environment": "production", "expected_version": f"1.5.0+{PLANTED}", "timeout_seconds": 0.5,
            "poll_interval_seconds": 0.1}}}})
    assert not result.success


def _open_a_health_incident(instance):
    """Three failed api checks read by the real health sensor; its cursor stored as the daemon stores it."""
    now = hours_ago(0).timestamp()
    for offset in (900, 600, 300):
        record_health(instance, now - offset, "production", "api", ok=False)
    context = dg.build_sensor_context(instance=instance, resources=platform_resources(slack=OpsSlackResource()))
    health_sensors.health_alert_sensor(context)  # the first tick replays history quietly
    record_health(instance, now - 60, "production", "api", ok=False)
    context = dg.build_sensor_context(instance=instance, cursor=context.cursor,
                                      resources=platform_resources(slack=OpsSlackResource()))
    health_sensors.health_alert_sensor(context)
    origin = RemoteInstigatorOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("ops_platform"),
                                                           "__repository__"), "health_alert_sensor")
    instance.add_instigator_state(InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING,
                                                  SensorInstigatorData(cursor=context.cursor)))


def test_a_bad_morning_lists_what_needs_attention_without_secrets(quiet_instance, bot_slack, slack_server,
                                                                   health_server, monkeypatch):
    instance, storage = quiet_instance
    monkeypatch.setenv("INSIGHT_TEST_TOKEN", PLANTED)
    _fail_a_backup(instance, monkeypatch, storage)
    _roll_back_a_deployment(instance, monkeypatch, health_server)
    _open_a_health_incident(instance)
    assert run_job(instance, "insight_history_job", "staging", backup_storage=storage).success
    monkeypatch.setenv("STATS_IDLE_IN_TRANSACTION_MINUTES", "0.005")
    with psycopg.connect(database_url("production"), application_name="stuck_worker") as session:
        session.execute("SELECT 1")
        import time
        time.sleep(0.6)
        assert run_stats(instance, "production").success
    slack_server.reset()
    result = run_report(instance, "digest", slack=bot_slack, backup_storage=storage)
    assert result.success
    [text] = posted(slack_server)
    assert text.startswith(":sunrise: *Ops digest for ") and "items need attention" in text
    for expected in ("*production*", ":rotating_light: incident open for", "api: HTTP 503",
                     "database check *idle_in_transaction*: pid", "application stuck_worker",
                     "deployment of `1.5.0+***` failed and was rolled back",
                     "*staging*", "1 backup run failed in the last 24 h: backup of staging failed at connect:",
                     "rolled back: not healthy at version 1.5.0+*** within 0.5s: /health reports version '1.4.9'",
                     "*development*: nothing needs attention"):
        assert expected in text, expected
    markdown, metadata = report_markdown(result)
    assert metadata["attention_items"].value == 4 and "**idle_in_transaction**" in markdown
    for body in (slack_server.all_bodies(), markdown, str(metadata)):
        assert DB_PASSWORD not in body and PLANTED not in body and SLACK_TOKEN not in body

    slack_server.reset()
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://dagster.example:3000")
    weekly = run_report(instance, "weekly", slack=bot_slack, backup_storage=storage)
    assert weekly.success
    markdown, metadata = report_markdown(weekly)
    assert metadata["kind"].value == "weekly" and isinstance(metadata["report"], dg.MarkdownMetadataValue)
    assert metadata["report"].value == markdown
    assert markdown.startswith("# Weekly operations report, ")
    for expected in ("## production", "### Uptime and incidents", "Open incident: api, for",
                     "1 deployment verified: 0 succeeded, 1 failed (1 rolled back, 0 rollbacks failed).",
                     "### Backups and drills", "Newest verified backup: `production-", "### Database",
                     "| public.orders |", "### Slowest statements", "pg_stat_statements is not installed",
                     "## staging", "| failed runs | 1 | 1 |"):
        assert expected in markdown, expected
    [summary] = posted(slack_server)
    assert summary.startswith(":bar_chart: *Weekly operations report, ")
    assert "*production*:" in summary and "1 incident still open" in summary
    assert summary.endswith("<http://dagster.example:3000/assets/ops_report|Full report in Dagster>")
    assert len(summary) < 2000
    for body in (slack_server.all_bodies(), markdown):
        assert DB_PASSWORD not in body and PLANTED not in body and SLACK_TOKEN not in body


def test_on_day_one_the_report_reflects_what_has_happened(instance, bot_slack, slack_server, tmp_path, monkeypatch):
    """No insight_history_job and no database_stats_job yet (they run at 08:40 and every 15 minutes):
    the report reads the backups, the recorded health checks and the database itself."""
    root = tmp_path / "backups"
    backup = write_backup(root, "production", hours_ago(2))
    storage = BackupStorageResource(backup_dir=str(root))
    now = hours_ago(0).timestamp()
    for offset in (900, 600, 300):
        record_health(instance, now - offset, "production", "postgres", ok=True)
    result = run_report(instance, "weekly", slack=bot_slack, backup_storage=storage)
    assert result.success
    markdown, _ = report_markdown(result)
    assert "never been computed" not in markdown and "never been taken" not in markdown
    production = markdown.split("## production")[1].split("## staging")[0]
    assert "No health-check history." not in production and "| postgres |" in production
    assert "No backup history." not in production and f"Newest verified backup: `{backup.id}`" in production
    assert "### Database" in production and "| public.orders |" in production

    monkeypatch.setenv("STATS_CONNECTIONS_PERCENT", "eighty")  # fails the snapshot, not the report
    slack_server.reset()
    result = run_report(instance, "digest", slack=bot_slack, backup_storage=storage)
    assert result.success
    [text] = posted(slack_server)
    assert "database check *snapshot*: STATS_CONNECTIONS_PERCENT must be a number, got 'eighty'" in text
    monkeypatch.setenv("DIGEST_SILENCE_QUIET_DAYS", "yes")
    result = run_report(instance, "weekly", slack=bot_slack)
    assert not result.success
    assert failure_description(result) == "operations report: DIGEST_SILENCE_QUIET_DAYS must be an integer, got 'yes'"


def test_the_report_schedules(instance):
    from datetime import datetime, timezone

    when = datetime(2026, 1, 12, 14, 0, tzinfo=timezone.utc)  # Monday 09:00 in New York
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
    digest = report_defs.ops_digest_schedule.evaluate_tick(context).run_requests[0]
    weekly = report_defs.ops_weekly_report_schedule.evaluate_tick(context).run_requests[0]
    assert digest.run_config == {"ops": {"ops_report": {"config": {"kind": "digest"}}}}
    assert weekly.run_config == {"ops": {"ops_report": {"config": {"kind": "weekly"}}}}
    assert digest.run_key != weekly.run_key and "2026-01-12T14:00:00+00:00" in weekly.run_key
    assert report_defs.ops_weekly_report_schedule.cron_schedule == "0 9 * * 1"
    assert report_defs.ops_weekly_report_schedule.execution_timezone == "America/New_York"
