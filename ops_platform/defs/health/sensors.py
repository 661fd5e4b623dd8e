"""The health alert sensor: reads the recorded health check results and posts incidents to Slack.

Its whole state (the last event read and every environment's incident state) lives in the
sensor cursor, so a daemon restart neither re-alerts nor loses a recovery notice. Environments
with a deployment verification in progress are held: their state keeps moving, but the
verification sends the only message. The first tick (no cursor yet) replays the recorded history
the same way, so enabling the sensor on an old instance announces only what is still down.
"""


import json

import dagster as dg

from ops_platform.defs.health import assets as health_assets
from ops_platform.defs.resources import OpsSlackResource
from ops_platform.lib import health_messages
from ops_platform.lib.incidents import IncidentTracker, Observation, incident_settings_from_environ

VERIFY_JOB_NAME = "verify_deployment_job"
RECORDS_PER_CHECK = 200


def _read_cursor(cursor: str | None) -> tuple[int, set[int], str | None]:
    try:
        data = json.loads(cursor) if cursor else {}
        tracker = data.get("tracker")
        return int(data.get("after") or 0), set(data.get("seen") or []), json.dumps(tracker) if tracker else None
    except (ValueError, AttributeError, TypeError):
        return 0, set(), None


def _observation(record) -> tuple[str, Observation] | None:
    evaluation = record.event.dagster_event.event_specific_data if record.event and record.event.dagster_event \
        else None
    if not isinstance(evaluation, dg.AssetCheckEvaluation):
        return None
    metadata = {key: value.value for key, value in (evaluation.metadata or {}).items()}
    if not {"environment", "component", "status", "checked_at"} <= set(metadata):
        return None
    return str(metadata["environment"]), Observation(
        component=str(metadata["component"]),
        ok=metadata["status"] != "unhealthy",
        reason=str(metadata.get("reason") or ""),
        at=float(metadata["checked_at"]),
    )


def new_observations(instance: dg.DagsterInstance, after: int, seen: set[int],
                     check_keys) -> tuple[dict[str, list[Observation]], int, set[int]]:
    """Health check results recorded since the last tick, by environment.

    Execution records get their id when a run plans the check and their result when it runs, so
    the watermark only moves past a planned record once its run has finished; results above the
    watermark that were already read are remembered in ``seen``."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
    from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(check_keys))
    changed = [key for key, record in latest.items() if record.id > after and record.id not in seen]
    records = []
    for check_key in changed:
        history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=RECORDS_PER_CHECK)
        records += [record for record in history if record.id > after]
    run_in_progress: dict[str, bool] = {}

    def in_progress(run_id: str) -> bool:
        if run_id not in run_in_progress:
            run = instance.get_run_by_id(run_id) if run_id else None
            run_in_progress[run_id] = run is not None and run.status in IN_PROGRESS_RUN_STATUSES
        return run_in_progress[run_id]

    by_environment: dict[str, list[Observation]] = {}
    watermark, blocked = after, False
    for record in sorted(records, key=lambda r: r.id):
        pending = record.status == AssetCheckExecutionRecordStatus.PLANNED and in_progress(record.run_id)
        if record.id not in seen and not pending:
            found = _observation(record)
            if found:
                by_environment.setdefault(found[0], []).append(found[1])
            seen.add(record.id)
        blocked = blocked or pending
        if not blocked:
            watermark = record.id
    return by_environment, watermark, {record_id for record_id in seen if record_id > watermark}


def environments_being_verified(instance: dg.DagsterInstance) -> set[str]:
    from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

    runs = instance.get_runs(filters=dg.RunsFilter(job_name=VERIFY_JOB_NAME, statuses=list(IN_PROGRESS_RUN_STATUSES)))
    return {run.tags[health_assets.ENVIRONMENT_TAG] for run in runs if health_assets.ENVIRONMENT_TAG in run.tags}


@dg.sensor(
    name="health_alert_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Opens an incident after consecutive failed health checks of a component (one Slack message "
                "per environment), reminds while it stays open, reports recovery with the downtime, and "
                "sends one notice for a flapping component. State lives in the cursor.",
)
def health_alert_sensor(context: dg.SensorEvaluationContext, slack: OpsSlackResource):
    after, seen, tracker_state = _read_cursor(context.cursor)
    settings = incident_settings_from_environ()
    tracker = IncidentTracker.from_json(tracker_state, settings)
    check_keys = [spec.key for spec in health_assets.health_check_specs]
    observations, watermark, seen = new_observations(context.instance, after, seen, check_keys)
    held = environments_being_verified(context.instance)
    environments = set(observations) | set(tracker.state["environments"])
    replaying_history = not context.cursor
    events = []
    for environment in sorted(environments):
        events += tracker.observe(environment, observations.get(environment, []),
                                  hold=replaying_history or environment in held)
    if events:
        notifier = slack.notifier(context.log)
        for event in events:
            notifier.post(health_messages.incident_message(event, settings.failure_threshold))
    context.update_cursor(json.dumps({"after": watermark, "seen": sorted(seen), "tracker": tracker.state},
                                     separators=(",", ":")))
    read = sum(len(found) for found in observations.values())
    summary = f"read {read} check results; sent {len(events)} notices"
    if held:
        summary += f"; held for deployment verification: {', '.join(sorted(held))}"
    return dg.SkipReason(summary)
