"""Slack messages for health incidents."""

from __future__ import annotations

from datetime import datetime, timezone

from ops_platform.lib.formatting import human_duration
from ops_platform.lib.incidents import FLAPPING, OPENED, RECOVERED, REMINDER, AlertEvent
from ops_platform.lib.messages.common import slack_message
from ops_platform.lib.slack import SlackMessage


def _utc(timestamp: float | None) -> str:
    if timestamp is None:
        return "unknown"
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _component_lines(components: dict[str, str]) -> list[str]:
    return [f"• *{name}*: {reason}" if reason else f"• *{name}*" for name, reason in sorted(components.items())]


def incident_message(event: AlertEvent, threshold: int | None = None) -> SlackMessage:
    if event.kind == OPENED:
        count = len(event.components)
        noun = "component is" if count == 1 else "components are"
        after = f" after {threshold} consecutive failed checks" if threshold else ""
        return slack_message([f":rotating_light: *{event.environment}: {count} {noun} down*{after}",
                              *_component_lines(event.components),
                              f"First failure: {_utc(event.started_at)}"])
    if event.kind == REMINDER:
        open_for = human_duration(event.at - (event.started_at or event.at))
        return slack_message([f":warning: *{event.environment}: still down* after {open_for}",
                              *_component_lines(event.components)])
    if event.kind == RECOVERED:
        names = ", ".join(sorted(event.components))
        return slack_message([f":white_check_mark: *{event.environment} recovered*: {names}",
                              f"Downtime: {human_duration(event.downtime_seconds or 0)} "
                              f"(from {_utc(event.started_at)})"])
    if event.kind == FLAPPING:
        [(name, last_failure)] = list(event.components.items()) or [("?", "")]
        lines = [f":twisted_rightwards_arrows: *{event.environment}: {name} is flapping*: "
                 f"{event.changes} state changes within the hour. Further flips are not announced "
                 "until it settles."]
        if last_failure:
            lines.append(f"Latest failure: {last_failure}")
        return slack_message(lines)
    raise ValueError(f"unknown incident event kind {event.kind!r}")
