"""Operations-insight benchmark.

1. ``database_stats`` on a database with 10,000 tables (each with a primary key and a TOAST
   table: 40,000 relations), against a baseline in the same process: a fresh connection running
   ``SELECT count(*) FROM pg_class``. Targets: a snapshot in <= 2 s, <= 20 queries, and no wait on
   a table someone holds an ACCESS EXCLUSIVE lock on.
2. The weekly report over 30 days of 5-minute health history for 6 components (8,640 sweeps,
   51,840 results) streamed from a generator (the lib alone). Targets: <= 5 s, and peak memory
   that does not grow from 7 to 30 days of history.
3. The same through Dagster, in a child process with its own DAGSTER_HOME: 30 days of 5-minute
   sweeps of production's 7 health checks (60,480 results) in the event log; ``uptime`` streams
   them (newest-first pages of ``get_asset_check_execution_history``, replayed oldest first
   through a spool), then the weekly ``ops_report`` is built from the latest materializations.
   Peak traced memory of the streaming for 7 and 30 days of one check's history.

Run alone with ``python -m bench.bench_insight`` (PostgreSQL at 127.0.0.1:5432, trust auth);
``python -m bench.bench_insight event-log`` runs part 3 alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import psycopg

from ops_platform.lib.insight.conditions import StatsThresholds, evaluate
from ops_platform.lib.insight.database_stats import (
    ConnectionStats,
    DatabaseAge,
    DatabaseSnapshot,
    StatementStats,
    TableStats,
    collect_snapshot,
)
from ops_platform.lib.insight.uptime import UptimeAccumulator
from ops_platform.lib.messages.reports import EnvironmentReport, render_weekly_report
from ops_platform.lib.redact import Redactor

SERVER = "postgresql://postgres@127.0.0.1:5432"
TABLES = 10_000
COMPONENTS = ("api", "frontend", "redis", "bucket", "postgres", "service_database")
SNAPSHOT_TARGET_SECONDS = 2.0
QUERY_TARGET = 20
REPORT_TARGET_SECONDS = 5.0

# One transaction per 1,000 tables: creating all 10,000 (40,000 relations with their keys and TOAST)
# in a single transaction runs out of lock slots at the default max_locks_per_transaction.
CREATE_TABLES = f"""
DO $$
BEGIN
  FOR i IN 1..{TABLES} LOOP
    EXECUTE format('CREATE TABLE t%s (id bigint PRIMARY KEY, body text)', i);
    IF i % 1000 = 0 THEN COMMIT; END IF;
  END LOOP;
