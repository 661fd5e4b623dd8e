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


def fleet_backups_succeeded(backups: list[dict], hosts: list[str], run_url: str | None = None,
                            listed: int = 20) -> SlackMessage:
    """One message for a run that backed up many targets (a server's night): how many, how big,
    where they ran, the targets (the first ``listed``, then how many more), and how many older
    backups their retention deleted (each target's retention posts only a corrupt backup). Backups
    with fewer verified copies than BACKUP_MIN_COPIES make it an alert naming each missing copy."""
    names = sorted(backup["target"] for backup in backups)
    shown = ", ".join(names[:listed]) + (f" and {len(names) - listed} more" if len(names) > listed else "")
    short = sorted((backup for backup in backups if backup.get("copies_missing")), key=lambda backup: backup["target"])
    title = (f":x: *{len(backups)} database backup{'' if len(backups) == 1 else 's'} made, {len(short)} with too few "
             "verified copies*" if short else
             f":white_check_mark: *{len(backups)} database backup{'' if len(backups) == 1 else 's'} succeeded*")
    lines = [
        title,
        f"• size: {human_bytes(sum(backup['stored_bytes'] for backup in backups))} stored",
        f"• made on: {', '.join(hosts)}",
        f"• targets: {shown}",
    ]
    lines += [f"• too few copies: {backup['target']} (`{backup['backup_id']}`): {backup['copies_missing']}"
              for backup in short[:listed]]
    if len(short) > listed:
        lines.append(f"• ...and {len(short) - listed} more with too few copies")
    deleted = sum(backup.get("retention_deleted") or 0 for backup in backups)
    if deleted:
        lines.append(f"• retention: {deleted} older backup(s) deleted as the policy says")
    return slack_message(lines, run_url)
