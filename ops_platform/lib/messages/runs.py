"""Slack messages for runs that failed without sending their own alert."""

from __future__ import annotations

from ops_platform.lib.messages.common import code_block, slack_message
from ops_platform.lib.slack import SlackMessage


def run_failed(job_name: str, error: str, partition: str | None = None, run_url: str | None = None) -> SlackMessage:
    where = f" ({partition})" if partition else ""
    return slack_message([f":x: *Dagster run failed*: `{job_name}`{where}", code_block(error)], run_url)
