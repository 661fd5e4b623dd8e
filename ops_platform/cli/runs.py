"""Running the code location's jobs from the CLI, as runs recorded on the ``$DAGSTER_HOME``
instance so they show in the UI, and showing their progress on a terminal."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

from ops_platform.cli.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, CommandError
from ops_platform.lib.files import private_dir
from ops_platform.lib.formatting import describe
from ops_platform.lib.progress import PROGRESS_LOGGER, STEP_LOGGER
from ops_platform.lib.tags import HOST, LAUNCHED_BY, LOCK_WAIT, PID

STORAGE_SETUP_WAIT_SECONDS = 60
REPO_INSTANCE_CONFIG = Path(__file__).resolve().parents[2] / "dagster.yaml"  # the checkout's instance config


def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME`` (default ``./.dagster_home``), given the project's dagster.yaml if it has none.

    It holds the run history with its logs and metadata, so it is made private (0700, whatever the
    umask; an existing folder open to others is tightened, said once on stderr) and its
    dagster.yaml is written 0600."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()
    for change in private_dir(home):
        print(f"warning: tightened the permissions of $DAGSTER_HOME, which others could read: {change}",
              file=sys.stderr)
    config = home / "dagster.yaml"
    if not config.exists():
        default = REPO_INSTANCE_CONFIG.read_text() if REPO_INSTANCE_CONFIG.exists() else "telemetry:\n  enabled: false\n"
        # A temporary name of its own: two commands started together both write it, and both succeed.
        handle, temporary = tempfile.mkstemp(prefix=".dagster.yaml.", suffix=".partial", dir=home)
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), 0o600)
            stream.write(default.encode())
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@contextlib.contextmanager
def instance_storage():
    """The ``$DAGSTER_HOME`` instance; when its storage fails (a full disk under SQLite, a database
    that is down), one line that says where, and what to do."""
    import dagster as dg
    from sqlalchemy.exc import OperationalError as StorageError

    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()
    try:
        ensure_dagster_home()
        with _storage_setup_lock(home):
            instance = dg.DagsterInstance.get()
            _create_storage(instance)
    except (StorageError, sqlite3.OperationalError, OSError) as error:
        raise _storage_failed(home, error) from None
    try:
        with instance:
            yield instance
    except (StorageError, sqlite3.OperationalError) as error:
        raise _storage_failed(home, error) from None


@contextlib.contextmanager
def _storage_setup_lock(home: Path):
    """One command at a time creates the instance's storage: Dagster's SQLite run storage is not
    safe to create from two processes at once (\"table secondary_indexes already exists\")."""
    handle = os.open(home / ".storage-setup.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + STORAGE_SETUP_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CommandError(f"another command has been opening the Dagster instance in {home} for "
                                       f"{STORAGE_SETUP_WAIT_SECONDS} s; try again when it is done") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(handle)


def _create_storage(instance) -> None:
    """Open each storage now, under the setup lock, rather than on first use."""
    instance.run_storage.get_runs_count()
    instance.event_log_storage.get_asset_keys(limit=1)
    if instance.schedule_storage is not None:
        instance.schedule_storage.all_instigator_state()


def _storage_failed(home: Path, error: Exception) -> CommandError:
    text = describe(error)
    full = "full" in text.lower() or getattr(error, "errno", None) == errno.ENOSPC
    what = "is full" if full else f"failed ({text})"
    return CommandError(f"the Dagster instance's storage in {home} {what}: the command could not run or be recorded; "
                        "free space there or move the instance to PostgreSQL (README \"Instance\")")


def load_definitions():
    from ops_platform.definitions import defs

    return defs()


def standalone_job(job_name: str):
    """A job that needs nothing of the code location but its own ops and the shared resources
    (``restore_job``), bound without loading every module under ``defs/``; None for the others."""
    if job_name != "restore_job":
        return None
    import dagster as dg

    from ops_platform.defs.resources import build_resources
    from ops_platform.defs.restores.jobs import restore_job

    return dg.Definitions(jobs=[restore_job], resources=build_resources()).resolve_job_def(job_name)


def run_job(job_name: str, *, partition_key: str | None = None, tags: dict | None = None,
            run_config: dict | None = None):
    """Run a job of the code location in this process, recorded on the ``$DAGSTER_HOME`` instance."""
    for noisy in ("dagster", "botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    _record_sigterm_during_runs()
    job = standalone_job(job_name) or load_definitions().resolve_job_def(job_name)
    config = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    config.update(run_config or {})
    with instance_storage() as instance:
        if partition_key is not None:
            from ops_platform.defs.environments import ensure_partitions

            ensure_partitions(instance, [partition_key])
        return job.execute_in_process(
            instance=instance, partition_key=partition_key, raise_on_error=False,
            tags={LAUNCHED_BY: "cli", LOCK_WAIT: "0", HOST: socket.gethostname(), PID: str(os.getpid()),
                  **(tags or {})}, run_config=config,
        )


def failure_message(result) -> str:
    """The first step failure of a run, as one line. An interrupted run (Ctrl-C, SIGTERM) raises
    CommandError with exit code 130 or 143 instead."""
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return data.user_failure_data.description.splitlines()[0]
            if data.error and "DagsterExecutionInterruptedError" in (data.error.cls_name or ""):
                raise interrupted(result.run_id, event.step_key)
            if data.error:
                return (data.error.message or "").strip().splitlines()[-1] if data.error.message else "step failed"
    if any("DagsterExecutionInterruptedError" in (getattr(event, "message", "") or "") for event in result.all_events):
        raise interrupted(result.run_id)
    if _signals_received:
        raise interrupted(result.run_id)
    return "the run failed"


_signals_received: list[int] = []


def _on_signal(signum, frame) -> None:
    _signals_received.append(signum)
    raise KeyboardInterrupt


def catch_signals() -> None:
    """SIGTERM (and SIGINT) stop the work like Ctrl-C: the run is stopped and marked failed, and
    the command exits 143 (130) with one line (``run_job`` teaches Dagster's handler the same)."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def _record_sigterm_during_runs() -> None:
    from ops_platform.defs.dagster_private import record_sigterm_during_runs

    if threading.current_thread() is threading.main_thread():
        record_sigterm_during_runs(_signals_received.append)


def interrupted(run_id: str | None = None, step: str | None = None) -> CommandError:
    terminated = signal.SIGTERM in _signals_received
    name = "SIGTERM" if terminated else "SIGINT"
    where = f" during {step}" if step else ""
    run = f"; run {run_id} was stopped and marked failed" if run_id else ""
    return CommandError(f"interrupted by {name}{where}{run}", EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


def in_progress_runs(partition_key: str, job_names: tuple[str, ...]) -> list:
    """Runs of ``job_names`` in progress for the environment; a run whose process died (no
    heartbeat for RUN_DEAD_AFTER_SECONDS) is marked failed first, so it never holds the environment."""

    from ops_platform.defs.alerts.dead_runs import in_progress
    from ops_platform.lib import settings

    dead_after = settings.value_of(next(s for s in settings.BACKUP if s.variable == "RUN_DEAD_AFTER_SECONDS"))
    with instance_storage() as instance:
        return in_progress(instance, partition_key, job_names, dead_after)


def materialization_metadata(result, node: str) -> dict:
    """The plain metadata values of the last materialization ``node`` recorded in a run."""
    materialization = result.asset_materializations_for_node(node)[-1]
    return {key: value.value for key, value in materialization.metadata.items()}


class TerminalProgress(logging.Handler):
    """Shows progress lines from ``PROGRESS_LOGGER`` on a terminal, each over the last."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream
        self.shown = False

    def emit(self, record):
        self.stream.write(f"\r\033[K{record.getMessage()}")
        self.stream.flush()
        self.shown = True

    def finish(self):
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


class progress_on_terminal:
    """``with progress_on_terminal(sys.stderr): ...`` shows progress when the stream is a terminal."""

    def __init__(self, stream):
        self.handler = TerminalProgress(stream) if stream.isatty() else None

    def __enter__(self):
        if self.handler:
            PROGRESS_LOGGER.addHandler(self.handler)
            PROGRESS_LOGGER.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        if self.handler:
            self.handler.finish()
            PROGRESS_LOGGER.removeHandler(self.handler)
        return False


class _StepLines(logging.Handler):
    def __init__(self, stream):
        super().__init__()
        self.stream = stream
        self.terminal = stream.isatty()

    def emit(self, record):
        prefix = "\r\033[K" if self.terminal else ""
        self.stream.write(f"{prefix}{record.getMessage()}\n")
        self.stream.flush()


class step_lines:
    """``with step_lines(sys.stderr): ...`` prints one line per finished step of a long command."""

    def __init__(self, stream):
        self.handler = _StepLines(stream)

    def __enter__(self):
        STEP_LOGGER.addHandler(self.handler)
        STEP_LOGGER.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        STEP_LOGGER.removeHandler(self.handler)
        return False
