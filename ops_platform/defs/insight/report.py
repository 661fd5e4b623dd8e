"""``ops_report``: the morning digest (daily, 09:00 New York, posted only when something needs
attention) and the weekly operations report (Mondays, 09:00), built from the latest
``database_stats``, ``uptime`` and ``backup_history`` of every environment, the deployment
verifications and the health sensor's open incidents."""

from datetime import datetime, timedelta, timezone
from enum import Enum

import dagster as dg

from ops_platform.defs.backups.schedules import BACKUP_CRONS
from ops_platform.defs.environments import ENVIRONMENT_NAMES
from ops_platform.defs.insight import records
from ops_platform.defs.insight.common import INSIGHT_GROUP, asset_url
from ops_platform.defs.insight.database_stats import STATS_CHECK_KEYS, STATS_KEY, STATS_JOB
from ops_platform.defs.insight.history import BACKUP_HISTORY_KEY, HISTORY_JOB, UPTIME_KEY
from ops_platform.defs.resources import OpsSlackResource
from ops_platform.defs.scheduling import OPERATIONS_TIMEZONE
from ops_platform.defs.settings import BackupSettings, InsightSettings
from ops_platform.lib import freshness
from ops_platform.lib.formatting import human_duration
from ops_platform.lib.insight.backup_history import BackupHistory
from ops_platform.lib.insight.conditions import SNAPSHOT, WARN, ConditionResult
from ops_platform.lib.insight.database_stats import DatabaseSnapshot
from ops_platform.lib.insight.deployments import summarize_deployments
from ops_platform.lib.insight.uptime import ComponentUptime
from ops_platform.lib.messages.reports import (
    EnvironmentReport,
    attention_items,
    render_digest,
    render_digest_markdown,
    render_weekly_report,
)
from ops_platform.lib.redact import Redactor
from ops_platform.lib.tags import KIND

REPORT_KEY = dg.AssetKey("ops_report")
DAY = 86400.0
WEEK_DAYS = 7
# Older than this, a daily upstream (uptime, backup_history) missed its run: the report says so.
DAILY_STALE_SECONDS = 26 * 3600.0
STATS_STALE_SECONDS = 3600.0


class ReportKind(Enum):
    digest = "digest"
    weekly = "weekly"


class OpsReportConfig(dg.Config):
    kind: ReportKind = ReportKind.weekly
    post: bool = True


def _age(now: float, then: float) -> str:
    return human_duration(max(0.0, now - then))


def _daily_upstream(instance, key: dg.AssetKey, environment: str, now: float, what: str, problems: list[str]):
    """The latest materialization of a daily upstream, and a data problem when it is missing or stale."""
    found = records.materialization(instance, key, environment)
    if found is None:
        problems.append(f"{what} of {environment} has never been computed ({HISTORY_JOB} runs daily "
                        "at 08:40)")
    elif now - found.timestamp > DAILY_STALE_SECONDS:
        problems.append(f"{what} of {environment} was last computed {_age(now, found.timestamp)} ago "
                        f"(is {HISTORY_JOB} running?)")
    return found


def _checks(instance, environment: str) -> list[ConditionResult]:
    """The latest snapshot's check results; only the failed `snapshot` check when it could not be taken."""
    latest = records.latest_check_results(instance, STATS_CHECK_KEYS, environment)
    snapshot = latest.get(SNAPSHOT)
    if snapshot is None:
        return []
    if not snapshot.passed:
        names = [SNAPSHOT]
    else:
        target = snapshot.target_materialization_data
        names = [name for name, evaluation in latest.items()
                 if target is None or (evaluation.target_materialization_data is not None
                                       and evaluation.target_materialization_data.storage_id == target.storage_id)]
    return [ConditionResult(name, latest[name].passed,
                            WARN if latest[name].severity == dg.AssetCheckSeverity.WARN else "error",
                            latest[name].description or "") for name in sorted(names)]


