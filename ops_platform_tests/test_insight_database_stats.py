"""database_stats and its checks against the real local PostgreSQL: each condition is created for
real, fails, recovers, and the ConditionTracker announces it exactly once each way."""

from __future__ import annotations

import json
import os
import time

import psycopg
import pytest

from ops_platform.lib.insight.conditions import (
    CLEARED,
    ERROR,
    STARTED,
    WARN,
    ConditionAlertSettings,
    ConditionTracker,
    StatsThresholds,
    evaluate,
)
from ops_platform.lib.insight.database_stats import DatabaseSnapshot, StatsError, collect_snapshot
from ops_platform_tests.conftest import PG_HOST, PG_PORT, SAMPLE_SCHEMA, free_port, psql

DATABASE = f"ops_insight_{os.getpid()}"
URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{DATABASE}"
MONITOR_ROLE = f"ops_insight_monitor_{os.getpid()}"
PLAIN_ROLE = f"ops_insight_plain_{os.getpid()}"


@pytest.fixture(scope="module", autouse=True)
def insight_db():
    psql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{DATABASE}"')
    psql(SAMPLE_SCHEMA.format(customers=500, orders=2000), database=DATABASE)
    yield URL
    psql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def collect(url: str = URL, previous=None, **overrides) -> DatabaseSnapshot:
    options = {"statement_timeout_ms": 5000, "lock_timeout_ms": 200, "top_tables": 10, "top_statements": 5}
    options.update(overrides)
    return collect_snapshot(url, previous=previous, **options)


class Scenario:
    """One check, observed through snapshots and a tracker that alerts on errors and warnings."""

    def __init__(self, name: str, thresholds: StatsThresholds):
        self.name = name
        self.thresholds = thresholds
        self.tracker = ConditionTracker(ConditionAlertSettings(alert_severities=(ERROR, WARN)))
        self.events = []
        self.tick = 0

    def observe(self, size_a_day_ago=None, snapshot=None):
        snapshot = snapshot or collect()
        [result] = [r for r in evaluate(snapshot, self.thresholds, size_a_day_ago) if r.name == self.name]
        self.tick += 1
        self.events += self.tracker.observe("production", [result], float(self.tick))
        return result

    def kinds(self):
        return [(event.kind, event.name) for event in self.events]


def test_snapshot_contents_round_trip_through_json():
    snapshot = collect()
    assert snapshot.database == DATABASE
    assert snapshot.size_bytes > 0 and snapshot.server_version_num >= 130000
    assert {t.qualified_name for t in snapshot.tables} >= {"public.customers", "public.orders"}
    orders = next(t for t in snapshot.tables if t.name == "orders")
    assert orders.total_bytes == orders.heap_bytes + orders.index_bytes + orders.toast_bytes
    assert orders.index_bytes > 0 and orders.heap_bytes > 0
    assert snapshot.table_count == 2 and snapshot.sizes_exact and snapshot.locked_tables == 0
    assert snapshot.connections.limit == snapshot.connections.max_connections - snapshot.connections.superuser_reserved
    assert any(age.database == DATABASE for age in snapshot.database_ages)
    assert snapshot.activity is None and any("first snapshot" in note for note in snapshot.notes)
    data = json.loads(json.dumps(snapshot.to_dict()))
    assert DatabaseSnapshot.from_dict(data) == snapshot


def test_few_queries_and_no_user_table_scan():
    counters = ("SELECT coalesce(sum(seq_scan), 0) + coalesce(sum(idx_scan), 0) + coalesce(sum(seq_tup_read), 0) "
                "FROM pg_stat_user_tables")
    before = psql(counters, database=DATABASE)
    snapshot = collect()
    time.sleep(0.1)
    assert psql(counters, database=DATABASE) == before
    assert 1 <= snapshot.query_count <= 20


