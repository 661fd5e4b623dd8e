"""database_stats as a Dagster asset against the real PostgreSQL: metadata the UI plots, the
per-table view, partitioned checks, deltas from the previous materialization, growth from the
history, its schedule, and the faults (unreachable, a statement timeout on the catalog, a
threshold that is not a number)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

import dagster as dg
import psycopg
import pytest

from ops_platform.defs.insight import database_stats as stats_defs
from ops_platform_tests.conftest import DB_PASSWORD, TEST_DATABASES, free_port, psql, reset_database
from ops_platform_tests.dagster_private import DagsterRunStatus
from ops_platform_tests.insight_helpers import (
    STATS_JOB,
    add_run,
    check_evaluations,
    failure_description,
    run_stats,
    superuser_url,
)

CHECKS = {"snapshot", "connections", "xid_wraparound", "idle_in_transaction", "long_transaction", "dead_tuples",
          "replication_slot_wal", "database_growth"}


@pytest.fixture(scope="module", autouse=True)
def production_database():
    reset_database("production")
    psql("ANALYZE", database=TEST_DATABASES["production"])
    yield


def test_snapshot_metadata_checks_and_deltas(instance):
    first = run_stats(instance)
    assert first.success
    [materialization] = first.asset_materializations_for_node("database_stats")
    assert materialization.partition == "production"
    metadata = materialization.metadata
    for key in ("database_size_bytes", "connections_used", "connections_limit", "xid_age", "table_count",
                "replication_slot_retained_bytes", "snapshot_queries", "dead_tuples_max"):
        assert isinstance(metadata[key], dg.IntMetadataValue), key
    for key in ("connections_percent", "xid_age_percent", "idle_in_transaction_seconds", "snapshot_seconds"):
        assert isinstance(metadata[key], dg.FloatMetadataValue), key
    assert metadata["table_count"].value == 2 and metadata["snapshot_queries"].value <= 20
    assert "cache_hit_percent" not in metadata  # the first snapshot has nothing to compare with
    tables = metadata["tables"]
    assert isinstance(tables, dg.TableMetadataValue)
    rows = {row.data["table"]: row.data for row in tables.records}
    assert set(rows) == {"public.customers", "public.orders"}
    assert rows["public.orders"]["total_bytes"] > 0 and rows["public.orders"]["estimated_rows"] is not None
    assert isinstance(metadata["statements"], dg.MarkdownMetadataValue)
    assert "pg_stat_statements" in metadata["statements"].value
    assert isinstance(metadata["snapshot"], dg.JsonMetadataValue)
    evaluations = check_evaluations(first)
    assert set(evaluations) == CHECKS
    assert all(evaluation.passed for evaluation in evaluations.values())
    assert {evaluation.partition for evaluation in evaluations.values()} == {"production"}
    assert evaluations["long_transaction"].severity == dg.AssetCheckSeverity.WARN
    assert evaluations["connections"].severity == dg.AssetCheckSeverity.ERROR
    assert evaluations["connections"].metadata["environment"].value == "production"
    # Readable: the size as a size beside the number the UI plots, the time as a time (not a float plotted)
    assert metadata["database_size"].value.endswith(("KB", "MB"))
    assert isinstance(evaluations["connections"].metadata["collected_at"], dg.TimestampMetadataValue)
    assert DB_PASSWORD not in str(metadata) and DB_PASSWORD not in str(evaluations)

    psql("SELECT count(*) FROM orders; SELECT count(*) FROM customers", database=TEST_DATABASES["production"])
    second = run_stats(instance)
    assert second.success
    [later] = second.asset_materializations_for_node("database_stats")
    assert isinstance(later.metadata["cache_hit_percent"], dg.FloatMetadataValue)  # since the first snapshot
    assert 0 < later.metadata["cache_hit_percent"].value <= 100
    assert isinstance(later.metadata["deadlocks_since_last"], dg.IntMetadataValue)
    assert isinstance(later.metadata["transactions_per_second"], dg.FloatMetadataValue)
    assert "growth_percent_day" not in later.metadata  # no snapshot a day old yet


def test_growth_over_a_day_comes_from_the_materialization_history(instance, monkeypatch):
    assert run_stats(instance).success
    psql("INSERT INTO orders (customer_id, total, note) SELECT 1, 1, repeat(md5(g::text), 8) "
         "FROM generate_series(1, 20000) g", database=TEST_DATABASES["production"])
    monkeypatch.setenv("STATS_GROWTH_PERCENT", "1")
    a_day_later = time.time() + 25 * 3600
    monkeypatch.setattr(stats_defs.time, "time", lambda: a_day_later)
    result = run_stats(instance)
    assert result.success
    [materialization] = result.asset_materializations_for_node("database_stats")
    assert materialization.metadata["growth_percent_day"].value > 1
    growth = check_evaluations(result)["database_growth"]
    assert not growth.passed and growth.severity == dg.AssetCheckSeverity.WARN
    assert "in a day (limit 1 %)" in growth.description


def test_unreachable_database_is_a_failed_snapshot_in_one_line(instance, monkeypatch):
    port = free_port()
    monkeypatch.setenv("PRODUCTION_DATABASE_URL", f"postgresql://ops_test:{DB_PASSWORD}@127.0.0.1:{port}/app")
    result = run_stats(instance)
    assert not result.success
    description = failure_description(result)
    assert description.startswith(f"database statistics of production: cannot connect to 127.0.0.1:{port}/app")
    assert "\n" not in description and DB_PASSWORD not in description
    evaluations = check_evaluations(result)
    assert set(evaluations) == {"snapshot"} and not evaluations["snapshot"].passed
    assert evaluations["snapshot"].description == description.split(": ", 1)[1]
    assert result.asset_materializations_for_node("database_stats") == []


def test_a_statement_timeout_on_the_catalog_is_reported(instance, monkeypatch):
    monkeypatch.setenv("STATS_STATEMENT_TIMEOUT_MS", "300")
    monkeypatch.setenv("STATS_LOCK_TIMEOUT_MS", "5000")
    with psycopg.connect(superuser_url("production")) as holder:
        holder.execute("LOCK TABLE pg_catalog.pg_settings IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        result = run_stats(instance)
        elapsed = time.monotonic() - started
    assert not result.success and elapsed < 30
    assert failure_description(result) == ("database statistics of production: statement timeout (300 ms) while "
                                           "reading database settings and size")
    snapshot = check_evaluations(result)["snapshot"]
    assert not snapshot.passed and snapshot.metadata["error_kind"].value == "timeout"


def test_a_threshold_that_is_not_a_number_fails_the_run_in_one_line(instance, monkeypatch):
    monkeypatch.setenv("STATS_CONNECTIONS_PERCENT", "eighty")
    result = run_stats(instance)
    assert not result.success
    assert failure_description(result) == ("database statistics of production: STATS_CONNECTIONS_PERCENT must be "
                                           "a number, got 'eighty'")
    assert not check_evaluations(result)["snapshot"].passed


def test_the_schedule_asks_for_every_environment_and_skips_one_still_waiting(instance, monkeypatch):
    when = datetime(2026, 3, 8, 7, 15, tzinfo=timezone.utc)
    requests = stats_defs.database_stats_schedule(dg.build_schedule_context(instance=instance,
                                                                           scheduled_execution_time=when))
    assert [r.partition_key for r in requests] == ["production", "staging", "development"]
    assert requests[0].run_key == "production-database-stats-2026-03-08T07:15:00+00:00"
    add_run(instance, STATS_JOB, DagsterRunStatus.STARTED, tags={"dagster/partition": "production"})
    requests = stats_defs.database_stats_schedule(dg.build_schedule_context(instance=instance,
                                                                           scheduled_execution_time=when))
    assert [r.partition_key for r in requests] == ["staging", "development"]
    # an unreachable database does not touch the schedule: it only names runs
    monkeypatch.setenv("STAGING_DATABASE_URL", f"postgresql://ops_test@127.0.0.1:{free_port()}/nowhere")
    requests = stats_defs.database_stats_schedule(dg.build_schedule_context(instance=instance,
                                                                           scheduled_execution_time=when))
    assert "staging" in [r.partition_key for r in requests]


def test_a_monitoring_role_with_pg_monitor_through_the_stats_url(instance, monkeypatch):
    """Without pg_monitor the app's role cannot see other roles' sessions; a dedicated role with
    only pg_monitor (PRODUCTION_STATS_DATABASE_URL) sees them all."""
    role = f"ops_insight_ui_monitor_{os.getpid()}"
    psql(f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'monitor-Pw-77'; GRANT pg_monitor TO {role}")
    try:
        with psycopg.connect(superuser_url("production")) as other:
            other.execute("SELECT 1")  # another role's session, idle in a transaction
            plain = run_stats(instance)
            snapshot = plain.asset_materializations_for_node("database_stats")[0].metadata["notes"].value
            assert "hidden from this role" in snapshot
            monkeypatch.setenv("PRODUCTION_STATS_DATABASE_URL",
                               f"postgresql://nobody_{os.getpid()}@127.0.0.1:5432/{TEST_DATABASES['production']}")
            wrong = run_stats(instance)
            assert not wrong.success and f'role "nobody_{os.getpid()}" does not exist' in failure_description(wrong)
            monkeypatch.setenv("PRODUCTION_STATS_DATABASE_URL", f"postgresql://{role}:monitor-Pw-77@127.0.0.1:5432/"
                                                                f"{TEST_DATABASES['production']}")
            monitored = run_stats(instance)
            assert monitored.success
            metadata = monitored.asset_materializations_for_node("database_stats")[0].metadata
            assert "hidden" not in str(metadata.get("notes", ""))
            assert metadata["connections_idle_in_transaction"].value >= 1
            assert "monitor-Pw-77" not in str(metadata)
    finally:
        psql(f"DROP ROLE IF EXISTS {role}")
