"""Slack messages for backups that stopped arriving, and for their return."""

from __future__ import annotations

from ops_platform.lib.formatting import human_duration
from ops_platform.lib.freshness import DRILLS, FRESH_AGAIN, REMINDER, FreshnessNotice
from ops_platform.lib.messages.common import slack_message
from ops_platform.lib.slack import SlackMessage


def freshness_message(notice: FreshnessNotice) -> SlackMessage:
    if notice.subject == DRILLS:
        return _drill_message(notice)
    age = human_duration(notice.age_seconds) if notice.age_seconds is not None else None
    if notice.kind == FRESH_AGAIN:
        return slack_message([f":white_check_mark: *Backups of {notice.environment} are fresh again*: "
                              f"newest verified backup `{notice.newest_id}`"])
    prefix = ":rotating_light: *Reminder:*" if notice.kind == REMINDER else ":rotating_light:"
    newest = (f"the newest verified backup is `{notice.newest_id}`, {age} old"
              if notice.newest_id else "there is no verified backup at all")
    return slack_message([f"{prefix} *No fresh backup of {notice.environment}*: {newest}; {notice.limit}. "
                          "Backups may have stopped."])


def _drill_message(notice: FreshnessNotice) -> SlackMessage:
    if notice.kind == FRESH_AGAIN:
        return slack_message([f":white_check_mark: *Restore drills of {notice.environment} pass again*: "
                              f"`{notice.newest_id}` was restored and verified"])
    prefix = ":rotating_light: *Reminder:*" if notice.kind == REMINDER else ":rotating_light:"
    last = (f"the last passing drill restored `{notice.newest_id}` {human_duration(notice.age_seconds)} ago"
            if notice.newest_id else "no drill has ever passed")
    return slack_message([f"{prefix} *No passing restore drill of {notice.environment} in "
                          f"{notice.limit}*: {last}. Nobody knows whether its backups restore."])