def test_deltas_since_previous_and_after_a_stats_reset():
    first = collect()
    psql("SELECT count(*) FROM orders", database=DATABASE)
    second = collect(previous=first.to_dict())
    assert second.activity is not None and not second.activity.stats_reset
    # snapshots a moment apart (a manual run right after the scheduled one) still have a rate
    assert second.activity.interval_seconds > 0 and second.activity.blks_hit + second.activity.blks_read > 0
    assert second.activity.cache_hit_ratio is None or 0 <= second.activity.cache_hit_ratio <= 1
    psql("SELECT pg_stat_reset()", database=DATABASE)
    third = collect(previous=second)
    assert third.activity.stats_reset
    assert any("reset" in note for note in third.notes)


def test_idle_in_transaction_and_long_transaction_fail_then_recover():
    thresholds = StatsThresholds(idle_in_transaction_minutes=0.02, long_transaction_minutes=0.02)  # 1.2 s
    idle, long = Scenario("idle_in_transaction", thresholds), Scenario("long_transaction", thresholds)
    snapshot = collect()
    assert idle.observe(snapshot=snapshot).passed and long.observe(snapshot=snapshot).passed
    with psycopg.connect(URL, application_name="stuck-worker") as holder:
        holder.execute("SELECT count(*) FROM customers")  # opens a transaction and leaves it idle
        time.sleep(1.5)
        for _ in range(2):
            snapshot = collect()
            result = idle.observe(snapshot=snapshot)
            assert not result.passed and "stuck-worker" in result.description
            assert not long.observe(snapshot=snapshot).passed
        assert snapshot.oldest_idle_in_transaction.idle_seconds >= 1.2
        assert snapshot.oldest_transaction.pid == snapshot.oldest_idle_in_transaction.pid
    snapshot = collect()
    assert idle.observe(snapshot=snapshot).passed and long.observe(snapshot=snapshot).passed
    assert idle.kinds() == [(STARTED, "idle_in_transaction"), (CLEARED, "idle_in_transaction")]
    assert long.kinds() == [(STARTED, "long_transaction"), (CLEARED, "long_transaction")]


def test_connection_pressure_fails_then_recovers():
    baseline = collect().connections
    extra = 12
    percent = 100.0 * (baseline.used + extra / 2) / baseline.limit
    scenario = Scenario("connections", StatsThresholds(connections_percent=percent))
    assert scenario.observe().passed
    held = [psycopg.connect(URL, autocommit=True) for _ in range(extra)]
    try:
        result = scenario.observe()
        assert not result.passed and result.severity == ERROR
        assert result.metadata["used"] >= baseline.used + extra - 2
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.2)
    assert scenario.observe().passed
    assert scenario.kinds() == [(STARTED, "connections"), (CLEARED, "connections")]


def _wait_for(predicate, timeout=8.0):
    deadline = time.monotonic() + timeout
    while True:
        snapshot = collect()
        if predicate(snapshot) or time.monotonic() > deadline:
            return snapshot
        time.sleep(0.3)


def test_dead_tuples_without_vacuum_fail_then_recover():
    psql("CREATE TABLE bloated (id int PRIMARY KEY, note text) WITH (autovacuum_enabled = false);"
         "INSERT INTO bloated SELECT g, md5(g::text) FROM generate_series(1, 3000) g", database=DATABASE)
    scenario = Scenario("dead_tuples", StatsThresholds(dead_tuples_min=1000, dead_tuples_percent=10))
    with psycopg.connect(URL, autocommit=True) as writer:
        writer.execute("DELETE FROM bloated WHERE id <= 2000")
        writer.execute("SELECT pg_stat_force_next_flush()")

        def dead(snapshot):
            return next((t.dead_tuples for t in snapshot.dead_tuple_tables if t.name == "bloated"), 0)

        snapshot = _wait_for(lambda s: dead(s) >= 2000)
        assert dead(snapshot) >= 2000
        result = scenario.observe(snapshot=snapshot)
        assert not result.passed and "public.bloated" in result.description and "never vacuumed" in result.description
        writer.execute("VACUUM bloated")
        writer.execute("SELECT pg_stat_force_next_flush()")
    snapshot = _wait_for(lambda s: dead(s) == 0)
    assert scenario.observe(snapshot=snapshot).passed
    assert scenario.kinds() == [(STARTED, "dead_tuples"), (CLEARED, "dead_tuples")]
    psql("DROP TABLE bloated", database=DATABASE)


