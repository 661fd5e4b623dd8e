"""The health alert sensor: reads the recorded health check results and posts incidents to Slack.

Its whole state (the last event read, every environment's incident state and the sweep watch)
lives in the sensor cursor, so a daemon restart neither re-alerts nor loses a recovery notice.
Environments with a deployment verification in progress are held: their state keeps moving, but
the verification sends the only message. A hold lasts at most the run's own time limit, which
DEPLOY_MAX_TIMEOUT_SECONDS and DEPLOY_ROLLBACK_TIMEOUT_SECONDS bound whatever a launcher asked for,
and is announced when it starts and when it ends. The first tick (no cursor yet) replays the recorded
history the same way, so enabling the sensor on an old instance announces only what is still down.

It also watches the sweeps themselves (a dead-man's switch, ``lib/incidents.py::SweepWatch``):
no result for HEALTH_SILENCE_INTERVALS sweep intervals, or a failing ``health_check_job`` (which
``run_failure_slack_sensor`` leaves to it), is one incident with reminders and one notice when
sweeps are back. A bad health setting does not stop this sensor: it keeps its defaults for the
bad value, and the failing sweeps report the setting.
"""


import json
import time
from dataclasses import asdict, dataclass, field

import dagster as dg

from ops_platform.defs.alerts.outbox import post_outbox
from ops_platform.defs.alerts.sensors import run_failure_reason
from ops_platform.defs.dagster_private import (
    FINISHED_STATUSES,
    IN_PROGRESS_RUN_STATUSES,
    AssetCheckExecutionRecordStatus,
)
from ops_platform.defs.deployments.jobs import verify_deployment_job
from ops_platform.defs.health import assets as health_assets
from ops_platform.defs.resources import OpsSlackResource
from ops_platform.defs.settings import DeploymentSettings, HealthSettings
from ops_platform.lib import probes
from ops_platform.lib.deploy import DeploymentLimits, max_runtime_seconds
from ops_platform.lib.incidents import (
    SWEEP_JOB,
    AlertEvent,
    IncidentTracker,
    hold_events,
    Observation,
    SweepRun,
    SweepWatch,
)
from ops_platform.lib.messages.health import incident_message
from ops_platform.lib.redact import Redactor
from ops_platform.lib.tags import ENVIRONMENT, MAX_RUNTIME

RECORDS_PER_CHECK = 200
# Slack posts inside one tick stay well under the tick's time limit: a tighter client, at most
# this many posts, and no new post once the budget is spent. Whatever is left waits in the cursor.


@dataclass
class SensorCursor:
    after: int = 0
    seen: set[int] = field(default_factory=set)
    pending_checks: set[str] = field(default_factory=set)
    outbox: list[dict] = field(default_factory=list)
    tracker: dict | None = None
    watch: dict | None = None
    holds: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"after": self.after, "seen": sorted(self.seen),
                           "pending_checks": sorted(self.pending_checks), "outbox": self.outbox,
                           "tracker": self.tracker, "watch": self.watch, "holds": self.holds},
                          separators=(",", ":"))


def _read_cursor(cursor: str | None) -> SensorCursor:
    try:
        data = json.loads(cursor) if cursor else {}
        outbox = [item for item in data.get("outbox") or [] if isinstance(item, dict)]
        tracker, watch, holds = data.get("tracker"), data.get("watch"), data.get("holds")
        return SensorCursor(int(data.get("after") or 0), {int(i) for i in data.get("seen") or []},
                            {str(key) for key in data.get("pending_checks") or []}, outbox,
                            tracker if isinstance(tracker, dict) else None,
                            watch if isinstance(watch, dict) else None,
                            {name: hold for name, hold in holds.items() if isinstance(hold, dict)}
                            if isinstance(holds, dict) else {})
    except (ValueError, AttributeError, TypeError):
        return SensorCursor()


def current_time() -> float:
    """The sensor's clock (the sweep watch measures silence on it)."""
    return time.time()


