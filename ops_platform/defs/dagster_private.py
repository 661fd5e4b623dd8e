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

__all__ = ["AssetCheckExecutionRecordStatus", "FINISHED_STATUSES", "IN_PROGRESS_RUN_STATUSES"]