def test_database_growth_against_the_size_a_day_ago():
    scenario = Scenario("database_growth", StatsThresholds(growth_percent=10))
    yesterday = collect()
    assert scenario.observe(size_a_day_ago=None, snapshot=yesterday).passed
    psql("CREATE TABLE growth AS SELECT g AS id, repeat(md5(g::text), 40) AS body FROM generate_series(1, 4000) g",
         database=DATABASE)
    today = collect()
    result = scenario.observe(size_a_day_ago=yesterday.size_bytes, snapshot=today)
    assert not result.passed and result.metadata["growth_percent"] > 10
    tomorrow = collect()
    assert scenario.observe(size_a_day_ago=today.size_bytes, snapshot=tomorrow).passed
    assert scenario.kinds() == [(STARTED, "database_growth"), (CLEARED, "database_growth")]
    psql("DROP TABLE growth", database=DATABASE)


def test_replication_slot_retaining_wal_fails_then_recovers():
    slot = f"ops_insight_slot_{os.getpid()}"
    scenario = Scenario("replication_slot_wal", StatsThresholds(slot_retained_gb=1e-9))

    def only_mine(snapshot):
        # Slots are server-wide; another session's slot on a shared server is not this test's.
        snapshot.replication_slots = [s for s in snapshot.replication_slots if s.name == slot]
        return snapshot

    assert scenario.observe(snapshot=only_mine(collect())).passed
    psql(f"SELECT pg_create_physical_replication_slot('{slot}', true)")
    try:
        psql("CREATE TABLE wal_maker AS SELECT g FROM generate_series(1, 20000) g", database=DATABASE)
        snapshot = only_mine(collect())
        [mine] = snapshot.replication_slots
        assert mine.retained_bytes > 0 and mine.slot_type == "physical" and not mine.active
        result = scenario.observe(snapshot=snapshot)
        assert not result.passed and slot in result.description
    finally:
        psql(f"SELECT pg_drop_replication_slot('{slot}')")
        psql("DROP TABLE IF EXISTS wal_maker", database=DATABASE)
    assert scenario.observe(snapshot=only_mine(collect())).passed
    assert scenario.kinds() == [(STARTED, "replication_slot_wal"), (CLEARED, "replication_slot_wal")]


def test_xid_age_against_a_fraction_of_two_to_the_31():
    snapshot = collect()
    [default] = [r for r in evaluate(snapshot, StatsThresholds(), None) if r.name == "xid_wraparound"]
    [tight] = [r for r in evaluate(snapshot, StatsThresholds(xid_age_fraction=1e-9), None) if r.name == "xid_wraparound"]
    assert default.passed and not tight.passed and tight.severity == ERROR


def test_pg_stat_statements_absent_then_installed_but_not_loaded():
    absent = collect()
    assert absent.statements == [] and "not installed" in absent.statements_note
    psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", database=DATABASE)
    try:
        with psycopg.connect(URL) as direct, pytest.raises(psycopg.Error, match="shared_preload_libraries"):
            direct.execute("SELECT count(*) FROM pg_stat_statements")
        unloaded = collect()
        assert unloaded.statements == []
        assert "installed but not loaded" in unloaded.statements_note
        assert "shared_preload_libraries" in unloaded.statements_note
    finally:
        psql("DROP EXTENSION IF EXISTS pg_stat_statements", database=DATABASE)


