"""What the health alert sensor has announced and not yet closed, read from the state it keeps in
its cursor (``lib/incidents.py``: the ``IncidentTracker``'s per-environment state and the
``SweepWatch``), so the digest names the same incidents Slack was told about."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from ops_platform.lib.formatting import human_duration


@dataclass
class OpenIncident:
    """A health incident still open: component -> latest failure reason."""

    environment: str
    components: dict[str, str]
    started_at: float


def open_incidents(tracker_state: dict | None) -> list[OpenIncident]:
    """Announced incidents that have not recovered, per environment. The reasons are those of the
    components still failing (all of the incident's components while they are recovering)."""
    environments = (tracker_state or {}).get("environments")
    found = []
    for name, env in sorted((environments or {}).items()):
        incident = env.get("incident") if isinstance(env, dict) else None
        if not isinstance(incident, dict) or not incident.get("announced"):
            continue
        components = env.get("components") or {}
        members = list(incident.get("components") or [])
        failing = [c for c in members if (components.get(c) or {}).get("failures")] or members
        found.append(OpenIncident(name, {c: str((components.get(c) or {}).get("reason") or "") for c in failing},
                                  float(incident.get("started_at") or 0.0)))
    return found


def sweep_problem(watch_state: dict | None, now: float) -> str | None:
    """One line when the health checks themselves have stopped or are failing (the sensor's
    dead-man's switch), else None."""
    incident = (watch_state or {}).get("incident")
    if not isinstance(incident, dict) or not incident.get("announced"):
        return None
    since = datetime.fromtimestamp(float(incident.get("started_at") or now), timezone.utc)
    what = "are failing" if incident.get("condition") == "failing" else "have stopped"
    return (f"health checks {what} since {since.strftime('%Y-%m-%d %H:%M UTC')} "
            f"({human_duration(now - since.timestamp())}): uptime and incidents are not being recorded")


def from_health_cursor(cursor: str | None, now: float) -> tuple[list[OpenIncident], str | None]:
    """Both, from the health alert sensor's cursor text; anything unreadable counts as nothing open."""
    try:
        data = json.loads(cursor) if cursor else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    tracker = data.get("tracker") if isinstance(data.get("tracker"), dict) else None
    watch = data.get("watch") if isinstance(data.get("watch"), dict) else None
    return open_incidents(tracker), sweep_problem(watch, now)
