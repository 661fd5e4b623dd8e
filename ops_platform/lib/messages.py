"""Slack messages for backups. Each builder returns a SlackMessage with plain text and blocks."""

from __future__ import annotations

from ops_platform.lib.formatting import human_bytes, human_duration
from ops_platform.lib.slack import SlackMessage


def _with_link(lines: list[str], run_url: str | None) -> str:
    if run_url:
        lines.append(f"<{run_url}|View the run in Dagster>")
    return "\n".join(lines)


def _message(text: str) -> SlackMessage:
    return SlackMessage(text=text, blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}])


def backup_succeeded(environment: str, backup_id: str, stored_bytes: int, raw_bytes: int,
                     duration_seconds: float, locations: list[str], run_url: str | None = None,
                     warnings: list[str] | None = None) -> SlackMessage:
    lines = [
        f":white_check_mark: *Database backup succeeded* ({environment})",
        f"• id: `{backup_id}`",
        f"• size: {human_bytes(stored_bytes)} stored ({human_bytes(raw_bytes)} raw)",
        f"• duration: {human_duration(duration_seconds)}",
        f"• stored in: {', '.join(locations)}",
    ]
    lines += [f":warning: {warning}" for warning in warnings or []]
    return _message(_with_link(lines, run_url))


def backup_failed(environment: str, step: str, error: str, backup_id: str | None = None,
                  run_url: str | None = None) -> SlackMessage:
    lines = [f":x: *Database backup failed* ({environment})", f"• failed step: {step}"]
    if backup_id:
        lines.append(f"• id: `{backup_id}`")
    lines.append(f"```{error.strip()[-1500:]}```")
    return _message(_with_link(lines, run_url))


def run_failed(job_name: str, error: str, partition: str | None = None, run_url: str | None = None) -> SlackMessage:
    where = f" ({partition})" if partition else ""
    lines = [f":x: *Dagster run failed*: `{job_name}`{where}", f"```{error.strip()[-1500:]}```"]
    return _message(_with_link(lines, run_url))