def latest_sweep_run(instance: dg.DagsterInstance, known: dict | None = None) -> SweepRun | None:
    """The newest finished (succeeded or failed) run of ``health_check_job``, from any entry point;
    a failed run's reason is read from its events once (``known`` is the last one seen)."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=SWEEP_JOB, statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]),
        limit=5)
    if not records:
        return None
    record = max(records, key=lambda r: (r.end_time or r.update_timestamp.timestamp(), r.storage_id))
    run = record.dagster_run
    ok = run.status == dg.DagsterRunStatus.SUCCESS
    if ok:
        reason = ""
    elif known and known.get("run_id") == run.run_id:
        reason = known.get("reason", "")
    else:
        reason = Redactor.from_environ()(run_failure_reason(instance, run.run_id))
    return SweepRun(run.run_id, ok, record.end_time or record.update_timestamp.timestamp(), reason)


def _observation(record) -> list[tuple[str, Observation]] | None:
    """A recorded health check result as (environment, observation); the fleet databases' one
    result as one (target, observation) per database in its metadata ``targets``."""
    evaluation = record.event.dagster_event.event_specific_data if record.event and record.event.dagster_event \
        else None
    if not isinstance(evaluation, dg.AssetCheckEvaluation):
        return None
    metadata = {key: value.value for key, value in (evaluation.metadata or {}).items()}
    if isinstance(metadata.get("targets"), dict) and "checked_at" in metadata:
        at = probes.checked_at_seconds(metadata["checked_at"])
        return [(str(name), Observation(component="postgres", ok=answer[0] != "unhealthy",
                                        reason=str(answer[1] or ""), at=at))
                for name, answer in sorted(metadata["targets"].items())
                if isinstance(answer, list) and len(answer) >= 2]
    if not {"environment", "component", "status", "checked_at"} <= set(metadata):
        return None
    return [(str(metadata["environment"]), Observation(
        component=str(metadata["component"]),
        ok=metadata["status"] != "unhealthy",
        reason=str(metadata.get("reason") or ""),
        at=probes.checked_at_seconds(metadata["checked_at"]),
    ))]


def new_observations(instance: dg.DagsterInstance, after: int, seen: set[int], check_keys,
                     pending_checks: set[str] | None = None, parse=_observation,
                     ) -> tuple[dict[str, list], int, set[int], set[str]]:
    """Health check results recorded since the last tick, by environment.

    Execution records get their id when a run is created (the check is planned) and their result
    when it runs, so a planned record stays pending until its run has finished, whatever state
    it is in meanwhile (not started, queued, running). The watermark never moves past a pending
    record; results above it that were already read are remembered in ``seen``; and every check
    with a pending record is read again on the next tick (``pending_checks``), even when newer
    results of that check have already been read. ``parse`` turns a finished record into
    ``(environment, item)``, a list of them, or None (``database_condition_sensor`` reads its own
    checks with it)."""
    pending_checks = pending_checks or set()
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(check_keys))
    changed = [key for key in check_keys
               if key.to_user_string() in pending_checks
               or (key in latest and latest[key].id > after and latest[key].id not in seen)]
    records = []
    for check_key in changed:
        history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=RECORDS_PER_CHECK)
        records += [(check_key, record) for record in history if record.id > after]
    run_unfinished: dict[str, bool] = {}

    def unfinished(run_id: str) -> bool:
        if run_id not in run_unfinished:
            run = instance.get_run_by_id(run_id) if run_id else None
            run_unfinished[run_id] = run is not None and run.status not in FINISHED_STATUSES
        return run_unfinished[run_id]

    by_environment: dict[str, list[Observation]] = {}
    still_pending: set[str] = set()
    watermark, blocked = after, False
    for check_key, record in sorted(records, key=lambda pair: pair[1].id):
        pending = record.status == AssetCheckExecutionRecordStatus.PLANNED and unfinished(record.run_id)
        if pending:
            still_pending.add(check_key.to_user_string())
        elif record.id not in seen:
            found = parse(record)
            for environment, item in (found if isinstance(found, list) else [found] if found else []):
                by_environment.setdefault(environment, []).append(item)
            seen.add(record.id)
        blocked = blocked or pending
        if not blocked:
            watermark = record.id
    return (by_environment, watermark, {record_id for record_id in seen if record_id > watermark},
            still_pending)


def verification_time_limit(run, limit: float | None = None) -> float:
    """How long a verification run may hold alerts: its ``dagster/max_runtime_seconds`` tag, else
    the bound computed from its own config (a run launched before the tag existed); never more
    than ``limit`` (``DeploymentLimits.hold_seconds``), whatever the launcher put in the tag."""
    limit = DeploymentLimits().hold_seconds if limit is None else limit
    try:
        return min(float(run.tags[MAX_RUNTIME]), limit)
    except (KeyError, ValueError):
        pass
    config = (((run.run_config or {}).get("ops") or {}).get("verify_deployment") or {}).get("config") or {}
    try:
        return min(max_runtime_seconds(config.get("timeout_seconds"), config.get("rollback_timeout_seconds")), limit)
    except (TypeError, ValueError):
        return min(max_runtime_seconds(None, None), limit)


def environments_being_verified(instance: dg.DagsterInstance, now: float | None = None,
                                limit: float | None = None) -> dict[str, dict]:
    """Environments with a verification run in progress, each with its hold: ``{"run_id", "since",
    "until"}`` (the run that holds longest). A run older than its own time limit is dead (its
    process was killed and nothing marked it finished) or over its bound, and holds nothing."""
    now = time.time() if now is None else now
    held: dict[str, dict] = {}
    for run_record in instance.get_run_records(
            filters=dg.RunsFilter(job_name=verify_deployment_job.name, statuses=list(IN_PROGRESS_RUN_STATUSES))):
        run = run_record.dagster_run
        environment = run.tags.get(ENVIRONMENT)
        if not environment:
            continue
        started = run_record.start_time or run_record.create_timestamp.timestamp()
        until = started + verification_time_limit(run, limit)
        if now <= until and until > held.get(environment, {}).get("until", 0):
            held[environment] = {"run_id": run.run_id, "since": started, "until": until}
    return held


def post_events(slack: OpsSlackResource, log, outbox: list[dict], failure_threshold: int) -> list[dict]:
    """Post queued incident events within the tick's budget (``alerts/outbox.py``); return the rest."""
    return post_outbox(slack, log, outbox, lambda item: incident_message(AlertEvent(**item), failure_threshold))


