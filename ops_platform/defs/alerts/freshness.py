"""Alerts when an environment's backups stop arriving, whatever the reason (schedule turned off,
daemon down for a day, every run failing before it could alert), and when its weekly restore
drills stop passing."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg

from ops_platform.config import ConfigError
from ops_platform.defs.backups.schedules import BACKUP_CRONS
from ops_platform.defs.environments import ENVIRONMENT_NAMES
from ops_platform.defs.resources import (
    BackupBucketResource,
    BackupStorageResource,
    OpsSlackResource,
)
from ops_platform.defs.settings import BackupSettings
from ops_platform.lib import freshness
from ops_platform.lib.catalog import merge_listings
from ops_platform.lib.messages.freshness import freshness_message


def watched_environments() -> list[str]:
    """Environments with a nightly backup schedule: only those are expected to have fresh backups."""
    return [env for env in BACKUP_CRONS if env in ENVIRONMENT_NAMES]


@dg.sensor(
    name="backup_freshness_sensor",
    minimum_interval_seconds=15 * 60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts to Slack when an environment's newest verified backup is older than "
                "BACKUP_MAX_AGE_HOURS (26), or no restore drill has passed for DRILL_MAX_AGE_DAYS (8); "
                "reminds daily, and says when it is fresh again.",
)
def backup_freshness_sensor(context: dg.SensorEvaluationContext, slack: OpsSlackResource,
                            backup_storage: BackupStorageResource, backup_bucket: BackupBucketResource,
                            backup_settings: BackupSettings) -> dg.SkipReason:
    if backup_settings.invalid_settings:
        raise ConfigError(backup_settings.invalid_settings[0])
    max_age = timedelta(hours=backup_settings.max_age_hours)
    drill_max_age = timedelta(days=backup_settings.drill_max_age_days)
    state = freshness.load_state(context.cursor)
    now = datetime.now(timezone.utc)
    local, s3 = backup_storage.local_store(), backup_bucket.store()
    posted = []
    for environment in watched_environments():
        listing = merge_listings(environment, local, s3)
        notices = [(freshness.evaluate(environment, listing.manifests, now, max_age,
                                       state.setdefault(environment, {})), max_age),
                   (freshness.evaluate_drills(environment, listing.manifests, now, drill_max_age,
                                              state.setdefault("drills", {}).setdefault(environment, {})),
                    drill_max_age)]
        for notice, limit in notices:
            if notice:
                slack.notifier(context.log).post(freshness_message(notice, limit))
                posted.append(f"{environment} {notice.subject}: {notice.kind}")
    context.update_cursor(json.dumps(state))
    return dg.SkipReason("; ".join(posted) or "backups are fresh or already reported")
