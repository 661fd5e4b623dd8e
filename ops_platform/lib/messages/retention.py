"""Slack messages for retention runs."""

from __future__ import annotations

from ops_platform.lib.formatting import human_bytes
from ops_platform.lib.messages.common import slack_message
from ops_platform.lib.retention.policy import RetentionPlan
from ops_platform.lib.retention.stores import ApplyResult
from ops_platform.lib.slack import SlackMessage

MAX_LISTED = 10


def retention_summary(plan: RetentionPlan, applied: ApplyResult, run_url: str | None = None,
                      corrupt: list[dict] | None = None) -> SlackMessage:
    """The run's summary. ``corrupt``: the copies found not to match their manifests that were not
    alerted before (each is alerted once)."""
    summary = plan.summary()
    corrupt = corrupt or []
    icon = ":rotating_light:" if corrupt else ":wastebasket:"
    found = f"{len(corrupt)} corrupt backup cop{'y' if len(corrupt) == 1 else 'ies'} found, " if corrupt else ""
    lines = [
        f"{icon} *Backup retention* ({plan.environment}): {found}deleted {summary['deleted']}, "
        f"kept {summary['kept']}, freed {human_bytes(applied.bytes_freed)}",
        f"• newest kept: `{summary['newest_kept']}`, oldest kept: `{summary['oldest_kept']}`",
    ]
    for check in corrupt:
        lines.append(f":rotating_light: `{check['id']}`: its {check['location']} copy does not match its manifest "
                     f"({check['detail']}). Kept, not counted toward the floor; a person should look.")
    for item in plan.deleted[:MAX_LISTED]:
        lines.append(f"• deleted `{item.id}`: {item.reason}")
    if len(plan.deleted) > MAX_LISTED:
        lines.append(f"• and {len(plan.deleted) - MAX_LISTED} more")
    if applied.dropped_leftovers:
        lines.append(f"• dropped {len(applied.dropped_leftovers)} scratch database(s) left by a stopped restore or "
                     "drill: " + ", ".join(f"`{name}`" for name in applied.dropped_leftovers))
    if applied.dropped_databases:
        lines.append(f"• dropped {len(applied.dropped_databases)} database(s) kept by earlier restores: "
                     + ", ".join(f"`{name}`" for name in applied.dropped_databases))
    if applied.aborted_uploads:
        lines.append(f"• aborted {len(applied.aborted_uploads)} incomplete S3 upload(s)")
    lines += [f":warning: {warning}" for warning in plan.warnings]
    return slack_message(lines, run_url)
