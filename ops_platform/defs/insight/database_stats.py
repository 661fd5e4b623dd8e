"""``database_stats``: every 15 minutes, a gentle read-only snapshot of each environment's database
from PostgreSQL's catalog and statistics views, as numeric metadata the UI plots, a per-table
view, and checks in the spirit of postgres_exporter's mixin alerts."""

import os
import time
from collections.abc import Mapping

import dagster as dg

from ops_platform.config import ENVIRONMENT_PREFIXES, ConfigError, get_environment
from ops_platform.defs import platform_start
from ops_platform.defs.databases import database_dep
from ops_platform.defs.environments import ENVIRONMENT_NAMES, ensure_partitions, environment_partitions
from ops_platform.defs.insight import records
from ops_platform.defs.insight.common import INSIGHT_GROUP, one_line, partitioned_check_spec
from ops_platform.defs.settings import InsightSettings
from ops_platform.lib.formatting import human_bytes
from ops_platform.lib.insight.conditions import (
    SEVERITIES,
    SNAPSHOT,
    WARN,
    ConditionResult,
    evaluate,
    snapshot_result,
)
from ops_platform.lib.insight.database_stats import XID_LIMIT, DatabaseSnapshot, StatsError, collect_snapshot
from ops_platform.lib.redact import Redactor, secrets_from_environ
from ops_platform.lib.sql_text import sanitize_statement
from ops_platform.lib.tags import KIND, MAX_RETRIES, MAX_RUNTIME, PARTITION
from ops_platform.lib.targets import OPERATIONS_TIMEZONE, load_targets

STATS_KEY = dg.AssetKey("database_stats")
STATS_JOB = "database_stats_job"
INTERVAL_MINUTES = 15
DAY = 86400.0

CHECK_DESCRIPTIONS = {
    SNAPSHOT: "The statistics were read (fails when the database is unreachable, a query times out or a "
              "setting is bad).",
    "connections": "Client connections stay under STATS_CONNECTIONS_PERCENT (80) % of max_connections minus "
                   "the reserved slots.",
    "xid_wraparound": "The oldest transaction-ID (or multixact) age of every database stays under "
                      "STATS_XID_AGE_FRACTION (0.5) of the 2^31 wraparound limit.",
    "idle_in_transaction": "No session sits idle in a transaction for more than STATS_IDLE_IN_TRANSACTION_MINUTES "
                           "(10): it holds locks and stops vacuum.",
    "long_transaction": "No transaction stays open for more than STATS_LONG_TRANSACTION_MINUTES (60). Warning.",
    "dead_tuples": "No table has STATS_DEAD_TUPLES_MIN (10,000) dead tuples, STATS_DEAD_TUPLES_PERCENT (10) % of "
                   "its tuples, and no (auto)vacuum for STATS_VACUUM_MAX_DAYS (7) days. Warning.",
    "replication_slot_wal": "No replication slot retains more than STATS_SLOT_RETAINED_GB (10) GB of WAL or has "
                            "lost WAL.",
    "database_growth": "The database grew at most STATS_GROWTH_PERCENT (20) % since its size a day ago. Warning.",
}
STATS_CHECKS = [partitioned_check_spec(name, STATS_KEY, f"{description} Severity: {SEVERITIES[name]}.")
                for name, description in CHECK_DESCRIPTIONS.items()]
STATS_CHECK_KEYS = [spec.key for spec in STATS_CHECKS]

TABLE_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("table", "string"), dg.TableColumn("size", "string", description="total, human-readable"),
    dg.TableColumn("total_bytes", "int"), dg.TableColumn("heap_bytes", "int"), dg.TableColumn("index_bytes", "int"),
    dg.TableColumn("toast_bytes", "int"), dg.TableColumn("estimated_rows", "int"), dg.TableColumn("dead_tuples", "int"),
    dg.TableColumn("last_vacuum", "string", description="the later of the manual and automatic vacuum"),
    dg.TableColumn("last_analyze", "string", description="the later of the manual and automatic analyze"),
])


def _redacted(value, redactor: Redactor):
    """Every string of a JSON-like value redacted on its own."""
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, list):
        return [_redacted(item, redactor) for item in value]
    if isinstance(value, dict):
        return {key: _redacted(item, redactor) for key, item in value.items()}
    return value


def _later(*times: str | None) -> str | None:
    found = [t for t in times if t]
    return max(found) if found else None


