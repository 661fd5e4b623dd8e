"""Run tag names the platform writes and reads, in one place so the CLI, the jobs and the
sensors agree on them."""

ENVIRONMENT = "ops_platform/environment"
SERVER = "ops_platform/server"  # a fleet_backup_job run of a server's schedule
BACKUP_KIND = "ops_platform/backup_kind"
ALERTED = "ops_platform/alerted"
LAUNCHED_BY = "ops_platform/launched_by"
KIND = "ops_platform/kind"
HEARTBEAT = "ops_platform/heartbeat"
HEARTBEAT_OF = "ops_platform/heartbeat_of"  # the run that wrote HEARTBEAT (a retry inherits its parent's tags)
LOCK_WAIT = "ops_platform/lock_wait_seconds"
HOST = "ops_platform/host"
PID = "ops_platform/pid"
RESTORE_LEFT = "ops_platform/restore_left"
PLATFORM_STARTING = "ops_platform/platform_starting"
WAITING_FOR = "ops_platform/waiting_for"

PARTITION = "dagster/partition"
MAX_RUNTIME = "dagster/max_runtime_seconds"
MAX_RETRIES = "dagster/max_retries"
