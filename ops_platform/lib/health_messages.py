"""Slack messages for health incidents and deployment verification."""

from __future__ import annotations

from datetime import datetime, timezone

from ops_platform.lib.formatting import human_duration
from ops_platform.lib.incidents import FLAPPING, OPENED, RECOVERED, REMINDER, AlertEvent
from ops_platform.lib.slack import SlackMessage


def _message(lines: list[str], link: str | None = None, link_text: str = "View the run in Dagster") -> SlackMessage:
    if link:
        lines.append(f"<{link}|{link_text}>")
    text = "\n".join(lines)
    return SlackMessage(text=text, blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}])


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
        return _message([f":rotating_light: *{event.environment}: {count} {noun} down*{after}",
                         *_component_lines(event.components),
                         f"First failure: {_utc(event.started_at)}"])
    if event.kind == REMINDER:
        open_for = human_duration(event.at - (event.started_at or event.at))
        return _message([f":warning: *{event.environment}: still down* after {open_for}",
                         *_component_lines(event.components)])
    if event.kind == RECOVERED:
        names = ", ".join(sorted(event.components))
        return _message([f":white_check_mark: *{event.environment} recovered*: {names}",
                         f"Downtime: {human_duration(event.downtime_seconds or 0)} "
                         f"(from {_utc(event.started_at)})"])
    if event.kind == FLAPPING:
        [(name, last_failure)] = list(event.components.items()) or [("?", "")]
        lines = [f":twisted_rightwards_arrows: *{event.environment}: {name} is flapping*: "
                 f"{event.changes} state changes within the hour. Further flips are not announced "
                 "until it settles."]
        if last_failure:
            lines.append(f"Latest failure: {last_failure}")
        return _message(lines)
    raise ValueError(f"unknown incident event kind {event.kind!r}")


def deployment_started(environment: str, version: str, timeout_seconds: float, run_url: str | None = None) -> SlackMessage:
    return _message([f":rocket: *Deployment started* ({environment}): verifying version `{version}` "
                     f"within {human_duration(timeout_seconds)}"], run_url)


def deployment_succeeded(environment: str, version: str, seconds: float, run_url: str | None = None) -> SlackMessage:
    return _message([f":white_check_mark: *Deployment succeeded* ({environment}): version `{version}` is "
                     f"healthy after {human_duration(seconds)}"], run_url)


def deployment_failed(environment: str, version: str, reason: str, rollback_ok: bool | None,
                      rollback_summary: str, output: str = "", run_url: str | None = None) -> SlackMessage:
    if rollback_ok:
        title = f":leftwards_arrow_with_hook: *Deployment failed, rolled back* ({environment})"
    elif rollback_ok is None:
        title = f":x: *Deployment failed, no rollback configured* ({environment})"
    else:
        title = f":x: *Deployment failed and the rollback failed* ({environment})"
    lines = [title, f"• expected version: `{version}`", f"• reason: {reason}", f"• rollback: {rollback_summary}"]
    if output.strip():
        lines.append(f"```{output.strip()[-1500:]}```")
    return _message(lines, run_url)
