"""A run that sent its own Slack alert is marked, so ``run_failure_slack_sensor`` does not post
the same failure again."""

import dagster as dg

from ops_platform.lib.tags import ALERTED


def mark_alerted(instance: dg.DagsterInstance, run_id: str) -> None:
    instance.add_run_tags(run_id, {ALERTED: "true"})


def was_alerted(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """The run's tags when it failed, or its latest ones (a tag added while it ran)."""
    if run.tags.get(ALERTED) == "true":
        return True
    latest = instance.get_run_by_id(run.run_id)
    return latest is not None and latest.tags.get(ALERTED) == "true"
