"""What ``make dev`` shows of the output of its code server, webserver and daemon (and of the runs
the code server starts): what a person must read, not the daemon's routine.

Kept: warnings and errors with the lines that belong to them (a traceback), Python warnings and
tracebacks printed outside the log, lines that are not Dagster log lines at all, and one line
per run started and one per run finished. Dropped: INFO and DEBUG lines ("Checking for new runs
for sensor: ...", every event of every run), the warnings in ``HARMLESS_WARNINGS``, and the stack
of a step that failed on purpose (a ``dg.Failure``: a refused restore, a bad setting): its one
line says everything, and Dagster prints the frames of its own machinery under it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from ops_platform.lib.formatting import human_duration

ANSI = re.compile(r"\x1b\[[0-9;]*m")
HEADER = re.compile(r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}) - (?P<logger>\S+) - "
                    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) - (?P<message>.*)$")
RUN_EVENT = re.compile(r"^(?P<job>\S+) - (?P<run_id>[0-9a-f]{8})[0-9a-f-]{28} - (?:\d+ - )?"
                       r"(?P<event>RUN_START|RUN_SUCCESS|RUN_FAILURE|RUN_CANCELED) - (?P<text>.*)$")
OUTSIDE_THE_LOG = re.compile(r"^(Traceback \(most recent call last\):|\S+:\d+: \w*Warning: )")
KEPT_LEVELS = ("WARNING", "ERROR", "CRITICAL")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %z"
# Warnings Dagster gives on every fresh instance that ask nothing of anyone.
HARMLESS_WARNINGS = (
    re.compile(r"^No cursor for event type DagsterEventType\.\w+, ignoring older events$"),
)
FINISHED = {"RUN_SUCCESS": "succeeded", "RUN_FAILURE": "failed", "RUN_CANCELED": "was canceled"}
INTENTIONAL_FAILURE = "dagster._core.definitions.events.Failure: "


@dataclass
class DevLogFilter:
    """Feed one process's output line by line; ``feed`` returns the line to show, or None."""

    keep_following: bool = True
    failed_on_purpose: bool = False
    started: dict[str, datetime] = field(default_factory=dict)

    def feed(self, line: str) -> str | None:
        plain = ANSI.sub("", line.rstrip("\n"))
        header = HEADER.match(plain)
        if header is None:
            if OUTSIDE_THE_LOG.match(plain):
                self.keep_following, self.failed_on_purpose = True, False
            elif plain.startswith(INTENTIONAL_FAILURE):
                self.failed_on_purpose = True
            elif self.failed_on_purpose and plain.strip() == "Stack Trace:":
                self.keep_following = False
            return line if self.keep_following else None
        self.keep_following, self.failed_on_purpose = False, False
        run_event = RUN_EVENT.match(header["message"]) if header["logger"] == "dagster" else None
        if run_event:
            return self._run_line(header["time"], run_event)
        if header["level"] not in KEPT_LEVELS or any(
                harmless.match(header["message"]) for harmless in HARMLESS_WARNINGS):
            return None
        self.keep_following = True
        return line

    def _run_line(self, at: str, event: re.Match) -> str:
        run = f"{at} - run {event['run_id']} {event['job']}"
        when = datetime.strptime(at, TIME_FORMAT)
        if event["event"] == "RUN_START":
            self.started[event["run_id"]] = when
            return f"{run} started\n"
        started = self.started.pop(event["run_id"], None)
        took = f" in {human_duration((when - started).total_seconds())}" if started else ""
        detail = f": {event['text']}" if event["event"] == "RUN_FAILURE" else ""
        self.keep_following = event["event"] == "RUN_FAILURE"
        return f"{run} {FINISHED[event['event']]}{took}{detail}\n"
