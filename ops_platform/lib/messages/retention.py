"""Slack messages for retention runs."""

from __future__ import annotations

from ops_platform.lib.formatting import human_bytes
from ops_platform.lib.messages.common import slack_message
from ops_platform.lib.retention.policy import RetentionPlan
from ops_platform.lib.retention.stores import ApplyResult
from ops_platform.lib.slack import SlackMessage

MAX_LISTED = 10


def retention_summary(plan: RetentionPlan, applied: ApplyResult, run_url: str | None = None) -> SlackMessage:
    summary = plan.summary()
    lines = [
        f":wastebasket: *Backup retention* ({plan.environment}): deleted {summary['deleted']}, "
        f"kept {summary['kept']}, freed {human_bytes(applied.bytes_freed)}",
        f"• newest kept: `{summary['newest_kept']}`, oldest kept: `{summary['oldest_kept']}`",
    ]
    for item in plan.deleted[:MAX_LISTED]:
        lines.append(f"• deleted `{item.id}`: {item.reason}")
    if len(plan.deleted) > MAX_LISTED:
        lines.append(f"• and {len(plan.deleted) - MAX_LISTED} more")
    if applied.dropped_databases:
        lines.append(f"• dropped {len(applied.dropped_databases)} database(s) kept by earlier restores: "
                     + ", ".join(f"`{name}`" for name in applied.dropped_databases))
    if applied.aborted_uploads:
        lines.append(f"• aborted {len(applied.aborted_uploads)} incomplete S3 upload(s)")
    lines += [f":warning: {warning}" for warning in plan.warnings]
    return slack_message(lines, run_url)
