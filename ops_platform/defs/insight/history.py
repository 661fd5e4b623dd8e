"""``uptime`` and ``backup_history``: once a day, per environment, what the recorded health checks
and the backups have been doing, as numbers the UI plots and the reports read back; and
``fleet_uptime``: the same availability figures for every fleet database, in one pass."""

import os
import time
from datetime import datetime, timedelta, timezone

import dagster as dg

from ops_platform.config import ConfigError
from ops_platform.defs.databases import identity
from ops_platform.defs.environments import ENVIRONMENT_NAMES, TARGETS, ensure_partitions, environment_partitions
from ops_platform.defs.health.assets import (
    FLEET_CHECK_KEY,
    FLEET_KEY,
    SWEEP_INTERVAL_MINUTES,
    health_check_specs,
    health_component_specs,
)
from ops_platform.defs.insight import records
from ops_platform.defs.insight.common import INSIGHT_GROUP
from ops_platform.defs.resources import BackupBucketResource, BackupStorageResource
from ops_platform.defs.scheduling import OPERATIONS_TIMEZONE
from ops_platform.lib.artifacts import parse_utc
from ops_platform.lib.catalog import merge_listings
from ops_platform.lib.formatting import human_bytes, human_duration
from ops_platform.lib.insight.backup_history import BackupHistory, DrillResult, summarize_backups
from ops_platform.lib.insight.uptime import DAY, DEFAULT_WINDOWS, ComponentUptime, UptimeAccumulator
from ops_platform.lib.redact import Redactor
from ops_platform.lib.tags import KIND

UPTIME_KEY = dg.AssetKey("uptime")
FLEET_UPTIME_KEY = dg.AssetKey("fleet_uptime")
BACKUP_HISTORY_KEY = dg.AssetKey("backup_history")
HISTORY_JOB = "insight_history_job"
HISTORY_CRON = "40 8 * * *"  # before the 09:00 digest, after the night's backups and drills
GAP_FACTOR = 2.0
HISTORY_DAYS = 30

UPTIME_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("component", "string"),
    dg.TableColumn("availability_24h", "string"), dg.TableColumn("availability_7d", "string"),
    dg.TableColumn("availability_30d", "string"), dg.TableColumn("incidents_7d", "int"),
    dg.TableColumn("longest_down_7d", "string"), dg.TableColumn("total_down_7d", "string"),
    dg.TableColumn("time_to_recover_7d", "string"), dg.TableColumn("p50_ms_7d", "float"),
    dg.TableColumn("p95_ms_7d", "float"), dg.TableColumn("observed_7d", "string"),
    dg.TableColumn("open_outage", "string"),
])

FLEET_UPTIME_SCHEMA = dg.TableSchema(columns=[dg.TableColumn("target", "string"), *UPTIME_SCHEMA.columns[1:]])


def environment_check_keys(environment: str) -> list[dg.AssetCheckKey]:
    """The recorded health checks of one environment's components."""
    components = {spec.key for spec in health_component_specs if spec.metadata.get("environment") == environment}
    return [spec.key for spec in health_check_specs if spec.asset_key in components]


def _accumulator(now: float) -> UptimeAccumulator:
    return UptimeAccumulator(now, expected_interval_seconds=SWEEP_INTERVAL_MINUTES * 60.0,
                             max_gap_factor=GAP_FACTOR, windows=DEFAULT_WINDOWS)


def _history_start(now: float) -> float:
    """The oldest result that still covers part of the 30 days."""
    return now - HISTORY_DAYS * DAY - SWEEP_INTERVAL_MINUTES * 60.0 * GAP_FACTOR


def compute_uptime(instance: dg.DagsterInstance, environment: str, now: float,
                   check_keys: list[dg.AssetCheckKey] | None = None) -> tuple[list[ComponentUptime], int]:
    """Every component's figures over 24 h, 7 and 30 days, streamed from the check history: each
    check's results are paged newest first into a spool, then replayed oldest first."""
    accumulator, read = _accumulator(now), 0
    for check_key in environment_check_keys(environment) if check_keys is None else check_keys:
        component, spool = records.spool_health_results(instance, check_key, _history_start(now))
        with spool:
            read += spool.count
            for at, ok, latency, _ in spool.oldest_first():
                accumulator.add(at, environment, component or check_key.name, ok, latency)
    return accumulator.results(), read


def compute_fleet_uptime(instance: dg.DagsterInstance, now: float) -> tuple[list[ComponentUptime], int]:
    """Each fleet database's figures (component ``postgres``, under its target's name), from the
    history of the ``fleet_databases`` check in one pass; and how many results were read."""
    accumulator = _accumulator(now)
    names, spool = records.spool_results_by_database(instance, FLEET_CHECK_KEY, _history_start(now))
    with spool:
        for at, ok, latency, key in spool.oldest_first():
            accumulator.add(at, names[key], "postgres", ok, latency)
    return accumulator.results(), spool.count


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100.0 * value, 3)


