"""Every import from Dagster's private modules (``dagster._core``), in one place. Each is here
because the public API has no equivalent; a Dagster upgrade that moves one breaks only this file."""

# Run statuses that still hold an environment (queued, starting, started, ...) and those that
# are over. Used to find runs in progress (CLI exclusivity, the health sensor's deployment hold)
# and to tell a finished run's check results from a planned one.
# The state of an asset check execution record (planned, succeeded, failed): the health alert
# sensor reads check results straight from the event log storage and must skip planned ones.
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus,
)
from dagster._core.storage.dagster_run import (
    FINISHED_STATUSES,
    IN_PROGRESS_RUN_STATUSES,
)

# The latest result of a check for one partition: the database_stats checks are partitioned by
# environment, and the operations report reads each environment's latest results.
from dagster._core.storage.event_log.base import PartitionKeyFilter

# How a step of a run ended (instance.get_run_step_stats): the backup history reads each
# target's step of a server's fleet_backup_job run.
from dagster._core.execution.stats import StepEventStatus

__all__ = ["AssetCheckExecutionRecordStatus", "FINISHED_STATUSES", "IN_PROGRESS_RUN_STATUSES", "PartitionKeyFilter",
           "StepEventStatus"]


def record_sigterm_during_runs(on_signal) -> None:
    """While it runs steps, Dagster points SIGTERM at its own SIGINT handler (interrupts.py,
    ``setup_interrupt_handlers``), so a run stopped by SIGTERM looks like Ctrl-C. The CLI exits 143
    for SIGTERM and 130 for SIGINT: keep handlers that call ``on_signal(signum)`` first and then
    hand the signal to whatever handles SIGINT at that moment."""
    import signal

    from dagster._utils import interrupts

    original = interrupts.setup_interrupt_handlers
    if getattr(original, "records_sigterm", False):
        return

    def setup() -> None:
        original()
        current = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            on_signal(signum)
            if callable(current):
                current(signal.SIGINT, frame)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    setup.records_sigterm = True
    interrupts.setup_interrupt_handlers = setup
