"""Nightly backups at the seed's times: production 02:00 and staging 03:00, New York time.

One schedule per environment, created only for configured environments. The scheduled time is
part of the run key, so on the spring-forward day (when 02:00 fires at 03:00 EDT, together with
the 03:00 schedule) both runs still happen and stay distinct.
"""


import dagster as dg

from ops_platform.defs import databases
from ops_platform.defs.backups import assets as backup_assets

BACKUP_TIMEZONE = "America/New_York"
BACKUP_CRONS = {"production": "0 2 * * *", "staging": "0 3 * * *"}


def build_backup_schedule(environment: str, cron: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{environment}_backup_schedule",
        cron_schedule=cron,
        execution_timezone=BACKUP_TIMEZONE,
        job=backup_assets.backup_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Back up the {environment} database daily at {cron} ({BACKUP_TIMEZONE}).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        scheduled = context.scheduled_execution_time
        return dg.RunRequest(
            run_key=f"{environment}-backup-{scheduled.isoformat()}",
            partition_key=environment,
            tags={backup_assets.BACKUP_KIND_TAG: "scheduled"},
        )

    return _schedule


backup_schedules = [
    build_backup_schedule(environment, cron)
    for environment, cron in BACKUP_CRONS.items()
    if environment in databases.ENVIRONMENT_NAMES
]