def _uptime_row(windows: dict[str, ComponentUptime]) -> dict:
    """A table row's figures (after its first column, the component or the target)."""
    week = windows["7d"]
    return {
        **{f"availability_{label}": windows[label].availability_percent for label in ("24h", "7d", "30d")},
        "incidents_7d": week.incidents,
        "longest_down_7d": human_duration(week.longest_downtime_seconds),
        "total_down_7d": human_duration(week.down_seconds),
        "time_to_recover_7d": human_duration(week.mean_time_to_recover_seconds)
        if week.mean_time_to_recover_seconds is not None else "–",
        "p50_ms_7d": round(week.latency_p50 * 1000, 1) if week.latency_p50 is not None else None,
        "p95_ms_7d": round(week.latency_p95 * 1000, 1) if week.latency_p95 is not None else None,
        "observed_7d": f"{100 * week.coverage:.0f} %",
        "open_outage": human_duration(week.open_outage_seconds) if week.open_outage_seconds else "",
    }


def _week_totals(weeks: list[ComponentUptime]) -> dict:
    weeks = [week for week in weeks if week.availability is not None]
    if not weeks:
        return {}
    return {"availability_7d_lowest": dg.MetadataValue.float(_percent(min(w.availability for w in weeks))),
            "incidents_7d": dg.MetadataValue.int(sum(w.incidents for w in weeks)),
            "downtime_7d_seconds": dg.MetadataValue.float(round(sum(w.down_seconds for w in weeks), 1))}


def _by(results: list[ComponentUptime], name) -> dict[str, dict[str, ComponentUptime]]:
    grouped: dict[str, dict[str, ComponentUptime]] = {}
    for item in results:
        grouped.setdefault(name(item), {})[item.window] = item
    return grouped


def uptime_metadata(results: list[ComponentUptime], read: int) -> dict:
    by_component = _by(results, lambda item: item.component)
    metadata: dict = {"results_read": dg.MetadataValue.int(read), "components": dg.MetadataValue.int(len(by_component))}
    for component, windows in sorted(by_component.items()):
        week = windows["7d"]
        for label, item in sorted(windows.items()):
            if item.availability is not None:
                metadata[f"{component}_availability_{label}"] = dg.MetadataValue.float(_percent(item.availability))
        for name, value in (("p50_ms", week.latency_p50), ("p95_ms", week.latency_p95)):
            if value is not None:
                metadata[f"{component}_{name}_7d"] = dg.MetadataValue.float(round(value * 1000, 1))
    metadata.update(_week_totals([windows["7d"] for windows in by_component.values()]))
    metadata["by_component"] = dg.MetadataValue.table(
        [dg.TableRecord({"component": component, **_uptime_row(windows)})
         for component, windows in sorted(by_component.items())],
        schema=UPTIME_SCHEMA)
    metadata["uptime"] = dg.MetadataValue.json([item.to_dict() for item in results])
    return metadata


def fleet_uptime_metadata(results: list[ComponentUptime], read: int) -> dict:
    """One row per fleet database, the least available over 7 days first (unobserved ones last)."""
    by_target = _by(results, lambda item: item.environment)
    weeks = {target: windows["7d"] for target, windows in by_target.items()}
    order = sorted(by_target, key=lambda target: (weeks[target].availability is None,
                                                  weeks[target].availability or 0.0, target))
    below = [target for target in order if weeks[target].availability is not None and weeks[target].availability < 1]
    metadata: dict = {"results_read": dg.MetadataValue.int(read), "databases": dg.MetadataValue.int(len(by_target)),
                      "below_100_percent_7d": dg.MetadataValue.int(len(below)),
                      "least_available_7d": dg.MetadataValue.json(below[:20]),
                      **_week_totals(list(weeks.values()))}
    rows = [dg.TableRecord({"target": target, **_uptime_row(by_target[target])}) for target in order]
    metadata["by_database"] = dg.MetadataValue.table(rows, schema=FLEET_UPTIME_SCHEMA)
    metadata["uptime"] = dg.MetadataValue.json([item.to_dict() for item in results])
    return metadata


