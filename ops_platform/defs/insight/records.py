"""What the insight assets read back from the Dagster instance: earlier materializations (their
metadata is where a snapshot, an uptime or a backup history is kept), check results streamed page
by page, run outcomes, and the health sensor's state. Nothing here changes the instance."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timezone

import dagster as dg

from ops_platform.defs.alerts.sensors import run_failure_reason
from ops_platform.defs.dagster_private import AssetCheckExecutionRecordStatus, PartitionKeyFilter, StepEventStatus
from ops_platform.lib.insight.backup_history import BackupRun
from ops_platform.lib.insight.deployments import FAILED, SUCCEEDED, DeploymentRecord
from ops_platform.lib.insight.open_incidents import OpenIncident, from_health_cursor
from ops_platform.lib.insight.uptime import NewestFirstSpool
from ops_platform.lib.redact import Redactor
from ops_platform.lib.tags import ENVIRONMENT, PARTITION
from ops_platform.lib.targets import fleet_step_key

PAGE = 500
HEALTH_SENSOR = "health_alert_sensor"
DEPLOYMENT_JOB = "verify_deployment_job"
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
_STEP_PREFIX = re.compile(r"^step [^:\s]+: ")


def failure_reason(instance: dg.DagsterInstance, run_id: str, redactor: Redactor) -> str:
    """A failed run's reason (its first failed step's error) without the step's name, redacted."""
    return redactor(_STEP_PREFIX.sub("", run_failure_reason(instance, run_id)))


@dataclass
class Materialization:
    """One earlier materialization of a partition: when, and its metadata as plain values."""

    timestamp: float
    run_id: str
    metadata: dict

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)


def _plain(record) -> Materialization:
    materialization = record.asset_materialization
    metadata = {key: value.value for key, value in (materialization.metadata or {}).items()}
    return Materialization(record.timestamp, record.run_id, metadata)


def materialization(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None, *,
                    before: float | None = None, after: float | None = None,
                    oldest: bool = False) -> Materialization | None:
    """The newest materialization (``oldest``: the oldest) of the partition, optionally only
    those before or after an epoch time. One indexed query."""
    records_filter = dg.AssetRecordsFilter(
        asset_key=key, asset_partitions=[partition] if partition is not None else None,
        before_timestamp=before, after_timestamp=after)
    found = instance.fetch_materializations(records_filter, limit=1, ascending=oldest).records
    return _plain(found[0]) if found else None


def latest_check_results(instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey],
                         partition: str) -> dict[str, dg.AssetCheckEvaluation]:
    """The latest finished result of each check for one partition, by check name."""
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        check_keys, partition_filter=PartitionKeyFilter(key=partition))
    found = {}
    for key, record in latest.items():
        if record.status == AssetCheckExecutionRecordStatus.PLANNED or record.event is None:
            continue
        evaluation = record.event.dagster_event.event_specific_data if record.event.dagster_event else None
        if isinstance(evaluation, dg.AssetCheckEvaluation):
            found[key.name] = evaluation
    return found


def check_history_newest_first(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey,
                               since: float) -> Iterator[dict]:
    """Finished results of one check, newest first, as their metadata (plain values), page by page:
    only one page is held at a time. Stops after the first result older than ``since`` (it still
    covers the time after it, up to the next result)."""
    cursor = None
    while True:
        page = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=PAGE, cursor=cursor)
        if not page:
            return
        for record in page:
            if record.status == AssetCheckExecutionRecordStatus.PLANNED or record.event is None:
                continue
            evaluation = record.event.dagster_event.event_specific_data if record.event.dagster_event else None
            if not isinstance(evaluation, dg.AssetCheckEvaluation):
                continue
            metadata = {key: value.value for key, value in (evaluation.metadata or {}).items()}
            if "checked_at" not in metadata:
                continue
            yield metadata
            if float(metadata["checked_at"]) < since:
                return
        cursor = page[-1].id


def spool_health_results(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, since: float
                         ) -> tuple[str | None, NewestFirstSpool]:
    """One health check's history since ``since`` in a spool (replay it oldest first), and the
    component it records. ``ok`` is the probe's verdict (degraded counts as up), the latency in seconds."""
    spool, component = NewestFirstSpool(), None
    for metadata in check_history_newest_first(instance, check_key, since):
        component = component or str(metadata.get("component") or "")
        latency_ms = metadata.get("latency_ms")
        spool.add(float(metadata["checked_at"]), metadata.get("status") != "unhealthy",
                  None if latency_ms is None else float(latency_ms) / 1000.0)
    return component, spool


def spool_results_by_database(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, since: float
                              ) -> tuple[list[str], NewestFirstSpool]:
    """A fleet check's history since ``since`` (each result holds every database's
    ``[status, reason, latency_ms]`` under ``targets``) in one spool, each database's results under
    its index in the names returned."""
    spool, names, index = NewestFirstSpool(), [], {}
    for metadata in check_history_newest_first(instance, check_key, since):
        for name, (status, _, latency_ms) in (metadata.get("targets") or {}).items():
            if name not in index:
                index[name] = len(names)
                names.append(name)
            spool.add(float(metadata["checked_at"]), status != "unhealthy",
                      None if latency_ms is None else float(latency_ms) / 1000.0, index[name])
    return names, spool


