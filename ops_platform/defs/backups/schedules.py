"""Nightly backups at the seed's times: production 02:00 and staging 03:00, New York time.

One schedule per configured environment. The scheduled time is part of the run key, so on the
spring-forward day (when 02:00 fires at 03:00 EDT, together with the 03:00 schedule) both runs
still happen and stay distinct.
"""

from ops_platform.defs import databases
from ops_platform.defs.backups import assets as backup_assets

BACKUP_CRONS = {"production": "0 2 * * *", "staging": "0 3 * * *"}

backup_schedules = databases.daily_environment_schedules(
    "backup", BACKUP_CRONS, backup_assets.backup_job, tags={backup_assets.BACKUP_KIND_TAG: "scheduled"})
