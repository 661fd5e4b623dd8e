"""Slack alerts for failed runs, through the shared Slack resource (not dagster-slack's factory,
which builds its own client from a raw token and cannot be pointed at another API base).

``health_check_job`` is the exception: it runs every 5 minutes, so one cause (a bad setting) would
post every 5 minutes. Its failures are one incident of ``health_alert_sensor`` instead (one
message, reminders, one notice when it succeeds again), together with the sweeps stopping."""


import dagster as dg

from ops_platform.defs.alerts.marking import was_alerted
from ops_platform.defs.resources import OpsSlackResource
from ops_platform.lib.incidents import SWEEP_JOB
from ops_platform.lib.messages.common import run_url
from ops_platform.lib.messages.runs import run_failed

# Jobs whose failures another sensor reports as one incident. database_stats_job runs every 15
# minutes per environment: its failed snapshot is a failed check that database_condition_sensor
# reports once (started / reminder / cleared).
REPORTED_ELSEWHERE = {SWEEP_JOB: "health_alert_sensor", "database_stats_job": "database_condition_sensor"}


def failure_reason(step_failures: list, run_failure_message: str | None) -> str:
    """The first failed step and its error as one line-ish text: a ``dg.Failure``'s description,
    else the innermost cause's message."""
    if step_failures:
        event = step_failures[0]
        data = event.event_specific_data
        if data is not None and data.user_failure_data and data.user_failure_data.description:
            return f"step {event.step_key}: {data.user_failure_data.description.strip()}"
        error = data.error if data else None
        while error is not None and error.cause is not None:
            error = error.cause
        message = error.message.strip() if error else event.message
        return f"step {event.step_key}: {message}"
    return run_failure_message or "the run failed"


def run_failure_reason(instance: dg.DagsterInstance, run_id: str) -> str:
    """``failure_reason`` of a finished run, read from its events."""
    def events(kind):
        records = instance.get_records_for_run(run_id, of_type=kind).records
        return [record.event_log_entry.dagster_event for record in records if record.event_log_entry.dagster_event]

    run_failures = events(dg.DagsterEventType.RUN_FAILURE)
    return failure_reason(events(dg.DagsterEventType.STEP_FAILURE),
                          run_failures[-1].message if run_failures else None)


@dg.run_failure_sensor(
    name="run_failure_slack_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
    description="Posts every failed run to Slack, unless the run already sent its own alert. Failures of "
                "health_check_job are one incident of health_alert_sensor instead.",
)
def run_failure_slack_sensor(context: dg.RunFailureSensorContext, slack: OpsSlackResource) -> None:
    run = context.dagster_run
    if run.job_name in REPORTED_ELSEWHERE or was_alerted(context.instance, run):
        return
    slack.notifier(context.log).post(
        run_failed(run.job_name, failure_reason(context.get_step_failure_events(), context.failure_event.message),
                   run.tags.get("dagster/partition"), run_url(run.run_id)))
