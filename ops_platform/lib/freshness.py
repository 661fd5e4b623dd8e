"""Backup freshness: has an environment (or any scheduled target) had a verified backup recently enough?

Backups that silently stop are the failure that wipes teams out: nothing fails, so nothing alerts.
This turns "the newest verified backup is older than N hours" into one alert, a daily reminder
while it lasts, and one notice when backups are fresh again. The state is a small JSON document
(kept in a sensor cursor), never process memory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from ops_platform.lib.artifacts import Manifest, parse_utc, utc_iso

STALE, REMINDER, FRESH_AGAIN = "stale", "reminder", "fresh_again"
BACKUPS, DRILLS = "backups", "drills"


@dataclass(frozen=True)
class FreshnessNotice:
    kind: str
    environment: str
    newest_id: str | None
    age_seconds: float | None
    subject: str = BACKUPS
    limit: str = ""


def last_expected_run(cron: str, timezone_name: str, now: datetime, grace: timedelta) -> datetime:
    """When the daily cron (``M H * * *``) last fired, at least ``grace`` before ``now``, in UTC.
    A time the clocks skip (02:00 on the spring-forward day) fires an hour later, as Dagster does;
    on the night clocks go back, runs are 25 hours apart and this still names the right one."""
    fields = cron.split()
    if len(fields) != 5 or fields[2:] != ["*", "*", "*"] or not (fields[0].isdigit() and fields[1].isdigit()):
        return _last_fire(cron, timezone_name, now - grace)
    minute, hour = int(fields[0]), int(fields[1])
    zone = ZoneInfo(timezone_name)
    latest = now - grace
    day = latest.astimezone(zone).date()
    for back in range(3):
        candidate = day - timedelta(days=back)
        fire = datetime(candidate.year, candidate.month, candidate.day, hour, minute, tzinfo=zone)
        fire_utc = fire.astimezone(timezone.utc)
        if fire_utc <= latest:
            return fire_utc
    raise ValueError("no fire time found")  # unreachable for a daily cron


def _last_fire(cron: str, timezone_name: str, latest: datetime) -> datetime:
    """Any other cron (a server's ``0 */6 * * *``): its last fire time at or before ``latest``."""
    from croniter import croniter

    local = latest.astimezone(ZoneInfo(timezone_name))
    return croniter(cron, local + timedelta(seconds=1)).get_prev(datetime).astimezone(timezone.utc)


def newest_verified(manifests: list[Manifest]) -> Manifest | None:
    verified = [manifest for manifest in manifests if manifest.verified]
    return max(verified, key=lambda m: m.created) if verified else None


def newest_passed_drill(manifests: list[Manifest]) -> tuple[Manifest, datetime] | None:
    """The backup most recently proven restorable by a drill, and when."""
    drilled = [(manifest, parse_utc(manifest.drill["at"])) for manifest in manifests
               if isinstance(manifest.drill, dict) and manifest.drill.get("passed") and manifest.drill.get("at")]
    return max(drilled, key=lambda pair: pair[1]) if drilled else None


def _watch(subject: str, environment: str, newest_id: str | None, age: float | None, stale: bool, now: datetime,
           state: dict, reminder: timedelta, limit: str) -> FreshnessNotice | None:
    """One alert when something goes stale, a reminder every ``reminder``, one notice when fresh."""
    alerted_at = state.get("alerted_at")
    if not stale:
        state.clear()
        return FreshnessNotice(FRESH_AGAIN, environment, newest_id, age, subject, limit) if alerted_at else None
    if alerted_at is None:
        state["alerted_at"] = utc_iso(now)
        return FreshnessNotice(STALE, environment, newest_id, age, subject, limit)
    if now - parse_utc(alerted_at) >= reminder:
        state["alerted_at"] = utc_iso(now)
        return FreshnessNotice(REMINDER, environment, newest_id, age, subject, limit)
    return None


def evaluate(environment: str, manifests: list[Manifest], now: datetime, expected_after: datetime,
             grace: timedelta, state: dict, reminder: timedelta = timedelta(hours=24),
             known_since: datetime | None = None) -> FreshnessNotice | None:
    """Backups: stale when no verified backup was made since ``expected_after`` (the last scheduled
    run), give or take ``grace``; no verified backup at all is stale at once, unless the target is
    ``known_since`` after that run (a database found today waits for its first night). Updates
    ``state`` (this environment's entry of the cursor) and says what to post, if anything."""
    newest = newest_verified(manifests)
    age = (now - newest.created).total_seconds() if newest else None
    if newest is None:
        stale = known_since is None or known_since <= expected_after
    else:
        stale = newest.created < expected_after - grace
    limit = f"one was expected after {utc_iso(expected_after)}, with {grace.total_seconds() / 3600:g} h of grace"
    return _watch(BACKUPS, environment, newest.id if newest else None, age, stale, now, state, reminder, limit)


def evaluate_drills(environment: str, manifests: list[Manifest], now: datetime, max_age: timedelta,
                    state: dict, reminder: timedelta = timedelta(hours=24)) -> FreshnessNotice | None:
    """Restore drills: stale when no drill has passed within ``max_age``. An environment whose
    drills never passed is stale once its oldest verified backup is older than ``max_age`` (before
    that, the first weekly drill has not had its chance yet)."""
    limit = f"{max_age.days} days"
    found = newest_passed_drill(manifests)
    if found:
        manifest, at = found
        age = (now - at).total_seconds()
        return _watch(DRILLS, environment, manifest.id, age, age > max_age.total_seconds(), now, state, reminder,
                      limit)
    verified = [manifest for manifest in manifests if manifest.verified]
    stale = bool(verified) and now - min(m.created for m in verified) > max_age
    return _watch(DRILLS, environment, None, None, stale, now, state, reminder, limit)


def load_state(cursor: str | None) -> dict:
    try:
        state = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}
