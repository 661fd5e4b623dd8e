"""Alerts when a scheduled target's backups stop arriving, whatever the reason (schedule turned
off, daemon down for a day, every run failing before it could alert), and when its weekly restore
drills stop passing: the scheduled environments, and every target of ops_platform.yaml with a
schedule (file targets, and the databases found now on each server)."""

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
from ops_platform.lib.artifacts import parse_utc, utc_iso
from ops_platform.lib.freshness import FreshnessNotice
from ops_platform.lib.messages.freshness import freshness_message
from ops_platform.lib.targets import ENVIRONMENT, load_targets


def watched_environments() -> list[str]:
    """Environments with a nightly backup schedule: only those are expected to have fresh backups."""
    return [env for env in BACKUP_CRONS if env in ENVIRONMENT_NAMES]


def on_demand_environments() -> list[str]:
    """Configured environments without a backup schedule (development): backed up when someone asks."""
    return [env for env in ENVIRONMENT_NAMES if env not in BACKUP_CRONS]


def watched_fleet_targets(log) -> dict[str, str]:
    """The targets of ops_platform.yaml with a schedule, by name, with their cron: the file's
    targets and the databases found now on each server (one that has gone is not expected to have
    new backups; a server that cannot be listed is said in the log, its databases skipped)."""
    found = load_targets()
    for problem in found.problems:
        log.warning(f"freshness: {problem}")
    return {target.name: target.schedule for target in found.targets
            if target.kind != ENVIRONMENT and target.schedule}


def _scope(fleet: dict[str, str] | None = None) -> str:
    """Which targets the sensor watches, and which it does not and why, for its skip message."""
    watched, on_demand = watched_environments(), on_demand_environments()
    text = f"watching {', '.join(watched)}" if watched else "no environment has a backup schedule to watch"
    if fleet:
        text += f" and {len(fleet)} target(s) of ops_platform.yaml"
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
    description="Posts to Slack when no verified backup of a scheduled environment (production, staging) or "
                "scheduled target of ops_platform.yaml was made since its last scheduled time plus "
                "BACKUP_FRESHNESS_GRACE_HOURS (3), at once when it has none at all (a target found after its last "
                "scheduled time waits for it), or no restore drill has passed for DRILL_MAX_AGE_DAYS (8); reminds "
                "daily, and says when it is fresh again. Development has no backup schedule (it is backed up on "
                "demand) and is not watched.",
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
    fleet = watched_fleet_targets(context.log)
    known = state.setdefault("known", {})
    for name in [name for name in known if name not in fleet]:  # gone from its server, or from the file
        for entries in (known, backups_state, drills_state):
            entries.pop(name, None)
    for name, cron in fleet.items():
        known_since = parse_utc(known.setdefault(name, utc_iso(now)))
        listing = merge_listings(name, local, s3)
        expected = freshness.last_expected_run(cron, OPERATIONS_TIMEZONE, now, grace)
        notices.append(freshness.evaluate(name, listing.manifests, now, expected, grace,
                                          backups_state.setdefault(name, {}), known_since=known_since))
        notices.append(freshness.evaluate_drills(name, listing.manifests, now, drill_max_age,
                                                 drills_state.setdefault(name, {})))
    queued = [asdict(notice) for notice in notices if notice]
    outbox = state.get("outbox", []) + queued
    state["outbox"] = post_outbox(slack, context.log, outbox, _render)
    context.update_cursor(json.dumps(state))
    sent = [f"{item['environment']} {item['subject']}: {item['kind']}" for item in outbox[:len(outbox) - len(state["outbox"])]]
    if watched_environments() or fleet:
        summary = "; ".join(sent) or "backups and drills are fresh or already reported"
    else:
        summary = "; ".join(sent) or "nothing to check"
    if state["outbox"]:
        summary += f"; {len(state['outbox'])} left for the next tick"
    return dg.SkipReason(f"{summary} ({_scope(fleet)})")
