"""Backup freshness: has an environment had a verified backup recently enough?

Backups that silently stop are the failure that wipes teams out: nothing fails, so nothing alerts.
This turns "the newest verified backup is older than N hours" into one alert, a daily reminder
while it lasts, and one notice when backups are fresh again. The state is a small JSON document
(kept in a sensor cursor), never process memory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from ops_platform.lib.artifacts import Manifest, utc_iso

STALE, REMINDER, FRESH_AGAIN = "stale", "reminder", "fresh_again"


@dataclass(frozen=True)
class FreshnessNotice:
    kind: str
    environment: str
    newest_id: str | None
    age_seconds: float | None


def newest_verified(manifests: list[Manifest]) -> Manifest | None:
    verified = [manifest for manifest in manifests if manifest.verified]
    return max(verified, key=lambda m: m.created) if verified else None


def evaluate(environment: str, manifests: list[Manifest], now: datetime, max_age: timedelta,
             state: dict, reminder: timedelta = timedelta(hours=24)) -> FreshnessNotice | None:
    """Update ``state`` (this environment's entry of the cursor) and say what to post, if anything."""
    newest = newest_verified(manifests)
    age = (now - newest.created).total_seconds() if newest else None
    stale = newest is None or age > max_age.total_seconds()
    alerted_at = state.get("alerted_at")
    newest_id = newest.id if newest else None
    if not stale:
        state.clear()
        return FreshnessNotice(FRESH_AGAIN, environment, newest_id, age) if alerted_at else None
    if alerted_at is None:
        state["alerted_at"] = utc_iso(now)
        return FreshnessNotice(STALE, environment, newest_id, age)
    if now - datetime.fromisoformat(alerted_at.replace("Z", "+00:00")) >= reminder:
        state["alerted_at"] = utc_iso(now)
        return FreshnessNotice(REMINDER, environment, newest_id, age)
    return None


def load_state(cursor: str | None) -> dict:
    try:
        state = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}
