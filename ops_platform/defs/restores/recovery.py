"""Finishing or undoing a restore's swap that a stopped process left half done, from whichever
run next touches the environment (a restore or a backup), said in the run's log and in Slack."""

import dagster as dg

from ops_platform.defs.resources import OpsSlackResource
from ops_platform.lib.messages import restores as messages
from ops_platform.lib.messages.common import run_url
from ops_platform.lib.progress import STEP_LOGGER
from ops_platform.lib.restore.databases import RestoreLock
from ops_platform.lib.restore.errors import RestoreStepError
from ops_platform.lib.restore.swap import recover_interrupted_swaps


def settle_interrupted_swaps(context, slack: OpsSlackResource, url: str, root, environment: str,
                             held: RestoreLock | None = None) -> None:
    """Recover every interrupted swap of ``environment`` (lib/restore/swap.py) and report each.
    A server that cannot be reached is a warning: the run goes on and fails on its own terms."""
    try:
        recoveries = recover_interrupted_swaps(url, root, environment, held=held)
    except RestoreStepError as error:
        context.log.warning(str(error))
        STEP_LOGGER.warning(f"warning: {error}")
        return
    for recovery in recoveries:
        if recovery.action == "busy":
            context.log.info(recovery.message)
            continue
        context.log.warning(recovery.message)
        STEP_LOGGER.warning(f"warning: {recovery.message}")
        slack.notifier(context.log).post(messages.swap_recovered(environment, recovery.action, recovery.message,
                                                                 recovery.record.run_id, run_url(context.run_id)))
        if recovery.action == "unclear":
            raise dg.Failure(description=f"{environment}: {recovery.message}", allow_retries=False)
