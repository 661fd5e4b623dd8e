"""Daily retention per configured environment, after the nightly backups (02:00 and 03:00), so
cleanup still happens when backups are paused or failing. Staggered by a quarter hour per
environment; the scheduled time is part of the run key."""

from ops_platform.defs.retention.assets import retention_job
from ops_platform.defs.scheduling import environment_schedules

RETENTION_CRONS = {"production": "30 4 * * *", "staging": "45 4 * * *", "development": "0 5 * * *"}

retention_schedules = environment_schedules("retention", RETENTION_CRONS, retention_job)
