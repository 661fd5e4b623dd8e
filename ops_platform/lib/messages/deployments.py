"""Slack messages for deployment verification."""

from __future__ import annotations

from ops_platform.lib.formatting import human_duration
from ops_platform.lib.messages.common import code_block, slack_message
from ops_platform.lib.slack import SlackMessage


def deployment_started(environment: str, version: str, timeout_seconds: float, run_url: str | None = None) -> SlackMessage:
    return slack_message([f":rocket: *Deployment started* ({environment}): verifying version `{version}` "
                          f"within {human_duration(timeout_seconds)}"], run_url)


def deployment_succeeded(environment: str, version: str, seconds: float, run_url: str | None = None) -> SlackMessage:
    return slack_message([f":white_check_mark: *Deployment succeeded* ({environment}): version `{version}` is "
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
        lines.append(code_block(output))
    return slack_message(lines, run_url)
