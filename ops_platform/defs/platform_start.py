"""The platform's start-up: the first minutes after the code server loaded these definitions (at
its start, and again on "Reload definitions"). Schedules evaluated in that process use it to leave
those minutes alone: the first health sweep does not judge latency while the webserver, the daemon
and the code server are still loading, and database snapshots wait, so a person's first runs
start at once."""

import time
from datetime import datetime

STARTUP_SECONDS = 300.0
LOADED_AT = time.time()


def starting(at: datetime) -> bool:
    """Whether ``at`` (a tick's scheduled time) falls within the start-up minutes."""
    return 0 <= at.timestamp() - LOADED_AT < STARTUP_SECONDS


def startup_ends() -> datetime:
    return datetime.fromtimestamp(LOADED_AT + STARTUP_SECONDS).astimezone()
