"""What every step that works on an environment does, whichever way its run was started (CLI, UI,
schedule): hold the environment's lock (``lib/locks.py``) so no backup, restore, retention or
drill of it overlaps another, and beat a heartbeat on the run so ``dead_run_sensor`` can tell a
run whose process died from one that is still working. A run of many steps (``fleet_backup_job``)
also beats from the process that orchestrates them (``beating``)."""

import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime, timezone

import dagster as dg

from ops_platform.lib import locks
from ops_platform.lib.artifacts import utc_iso
from ops_platform.lib.tags import HEARTBEAT, HEARTBEAT_OF, LOCK_WAIT

HEARTBEAT_SECONDS = 30.0


@contextlib.contextmanager
def heartbeat(context, interval: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Tag the step's run with the time every ``interval`` seconds while the block runs."""
    with run_heartbeat(context.instance, context.run.run_id, interval):
        yield


@contextlib.contextmanager
def run_heartbeat(instance, run_id: str, interval: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Tag the run ``run_id`` with the time every ``interval`` seconds while the block runs."""
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


class BeatingExecutor(dg.Executor):
    """Another executor, with the run's heartbeat beaten by the process that orchestrates the
    steps for as long as they run: a run whose steps wait in a queue (Celery) is alive while its
    coordinator is, and silent once that process dies."""

    def __init__(self, inner: dg.Executor, interval: float = HEARTBEAT_SECONDS):
        self.inner = inner
        self.interval = interval

    @property
    def retries(self):
        return self.inner.retries

    @property
    def step_dependency_config(self):
        return self.inner.step_dependency_config

    def get_step_event_or_retry_event(self, step_context, err_info, known_state, original_event):
        return self.inner.get_step_event_or_retry_event(step_context, err_info, known_state, original_event)

    def __getattr__(self, name: str):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)  # what the executor's own loop asks of it (Celery's app_args)

    def execute(self, plan_context, execution_plan):
        with run_heartbeat(plan_context.instance, plan_context.run_id, self.interval):
            yield from self.inner.execute(plan_context, execution_plan)


def beating(executor_def: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """``executor_def`` (before ``.configured``) with its executor wrapped in BeatingExecutor."""
    return dg.ExecutorDefinition(
        name=executor_def.name, config_schema=executor_def.config_schema,
        requirements=executor_def.get_requirements, description=executor_def.description,
        executor_creation_fn=lambda init_context: BeatingExecutor(executor_def.executor_creation_fn(init_context)))


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


# Every job's steps run in processes forked from a server that has loaded the definitions
# (ops_platform.preload): a step starts in a fraction of a second, not the 2-3 s of a fresh process.
FORKSERVER_POOL = {"max_concurrent": 2, "start_method": {"forkserver": {"preload_modules": ["ops_platform.preload"]}}}
PROCESS_POOL = dg.multiprocess_executor.configured(FORKSERVER_POOL, name="ops_platform_process_pool")
