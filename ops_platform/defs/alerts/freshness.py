"""Alerts when an environment's backups stop arriving, whatever the reason (schedule turned off,
daemon down for a day, every run failing before it could alert), and when its weekly restore
drills stop passing."""

import json
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

import dagster as dg

from ops_platform.config import ConfigError
from ops_platform.defs.alerts.outbox import post_outbox
from ops_platform.defs.backups.schedules import BACKUP_CRONS
from ops_platform.defs.environments import ENVIRONMENT_NAMES
from ops_platform.defs.resources import (
    BackupBucketResource,
    BackupStorageResource,
    OpsSlackResource,
)
from ops_platform.defs.scheduling import OPERATIONS_TIMEZONE
from ops_platform.defs.settings import BackupSettings
from ops_platform.lib import freshness
from ops_platform.lib.catalog import merge_listings
from ops_platform.lib.freshness import FreshnessNotice
from ops_platform.lib.messages.freshness import freshness_message


def watched_environments() -> list[str]:
    """Environments with a nightly backup schedule: only those are expected to have fresh backups."""
    return [env for env in BACKUP_CRONS if env in ENVIRONMENT_NAMES]


def on_demand_environments() -> list[str]:
    """Configured environments without a backup schedule (development): backed up when someone asks."""
    return [env for env in ENVIRONMENT_NAMES if env not in BACKUP_CRONS]


def _scope() -> str:
    """Which environments the sensor watches, and which it does not and why, for its skip message."""
    watched, on_demand = watched_environments(), on_demand_environments()
    text = f"watching {', '.join(watched)}" if watched else "no environment has a backup schedule to watch"
    if on_demand:
        text += (f"; {', '.join(on_demand)} {'is' if len(on_demand) == 1 else 'are'} backed up on demand "
                 "(no schedule), so not watched")
    return text


def _render(item: dict):
    return freshness_message(FreshnessNotice(**item))


@dg.sensor(
    name="backup_freshness_sensor",
    minimum_interval_seconds=15 * 60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts to Slack when no verified backup of a scheduled environment (production, staging) was made "
                "since its last scheduled time plus BACKUP_FRESHNESS_GRACE_HOURS (3), at once when it has none at "
                "all, or no restore drill has passed for DRILL_MAX_AGE_DAYS (8); reminds daily, and says when it is "
                "fresh again. Development has no backup schedule (it is backed up on demand) and is not watched.",
)
def backup_freshness_sensor(context: dg.SensorEvaluationContext, slack: OpsSlackResource,
                            backup_storage: BackupStorageResource, backup_bucket: BackupBucketResource,
                            backup_settings: BackupSettings) -> dg.SkipReason:
    if backup_settings.invalid_settings:
        raise ConfigError(backup_settings.invalid_settings[0])
    grace = timedelta(hours=backup_settings.freshness_grace_hours)
    drill_max_age = timedelta(days=backup_settings.drill_max_age_days)
    state = freshness.load_state(context.cursor)
    backups_state, drills_state = state.setdefault("backups", {}), state.setdefault("drills", {})
    now = datetime.now(timezone.utc)
    local, s3 = backup_storage.local_store(), backup_bucket.store()
    notices = []
    for environment in watched_environments():
        listing = merge_listings(environment, local, s3)
        expected = freshness.last_expected_run(BACKUP_CRONS[environment], OPERATIONS_TIMEZONE, now, grace)
        notices.append(freshness.evaluate(environment, listing.manifests, now, expected, grace,
                                          backups_state.setdefault(environment, {})))
        notices.append(freshness.evaluate_drills(environment, listing.manifests, now, drill_max_age,
                                                 drills_state.setdefault(environment, {})))
    queued = [asdict(notice) for notice in notices if notice]
    outbox = state.get("outbox", []) + queued
    state["outbox"] = post_outbox(slack, context.log, outbox, _render)
    context.update_cursor(json.dumps(state))
    sent = [f"{item['environment']} {item['subject']}: {item['kind']}" for item in outbox[:len(outbox) - len(state["outbox"])]]
    if watched_environments():
        summary = "; ".join(sent) or "backups and drills are fresh or already reported"
    else:
        summary = "; ".join(sent) or "nothing to check"
    if state["outbox"]:
        summary += f"; {len(state['outbox'])} left for the next tick"
    return dg.SkipReason(f"{summary} ({_scope()})")
