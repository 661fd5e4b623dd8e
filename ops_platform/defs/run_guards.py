"""What every step that works on an environment does, whichever way its run was started (CLI, UI,
schedule): hold the environment's lock (``lib/locks.py``) so no backup, restore, retention or
drill of it overlaps another, and beat a heartbeat on the run so ``dead_run_sensor`` can tell a
run whose process died from one that is still working."""

import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime, timezone

from ops_platform.lib import locks
from ops_platform.lib.artifacts import utc_iso
from ops_platform.lib.tags import HEARTBEAT, HEARTBEAT_OF, LOCK_WAIT

HEARTBEAT_SECONDS = 30.0


@contextlib.contextmanager
def heartbeat(context, interval: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Tag the run with the time every ``interval`` seconds while the block runs."""
    instance, run_id = context.instance, context.run.run_id
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a storage hiccup must not fail the work
                instance.add_run_tags(run_id, {HEARTBEAT: utc_iso(datetime.now(timezone.utc)), HEARTBEAT_OF: run_id})
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def holder(context) -> str:
    """How a lock names this run: the job and the run id."""
    return f"{context.run.job_name} run {context.run.run_id}"


@contextlib.contextmanager
def environment_guard(context, database_url: str, environment: str, wait_seconds: float,
                      required: bool = True) -> Iterator[locks.HeldLock | None]:
    """Hold the environment's lock (waiting up to ``wait_seconds`` for another run to finish; a run
    tagged ``ops_platform/lock_wait_seconds``, as the CLI's are, waits that long instead) and beat
    the heartbeat. Raises LockBusy or LockUnavailable; with ``required=False`` an unreachable
    server only logs a warning (retention needs no database: if the server is down, no backup or
    restore can be running)."""
    wait_seconds = float(context.run.tags.get(LOCK_WAIT, wait_seconds))
    with heartbeat(context), contextlib.ExitStack() as stack:
        held = None
        try:
            held = stack.enter_context(locks.environment_lock(database_url, environment, holder=holder(context),
                                                              wait_seconds=wait_seconds))
        except locks.LockUnavailable as error:
            if required:
                raise
            context.log.warning(f"the {environment} lock could not be taken (its server is unreachable: {error}); "
                                "going on without it")
        yield held
