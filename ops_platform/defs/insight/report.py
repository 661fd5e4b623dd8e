"""``ops_report``: the morning digest (daily, 09:00 New York, posted only when something needs
attention) and the weekly operations report (Mondays, 09:00), as things stand when it runs: every
target's backups (from the stores and the runs), the environments' uptime and database statistics
(the ones ``insight_history_job`` and ``database_stats_job`` recorded within the hour, else
computed now) and deployment verifications, the other targets' recorded database statistics, and
the health sensor's open incidents."""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum

import dagster as dg

from ops_platform.defs.backups.schedules import BACKUP_CRONS
from ops_platform.defs.databases import DATABASE_KEY
from ops_platform.defs.environments import ENVIRONMENT_NAMES, TARGETS
from ops_platform.defs.health.assets import health_component_specs
from ops_platform.defs.insight import records
from ops_platform.defs.insight.common import INSIGHT_GROUP, asset_url
from ops_platform.defs.insight.database_stats import STATS_CHECK_KEYS, STATS_KEY, failed_snapshot, take_snapshot
from ops_platform.defs.insight.history import (
    FLEET_UPTIME_KEY,
    UPTIME_KEY,
    backup_s3_store,
    compute_fleet_uptime,
    compute_uptime,
    read_backup_history,
)
from ops_platform.defs.resources import BackupBucketResource, BackupStorageResource, OpsSlackResource
from ops_platform.defs.scheduling import OPERATIONS_TIMEZONE
from ops_platform.defs.settings import BackupSettings, InsightSettings
from ops_platform.lib import freshness
from ops_platform.lib.formatting import human_duration
from ops_platform.lib.insight.conditions import SNAPSHOT, WARN, ConditionResult, evaluate
from ops_platform.lib.insight.database_stats import DatabaseSnapshot
from ops_platform.lib.insight.deployments import summarize_deployments
from ops_platform.lib.insight.fleet import ReportTarget, report_targets
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
from ops_platform.lib.targets import load_targets

REPORT_KEY = dg.AssetKey("ops_report")
DAY = 86400.0
WEEK_DAYS = 7
# Recorded uptime and database statistics younger than this are used as they are; older, the report
# computes them itself.
UPTIME_REUSE_SECONDS = 3600.0
STATS_STALE_SECONDS = 3600.0


class ReportKind(Enum):
    digest = "digest"
    weekly = "weekly"


class OpsReportConfig(dg.Config):
    kind: ReportKind = ReportKind.weekly
    post: bool = True


def _age(now: float, then: float) -> str:
    return human_duration(max(0.0, now - then))


def _uptime(instance, environment: str, now: float) -> list[ComponentUptime]:
    """The environment's uptime: the one ``insight_history_job`` computed within the hour (the
    09:00 reports read the 08:40 one), else computed now from the recorded health checks."""
    return _recorded_uptime(instance, UPTIME_KEY, environment, now) or compute_uptime(instance, environment, now)[0]


def _fleet_uptime(instance, now: float) -> dict[str, list[ComponentUptime]]:
    """Each fleet database's uptime, by target: the one ``fleet_uptime`` recorded within the
    hour, else computed now (one pass for the whole fleet)."""
    found = _recorded_uptime(instance, FLEET_UPTIME_KEY, None, now) or compute_fleet_uptime(instance, now)[0]
    by_target: dict[str, list[ComponentUptime]] = {}
    for item in found:
        by_target.setdefault(item.environment, []).append(item)
    return by_target


def _recorded_uptime(instance, key: dg.AssetKey, partition: str | None, now: float) -> list[ComponentUptime]:
    found = records.materialization(instance, key, partition, after=now - UPTIME_REUSE_SECONDS)
    data = records.metadata_json(found.get("uptime")) if found else None
    return [ComponentUptime.from_dict(item) for item in data if isinstance(item, dict)] if isinstance(data, list) else []


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