def table_view(snapshot: DatabaseSnapshot) -> dg.MetadataValue:
    """The biggest tables (STATS_TOP_TABLES) as a table the UI shows."""
    rows = [dg.TableRecord({
        "table": table.qualified_name,
        "size": human_bytes(table.total_bytes) if table.total_bytes is not None else "locked",
        "total_bytes": table.total_bytes, "heap_bytes": table.heap_bytes, "index_bytes": table.index_bytes,
        "toast_bytes": table.toast_bytes, "estimated_rows": table.estimated_rows, "dead_tuples": table.dead_tuples,
        "last_vacuum": _later(table.last_vacuum, table.last_autovacuum),
        "last_analyze": _later(table.last_analyze, table.last_autoanalyze),
    }) for table in snapshot.tables]
    return dg.MetadataValue.table(rows, schema=TABLE_SCHEMA)


def statements_view(snapshot: DatabaseSnapshot, redactor: Redactor) -> dg.MetadataValue:
    """The top statements as a Markdown table, each text masked, redacted, then cut to 200 characters."""
    if not snapshot.statements:
        return dg.MetadataValue.md(redactor(snapshot.statements_note or "No statements recorded."))
    lines = ["| total | calls | mean | rows | statement |", "|---|---|---|---|---|"]
    for statement in snapshot.statements:
        text = sanitize_statement(statement.query, 200, redactor).replace("|", "\\|").replace("`", "'")
        lines.append(f"| {statement.total_ms / 1000:.1f} s | {statement.calls:,} | {statement.mean_ms:.2f} ms | "
                     f"{statement.rows:,} | `{text}` |")
    return dg.MetadataValue.md(redactor("\n".join(lines)))


def stats_metadata(snapshot: DatabaseSnapshot, size_a_day_ago: int | None, redactor: Redactor) -> dict:
    """Numbers as numeric metadata (plotted over time), the table view, notes, and the whole
    snapshot (JSON) that the next snapshot and the reports read back."""
    connections = snapshot.connections
    by_state = connections.by_state
    activity = snapshot.activity
    slots = snapshot.replication_slots
    metadata = {
        "database_size": human_bytes(snapshot.size_bytes),
        "database_size_bytes": dg.MetadataValue.int(snapshot.size_bytes),
        "connections_used": dg.MetadataValue.int(connections.used),
        "connections_limit": dg.MetadataValue.int(connections.limit),
        "connections_percent": dg.MetadataValue.float(round(connections.percent, 2)),
        "connections_active": dg.MetadataValue.int(by_state.get("active", 0)),
        "connections_idle": dg.MetadataValue.int(by_state.get("idle", 0)),
        "connections_idle_in_transaction": dg.MetadataValue.int(
            by_state.get("idle in transaction", 0) + by_state.get("idle in transaction (aborted)", 0)),
        "xid_age": dg.MetadataValue.int(snapshot.max_xid_age),
        "xid_age_percent": dg.MetadataValue.float(round(100.0 * snapshot.max_xid_age / XID_LIMIT, 3)),
        "oldest_transaction_seconds": dg.MetadataValue.float(round(
            (snapshot.oldest_transaction.transaction_seconds or 0.0) if snapshot.oldest_transaction else 0.0, 1)),
        "idle_in_transaction_seconds": dg.MetadataValue.float(round(
            (snapshot.oldest_idle_in_transaction.idle_seconds or 0.0) if snapshot.oldest_idle_in_transaction else 0.0,
            1)),
        "dead_tuples_max": dg.MetadataValue.int(max((t.dead_tuples or 0 for t in snapshot.dead_tuple_tables),
                                                    default=0)),
        "table_count": dg.MetadataValue.int(snapshot.table_count),
        "replication_slots": dg.MetadataValue.int(len(slots)),
        "replication_slot_retained_bytes": dg.MetadataValue.int(max((s.retained_bytes or 0 for s in slots), default=0)),
        "snapshot_seconds": dg.MetadataValue.float(snapshot.duration_seconds),
        "snapshot_queries": dg.MetadataValue.int(snapshot.query_count),
        "server_version": snapshot.server_version,
        "tables": table_view(snapshot),
        "statements": statements_view(snapshot, redactor),
        "snapshot": dg.MetadataValue.json(_redacted(snapshot.to_dict(), redactor)),
    }
    if activity is not None:
        if activity.cache_hit_ratio is not None:
            metadata["cache_hit_percent"] = dg.MetadataValue.float(round(100.0 * activity.cache_hit_ratio, 3))
        metadata["deadlocks_since_last"] = dg.MetadataValue.int(activity.deadlocks)
        metadata["temp_bytes_since_last"] = dg.MetadataValue.int(activity.temp_bytes)
        if activity.interval_seconds:
            metadata["transactions_per_second"] = dg.MetadataValue.float(
                round(activity.transactions / activity.interval_seconds, 3))
    if size_a_day_ago:
        metadata["growth_percent_day"] = dg.MetadataValue.float(
            round(100.0 * (snapshot.size_bytes - size_a_day_ago) / size_a_day_ago, 3))
    if snapshot.notes:
        metadata["notes"] = dg.MetadataValue.md(redactor("\n".join(f"- {note}" for note in snapshot.notes)))
    return metadata