def _snapshot(found) -> DatabaseSnapshot | None:
    data = records.metadata_json(found.get("snapshot")) if found else None
    try:
        return DatabaseSnapshot.from_dict(data) if isinstance(data, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def environment_report(instance: dg.DagsterInstance, environment: str, now: datetime, kind: ReportKind,
                       deployments, incidents, sweep_problem: str | None, grace_hours: int) -> EnvironmentReport:
    """What is known about one environment, read from the upstream assets' latest materializations."""
    stamp = now.timestamp()
    problems = [sweep_problem] if sweep_problem else []
    report = EnvironmentReport(environment, data_problems=problems)
    found = _daily_upstream(instance, BACKUP_HISTORY_KEY, environment, stamp, "backup history", problems)
    data = records.metadata_json(found.get("history")) if found else None
    if isinstance(data, dict):
        report.backups = BackupHistory.from_dict(data)
    found = _daily_upstream(instance, UPTIME_KEY, environment, stamp, "uptime", problems)
    data = records.metadata_json(found.get("uptime")) if found else None
    if isinstance(data, list):
        report.uptime = [ComponentUptime.from_dict(item) for item in data if isinstance(item, dict)]
    latest = records.materialization(instance, STATS_KEY, environment)
    report.snapshot = _snapshot(latest)
    report.checks = _checks(instance, environment)
    snapshot_failed = any(check.name == SNAPSHOT and not check.passed for check in report.checks)
    if latest is None and not snapshot_failed:
        problems.append(f"database statistics of {environment} have never been taken ({STATS_JOB} runs every "
                        "15 minutes)")
    elif latest is not None and stamp - latest.timestamp > STATS_STALE_SECONDS and not snapshot_failed:
        problems.append(f"the newest database statistics of {environment} are {_age(stamp, latest.timestamp)} old")
    if kind == ReportKind.weekly:
        before = (records.materialization(instance, STATS_KEY, environment, before=stamp - WEEK_DAYS * DAY)
                  or records.materialization(instance, STATS_KEY, environment, after=stamp - WEEK_DAYS * DAY,
                                             oldest=True))
        if before is not None and latest is not None and before.timestamp < latest.timestamp:
            report.snapshot_before = _snapshot(before)
    days = WEEK_DAYS if kind == ReportKind.weekly else 1
    report.deployments = summarize_deployments(environment, deployments, now, days=days)
    report.open_incidents = [incident for incident in incidents if incident.environment == environment]
    if environment in BACKUP_CRONS:
        expected = freshness.last_expected_run(BACKUP_CRONS[environment], OPERATIONS_TIMEZONE, now,
                                               timedelta(hours=grace_hours))
        report.backup_expected_after = expected - timedelta(hours=grace_hours)
    return report


def build_reports(instance: dg.DagsterInstance, now: datetime, kind: ReportKind, grace_hours: int
                  ) -> list[EnvironmentReport]:
    redactor = Redactor.from_environ()
    deployments = records.deployment_records(instance, now - timedelta(days=WEEK_DAYS), redactor)
    incidents, sweep_problem = records.health_incidents(instance, now.timestamp())
    return [environment_report(instance, environment, now, kind, deployments, incidents, sweep_problem, grace_hours)
            for environment in ENVIRONMENT_NAMES]


@dg.asset(
    key=REPORT_KEY,
    deps=[STATS_KEY, UPTIME_KEY, BACKUP_HISTORY_KEY],
    group_name=INSIGHT_GROUP,
    kinds={"slack"},
)
def ops_report(context: dg.AssetExecutionContext, config: OpsReportConfig, slack: OpsSlackResource,
               backup_settings: BackupSettings, insight_settings: InsightSettings) -> dg.Output[str]:
    """The operations report of every environment, as Markdown. On a weekly run (Mondays): uptime
    and incidents, deployments (verifications, failures, rollbacks), backups and drills, database
    growth and its biggest tables, the slowest statements; a summary goes to Slack. On a digest run
    (every morning): only what needs attention (failed or missing backups, open incidents, failing
    database checks, failed deployments, stale insight data), posted to Slack when there is any;
    on a good day one short line, or nothing with DIGEST_SILENCE_QUIET_DAYS=1. Every run is kept:
    the materialization history holds every week's report."""
    # Only the digest's own setting stops the report: a bad threshold fails database_stats, and the
    # digest is where that failed `snapshot` check is reported.
    bad = [line for line in insight_settings.invalid_settings if line.startswith("DIGEST_")]
    if bad:
        raise dg.Failure(description=f"operations report: {bad[0]}", allow_retries=False)
    now = datetime.now(timezone.utc)
    reports = build_reports(context.instance, now, config.kind, backup_settings.freshness_grace_hours)
    notifier = slack.notifier(context.log)
    redactor = Redactor.from_environ()
    if config.kind == ReportKind.weekly:
        weekly = render_weekly_report(reports, now, redactor=redactor, days=WEEK_DAYS,
                                      link=asset_url(REPORT_KEY.to_user_string()))
        markdown, message = weekly.markdown, weekly.slack
    else:
        markdown = render_digest_markdown(reports, now, redactor=redactor)
        message = render_digest(reports, now, redactor=redactor,
                                silence_quiet_days=bool(insight_settings.digest_silence_quiet_days))
    attention = sum(len(attention_items(report, now)) for report in reports)
    posted = False
    if message is not None and config.post:
        delivery = notifier.post(message)
        posted = bool(delivery.delivered)
    context.log.info(f"{config.kind.value} report: {attention} items need attention; "
                     + ("posted to Slack" if posted else "not posted" + ("" if message else " (a quiet day)")))
    return dg.Output(markdown, metadata={
        "kind": config.kind.value,
        "report": dg.MetadataValue.md(markdown),
        "attention_items": dg.MetadataValue.int(attention),
        "posted": posted,
        "environments": dg.MetadataValue.json([report.environment for report in reports]),
    })


ops_report_job = dg.define_asset_job(
    "ops_report_job",
    selection=dg.AssetSelection.assets(ops_report),
    description="Build the operations report: the morning digest or the weekly report (config `kind`).",
    tags={KIND: "insight"},
)


def _report_schedule(name: str, cron: str, kind: ReportKind, description: str) -> dg.ScheduleDefinition:
    @dg.schedule(name=name, cron_schedule=cron, execution_timezone=OPERATIONS_TIMEZONE, job=ops_report_job,
                 default_status=dg.DefaultScheduleStatus.RUNNING, description=description)
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_key=f"{kind.value}-{context.scheduled_execution_time.isoformat()}",
                             run_config={"ops": {"ops_report": {"config": {"kind": kind.value}}}},
                             tags={"ops_platform/report": kind.value})

    return _schedule


ops_digest_schedule = _report_schedule(
    "ops_digest_schedule", "0 9 * * *", ReportKind.digest,
    f"The morning digest at 09:00 ({OPERATIONS_TIMEZONE}): posted only when something needs attention.")
ops_weekly_report_schedule = _report_schedule(
    "ops_weekly_report_schedule", "0 9 * * 1", ReportKind.weekly,
    f"The weekly operations report on Mondays at 09:00 ({OPERATIONS_TIMEZONE}), a summary posted to Slack.")