@dg.asset(
    key=UPTIME_KEY,
    partitions_def=environment_partitions,
    deps=[spec.key for spec in health_component_specs],
    group_name=INSIGHT_GROUP,
)
def uptime(context: dg.AssetExecutionContext):
    """Availability of each of the environment's health components over 24 hours, 7 and 30 days,
    from the recorded health checks: incidents, longest and total downtime, time to recover, p50
    and p95 latency, and how much of the time was observed. A result covers the time until the
    next one (at most two sweep intervals); unobserved time counts as neither up nor down. The
    history is streamed from the event log, never loaded whole. Each partition reads only its own
    environment's components."""
    environment = context.partition_key
    started = time.monotonic()
    results, read = compute_uptime(context.instance, environment, time.time())
    context.log.info(f"{environment}: {read} health check results read in {time.monotonic() - started:.2f}s")
    if not results:
        context.log.warning(f"{environment}: no health check results recorded in {HISTORY_DAYS} days")
    return dg.MaterializeResult(metadata=uptime_metadata(results, read))


def drill_results(environment: str, manifests, failed_runs) -> list[DrillResult]:
    """Drills recorded in manifests (``manifest.drill``), and failed drill runs that recorded none."""
    drills, recorded_runs = [], set()
    for manifest in manifests:
        entry = manifest.drill if isinstance(manifest.drill, dict) else None
        if not entry or not entry.get("at"):
            continue
        recorded_runs.add(entry.get("run_id"))
        drills.append(DrillResult(parse_utc(entry["at"]), environment, bool(entry.get("passed")), manifest.id,
                                  entry.get("seconds"), "" if entry.get("passed") else str(entry.get("summary") or "")))
    for ended, run_id, reason in failed_runs:
        if run_id not in recorded_runs:
            drills.append(DrillResult(ended, environment, False, None, None, reason))
    return drills


def backup_history_metadata(history, listing_warnings: list[str]) -> dict:
    metadata: dict = {}
    for window in history.windows:
        metadata[f"backups_{window.days}d"] = dg.MetadataValue.int(window.made)
        metadata[f"verified_{window.days}d"] = dg.MetadataValue.int(window.verified)
        metadata[f"failed_runs_{window.days}d"] = dg.MetadataValue.int(window.failed)
    week = history.window(7)
    if week and week.newest_bytes is not None:
        metadata["newest_backup"] = human_bytes(week.newest_bytes)
        metadata["newest_backup_bytes"] = dg.MetadataValue.int(week.newest_bytes)
    if week and week.mean_duration_seconds is not None:
        metadata["mean_duration_seconds_7d"] = dg.MetadataValue.float(week.mean_duration_seconds)
    if history.newest_verified_age_seconds is not None:
        metadata["newest_verified_age_hours"] = dg.MetadataValue.float(round(history.newest_verified_age_seconds / 3600, 2))
        metadata["newest_verified"] = history.newest_verified_id
    metadata["held_locally"] = human_bytes(history.local_bytes)
    metadata["local_bytes"] = dg.MetadataValue.int(history.local_bytes)
    metadata["held_in_s3"] = human_bytes(history.s3_bytes)
    metadata["s3_bytes"] = dg.MetadataValue.int(history.s3_bytes)
    metadata["last_successful_drill"] = (f"{history.last_successful_drill_at} ({history.last_successful_drill_backup})"
                                         if history.last_successful_drill_at else "none on record")
    if history.last_drill_success is False:
        metadata["last_drill_failed"] = f"{history.last_drill_at}: {history.last_drill_reason or 'no reason recorded'}"
    if listing_warnings:
        metadata["warnings"] = dg.MetadataValue.json(listing_warnings)
    metadata["history"] = dg.MetadataValue.json(history.to_dict())
    return metadata


def backup_s3_store(backup_bucket: BackupBucketResource, log):
    """The S3 store the backups are listed from; None without a bucket or with a bad setting (said once)."""
    try:
        return backup_bucket.store()
    except ConfigError as error:
        log.warning(f"S3 is not read, its configuration is wrong: {error}; local backups only")
        return None


def read_backup_history(instance: dg.DagsterInstance, environment: str, now: datetime,
                        backup_storage: BackupStorageResource, backup_bucket: BackupBucketResource,
                        log, *, s3=False, quiet: bool = False) -> tuple[BackupHistory, list[str]]:
    """The target's backup history now, from the stores (local and S3), the backup runs and the
    drills; and the listing's warnings, redacted (each also logged). ``s3``: a store already made
    (``backup_s3_store``), so a report over a fleet makes one client; ``quiet``: no info line."""
    since = now - timedelta(days=HISTORY_DAYS)
    redactor = Redactor.from_environ()
    if s3 is False:
        s3 = backup_s3_store(backup_bucket, log)
    listing = merge_listings(environment, backup_storage.local_store(), s3)
    warnings = [redactor(warning) for warning in listing.warnings]
    for warning in warnings:
        log.warning(warning)
    runs = records.backup_runs(instance, environment, since, redactor)
    drills = drill_results(environment, listing.manifests,
                           records.failed_drill_runs(instance, environment, since, redactor))
    if not quiet:
        log.info(f"{environment}: {len(listing.manifests)} backups listed, {len(runs)} backup runs and "
                 f"{len(drills)} drills in {HISTORY_DAYS} days")
    return summarize_backups(environment, listing.manifests, runs, drills, now), warnings


