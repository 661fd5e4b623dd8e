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


SLACK_SECTION_CHARS = 3000
SLACK_MAX_BLOCKS = 50
SLACK_TEXT_CHARS = 40000


def sectioned_message(lines: list[str], link: str | None = None, link_text: str = RUN_LINK_TEXT) -> SlackMessage:
    """Like ``slack_message``, for long messages: the lines go into as many mrkdwn sections as
    Slack's limits need (3,000 characters a section, 50 blocks a message), a line never split
    unless it alone is too long. Lines beyond the last block are left out: the caller keeps the
    message short enough (``fit_lines``)."""
    escaped = [slack_escape(line)[:SLACK_SECTION_CHARS] for line in lines]
    if link:
        escaped.append(f"<{link}|{link_text}>")
    sections: list[list[str]] = [[]]
    size = 0
    for line in escaped:
        if sections[-1] and size + 1 + len(line) > SLACK_SECTION_CHARS:
            if len(sections) == SLACK_MAX_BLOCKS:
                break
            sections.append([])
            size = 0
        size += len(line) + (1 if len(sections[-1]) else 0)
        sections[-1].append(line)
    texts = ["\n".join(section) for section in sections if section]
    return SlackMessage(text="\n".join(texts)[:SLACK_TEXT_CHARS],
                        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}} for text in texts])


def code_block(text: str, limit: int = 1500) -> str:
    """The end of a long output, as a code block."""
    return f"```{text.strip()[-limit:]}```"


def run_url(run_id: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A link to the run in the Dagster UI, when ``DAGSTER_WEBSERVER_URL`` is set."""
    environ = os.environ if environ is None else environ
    base = environ.get("DAGSTER_WEBSERVER_URL", "").strip().rstrip("/")
    return f"{base}/runs/{run_id}" if base else None
