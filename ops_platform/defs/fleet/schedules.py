"""The targets of ``ops_platform.yaml`` on their own schedules: each server's databases (found at
the tick, so one created an hour ago is backed up tonight; one ``fleet_backup_job`` run for the
whole server, not a run per database) and each file target at its cron, in the
operations team's time zone; retention daily and the restore drill weekly for every target that
is not an environment (the environments have schedules of their own).

The schedules are built from the file when the code location loads. A bad file builds none and
stops nothing: ``target_discovery_sensor`` and ``ops-platform targets list`` say what is wrong."""

import re
import time

import dagster as dg

from ops_platform.config import ConfigError
from ops_platform.defs.backups.assets import backup_job
from ops_platform.defs.environments import ENVIRONMENT_NAMES, TARGETS, ensure_partitions
from ops_platform.defs.fleet.spread import fleet_backup_job
from ops_platform.defs.restores.drill import restore_drill_job
from ops_platform.defs.retention.assets import retention_job
from ops_platform.lib.tags import BACKUP_KIND, SERVER
from ops_platform.lib.targets import (
    OPERATIONS_TIMEZONE,
    PlatformConfig,
    discover_server,
    load_platform_config,
)

FLEET_RETENTION_CRON = "15 5 * * *"
FLEET_DRILL_CRON = "30 4 * * 0"


def schedule_name(target: str, purpose: str) -> str:
    """A Dagster name for a target's schedule (they allow no '.' or '-')."""
    return f"fleet_{re.sub(r'[^A-Za-z0-9_]', '_', target)}_{purpose}_schedule"


def _requests(context: dg.ScheduleEvaluationContext, names: list[str], purpose: str, tags: dict | None = None):
    ensure_partitions(context.instance, names)
    return [dg.RunRequest(run_key=f"{name}-{purpose}-{context.scheduled_execution_time.isoformat()}",
                          partition_key=name, tags=dict(tags or {})) for name in names]


def server_backup_schedule(platform: PlatformConfig, server_name: str) -> dg.ScheduleDefinition:
    server = platform.servers[server_name]

    @dg.schedule(name=schedule_name(server.name, "backup"), cron_schedule=server.schedule,
                 execution_timezone=OPERATIONS_TIMEZONE, job=fleet_backup_job,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Back up every database found on server {server.name} at the tick, on the cron "
                             f"'{server.schedule}' ({OPERATIONS_TIMEZONE}): one fleet_backup_job run, one step "
                             "per database (spread over Celery workers with OPS_PLATFORM_EXECUTOR=celery).")
    def _schedule(context: dg.ScheduleEvaluationContext):
        try:
            found, problems = discover_server(load_platform_config().servers[server.name])
        except (ConfigError, KeyError) as error:
            return dg.SkipReason(f"ops_platform.yaml: {error}")
        if not found:
            return dg.SkipReason("; ".join(str(problem) for problem in problems) or
                                 f"no database to back up on server {server.name}")
        for problem in problems:
            context.log.warning(str(problem))
        names = [target.name for target in found]
        ensure_partitions(context.instance, names)
        return dg.RunRequest(run_key=f"{server.name}-backup-{context.scheduled_execution_time.isoformat()}",
                             run_config={"ops": {"fleet_backup_targets": {"config": {"targets": names}}}},
                             tags={BACKUP_KIND: "scheduled", SERVER: server.name})

    return _schedule


def target_backup_schedule(platform: PlatformConfig, name: str) -> dg.ScheduleDefinition:
    entry = platform.targets[name]

    @dg.schedule(name=schedule_name(name, "backup"), cron_schedule=entry.schedule,
                 execution_timezone=OPERATIONS_TIMEZONE, job=backup_job,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Back up target {name} on the cron '{entry.schedule}' ({OPERATIONS_TIMEZONE}).")
    def _schedule(context: dg.ScheduleEvaluationContext):
        return _requests(context, [name], "backup", {BACKUP_KIND: "scheduled"})

    return _schedule


def fleet_targets(instance: dg.DagsterInstance) -> list[str]:
    """Every registered target that is not an environment: a database that has gone from its
    server keeps its partition, so its backups stay under retention."""
    return [name for name in instance.get_dynamic_partitions(TARGETS) if name not in ENVIRONMENT_NAMES]


RETAINED_RECENTLY_HOURS = 12


def retained_recently(instance: dg.DagsterInstance, name: str, now: float) -> bool:
    """Whether the target's retention ran in the last RETAINED_RECENTLY_HOURS (a server's night runs
    each database's retention after its backup)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("backup_retention"), asset_partitions=[name]), limit=1).records
    return bool(records) and now - records[0].timestamp < RETAINED_RECENTLY_HOURS * 3600


@dg.schedule(name="fleet_retention_schedule", cron_schedule=FLEET_RETENTION_CRON,
             execution_timezone=OPERATIONS_TIMEZONE, job=retention_job,
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Retention daily for every target that is not an environment and was not retained in the "
                         f"last {RETAINED_RECENTLY_HOURS} h (a server's night retains its databases after their "
                         "backups), those gone from their server included (their backups are kept as the policy "
                         "says, never all deleted).")
def fleet_retention_schedule(context: dg.ScheduleEvaluationContext):
    names = fleet_targets(context.instance)
    if not names:
        return dg.SkipReason("no target beyond the environments")
    now = context.scheduled_execution_time.timestamp() if context.scheduled_execution_time else time.time()
    due = [name for name in names if not retained_recently(context.instance, name, now)]
    if not due:
        return dg.SkipReason(f"all {len(names)} targets were retained in the last {RETAINED_RECENTLY_HOURS} h")
    return _requests(context, due, "retention")


@dg.schedule(name="fleet_restore_drill_schedule", cron_schedule=FLEET_DRILL_CRON,
             execution_timezone=OPERATIONS_TIMEZONE, job=restore_drill_job,
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="The weekly restore drill of every target that is not an environment.")
def fleet_restore_drill_schedule(context: dg.ScheduleEvaluationContext):
    names = fleet_targets(context.instance)
    return _requests(context, names, "restore_drill") if names else dg.SkipReason("no target beyond the environments")


def _file_schedules() -> list:
    try:
        platform = load_platform_config()
    except ConfigError:
        return []
    return ([server_backup_schedule(platform, name) for name in platform.servers]
            + [target_backup_schedule(platform, name) for name in platform.targets])


file_schedules = _file_schedules()
