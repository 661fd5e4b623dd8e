"""Slack messages for failing database checks (events of ``insight.conditions.ConditionTracker``)."""

from __future__ import annotations

from datetime import datetime, timezone

from ops_platform.lib.formatting import human_duration
from ops_platform.lib.insight.conditions import CLEARED, REMINDER, STARTED, ConditionEvent
from ops_platform.lib.messages.common import slack_message
from ops_platform.lib.slack import SlackMessage


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def condition_message(event: ConditionEvent, link: str | None = None) -> SlackMessage:
    """One message per started / reminder / cleared event, ending with ``link`` when given."""
    where = f"{event.environment} database"
    if event.kind == STARTED:
        lines = [f":rotating_light: *{where}: {event.name}* ({event.severity})", event.description]
    elif event.kind == REMINDER:
        lines = [f":warning: *{where}: {event.name} still failing* after {human_duration(event.duration_seconds or 0)}",
                 event.description, f"Since {_utc(event.started_at)}"]
    elif event.kind == CLEARED:
        back = f"after {human_duration(event.duration_seconds or 0)}"
        lines = [f":white_check_mark: *{where}: {event.name} is back to normal* {back}", event.description]
    else:
        raise ValueError(f"unknown condition event kind {event.kind!r}")
    return slack_message(lines, link, "View database_stats in Dagster")
