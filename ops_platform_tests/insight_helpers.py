"""Helpers of the insight tests: run the insight jobs in-process on a test instance with the code
location's resources, tick the condition sensor like the daemon, fabricate backups and history."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg

from ops_platform.defs.environments import ensure_partitions
from ops_platform.defs.health import assets as health_assets
from ops_platform.defs.insight import database_stats as stats_defs
from ops_platform.defs.insight import history as history_defs
from ops_platform.defs.insight import report as report_defs
from ops_platform.defs.insight import sensors as insight_sensors
from ops_platform.lib.artifacts import Manifest, make_backup_id, utc_iso
from ops_platform.lib.stores import LocalStore
from ops_platform_tests.conftest import PG_HOST, PG_PORT, TEST_DATABASES, platform_resources
from ops_platform_tests.dagster_private import DagsterRun, DagsterRunStatus

STATS_JOB = "database_stats_job"


def superuser_url(environment: str) -> str:
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{TEST_DATABASES[environment]}"


def insight_definitions(**resource_overrides) -> dg.Definitions:
    return dg.Definitions(
        assets=[stats_defs.database_stats, history_defs.uptime, history_defs.backup_history, report_defs.ops_report],
        jobs=[stats_defs.database_stats_job, history_defs.insight_history_job, report_defs.ops_report_job],
        resources=platform_resources(**resource_overrides))


def run_job(instance, job_name: str, partition: str | None = None, run_config: dict | None = None,
            **resource_overrides) -> dg.ExecuteInProcessResult:
    job = insight_definitions(**resource_overrides).resolve_job_def(job_name)
    if partition:
        ensure_partitions(instance, [partition])
    return job.execute_in_process(instance=instance, partition_key=partition, run_config=run_config,
                                  raise_on_error=False)


def run_stats(instance, environment: str = "production", **resource_overrides) -> dg.ExecuteInProcessResult:
    return run_job(instance, STATS_JOB, environment, **resource_overrides)


def run_report(instance, kind: str, **resource_overrides) -> dg.ExecuteInProcessResult:
    return run_job(instance, "ops_report_job", run_config={"ops": {"ops_report": {"config": {"kind": kind}}}},
                   **resource_overrides)


def failure_description(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    return failure.step_failure_data.user_failure_data.description


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


class ConditionDaemon:
    """Ticks database_condition_sensor as the daemon does: a fresh context each time, the cursor kept."""

    def __init__(self, instance, slack_resource, cursor: str | None = None):
        self.instance, self.slack_resource, self.cursor = instance, slack_resource, cursor

    def tick(self):
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                          resources=platform_resources(slack=self.slack_resource))
        result = insight_sensors.database_condition_sensor(context)
        self.cursor = context.cursor
        return result


def posted(slack_server) -> list[str]:
    """Texts sent through chat.postMessage (a webhook, when set, receives the same)."""
    return [r.text for r in slack_server.messages() if r.path.startswith("/api/chat.postMessage")]


def write_backup(root: Path, environment: str, created: datetime, *, stored: int = 4096, verified: bool = True,
                 drill: dict | None = None, duration: float = 12.0) -> Manifest:
    """A committed backup in the local store: an artifact of ``stored`` bytes and its manifest."""
    store = LocalStore(root)
    backup_id = make_backup_id(environment, created)
    artifact = f"{backup_id}.dump.zst"
    path = store.path(environment, artifact)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * stored)
    manifest = Manifest(id=backup_id, environment=environment, kind="scheduled", created_at=utc_iso(created),
                        database=TEST_DATABASES.get(environment, environment), server_version="15", pg_dump_version="15",
                        compression="zstd", compression_level=3, artifact=artifact, raw_bytes=stored * 3,
                        stored_bytes=stored, sha256="0" * 64, duration_seconds=duration, verified=verified,
                        locations=[str(path)], drill=drill)
    store.write_manifest(manifest)
    return manifest


def add_run(instance, job_name: str, status=DagsterRunStatus.FAILURE, tags: dict | None = None,
            run_config: dict | None = None) -> str:
    """A run record with no process behind it (a failed backup, a queued snapshot)."""
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name=job_name, run_id=run_id, status=status, tags=tags or {},
                                run_config=run_config or {}))
    return run_id


def record_health(instance, at: float, environment: str, component: str, ok: bool, latency_ms: float = 120.0):
    """One recorded health check result, as a sweep writes it."""
    key = health_assets.check_key_for(environment, component)
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=key.asset_key, check_name=key.name, passed=ok,
        metadata={"environment": environment, "component": component,
                  "status": "healthy" if ok else "unhealthy", "reason": "ok" if ok else "HTTP 503",
                  "latency_ms": dg.MetadataValue.float(latency_ms), "checked_at": dg.MetadataValue.float(at)},
        severity=dg.AssetCheckSeverity.ERROR))


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def hours_ago(hours: float) -> datetime:
    return now_utc() - timedelta(hours=hours)
