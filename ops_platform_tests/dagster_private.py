"""The tests' imports from Dagster's private modules, in one place (the product's are in
ops_platform/defs/dagster_private.py). Each builds a situation the public API cannot."""

# Events and run records written straight to the instance: a run "in progress" that no process
# runs (a killed CLI run), or a check result landing after the sensor's last read.
from dagster._core.events import DagsterEvent, DagsterEventType

# Reads a dagster.yaml exactly as an instance would, to validate the example configurations.
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

# The fire times of a cron string in a time zone, to check the schedules across DST changes.
from dagster._utils.schedules import cron_string_iterator

__all__ = ["DagsterEvent", "DagsterEventType", "DagsterRun", "DagsterRunStatus", "cron_string_iterator",
           "dagster_instance_config"]

# A sensor's stored state (its cursor) as the daemon keeps it in the instance: the operations report
# reads the health sensor's open incidents from there (insight tests).
# A queued run must name the job it came from (a queued run test, test_run_queue.py).
from dagster._core.remote_origin import (  # noqa: E402
    RegisteredCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.scheduler.instigation import (  # noqa: E402
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
)

__all__ += ["InstigatorState", "InstigatorStatus", "InstigatorType", "RegisteredCodeLocationOrigin",
            "RemoteInstigatorOrigin", "RemoteJobOrigin", "RemoteRepositoryOrigin", "SensorInstigatorData"]