END $$
"""


def _psql(sql: str, database: str = "postgres") -> None:
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", database,
                    "-c", sql], check=True, capture_output=True, text=True)


def _best(function: Callable[[], object], repeat: int = 3) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - started)
    return best, value


def _baseline(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute("SELECT count(*) FROM pg_class").fetchone()[0]


def _snapshot(url: str):
    return collect_snapshot(url, statement_timeout_ms=10_000, lock_timeout_ms=200, top_tables=20, top_statements=10)


def bench_snapshot() -> bool:
    database = f"ops_insight_bench_{os.getpid()}"
    url = f"{SERVER}/{database}"
    _psql(f'DROP DATABASE IF EXISTS "{database}"')
    _psql(f'CREATE DATABASE "{database}"')
    try:
        started = time.perf_counter()
        _psql(CREATE_TABLES, database)
        created = time.perf_counter() - started
        _psql("ANALYZE", database)
        baseline, relations = _best(lambda: _baseline(url))
        seconds, snapshot = _best(lambda: _snapshot(url))
        with psycopg.connect(url) as holder:
            holder.execute("LOCK TABLE t42 IN ACCESS EXCLUSIVE MODE")
            locked_seconds, locked = _best(lambda: _snapshot(url), repeat=1)
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    ok = (seconds <= SNAPSHOT_TARGET_SECONDS and snapshot.query_count <= QUERY_TARGET
          and locked_seconds <= SNAPSHOT_TARGET_SECONDS and locked.locked_tables == 1 and snapshot.table_count == TABLES)
    print(f"database_stats on {snapshot.table_count:,} tables ({relations:,} relations in pg_class; "
          f"created in {created:.1f}s), best of 3, fresh connection each")
    print(f"  baseline: connect + SELECT count(*) FROM pg_class: {baseline * 1000:.1f} ms")
    print(f"  snapshot: {seconds:.2f}s ({seconds / baseline:.0f}x baseline), {snapshot.query_count} queries, "
          f"database {snapshot.size_bytes / 1e6:.0f} MB")
    print(f"  snapshot with one table locked ACCESS EXCLUSIVE: {locked_seconds:.2f}s, "
          f"{locked.locked_tables} table skipped, {locked.query_count} queries")
    print(f"  targets <= {SNAPSHOT_TARGET_SECONDS:g}s, <= {QUERY_TARGET} queries, no lock wait: "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


def health_history(now: datetime, days: int) -> Iterator[tuple]:
    """5-minute sweeps of every component: the api is down 30 minutes every third day, redis slow."""
    start = now.timestamp() - days * 86400
    for sweep in range(days * 288):
        at = start + sweep * 300
        for component in COMPONENTS:
            ok = not (component == "api" and sweep % 864 < 6)
            latency = 0.02 + (sweep % 97) / 1000 + (0.3 if component == "redis" and sweep % 50 == 0 else 0)
            yield (at, "production", component, ok, latency)


def fabricated_snapshot(now: datetime) -> DatabaseSnapshot:
    """A database snapshot of the size the report shows (20 tables, 10 statements)."""
    return DatabaseSnapshot(
        database="app", collected_at=now.isoformat(), server_version="15.20", server_version_num=150020,
        in_recovery=False, size_bytes=5 << 30, connections=ConnectionStats(100, 3, 0, 25, {"active": 5, "idle": 20}),
        database_ages=[DatabaseAge("app", 20_000_000, 100)], table_count=10_000,
        tables=[TableStats("public", f"t{i}", (20 - i) << 24, (20 - i) << 23, (20 - i) << 22, 0, 1000 * i)
                for i in range(20)],
        statements=[StatementStats(i, f"SELECT * FROM t{i} WHERE id = $1", 1000 * i, 500.0 * i, 0.5, i)
                    for i in range(10)])


def weekly_report(now: datetime, days: int) -> str:
    accumulator = UptimeAccumulator(now).extend(health_history(now, days))
    snapshot = fabricated_snapshot(now)
    report = EnvironmentReport("production", uptime=accumulator.results(), snapshot=snapshot,
                               checks=evaluate(snapshot, StatsThresholds(), snapshot.size_bytes))
    return render_weekly_report([report], now, redactor=Redactor()).markdown


def _peak_memory(now: datetime, days: int) -> int:
    tracemalloc.start()
    weekly_report(now, days)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def bench_report() -> bool:
    now = datetime(2026, 1, 12, 9, tzinfo=timezone.utc)
    seconds, markdown = _best(lambda: weekly_report(now, 30))
    week_seconds, _ = _best(lambda: weekly_report(now, 7))
    week_peak, month_peak = _peak_memory(now, 7), _peak_memory(now, 30)
    ok = seconds <= REPORT_TARGET_SECONDS and month_peak <= week_peak * 1.2 + 64 * 1024
    print(f"weekly report from streamed health history, {len(COMPONENTS)} components, best of 3")
    print(f"  30 days (8,640 sweeps, {8640 * len(COMPONENTS):,} results): {seconds:.2f}s; "
          f"7 days: {week_seconds:.2f}s; report {len(markdown):,} characters")
    print(f"  peak traced memory: {week_peak / 1024:.0f} KiB for 7 days, {month_peak / 1024:.0f} KiB for 30 days")
    print(f"  targets <= {REPORT_TARGET_SECONDS:g}s, memory flat: {'PASS' if ok else 'FAIL'}")
    return ok


# --- 3. through Dagster: uptime from the event log, the weekly report from materializations ---------

EVENT_LOG_CHECKS = ("api", "api_database", "api_redis", "api_storage", "frontend", "postgres", "redis")
EVENT_LOG_ENV = {"PRODUCTION_DATABASE_URL": "postgresql://bench@127.0.0.1:1/bench", "PRODUCTION_API_URL": "http://x",
                 "PRODUCTION_FRONTEND_URL": "http://x", "PRODUCTION_REDIS_URL": "redis://x"}


def _check_key(component: str):
    import dagster as dg

    if component == "api":
        return dg.AssetCheckKey(dg.AssetKey("production_api"), "health_endpoint")
    if component.startswith("api_"):
        return dg.AssetCheckKey(dg.AssetKey("production_api"), "service_" + component[4:])
    return dg.AssetCheckKey(dg.AssetKey(f"production_{component}"), "reachable")


def fabricate_history(instance, now: float, days: int, components=EVENT_LOG_CHECKS) -> int:
    """Recorded health check results, as many sweeps would have written them. Written in bulk
    into the event log's asset_check_executions table (Dagster's private schema, used here only to
    fabricate history quickly: one result per reported event would take minutes); read back through
    the public API only."""
    import dagster as dg
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.events.log import EventLogEntry
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
    from dagster_shared.serdes import serialize_value

    rows, written = [], 0
    start = now - days * 86400
    for sweep in range(days * 288):
        at = start + sweep * 300
        run_id = str(uuid.uuid4())
        stamp = datetime.fromtimestamp(at, timezone.utc).replace(tzinfo=None)
        for component in components:
            ok = not (component == "api" and sweep % 864 < 6)
            key = _check_key(component)
            evaluation = dg.AssetCheckEvaluation(
                asset_key=key.asset_key, check_name=key.name, passed=ok, severity=dg.AssetCheckSeverity.ERROR,
                metadata={"environment": "production", "component": component,
                          "status": "healthy" if ok else "unhealthy", "reason": "ok" if ok else "HTTP 503",
                          "latency_ms": dg.MetadataValue.float(20.0 + sweep % 97),
                          "checked_at": dg.MetadataValue.float(at), "sweep_id": run_id[:8]})
            entry = EventLogEntry(error_info=None, level=20, user_message="", run_id=run_id, timestamp=at,
                                  dagster_event=DagsterEvent(DagsterEventType.ASSET_CHECK_EVALUATION.value,
                                                             "health_check_job", event_specific_data=evaluation))
            rows.append({"asset_key": key.asset_key.to_string(), "check_name": key.name, "run_id": run_id,
                         "execution_status": "SUCCEEDED" if ok else "FAILED", "evaluation_event": serialize_value(entry),
                         "evaluation_event_timestamp": stamp, "create_timestamp": stamp})
        if len(rows) >= 5000 or sweep == days * 288 - 1:
            with instance.event_log_storage.index_connection() as connection:
                connection.execute(AssetCheckExecutionsTable.insert(), rows)
            written += len(rows)
            rows = []
    return written


def _uptime_peak(now: float, days: int) -> tuple[int, int]:
    """Peak traced memory while streaming one check's history of ``days`` days."""
    import dagster as dg

    from ops_platform.defs.insight.history import compute_uptime

    with dg.instance_for_test() as instance:
        fabricate_history(instance, now, days, components=("api",))
        tracemalloc.start()
        _, read = compute_uptime(instance, "production", now, [_check_key("api")])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return read, peak


