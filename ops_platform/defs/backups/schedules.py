"""Nightly backups at the seed's times: production 02:00 and staging 03:00, New York time.

One schedule per configured environment. The scheduled time is part of the run key, so on the
spring-forward day (when 02:00 fires at 03:00 EDT, together with the 03:00 schedule) both runs
still happen and stay distinct.
"""

from ops_platform.defs.backups.assets import backup_job
from ops_platform.defs.scheduling import environment_schedules
from ops_platform.lib.tags import BACKUP_KIND
from ops_platform.lib.targets import ENVIRONMENT_BACKUP_CRONS

BACKUP_CRONS = ENVIRONMENT_BACKUP_CRONS  # one table: `ops-platform targets list` shows the same schedules

backup_schedules = environment_schedules("backup", BACKUP_CRONS, backup_job, tags={BACKUP_KIND: "scheduled"})
