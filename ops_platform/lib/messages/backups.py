"""Slack messages for backups."""

from __future__ import annotations

from ops_platform.lib.formatting import human_bytes, human_duration
from ops_platform.lib.messages.common import code_block, slack_message
from ops_platform.lib.slack import SlackMessage


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
    return slack_message(lines, run_url)


def backup_failed(environment: str, step: str, error: str, backup_id: str | None = None,
                  run_url: str | None = None) -> SlackMessage:
    lines = [f":x: *Database backup failed* ({environment})", f"• failed step: {step}"]
    if backup_id:
        lines.append(f"• id: `{backup_id}`")
    lines.append(code_block(error))
    return slack_message(lines, run_url)


def backup_copies_missing(environment: str, backup_id: str, reason: str, locations: list[str],
                          run_url: str | None = None) -> SlackMessage:
    """A backup that was made and verified locally, but with fewer verified copies than
    BACKUP_MIN_COPIES asks: ``reason`` names each missing copy."""
    lines = [
        f":x: *Backup has too few verified copies* ({environment})",
        f"• id: `{backup_id}`",
        f"• stored in: {', '.join(locations)}",
        code_block(reason),
    ]
    return slack_message(lines, run_url)
