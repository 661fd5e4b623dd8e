"""Daily retention per configured environment, after the nightly backups (02:00 and 03:00), so
cleanup still happens when backups are paused or failing. Staggered by a quarter hour per
environment; the scheduled time is part of the run key."""


import dagster as dg

from ops_platform.defs import databases
from ops_platform.defs.retention import assets as retention_assets

RETENTION_TIMEZONE = "America/New_York"
RETENTION_CRONS = {"production": "30 4 * * *", "staging": "45 4 * * *", "development": "0 5 * * *"}


def build_retention_schedule(environment: str, cron: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{environment}_retention_schedule",
        cron_schedule=cron,
        execution_timezone=RETENTION_TIMEZONE,
        job=retention_assets.retention_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Apply backup retention to {environment} daily at {cron} ({RETENTION_TIMEZONE}).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(
            run_key=f"{environment}-retention-{context.scheduled_execution_time.isoformat()}",
            partition_key=environment,
        )

    return _schedule


retention_schedules = [
    build_retention_schedule(environment, cron)
    for environment, cron in RETENTION_CRONS.items()
    if environment in databases.ENVIRONMENT_NAMES
]
