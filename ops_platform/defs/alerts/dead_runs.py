"""Runs whose process died (``kill -9``, the OOM killer, a reboot) stay ``STARTED`` for ever: the
environment then looks busy to the CLI, and the run queue holds every later backup of it behind
the dead run. The steps that work on an environment beat a heartbeat on their run
(``run_guards.heartbeat``), and so does the process orchestrating a fleet run's steps
(``run_guards.beating``); a run that stopped beating is marked failed, announced once, and what
it left behind (a ``.partial`` file, an incomplete multipart upload) is cleaned up. The failure is
announced once, by ``run_failure_slack_sensor``, with the reason and what was cleaned up."""

import socket
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from ops_platform.config import ConfigError, load_environments
from ops_platform.defs.dagster_private import IN_PROGRESS_RUN_STATUSES
from ops_platform.defs.resources import BackupBucketResource, BackupStorageResource
from ops_platform.defs.settings import BackupSettings
from ops_platform.lib import locks
from ops_platform.lib.artifacts import parse_utc, utc_iso
from ops_platform.lib.backup import clear_leftovers
from ops_platform.lib.tags import HEARTBEAT, HEARTBEAT_OF, HOST, LAUNCHED_BY, PARTITION, PID, SERVER

WATCHED_JOBS = ("backup_job", "retention_job", "restore_job", "restore_drill_job", "fleet_backup_job")
PARENT_RUN_ID = "dagster/parent_run_id"


def last_sign_of_life(record: dg.RunRecord) -> datetime:
    """The run's last heartbeat, or when it started (or was created) if it never beat. A retry
    starts with the tags of the run it retries, the killed run's last heartbeat included: a
    heartbeat another run wrote (HEARTBEAT_OF) is not this run's sign of life."""
    run = record.dagster_run
    beat = run.tags.get(HEARTBEAT)
    if beat and run.tags.get(HEARTBEAT_OF, run.run_id) == run.run_id:
        try:
            return parse_utc(beat)
        except ValueError:
            pass
    started = record.start_time or record.create_timestamp.timestamp()
    return datetime.fromtimestamp(started, timezone.utc)


def process_gone(run: dg.DagsterRun) -> bool:
    """A CLI run of this host whose process no longer exists: dead at once, no need to wait for
    its heartbeat to age (a reused pid only makes this wait for the heartbeat instead). A retry
    carries the pid of the run it retries, so only its heartbeat counts."""
    if run.tags.get(HOST) != socket.gethostname() or not run.tags.get(PID, "").isdigit() \
            or run.tags.get(PARENT_RUN_ID):
        return False
    return not Path(f"/proc/{run.tags[PID]}").exists()


def dead_runs(instance: dg.DagsterInstance, dead_after_seconds: float, now: datetime | None = None,
              partition: str | None = None) -> list[dg.RunRecord]:
    """Started runs of the watched jobs (of one environment, if given) whose process is gone, or
    that were silent for longer than ``dead_after_seconds``."""
    now = now or datetime.now(timezone.utc)
    filters = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], job_name=None,
                            tags={PARTITION: partition} if partition else {})
    return [record for record in instance.get_run_records(filters=filters)
            if record.dagster_run.job_name in WATCHED_JOBS
            and (process_gone(record.dagster_run)
                 or (now - last_sign_of_life(record)).total_seconds() > dead_after_seconds)]


def mark_dead(instance: dg.DagsterInstance, record: dg.RunRecord, cleaned: list[str] | None = None) -> str:
    """Mark a dead run failed, saying why in one line (the run-failure sensor posts it)."""
    run = record.dagster_run
    silent_since = utc_iso(last_sign_of_life(record))
    reason = (f"{run.job_name} of {_what(run)} (started from {run.tags.get(LAUNCHED_BY, 'the daemon')}) "
              f"stopped: its process is gone, no sign of life since {silent_since}")
    if run.job_name == "fleet_backup_job":
        reason += "; each target's next backup clears what its step left"
    if cleaned:
        reason += "; cleaned up: " + ", ".join(cleaned)
    instance.report_run_failed(run, message=reason)
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)  # its pool slot, at once
    return reason


def _what(run: dg.DagsterRun) -> str:
    """What the run was working on: its target, or a fleet run's server or targets."""
    if PARTITION in run.tags:
        return run.tags[PARTITION]
    if SERVER in run.tags:
        return f"server {run.tags[SERVER]}"
    targets = (run.run_config or {}).get("ops", {}).get("fleet_backup_targets", {}).get("config", {}).get("targets", [])
    return f"{len(targets)} targets ({', '.join(targets[:3])}{', ...' if len(targets) > 3 else ''})" if targets else "?"


def in_progress(instance: dg.DagsterInstance, partition: str, job_names, dead_after_seconds: float) -> list:
    """Runs of ``job_names`` in progress for the environment, after marking the dead ones failed
    (so a crashed run never holds an environment)."""
    for record in dead_runs(instance, dead_after_seconds, partition=partition):
        mark_dead(instance, record)
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=list(IN_PROGRESS_RUN_STATUSES),
                                                   tags={PARTITION: partition}))
    return [run for run in runs if run.job_name in job_names]


def clean_up_after(environment: str, job_name: str, backup_storage: BackupStorageResource,
                   backup_bucket: BackupBucketResource) -> list[str]:
    """Remove what a dead backup left, under the environment's lock (so nothing alive is using it)."""
    if job_name not in ("backup_job", "restore_job"):
        return []
    environments = load_environments()
    if environment not in environments:
        return []
    try:
        s3 = backup_bucket.store()
    except ConfigError:
        s3 = None
    try:
        with locks.environment_lock(environments[environment].database_url, environment, holder="dead_run_sensor"):
            return clear_leftovers(backup_storage.local_store(), s3, environment)
    except (locks.LockBusy, locks.LockUnavailable) as error:
        return [f"left for the next backup ({error})"]


@dg.sensor(
    name="dead_run_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks failed the backup, retention, restore, drill and fleet backup runs whose process died (no "
                "heartbeat for RUN_DEAD_AFTER_SECONDS) and cleans up what they left; run_failure_slack_sensor posts "
                "each once.",
)
def dead_run_sensor(context: dg.SensorEvaluationContext, backup_storage: BackupStorageResource,
                    backup_bucket: BackupBucketResource, backup_settings: BackupSettings) -> dg.SkipReason:
    found = dead_runs(context.instance, backup_settings.dead_run_seconds)
    for record in found:
        run = record.dagster_run
        cleaned = clean_up_after(run.tags.get(PARTITION, ""), run.job_name, backup_storage, backup_bucket)
        context.log.warning(mark_dead(context.instance, record, cleaned))
    return dg.SkipReason(f"marked {len(found)} dead run(s) failed" if found else "no dead runs")
