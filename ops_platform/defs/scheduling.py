"""Per-environment schedules (daily backups and retention, weekly drills), all in the operations
team's time zone."""

import dagster as dg

from ops_platform.defs.environments import ENVIRONMENT_NAMES, ensure_partitions
from ops_platform.lib.targets import OPERATIONS_TIMEZONE


def environment_schedules(purpose: str, crons: dict[str, str], job, tags: dict | None = None) -> list:
    """One RUNNING schedule per configured environment, ``<env>_<purpose>_schedule``, in New York
    time. The scheduled time is part of the run key, so two schedules firing at the same instant
    (as 02:00 and 03:00 do on the spring-forward day) stay distinct runs."""

    def build(environment: str, cron: str) -> dg.ScheduleDefinition:
        @dg.schedule(
            name=f"{environment}_{purpose}_schedule",
            cron_schedule=cron,
            execution_timezone=OPERATIONS_TIMEZONE,
            job=job,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=f"Run the {environment} {purpose} on the cron '{cron}' ({OPERATIONS_TIMEZONE}).",
        )
        def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
            ensure_partitions(context.instance, [environment])
            return dg.RunRequest(
                run_key=f"{environment}-{purpose}-{context.scheduled_execution_time.isoformat()}",
                partition_key=environment,
                tags=dict(tags or {}),
            )

        return _schedule

    return [build(environment, cron) for environment, cron in crons.items() if environment in ENVIRONMENT_NAMES]
