"""Running external programs under a hard timeout, with bounded, redacted output.

Every program starts in its own session (process group); on timeout, interruption or a child
that outlives its parent while holding the output pipe, the whole group is killed. The
operators' shell commands (migrate, rollback) get an allow-listed environment
(``command_environment``), never the platform's own secrets.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ops_platform.lib import settings
from ops_platform.lib.redact import Redactor, tail

# What any command needs from this process's environment; COMMAND_VARIABLES names more.
BASE_VARIABLES = ("PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
OUTPUT_LIMIT = 64 * 1024
READ_SIZE = 64 * 1024
KILL_GRACE_SECONDS = 2.0
PIPE_GRACE_SECONDS = 2.0


@dataclass
class ProcessOutcome:
    """How a program ended. ``output`` holds the last OUTPUT_LIMIT bytes, cut at a line start."""

    returncode: int | None
    output: bytes
    timed_out: bool
    seconds: float


@dataclass
class CommandResult:
    """A shell command's result, its output already decoded, redacted and cut to a tail."""

    ok: bool
    returncode: int | None
    timed_out: bool
    output: str
    seconds: float
    summary: str


def kill_group(process: subprocess.Popen, grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM the process group, then SIGKILL it if the leader has not exited after ``grace``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)


class _Output:
    """Keeps the tail of a stream and hands complete lines to a callback."""

    def __init__(self, limit: int, on_line: Callable[[bytes], None] | None):
        self.limit = limit
        self.on_line = on_line
        self.data = bytearray()
        self.partial = b""

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * self.limit:
            del self.data[: len(self.data) - self.limit]
        if self.on_line is not None:
            lines = (self.partial + chunk).split(b"\n")
            self.partial = lines.pop()
            for line in lines:
                self.on_line(line)

    def finish(self) -> bytes:
        if self.on_line is not None and self.partial:
            self.on_line(self.partial)
            self.partial = b""
        raw = bytes(self.data[-self.limit:])
        if len(self.data) > self.limit and b"\n" in raw:
            raw = raw[raw.find(b"\n") + 1:]
        return raw


def command_environment(variables: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a migrate or rollback command: BASE_VARIABLES and the names listed in
    COMMAND_VARIABLES, taken from ``environ`` (default: this process's), then ``variables`` (its
    ``DATABASE_URL`` and the like). Nothing else: no AWS key, Slack token, ``OPS_PLATFORM_TOKEN`` or
    another environment's URL. Raises ConfigError for a bad COMMAND_VARIABLES."""
    environ = os.environ if environ is None else environ
    names = (*BASE_VARIABLES, *settings.command_variables(environ))
    return {**{name: environ[name] for name in names if name in environ}, **variables}


def run_process(args: str | Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float,
                shell: bool = False, on_line: Callable[[bytes], None] | None = None,
                output_limit: int = OUTPUT_LIMIT, cwd: str | None = None) -> ProcessOutcome:
    """Run a program with stdout and stderr merged, killing its process group after ``timeout``
    seconds (or on any exception, KeyboardInterrupt included). ``on_line`` sees each output line."""
    started = time.monotonic()
    process = subprocess.Popen(args, shell=shell, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, env=dict(env) if env is not None else None,
                               start_new_session=True, cwd=cwd)
    output = _Output(output_limit, on_line)
    timed_out = False
    try:
        timed_out = _pump(process, output, started + timeout)
    finally:
        if process.poll() is None:
            kill_group(process)
        # Children left in the group (a backgrounded `sleep &`) must not outlive the command.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.stdout.close()
    return ProcessOutcome(process.returncode, output.finish(), timed_out, time.monotonic() - started)


def _pump(process: subprocess.Popen, output: _Output, deadline: float) -> bool:
    """Read output until EOF and exit; returns True when the deadline killed the process."""
    fd = process.stdout.fileno()
    os.set_blocking(fd, False)
    timed_out = False
    eof = False
    gone_at: float | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if process.poll() is not None:
                if eof:
                    return timed_out
                gone_at = gone_at or now
                if now - gone_at > PIPE_GRACE_SECONDS:
                    return timed_out  # something outside the leader keeps the pipe open
            elif now >= deadline and not timed_out:
                timed_out = True
                kill_group(process)
                continue
            if eof:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=max(0.01, min(0.2, deadline - now)))
                continue
            if selector.select(timeout=max(0.0, min(0.2, deadline - now) if not timed_out else 0.2)):
                try:
                    chunk = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    continue
                if chunk:
                    output.add(chunk)
                else:
                    eof = True


def run_shell_command(command: str, env: Mapping[str, str], timeout: float,
                      redactor: Redactor | None = None, *, name: str = "command",
                      cwd: str | None = None) -> CommandResult:
    """Run ``command`` through ``/bin/sh`` with exactly ``env``, under ``timeout`` seconds (the
    whole process group is killed then). Output is captured, cut to a tail and redacted."""
    redactor = redactor or Redactor.from_environ(env)
    outcome = run_process(command, env=env, timeout=timeout, shell=True, cwd=cwd)
    text = redactor(outcome.output.decode(errors="replace"))
    output = tail(text, lines=40, limit=4000)
    if outcome.timed_out:
        summary = f"{name} timed out after {timeout:g}s and was killed"
    elif outcome.returncode != 0:
        summary = f"{name} exited with code {outcome.returncode}"
    else:
        summary = f"{name} succeeded in {outcome.seconds:.1f}s"
    ok = not outcome.timed_out and outcome.returncode == 0
    return CommandResult(ok, outcome.returncode, outcome.timed_out, output, outcome.seconds, summary)
