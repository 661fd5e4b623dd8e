"""Where a fleet backup's steps run: in the run's own process pool (the default), or on Celery
workers (``OPS_PLATFORM_EXECUTOR=celery``) through Dagster's Celery executor.

The broker URL may hold a password, so it stays in the environment: the run process and every
worker read ``CELERY_BROKER_URL`` (and ``CELERY_RESULT_BACKEND``, default the broker) themselves;
run config and argv only ever name the variables. Nothing is read at import time unless a caller
passes no mapping (then ``os.environ``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from ops_platform.config import ConfigError

EXECUTOR_VARIABLE = "OPS_PLATFORM_EXECUTOR"
BROKER_VARIABLE = "CELERY_BROKER_URL"
BACKEND_VARIABLE = "CELERY_RESULT_BACKEND"
QUEUE_VARIABLE = "CELERY_QUEUE"
DEFAULT_QUEUE = "ops_platform"
EXECUTORS = ("multiprocess", "celery")
_QUEUE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _get(environ: Mapping[str, str], key: str) -> str:
    return environ.get(key, "").strip()


def executor_name(environ: Mapping[str, str] | None = None) -> str:
    """``multiprocess`` (unset) or ``celery``; ConfigError for anything else."""
    environ = os.environ if environ is None else environ
    name = _get(environ, EXECUTOR_VARIABLE).lower() or "multiprocess"
    if name not in EXECUTORS:
        raise ConfigError(f"{EXECUTOR_VARIABLE} must be one of {', '.join(EXECUTORS)}, got '{name[:40]}'")
    return name


def uses_celery(environ: Mapping[str, str] | None = None) -> bool:
    return executor_name(environ) == "celery"


def queue_name(environ: Mapping[str, str] | None = None) -> str:
    """The Celery queue the steps go to and the workers listen on (``CELERY_QUEUE``)."""
    environ = os.environ if environ is None else environ
    name = _get(environ, QUEUE_VARIABLE) or DEFAULT_QUEUE
    if not _QUEUE_PATTERN.fullmatch(name):
        raise ConfigError(f"{QUEUE_VARIABLE} must be letters, digits, '_', '.' or '-', got '{name[:40]}'")
    return name


def backend_variable(environ: Mapping[str, str] | None = None) -> str:
    """The variable holding the result backend's URL: ``CELERY_RESULT_BACKEND`` when set, else
    the broker's (Redis serves as both)."""
    environ = os.environ if environ is None else environ
    return BACKEND_VARIABLE if _get(environ, BACKEND_VARIABLE) else BROKER_VARIABLE


def celery_app_settings(environ: Mapping[str, str] | None = None) -> dict:
    """Celery's own settings, the same in the run process and on every worker. One step at a time
    per worker process and no prefetching, so a long dump never holds a second target back on a
    busy machine while another worker sits idle.

    A step is acknowledged when it ends, not when a worker takes it (``task_acks_late``, and
    ``task_reject_on_worker_lost`` for a pool process that dies), so a worker lost mid-dump leaves
    it on the broker for another worker: at once with RabbitMQ (the connection closes), after
    ``visibility_timeout`` with Redis. That timeout is the longest a backup may take
    (``backup_max_runtime_seconds``), so Redis never hands a step that is still running to a
    second worker."""
    from ops_platform.lib.settings import backup_max_runtime_seconds

    queue = queue_name(environ)
    return {
        "task_default_queue": queue,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "broker_connection_retry_on_startup": True,
        "result_expires": 7 * 24 * 3600,
        "broker_transport_options": {"max_retries": 3, "interval_start": 0, "interval_step": 0.2,
                                     "interval_max": 0.5,
                                     "visibility_timeout": backup_max_runtime_seconds(environ)},
    }


def broker_url(environ: Mapping[str, str] | None = None) -> str:
    """The broker's URL, for a worker; ConfigError when it is not set."""
    environ = os.environ if environ is None else environ
    url = _get(environ, BROKER_VARIABLE)
    if not url:
        raise ConfigError(f"{BROKER_VARIABLE} is not set: a Celery worker needs the broker's URL "
                          "(e.g. redis://:password@redis.internal:6379/5)")
    return url


def backend_url(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return _get(environ, BACKEND_VARIABLE) or broker_url(environ)