def test_a_pg_monitor_role_without_superuser_collects_everything():
    """``GRANT pg_monitor`` is all it takes (CONNECT comes from PUBLIC here); a role without it
    sees other sessions without their state, and is told so."""
    for role in (MONITOR_ROLE, PLAIN_ROLE):
        psql(f"DROP ROLE IF EXISTS {role}")
        psql(f"CREATE ROLE {role} LOGIN NOSUPERUSER")
    psql(f"GRANT pg_monitor TO {MONITOR_ROLE}")
    psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", database=DATABASE)
    try:
        with psycopg.connect(URL) as holder:
            holder.execute("SELECT count(*) FROM orders")
            time.sleep(0.2)
            monitor = collect(f"postgresql://{MONITOR_ROLE}@{PG_HOST}:{PG_PORT}/{DATABASE}")
            plain = collect(f"postgresql://{PLAIN_ROLE}@{PG_HOST}:{PG_PORT}/{DATABASE}")
        assert monitor.oldest_idle_in_transaction is not None
        assert "unknown" not in monitor.connections.by_state
        assert {t.name for t in monitor.tables} >= {"orders", "customers"}
        assert all(t.total_bytes for t in monitor.tables)
        assert monitor.size_bytes > 0 and monitor.database_ages
        assert "installed but not loaded" in monitor.statements_note
        assert not any("pg_monitor" in note for note in monitor.notes)
        assert plain.oldest_idle_in_transaction is None
        assert any("grant it pg_monitor" in note for note in plain.notes)
    finally:
        psql("DROP EXTENSION IF EXISTS pg_stat_statements", database=DATABASE)
        for role in (MONITOR_ROLE, PLAIN_ROLE):
            psql(f"DROP ROLE IF EXISTS {role}")


def test_a_locked_table_is_skipped_not_waited_for():
    with psycopg.connect(URL) as holder:
        holder.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        snapshot = collect(lock_timeout_ms=5000, statement_timeout_ms=10000)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0
    orders = next(t for t in snapshot.tables if t.name == "orders")
    assert orders.total_bytes is None and snapshot.locked_tables == 1
    assert next(t for t in snapshot.tables if t.name == "customers").total_bytes > 0
    assert any("locked" in note for note in snapshot.notes)


def test_unreachable_database_is_one_line_without_the_password():
    url = f"postgresql://ops:pw-Unreachable-77@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(StatsError) as raised:
        collect(url, connect_timeout_seconds=2)
    message = str(raised.value)
    assert message.startswith("cannot connect to 127.0.0.1:") and "\n" not in message
    assert "pw-Unreachable-77" not in message


def test_statement_and_lock_timeouts_on_a_catalog_are_one_line():
    """A session holding ACCESS EXCLUSIVE on this database's ``pg_settings`` view (a view over a
    function: locking it locks nothing else, unlike views over shared catalogs such as
    ``pg_database``, which would block every new connection to the server) makes the snapshot's
    read of it wait: the statement timeout, or the lock timeout, ends the wait."""
    with psycopg.connect(URL) as holder:
        holder.execute("LOCK TABLE pg_catalog.pg_settings IN ACCESS EXCLUSIVE MODE")
        locked = holder.execute("SELECT relation::regclass::text FROM pg_locks WHERE pid = pg_backend_pid() "
                                "AND locktype = 'relation' AND mode = 'AccessExclusiveLock'").fetchall()
        assert locked == [("pg_settings",)]
        started = time.monotonic()
        with pytest.raises(StatsError) as by_statement:
            collect(statement_timeout_ms=300, lock_timeout_ms=5000)
        assert time.monotonic() - started < 3
        with pytest.raises(StatsError) as by_lock:
            collect(statement_timeout_ms=5000, lock_timeout_ms=100)
    assert str(by_statement.value) == "statement timeout (300 ms) while reading database settings and size"
    assert str(by_lock.value) == "lock timeout (100 ms) while reading database settings and size"
    assert by_statement.value.kind == "timeout" and by_lock.value.kind == "lock"


def test_size_estimates_open_no_relation():
    psql("VACUUM ANALYZE orders", database=DATABASE)
    with psycopg.connect(URL) as holder:
        holder.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        snapshot = collect(exact_sizes=False)
    orders = next(t for t in snapshot.tables if t.name == "orders")
    assert not snapshot.sizes_exact and snapshot.locked_tables == 0
    assert orders.total_bytes > 0 and orders.index_bytes > 0
    assert any("estimates" in note for note in snapshot.notes)
