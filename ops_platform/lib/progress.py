"""Progress of long work (dumps, fetches, restores), for a terminal and for the run log.

Every update goes to ``PROGRESS_LOGGER``, which the CLI shows on a terminal; the run log gets a
line at most every ``log_every`` seconds, and always the last one. A finished step of a long
command (a restore) is one line on ``STEP_LOGGER``, which the CLI prints whether or not its output
is a terminal."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

PROGRESS_LOGGER = logging.getLogger("ops_platform.progress")
STEP_LOGGER = logging.getLogger("ops_platform.steps")


class ProgressLine:
    def __init__(self, log: Callable[[str], None], log_every: float = 15.0):
        self._log = log
        self._log_every = log_every
        self._last_logged = time.monotonic()

    def __call__(self, line: str, done: bool = False) -> None:
        PROGRESS_LOGGER.info(line)
        now = time.monotonic()
        if done or now - self._last_logged >= self._log_every:
            self._last_logged = now
            self._log(line)