@dataclass
class ReportSources:
    """What the report reads besides the instance: the backup stores, and the settings and the log
    of a database snapshot it takes itself when the recorded one is missing or stale."""

    backup_storage: BackupStorageResource = field(default_factory=BackupStorageResource)
    backup_bucket: BackupBucketResource = field(default_factory=BackupBucketResource)
    insight_settings: InsightSettings = field(default_factory=InsightSettings)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("ops_platform.report"))


def _database(instance, environment: str, now: float, sources: ReportSources, redactor: Redactor
              ) -> tuple[DatabaseSnapshot | None, list[ConditionResult]]:
    """The newest recorded snapshot and its checks when it is under an hour old, else a snapshot
    taken now (not recorded: database_stats_job records its own), or its one-line failure."""
    latest = records.materialization(instance, STATS_KEY, environment)
    if latest is not None and now - latest.timestamp <= STATS_STALE_SECONDS:
        return _snapshot(latest), _checks(instance, environment)
    try:
        snapshot, day_ago = take_snapshot(instance, environment, sources.insight_settings, now)
    except Exception as error:  # noqa: BLE001 - the report says it, in one line, and goes on
        return None, [failed_snapshot(error, redactor)]
    recorded = f"the newest recorded are {_age(now, latest.timestamp)} old" if latest else "none are recorded"
    sources.log.info(f"{environment}: database statistics taken now ({recorded})")
    return snapshot, sorted(evaluate(snapshot, sources.insight_settings.thresholds(), day_ago),
                            key=lambda check: check.name)


def environment_report(instance: dg.DagsterInstance, environment: str, now: datetime, kind: ReportKind,
                       deployments, incidents, sweep_problem: str | None, grace_hours: int,
                       sources: ReportSources) -> EnvironmentReport:
    """What is known about one environment now: its backup history from the stores and runs, its
    uptime and database statistics (recorded within the hour, else computed now), deployments and
    open incidents."""
    stamp = now.timestamp()
    redactor = Redactor.from_environ()
    report = EnvironmentReport(environment, data_problems=[sweep_problem] if sweep_problem else [])
    report.backups, _ = read_backup_history(instance, environment, now, sources.backup_storage,
                                            sources.backup_bucket, sources.log)
    if kind == ReportKind.weekly:
        report.uptime = _uptime(instance, environment, stamp)
    report.snapshot, report.checks = _database(instance, environment, stamp, sources, redactor)
    if kind == ReportKind.weekly:
        latest = records.materialization(instance, STATS_KEY, environment)
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


def target_report(instance: dg.DagsterInstance, target: ReportTarget, now: datetime, kind: ReportKind,
                  incidents, grace_hours: int, sources: ReportSources, s3=False,
                  uptime: list[ComponentUptime] | None = None) -> EnvironmentReport:
    """What is known about a target beyond the environments: its backup history from the stores
    and runs, expected on its schedule; its database statistics as recorded (the fleet's are
    taken daily before the digest, never by the report); its open health incidents; its
    ``uptime`` (the weekly report's, from ``fleet_uptime``)."""
    stamp = now.timestamp()
    report = EnvironmentReport(target.name, uptime=list(uptime or []))
    report.backups, _ = read_backup_history(instance, target.name, now, sources.backup_storage,
                                            sources.backup_bucket, sources.log, s3=s3, quiet=True)
    latest = records.materialization(instance, STATS_KEY, target.name)
    report.snapshot, report.checks = _snapshot(latest), _checks(instance, target.name)
    if kind == ReportKind.weekly and latest is not None:
        before = records.materialization(instance, STATS_KEY, target.name, before=stamp - WEEK_DAYS * DAY)
        if before is not None and before.timestamp < latest.timestamp:
            report.snapshot_before = _snapshot(before)
    report.open_incidents = [incident for incident in incidents if incident.environment == target.name]
    if target.cron:
        expected = freshness.last_expected_run(target.cron, OPERATIONS_TIMEZONE, now, timedelta(hours=grace_hours))
        report.backup_expected_after = expected - timedelta(hours=grace_hours)
    return report


