"""Slack alerts for failed runs, through the shared Slack resource (not dagster-slack's factory,
which builds its own client from a raw token and cannot be pointed at another API base)."""


import dagster as dg

from ops_platform.defs.alerts.marking import was_alerted
from ops_platform.defs.resources import OpsSlackResource
from ops_platform.lib.messages.common import run_url
from ops_platform.lib.messages.runs import run_failed


def _failure_reason(context: dg.RunFailureSensorContext) -> str:
    step_failures = context.get_step_failure_events()
    if step_failures:
        event = step_failures[0]
        error = event.event_specific_data.error if event.event_specific_data else None
        while error is not None and error.cause is not None:
            error = error.cause
        message = error.message.strip() if error else event.message
        return f"step {event.step_key}: {message}"
    return context.failure_event.message or "the run failed"


@dg.run_failure_sensor(
    name="run_failure_slack_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
    description="Posts every failed run to Slack, unless the run already sent its own alert.",
)
def run_failure_slack_sensor(context: dg.RunFailureSensorContext, slack: OpsSlackResource) -> None:
    run = context.dagster_run
    if was_alerted(context.instance, run):
        return
    slack.notifier(context.log).post(
        run_failed(run.job_name, _failure_reason(context), run.tags.get("dagster/partition"),
                            run_url(run.run_id)))
