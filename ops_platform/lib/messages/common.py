"""The shape every Slack message shares."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ops_platform.lib.formatting import slack_escape
from ops_platform.lib.slack import SlackMessage

RUN_LINK_TEXT = "View the run in Dagster"


def slack_message(lines: list[str], link: str | None = None, link_text: str = RUN_LINK_TEXT) -> SlackMessage:
    """Lines of plain text (mrkdwn's ``*bold*`` and ``:emoji:`` work; ``&``, ``<`` and ``>`` are
    escaped, so no line can ping or link) joined into one mrkdwn section, with an optional link at the end.
    Every message is built here."""
    lines = [slack_escape(line) for line in lines]
    if link:
        lines.append(f"<{link}|{link_text}>")
    text = "\n".join(lines)
    return SlackMessage(text=text, blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}])


def code_block(text: str, limit: int = 1500) -> str:
    """The end of a long output, as a code block."""
    return f"```{text.strip()[-limit:]}```"


def run_url(run_id: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A link to the run in the Dagster UI, when ``DAGSTER_WEBSERVER_URL`` is set."""
    environ = os.environ if environ is None else environ
    base = environ.get("DAGSTER_WEBSERVER_URL", "").strip().rstrip("/")
    return f"{base}/runs/{run_id}" if base else None