def event_log_child() -> dict:
    """Part 3, in a process whose environment configures production's health checks."""
    import dagster as dg

    from ops_platform.defs.insight.database_stats import STATS_KEY
    from ops_platform.defs.insight.history import UPTIME_KEY, compute_uptime, uptime_metadata
    from ops_platform.defs.insight.report import ReportKind, build_reports
    from ops_platform.lib.messages.reports import render_weekly_report

    now_dt = datetime.now(timezone.utc)
    now = now_dt.timestamp()
    found = {}
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        found["results"] = fabricate_history(instance, now, 30)
        found["fabricate_seconds"] = round(time.perf_counter() - started, 2)
        keys = [_check_key(component) for component in EVENT_LOG_CHECKS]
        found["uptime_30d_seconds"], (results, read) = _best(lambda: compute_uptime(instance, "production", now, keys),
                                                             repeat=2)
        found["read"] = read
        api = next(r for r in results if r.component == "api" and r.window == "30d")
        found["api_30d"] = api.availability_percent
        instance.report_runless_asset_event(dg.AssetMaterialization(UPTIME_KEY, partition="production",
                                                                    metadata=uptime_metadata(results, read)))
        snapshot = fabricated_snapshot(now_dt)
        instance.report_runless_asset_event(dg.AssetMaterialization(STATS_KEY, partition="production", metadata={
            "snapshot": dg.MetadataValue.json(snapshot.to_dict()),
            "database_size_bytes": dg.MetadataValue.int(snapshot.size_bytes)}))

        def weekly() -> str:
            reports = build_reports(instance, now_dt, ReportKind.weekly, 3)
            return render_weekly_report(reports, now_dt).markdown

        found["report_seconds"], markdown = _best(weekly)
        found["report_characters"] = len(markdown)
    found["peak_7d"], found["peak_30d"] = _uptime_peak(now, 7)[1], _uptime_peak(now, 30)[1]
    return found