def _metadata_value(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    return dg.MetadataValue.json(value)


def check_result(result: ConditionResult, environment: str, at: float, redactor: Redactor) -> dg.AssetCheckResult:
    """A condition as a check result. ``environment``, ``collected_at`` and ``severity`` in its
    metadata are what ``database_condition_sensor`` reads."""
    metadata = {"environment": environment, "collected_at": dg.MetadataValue.timestamp(at), "severity": result.severity}
    for key, value in _redacted(result.metadata, redactor).items():
        if value is not None and key not in metadata:
            metadata[key] = _metadata_value(value)
    return dg.AssetCheckResult(
        check_name=result.name, passed=result.passed, description=redactor(result.description),
        severity=dg.AssetCheckSeverity.WARN if result.severity == WARN else dg.AssetCheckSeverity.ERROR,
        metadata=metadata)


def stats_database_url(environment: str, environ: Mapping[str, str] | None = None) -> str:
    """``<ENV>_STATS_DATABASE_URL`` when set (a monitoring role with pg_monitor, see the README),
    else the environment's own database URL."""
    environ = os.environ if environ is None else environ
    prefix = ENVIRONMENT_PREFIXES.get(environment)
    dedicated = environ.get(f"{prefix}STATS_DATABASE_URL", "").strip() if prefix is not None else ""
    return dedicated or get_environment(environment, environ).database_url


def previous_snapshot(instance: dg.DagsterInstance, environment: str) -> DatabaseSnapshot | None:
    """The last snapshot of the environment (the deltas since it: cache hits, deadlocks, temp bytes)."""
    found = records.materialization(instance, STATS_KEY, environment)
    data = records.metadata_json(found.get("snapshot")) if found else None
    try:
        return DatabaseSnapshot.from_dict(data) if isinstance(data, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def size_a_day_ago(instance: dg.DagsterInstance, environment: str, now: float) -> int | None:
    """The database size of the newest snapshot at least a day old (growth over a day)."""
    found = records.materialization(instance, STATS_KEY, environment, before=now - DAY)
    value = found.get("database_size_bytes") if found else None
    return int(value) if isinstance(value, (int, float)) else None


def take_snapshot(instance: dg.DagsterInstance, environment: str, insight_settings: InsightSettings,
                  at: float) -> tuple[DatabaseSnapshot, int | None]:
    """A snapshot of the environment's database now (deltas since its previous recorded one), and
    its size a day ago. Raises ConfigError for a bad setting, StatsError when it cannot be taken."""
    if insight_settings.invalid_settings:
        more = len(insight_settings.invalid_settings) - 1
        raise ConfigError(insight_settings.invalid_settings[0] + (f" (and {more} more)" if more else ""))
    database_url = stats_database_url(environment)
    previous = previous_snapshot(instance, environment)
    day_ago = size_a_day_ago(instance, environment, at)
    return collect_snapshot(database_url, previous=previous, secrets=secrets_from_environ(),
                            **vars(insight_settings.collection())), day_ago


def failed_snapshot(error: Exception, redactor: Redactor) -> ConditionResult:
    """The failed `snapshot` check for a snapshot that could not be taken, in one redacted line."""
    line = str(error) if isinstance(error, (StatsError, ConfigError)) else f"{type(error).__name__}: {error}"
    kind = getattr(error, "kind", "setting" if isinstance(error, ConfigError) else "error")
    return snapshot_result(one_line(redactor(line)), error_kind=kind)


@dg.asset(
    key=STATS_KEY,
    partitions_def=environment_partitions,
    deps=[database_dep],
    group_name=INSIGHT_GROUP,
    kinds={"postgres"},
    check_specs=STATS_CHECKS,
)
def database_stats(context: dg.AssetExecutionContext, insight_settings: InsightSettings):
    """A read-only snapshot of the environment's database from PostgreSQL's catalog and statistics
    views: size, connections by state against the usable limit, the oldest transaction and
    idle-in-transaction session, transaction-ID ages, cache hit ratio, deadlocks and temp bytes
    since the last snapshot, the biggest tables (sizes, rows, dead tuples, vacuum and analyze
    times), replication slots and the top statements of pg_stat_statements. One connection (as
    `<ENV>_STATS_DATABASE_URL` when set, e.g. a role with pg_monitor) with its own
    application_name, statement_timeout and lock_timeout; nothing reads user tables.
    A snapshot that cannot be taken is a failed `snapshot` check and a failed run, in one line."""
    environment = context.partition_key
    at = time.time()
    redactor = Redactor.from_environ()
    try:
        snapshot, day_ago = take_snapshot(context.instance, environment, insight_settings, at)
    except Exception as error:  # noqa: BLE001 - every failure is one line and one failed check
        failed = failed_snapshot(error, redactor)
        yield check_result(failed, environment, at, redactor)
        raise dg.Failure(description=f"database statistics of {environment}: {failed.description}",
                         allow_retries=False) from None
    results = evaluate(snapshot, insight_settings.thresholds(), day_ago)
    for note in snapshot.notes:
        context.log.info(redactor(note))
    failing = [r.name for r in results if not r.passed]
    context.log.info(f"{environment}: {human_bytes(snapshot.size_bytes)}, {snapshot.connections.used} connections, "
                     f"{snapshot.table_count} tables, {snapshot.query_count} queries in {snapshot.duration_seconds:.2f}s"
                     + (f"; failing: {', '.join(failing)}" if failing else ""))
    yield dg.MaterializeResult(metadata=stats_metadata(snapshot, day_ago, redactor))
    for result in [snapshot_result(None, queries=snapshot.query_count, seconds=snapshot.duration_seconds), *results]:
        yield check_result(result, environment, at, redactor)


database_stats_job = dg.define_asset_job(
    STATS_JOB,
    selection=dg.AssetSelection.assets(database_stats),
    description="Take one read-only statistics snapshot of the environment's database and run its checks.",
    tags={KIND: "insight", MAX_RETRIES: "0", MAX_RUNTIME: "600"},
)


def busy_environments(instance: dg.DagsterInstance) -> set[str]:
    """Environments with a run queued or in progress (a backup, a restore, a snapshot still
    waiting...): the instance runs one run of an environment at a time, so a snapshot requested now
    would make a person's backup wait behind it, or wait behind the backup and measure the dump."""
    busy = instance.get_run_records(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED]), limit=100)
    return {record.dagster_run.tags[PARTITION] for record in busy if PARTITION in record.dagster_run.tags}