@dg.sensor(
    name="health_alert_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Opens an incident after consecutive failed health checks of a component (one Slack message "
                "per environment), reminds while it stays open, reports recovery with the downtime, and "
                "sends one notice for a flapping component. Also one incident when the sweeps stop "
                "(HEALTH_SILENCE_INTERVALS) or health_check_job fails. Holds an environment's alerts while "
                "a deployment verification runs (bounded; announced when it starts and ends). State lives "
                "in the cursor.",
)
def health_alert_sensor(context: dg.SensorEvaluationContext, slack: OpsSlackResource, health_settings: HealthSettings,
                        deployment_settings: DeploymentSettings):
    cursor = _read_cursor(context.cursor)
    now = current_time()
    settings = health_settings.incident_settings()
    tracker = IncidentTracker.from_state(cursor.tracker, settings)
    watch = SweepWatch(health_settings.watch_settings(health_assets.SWEEP_INTERVAL_MINUTES * 60.0), cursor.watch)
    check_keys = [spec.key for spec in health_assets.health_check_specs]
    observations, cursor.after, cursor.seen, cursor.pending_checks = new_observations(
        context.instance, cursor.after, cursor.seen, check_keys, cursor.pending_checks)
    held = environments_being_verified(context.instance, limit=deployment_settings.limits().hold_seconds)
    environments = set(observations) | set(tracker.state["environments"])
    replaying_history = not context.cursor
    holds = hold_events(cursor.holds, held, time.time())
    cursor.holds = held
    events = []
    for environment in sorted(environments):
        events += tracker.observe(environment, observations.get(environment, []),
                                  hold=replaying_history or environment in held)
    results = [o.at for found in observations.values() for o in found]
    unchecked = [name for name, env in tracker.state["environments"].items()
                 if env.get("incident") and env["incident"].get("announced")]
    if check_keys:  # with no environment configured there is no sweep to expect
        events = watch.observe(now, max(results) if results else None,
                               latest_sweep_run(context.instance, watch.state.get("latest_run")),
                               hold=replaying_history, open_incidents=unchecked) + events
    events = holds + events
    cursor.tracker, cursor.watch = tracker.state, watch.state
    outbox = cursor.outbox + [asdict(event) for event in events]
    cursor.outbox = post_events(slack, context.log, outbox, settings.failure_threshold)
    context.update_cursor(cursor.to_json())
    read = sum(len(found) for found in observations.values())
    summary = f"read {read} check results; sent {len(outbox) - len(cursor.outbox)} notices"
    if cursor.outbox:
        summary += f"; {len(cursor.outbox)} left for the next tick"
    if held:
        summary += f"; held for deployment verification: {', '.join(sorted(held))}"
    incident = watch.state.get("incident")
    if incident:
        summary += f"; health checks {incident['condition']}"
    if health_settings.invalid_settings:
        summary += f"; bad setting (defaults used here, sweeps fail): {health_settings.invalid_settings[0]}"
    return dg.SkipReason(summary)