def _ended_at(record) -> datetime:
    moment = record.end_time or record.update_timestamp.timestamp()
    return datetime.fromtimestamp(moment, timezone.utc)


def job_runs(instance: dg.DagsterInstance, job_name: str, since: datetime, partition: str | None = None,
             limit: int = 1000):
    """Finished (succeeded or failed) runs of a job created since ``since``, newest first."""
    tags = {PARTITION: partition} if partition else None
    return instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, statuses=FINISHED, created_after=since, tags=tags), limit=limit)


def backup_runs(instance: dg.DagsterInstance, environment: str, since: datetime, redactor: Redactor
                ) -> list[BackupRun]:
    """Every finished backup of the target since ``since``: its ``backup_job`` runs (schedule, CLI
    or UI) and its steps in ``fleet_backup_job`` runs (a server's schedule); a failed one with its
    error."""
    runs = []
    for record in job_runs(instance, "backup_job", since, environment):
        run = record.dagster_run
        ok = run.status == dg.DagsterRunStatus.SUCCESS
        reason = "" if ok else failure_reason(instance, run.run_id, redactor)
        runs.append(BackupRun(_ended_at(record), environment, ok, reason))
    step_key = fleet_step_key(environment)
    for record in job_runs(instance, "fleet_backup_job", since):
        finished = _finished_fleet_steps(instance, record.dagster_run.run_id).get(step_key)
        if finished is not None:
            ended, ok, reason = finished
            runs.append(BackupRun(datetime.fromtimestamp(ended, timezone.utc), environment, ok, redactor(reason)))
    return runs


@lru_cache(maxsize=256)
def _finished_fleet_steps(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, bool, str]]:
    """A finished fleet run's backup steps: step key -> (ended, succeeded, failure description).
    A finished run does not change, so a report over many targets reads each run once."""
    steps = {}
    for stats in instance.get_run_step_stats(run_id):
        if stats.status in (StepEventStatus.SUCCESS, StepEventStatus.FAILURE) and stats.end_time:
            steps[stats.step_key] = (stats.end_time, stats.status == StepEventStatus.SUCCESS, "")
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records:
        event = record.event_log_entry.dagster_event
        if event.step_key in steps:
            data = event.step_failure_data
            text = (data.user_failure_data.description if data.user_failure_data else None) or \
                (data.error.message if data.error else "") or "the step failed"
            ended, ok, _ = steps[event.step_key]
            steps[event.step_key] = (ended, ok, text.strip().splitlines()[0])
    return steps


def failed_drill_runs(instance: dg.DagsterInstance, environment: str, since: datetime, redactor: Redactor
                      ) -> list[tuple[datetime, str, str]]:
    """Failed ``restore_drill_job`` runs: (ended, run id, reason). A drill that failed before it
    chose a backup wrote no ``drill`` entry into any manifest; these runs are the only record."""
    return [(_ended_at(record), record.dagster_run.run_id, failure_reason(instance, record.dagster_run.run_id, redactor))
            for record in job_runs(instance, "restore_drill_job", since, environment)
            if record.dagster_run.status == dg.DagsterRunStatus.FAILURE]


def deployment_records(instance: dg.DagsterInstance, since: datetime, redactor: Redactor) -> list[DeploymentRecord]:
    """Every finished ``verify_deployment_job`` run since ``since``: the version from its config,
    the outcome from its observation on ``<env>_api`` (a run that failed before it observed
    anything, e.g. a bad setting, is ``failed``), the reason from its failed step."""
    found = []
    for record in job_runs(instance, DEPLOYMENT_JOB, since):
        run = record.dagster_run
        config = (((run.run_config or {}).get("ops") or {}).get("verify_deployment") or {}).get("config") or {}
        environment = run.tags.get(ENVIRONMENT) or config.get("environment")
        if not environment:
            continue
        version = str(config.get("expected_version") or "?")
        if run.status == dg.DagsterRunStatus.SUCCESS:
            found.append(DeploymentRecord(_ended_at(record), environment, version, SUCCEEDED))
            continue
        outcome, reason = FAILED, None
        for event in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION).records:
            observation = event.event_log_entry.asset_observation
            metadata = {key: value.value for key, value in ((observation.metadata or {}) if observation else {}).items()}
            if "outcome" in metadata:
                outcome, reason = str(metadata["outcome"]), metadata.get("reason")
        reason = redactor(reason) if reason else failure_reason(instance, run.run_id, redactor)
        found.append(DeploymentRecord(_ended_at(record), environment, version, outcome, reason))
    return found


def health_sensor_cursor(instance: dg.DagsterInstance) -> str | None:
    """The health alert sensor's cursor (its incidents and sweep watch), or None before its first tick."""
    for state in instance.all_instigator_state():
        if state.name == HEALTH_SENSOR and state.instigator_data is not None:
            return getattr(state.instigator_data, "cursor", None)
    return None


def health_incidents(instance: dg.DagsterInstance, now: float) -> tuple[list[OpenIncident], str | None]:
    """The incidents the health sensor announced and has not closed, and whether the sweeps stopped."""
    return from_health_cursor(health_sensor_cursor(instance), now)


def metadata_json(value) -> dict | list | None:
    """A JSON metadata value read back (already a dict or list; a string from older records)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value
