"""Slack messages for health incidents."""

from __future__ import annotations

from datetime import datetime, timezone

from ops_platform.lib.formatting import human_duration
from ops_platform.lib.incidents import (
    CHECKS_FAILING,
    CHECKS_REMINDER,
    CHECKS_RESUMED,
    CHECKS_STOPPED,
    FAILING,
    FLAPPING,
    HOLD_ENDED,
    HOLD_LIMIT,
    HOLD_STARTED,
    OPENED,
    RECOVERED,
    REMINDER,
    SWEEP_JOB,
    AlertEvent,
)
from ops_platform.lib.messages.common import code_block, run_url, slack_message
from ops_platform.lib.slack import SlackMessage


def _utc(timestamp: float | None) -> str:
    if timestamp is None:
        return "unknown"
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _component_lines(components: dict[str, str]) -> list[str]:
    return [f"• *{name}*: {reason}" if reason else f"• *{name}*" for name, reason in sorted(components.items())]


def _last_result(event: AlertEvent) -> str:
    return f"last result at {_utc(event.last_result_at)}" if event.last_result_at else "no result yet"


def _unchecked(event: AlertEvent) -> list[str]:
    if not event.environments:
        return []
    return [f"Open incidents get no reminders or recoveries meanwhile: {', '.join(event.environments)}"]


def sweep_message(event: AlertEvent) -> SlackMessage:
    """The sweeps themselves: stopped (no results), failing (every run fails), back."""
    link = run_url(event.run_id) if event.run_id else None
    if event.kind == CHECKS_STOPPED:
        return slack_message([f":rotating_light: *Health checks have stopped*: {_last_result(event)}. "
                              f"Nothing is checking the environments. Is `{SWEEP_JOB}`'s schedule "
                              "running, and the Dagster daemon up?", *_unchecked(event)])
    if event.kind == CHECKS_FAILING:
        return slack_message([f":rotating_light: *Health checks are failing*: `{SWEEP_JOB}` fails, so "
                              f"nothing is checking the environments ({_last_result(event)}). Further "
                              "failures are not posted until it succeeds again.",
                              code_block(event.reason or "the run failed"), *_unchecked(event)], link)
    if event.kind == CHECKS_REMINDER:
        open_for = human_duration(event.at - (event.at if event.started_at is None else event.started_at))
        if event.condition == FAILING:
            return slack_message([f":warning: *Health checks still failing* after {open_for} "
                                  f"({_last_result(event)})", code_block(event.reason or "the run failed"),
                                  *_unchecked(event)], link)
        return slack_message([f":warning: *Health checks still stopped* after {open_for}: {_last_result(event)}",
                              *_unchecked(event)])
    if event.kind == CHECKS_RESUMED:
        what = "succeed again" if event.condition == FAILING else "are running again"
        return slack_message([f":white_check_mark: *Health checks {what}* after "
                              f"{human_duration(event.downtime_seconds or 0)} without results "
                              f"({_last_result(event)})"])
    raise ValueError(f"unknown sweep event kind {event.kind!r}")


def hold_message(event: AlertEvent) -> SlackMessage:
    """Health alerts of an environment held for a deployment verification, and released."""
    link = run_url(event.run_id) if event.run_id else None
    if event.kind == HOLD_STARTED:
        return slack_message([f":pause_button: *{event.environment}: health alerts held* while a deployment is "
                              f"verified, until {_utc(event.until)} at the latest; anything still failing is "
                              "announced when the hold ends."], link, "View the verification run in Dagster")
    held = human_duration(event.at - (event.started_at or event.at))
    why = (f"the hold reached its limit ({human_duration((event.until or event.at) - (event.started_at or event.at))})"
           " while the verification still runs" if event.condition == HOLD_LIMIT else "the verification ended")
    return slack_message([f":arrow_forward: *{event.environment}: health alerts resume* after {held}: {why}."],
                         link, "View the verification run in Dagster")


def incident_message(event: AlertEvent, threshold: int | None = None) -> SlackMessage:
    if event.kind in (CHECKS_STOPPED, CHECKS_FAILING, CHECKS_REMINDER, CHECKS_RESUMED):
        return sweep_message(event)
    if event.kind in (HOLD_STARTED, HOLD_ENDED):
        return hold_message(event)
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
