"""Human-readable sizes, durations and errors for terminals and Slack."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def describe(error: BaseException) -> str:
    """The first meaningful line of an exception, or its type's name when it says nothing."""
    text = str(error).strip()
    first = text.splitlines()[0].strip() if text else ""
    return first or type(error).__name__


def slack_escape(text: str) -> str:
    """Plain text for Slack's mrkdwn: ``&``, ``<`` and ``>`` become entities, as Slack asks, so text
    from outside (a ``/health`` body, a database error) can neither ping (``<!channel>``) nor link
    (``<url|text>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def human_bytes(count: float) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def human_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a mistyped ``word``, or ``""``."""
    found = difflib.get_close_matches(word, [choice for choice in choices if choice != word], n=1, cutoff=0.6)
    return f" (did you mean '{found[0]}'?)" if found else ""