@dg.asset(
    key=BACKUP_HISTORY_KEY,
    partitions_def=environment_partitions,
    deps=[dg.AssetDep("database_backup", partition_mapping=identity)],
    group_name=INSIGHT_GROUP,
    kinds={"s3"} if os.environ.get("AWS_S3_BUCKET", "").strip() else None,
)
def backup_history(context: dg.AssetExecutionContext, backup_storage: BackupStorageResource,
                   backup_bucket: BackupBucketResource):
    """What the target's backups have been doing (any target: an environment, a target of
    ops_platform.yaml or a database found on its servers): backups made, verified and failed over 1, 7
    and 30 days (failures from the backup runs, whichever way they started), size and duration
    trends, the newest verified backup's age, the bytes held locally and in S3, and the latest and
    last successful restore drill (from the manifests and the drill runs)."""
    history, warnings = read_backup_history(context.instance, context.partition_key, datetime.now(timezone.utc),
                                            backup_storage, backup_bucket, context.log)
    return dg.MaterializeResult(metadata=backup_history_metadata(history, warnings))


@dg.asset(key=FLEET_UPTIME_KEY, deps=[FLEET_KEY], group_name=INSIGHT_GROUP)
def fleet_uptime(context: dg.AssetExecutionContext):
    """Availability of each fleet database (every target beyond the environments, which the health
    sweep connects to every 5 minutes) over 24 hours, 7 and 30 days, from the recorded
    ``fleet_databases`` check: incidents, longest and total downtime, time to recover, latency and
    how much of the time was observed, as ``uptime`` computes them for an environment. The whole
    fleet in one pass over the history; the table lists the least available first."""
    started = time.monotonic()
    results, read = compute_fleet_uptime(context.instance, time.time())
    metadata = fleet_uptime_metadata(results, read)
    context.log.info(f"{metadata['databases'].value} fleet databases: {read} results read in "
                     f"{time.monotonic() - started:.2f}s, {metadata['below_100_percent_7d'].value} below 100 % this week")
    return dg.MaterializeResult(metadata=metadata)


fleet_uptime_job = dg.define_asset_job(
    "fleet_uptime_job", selection=dg.AssetSelection.assets(fleet_uptime),
    description="Compute every fleet database's uptime from the recorded fleet health checks.", tags={KIND: "insight"})


@dg.schedule(name="fleet_uptime_schedule", cron_schedule=HISTORY_CRON, execution_timezone=OPERATIONS_TIMEZONE,
             job=fleet_uptime_job, default_status=dg.DefaultScheduleStatus.RUNNING,
             description=f"fleet_uptime daily at 08:40 ({OPERATIONS_TIMEZONE}), before the 09:00 digest, when there "
                         "are targets beyond the environments.")
def fleet_uptime_schedule(context: dg.ScheduleEvaluationContext):
    if not [name for name in context.instance.get_dynamic_partitions(TARGETS) if name not in ENVIRONMENT_NAMES]:
        return dg.SkipReason("no target beyond the environments")
    return dg.RunRequest(run_key=f"fleet-uptime-{context.scheduled_execution_time.isoformat()}")


insight_history_job = dg.define_asset_job(
    HISTORY_JOB,
    selection=dg.AssetSelection.assets(uptime, backup_history),
    description="Compute one environment's uptime (from the recorded health checks) and backup history "
                "(from the manifests and runs).",
    tags={KIND: "insight"},
)


@dg.schedule(
    name="insight_history_schedule",
    cron_schedule=HISTORY_CRON,
    execution_timezone=OPERATIONS_TIMEZONE,
    job=insight_history_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=f"uptime and backup_history of every configured environment, and backup_history of every other "
                f"target, daily at 08:40 ({OPERATIONS_TIMEZONE}), before the 09:00 digest.",
)
def insight_history_schedule(context: dg.ScheduleEvaluationContext):
    ensure_partitions(context.instance, ENVIRONMENT_NAMES)
    others = [name for name in context.instance.get_dynamic_partitions(TARGETS) if name not in ENVIRONMENT_NAMES]
    if not ENVIRONMENT_NAMES and not others:
        return dg.SkipReason("no environment or target is configured")
    stamp = context.scheduled_execution_time.isoformat()
    return ([dg.RunRequest(run_key=f"{environment}-insight-history-{stamp}", partition_key=environment)
             for environment in ENVIRONMENT_NAMES]
            + [dg.RunRequest(run_key=f"{name}-insight-history-{stamp}", partition_key=name,
                             asset_selection=[BACKUP_HISTORY_KEY]) for name in sorted(others)])