def bench_event_log() -> bool:
    with tempfile.TemporaryDirectory(prefix="ops_insight_bench_") as home:
        env = {key: value for key, value in os.environ.items()
               if not key.endswith(("DATABASE_URL", "_API_URL", "_FRONTEND_URL", "_REDIS_URL"))
               and key not in ("API_URL", "FRONTEND_URL", "REDIS_URL", "AWS_S3_BUCKET")}
        env.update(EVENT_LOG_ENV, DAGSTER_HOME=home)
        child = subprocess.run([sys.executable, "-m", "bench.bench_insight", "event-log", "--json"], env=env,
                               capture_output=True, text=True, timeout=1800)
    if child.returncode != 0:
        print(child.stderr[-2000:])
        return False
    found = json.loads(child.stdout.strip().splitlines()[-1])
    ok = (found["report_seconds"] <= REPORT_TARGET_SECONDS
          and found["peak_30d"] <= found["peak_7d"] * 1.2 + 256 * 1024)
    print(f"through Dagster: {found['results']:,} recorded results (30 days x 288 sweeps x "
          f"{len(EVENT_LOG_CHECKS)} checks; fabricated in {found['fabricate_seconds']:.1f}s)")
    print(f"  uptime from the event log, best of 2: {found['uptime_30d_seconds']:.2f}s "
          f"({found['uptime_30d_seconds'] / found['read'] * 1e6:.0f} us per result); api 30 d {found['api_30d']}")
    print(f"  weekly ops_report from the latest materializations, best of 3: {found['report_seconds']:.3f}s, "
          f"{found['report_characters']:,} characters")
    print(f"  peak traced memory streaming one check: {found['peak_7d'] / 1024:.0f} KiB for 7 days, "
          f"{found['peak_30d'] / 1024:.0f} KiB for 30 days")
    print(f"  targets: report <= {REPORT_TARGET_SECONDS:g}s, memory flat: {'PASS' if ok else 'FAIL'}")
    return ok


def run() -> bool:
    snapshot_ok = bench_snapshot()
    print()
    report_ok = bench_report()
    print()
    event_log_ok = bench_event_log()
    return snapshot_ok and report_ok and event_log_ok


if __name__ == "__main__":
    if sys.argv[1:2] == ["event-log"]:
        if "--json" in sys.argv:
            print(json.dumps(event_log_child()))
            raise SystemExit(0)
        raise SystemExit(0 if bench_event_log() else 1)
    raise SystemExit(0 if run() else 1)