@dg.schedule(
    name="database_stats_schedule",
    cron_schedule=f"*/{INTERVAL_MINUTES} * * * *",
    job=database_stats_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="A database_stats snapshot of every configured environment every 15 minutes (one run each; an "
                "environment with a run queued or in progress is skipped this time, and so is every environment "
                "in the platform's first five minutes, so a person's first runs start at once).",
)
def database_stats_schedule(context: dg.ScheduleEvaluationContext):
    if platform_start.starting(context.scheduled_execution_time):
        return dg.SkipReason(f"the platform is starting: the first snapshots follow after "
                             f"{platform_start.startup_ends():%H:%M}, so a person's first runs do not wait behind them")
    busy = busy_environments(context.instance)
    ensure_partitions(context.instance, ENVIRONMENT_NAMES)
    requests = [dg.RunRequest(run_key=f"{environment}-database-stats-{context.scheduled_execution_time.isoformat()}",
                              partition_key=environment)
                for environment in ENVIRONMENT_NAMES if environment not in busy]
    if not requests:
        return dg.SkipReason("every environment has a run queued or in progress"
                             if ENVIRONMENT_NAMES else "no environment is configured")
    return requests


FLEET_STATS_CRON = "10 8 * * *"


@dg.schedule(
    name="fleet_database_stats_schedule",
    cron_schedule=FLEET_STATS_CRON,
    execution_timezone=OPERATIONS_TIMEZONE,
    job=database_stats_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=f"A database_stats snapshot of every target beyond the environments, daily at 08:10 "
                f"({OPERATIONS_TIMEZONE}), so the 09:00 digest has each one's checks (a target with a run queued or "
                "in progress is skipped that day). Any target can be snapshotted at any time from the UI.",
)
def fleet_database_stats_schedule(context: dg.ScheduleEvaluationContext):
    found = load_targets()
    for problem in found.problems:
        context.log.warning(str(problem))
    names = [name for name in found.names if name not in ENVIRONMENT_NAMES]
    if not names:
        return dg.SkipReason("no target beyond the environments")
    busy = busy_environments(context.instance)
    ensure_partitions(context.instance, names)
    requests = [dg.RunRequest(run_key=f"{name}-database-stats-{context.scheduled_execution_time.isoformat()}",
                              partition_key=name) for name in names if name not in busy]
    return requests or dg.SkipReason("every target has a run queued or in progress")