def targets_to_report(instance: dg.DagsterInstance, log=None) -> list[ReportTarget]:
    """The environments, then every other target: registered partitions of ``targets`` (a
    database gone from its server included, no longer expected to be backed up) and the targets
    listed now (ops_platform.yaml, the servers asked live)."""
    live = load_targets()
    for problem in live.problems:
        (log or logging.getLogger("ops_platform.report")).warning(str(problem))
    schedules = {name: server.schedule for name, server in live.config.servers.items()} if live.config else {}
    return report_targets(ENVIRONMENT_NAMES, instance.get_dynamic_partitions(TARGETS), live, schedules)


def build_reports(instance: dg.DagsterInstance, now: datetime, kind: ReportKind, grace_hours: int,
                  sources: ReportSources | None = None) -> list[EnvironmentReport]:
    """One report per target: the environments in full, then every other target."""
    sources = sources or ReportSources()
    redactor = Redactor.from_environ()
    deployments = records.deployment_records(instance, now - timedelta(days=WEEK_DAYS), redactor)
    incidents, sweep_problem = records.health_incidents(instance, now.timestamp())
    reports = []
    targets = targets_to_report(instance, sources.log)
    any_fleet = any(not t.environment for t in targets)
    s3 = backup_s3_store(sources.backup_bucket, sources.log) if any_fleet else None
    fleet_uptime = _fleet_uptime(instance, now.timestamp()) if any_fleet and kind == ReportKind.weekly else {}
    for target in targets:
        if target.environment:
            reports.append(environment_report(instance, target.name, now, kind, deployments, incidents,
                                              sweep_problem, grace_hours, sources))
        else:
            reports.append(target_report(instance, target, now, kind, incidents, grace_hours, sources, s3,
                                         fleet_uptime.get(target.name)))
    fleet = [report for report in reports if report.environment not in ENVIRONMENT_NAMES]
    if fleet:
        sources.log.info(f"{len(fleet)} targets beyond the environments read: "
                         f"{sum(len(attention_items(report, now)) > 0 for report in fleet)} need attention")
    return reports


@dg.asset(
    key=REPORT_KEY,
    # The sources it reads, not database_stats, uptime and backup_history: it brings stale inputs up to
    # date itself, and the UI asks "Are you sure?" before materializing below an upstream never materialized.
    deps=[dg.AssetDep(DATABASE_KEY), *(spec.key for spec in health_component_specs)],
    group_name=INSIGHT_GROUP,
    kinds={"slack"},
)
def ops_report(context: dg.AssetExecutionContext, config: OpsReportConfig, slack: OpsSlackResource,
               backup_settings: BackupSettings, insight_settings: InsightSettings,
               backup_storage: BackupStorageResource, backup_bucket: BackupBucketResource) -> dg.Output[str]:
    """The operations report of every target (the environments, ops_platform.yaml's targets and
    the databases found on its servers), as Markdown, as things stand when it runs: the
    backups from the stores and the runs, uptime from the recorded health checks and a database
    snapshot (each reused when recorded within the hour). On a weekly run (Mondays): uptime
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
    reports = build_reports(context.instance, now, config.kind, backup_settings.freshness_grace_hours,
                            ReportSources(backup_storage, backup_bucket, insight_settings, context.log))
    notifier = slack.notifier(context.log)
    redactor = Redactor.from_environ()
    if config.kind == ReportKind.weekly:
        weekly = render_weekly_report(reports, now, redactor=redactor, days=WEEK_DAYS,
                                      link=asset_url(REPORT_KEY.to_user_string()))
        markdown, message = weekly.markdown, weekly.slack
    else:
        markdown = render_digest_markdown(reports, now, redactor=redactor)
        message = render_digest(reports, now, redactor=redactor,
                                silence_quiet_days=bool(insight_settings.digest_silence_quiet_days),
                                link=asset_url(REPORT_KEY.to_user_string()))
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
        "targets": dg.MetadataValue.int(len(reports)),
        "targets_needing_attention": dg.MetadataValue.int(
            sum(1 for report in reports if attention_items(report, now))),
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
