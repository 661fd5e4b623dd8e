"""Retention after every verified backup, whichever way the backup was launched.

``backup_job`` (schedules, the CLI, the Jobs page) runs retention in the same run. A backup
launched on its own (Materialize on the asset page) is followed by a retention run of its
environment requested by this sensor, from ``backup_retention``'s automation condition. The
condition is reset when retention materializes, so a backup_job run never gets a second retention."""

import dagster as dg

from ops_platform.defs.retention.assets import backup_retention, retention_job
from ops_platform.lib.tags import MAX_RUNTIME

retention_automation_sensor = dg.AutomationConditionSensorDefinition(
    "retention_automation_sensor",
    target=dg.AssetSelection.assets(backup_retention),
    default_status=dg.DefaultSensorStatus.RUNNING,
    emit_backfills=False,
    run_tags={MAX_RUNTIME: retention_job.tags[MAX_RUNTIME]},
    description="Runs backup_retention for an environment after a verified backup of it that did not already "
                "include retention (a backup launched from the asset page).",
)
