"""A queued run says why it waits (``queued_run_sensor``, ``lib/run_queue.py``), on an instance with
the project's own dagster.yaml; and database snapshots leave the platform's first minutes, and an
environment that is busy, alone, so a person's first backup starts at once."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ops_platform.defs import platform_start
from ops_platform.defs.insight import database_stats as stats_defs
from ops_platform.defs.run_queue import queued_run_sensor
from ops_platform.lib.run_queue import QueuedOrRunning, QueueLimits, why_queued
from ops_platform.lib.tags import WAITING_FOR
from ops_platform_tests.dagster_private import (
    DagsterRun,
    DagsterRunStatus,
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

NEEDS_SERVICES = False
DAGSTER_YAML = Path(__file__).resolve().parents[1] / "dagster.yaml"


@pytest.fixture
def project_instance():
    with dg.instance_for_test(overrides=yaml.safe_load(DAGSTER_YAML.read_text())) as instance:
        yield instance


def add_run(instance, job_name: str, status, partition: str | None = None) -> str:
    """A run record with no process behind it, as the UI or a schedule leaves it in the queue."""
    run_id = str(uuid.uuid4())
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("ops_platform"), "__repository__"),
                             job_name)
    instance.add_run(DagsterRun(job_name=job_name, run_id=run_id, status=status, remote_job_origin=origin,
                                tags={"dagster/partition": partition} if partition else {}))
    return run_id


def test_a_backup_queued_behind_a_snapshot_names_it(project_instance):
    snapshot = add_run(project_instance, "database_stats_job", DagsterRunStatus.STARTED, "development")
    add_run(project_instance, "backup_job", DagsterRunStatus.STARTED, "production")
    backup = add_run(project_instance, "__ASSET_JOB", DagsterRunStatus.QUEUED, "development")
    retention = add_run(project_instance, "retention_job", DagsterRunStatus.QUEUED, "staging")  # nothing in its way
    queued_run_sensor(dg.build_sensor_context(instance=project_instance))
    tags = project_instance.get_run_by_id(backup).tags
    assert tags[WAITING_FOR] == f"database_stats_job run {snapshot[:8]} of development (one run per environment at a time)"
    reason = (f"Queued: waits for database_stats_job run {snapshot[:8]} of development to finish: the instance runs one "
              "run per environment at a time (dagster.yaml, concurrency.runs.tag_concurrency_limits)")
    assert reason in [record.message for record in project_instance.all_logs(backup)]
    assert WAITING_FOR not in project_instance.get_run_by_id(retention).tags
    queued_run_sensor(dg.build_sensor_context(instance=project_instance))  # said once, not every tick
    assert [record.message for record in project_instance.all_logs(backup)].count(reason) == 1


def test_pools_and_the_run_limit_are_named_too():
    dump = QueuedOrRunning("b" * 36, "backup_job", {"dagster/partition": "production"}, frozenset({"database_dumps"}))
    drill = QueuedOrRunning("d" * 36, "restore_drill_job", {"dagster/partition": "staging"}, frozenset({"database_dumps"}))
    limits = QueueLimits(4, [], {"database_dumps": (1, [dump.run_id])})
    wait = why_queued(drill, [dump], limits)
    assert wait.waiting_for == "a slot of the pool database_dumps, held by backup_job run bbbbbbbb of production"
    assert wait.reason == ("waits for a slot of the pool database_dumps (1 at a time), held by backup_job run bbbbbbbb "
                           "of production (dagster.yaml, concurrency.pools)")
    others = [QueuedOrRunning(str(n) * 36, "health_check_job", {}) for n in range(4)]
    assert why_queued(drill, others, QueueLimits(4)).waiting_for == "one of the 4 runs in progress (at most 4 at a time)"
    assert why_queued(drill, others[:3], QueueLimits(4)) is None


def test_snapshots_wait_for_the_platform_to_start_and_skip_a_busy_environment(project_instance, monkeypatch):
    loaded = datetime(2026, 3, 8, 7, 13, tzinfo=timezone.utc)
    monkeypatch.setattr(platform_start, "LOADED_AT", loaded.timestamp())

    def tick(minute: int):
        context = dg.build_schedule_context(instance=project_instance,
                                            scheduled_execution_time=loaded.replace(minute=minute))
        return stats_defs.database_stats_schedule(context)

    first = tick(15)
    assert isinstance(first, dg.SkipReason) and "the platform is starting" in first.skip_message
    add_run(project_instance, "__ASSET_JOB", DagsterRunStatus.QUEUED, "development")  # a person's first backup
    assert [request.partition_key for request in tick(30)] == ["production", "staging"]
