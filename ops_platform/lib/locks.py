"""Locks that hold whichever way work was started (CLI, UI, schedule) and die with the process.

A lock is a PostgreSQL session-level advisory lock taken on the environment's own server, in its
maintenance database ``postgres``, by a connection that lives as long as the work. If the process
is killed (``kill -9``, the OOM killer, a reboot), the connection drops and the server releases the
lock: a crash never holds an environment. The holder is named in the connection's
``application_name``, so a refusal can say which run is in the way.

- ``environment_lock``: one backup, restore, retention or drill of an environment at a time.
- ``database_lock``: one restore of a given database at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timezone

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ops_platform.config import ConfigError
from ops_platform.lib import postgres

MAINTENANCE_DATABASE = "postgres"
ENVIRONMENT_NAMESPACE = 0x6F707365  # "opse"
DATABASE_NAMESPACE = 0x6F707372  # "opsr"
APPLICATION_PREFIX = "ops_platform"


class LockBusy(RuntimeError):
    """Another holder has the lock; the message names it."""


class LockUnavailable(RuntimeError):
    """The server could not be reached to take the lock."""


def lock_keys(namespace: int, name: str) -> tuple[int, int]:
    """The two int4 keys of a lock: a namespace and a hash of the name."""
    return namespace, int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


@dataclass
class HeldLock:
    """A lock held by ``connection``'s session."""

    namespace: int
    name: str
    connection: psycopg.Connection = field(repr=False)

    def is_held(self) -> bool:
        """Whether this session still holds the lock (false once the connection is gone)."""
        first, second = lock_keys(self.namespace, self.name)
        try:
            row = self.connection.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted "
                "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 2",
                (first, second & 0xFFFFFFFF)).fetchone()
        except psycopg.Error:
            return False
        return row is not None


def describe_holder(connection: psycopg.Connection, namespace: int, name: str) -> str:
    """Who holds a lock: its application name (which names the run) and since when."""
    first, second = lock_keys(namespace, name)
    row = connection.execute(
        "SELECT l.pid, a.application_name, a.backend_start FROM pg_locks l LEFT JOIN pg_stat_activity a "
        "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::bigint::oid "
        "AND l.objid = %s::bigint::oid AND l.objsubid = 2 LIMIT 1", (first, second & 0xFFFFFFFF)).fetchone()
    if not row:
        return "held by another session"
    since = f" since {row[2].astimezone(timezone.utc):%Y-%m-%d %H:%M:%SZ}" if row[2] else ""
    holder = row[1] if row[1] and row[1] != APPLICATION_PREFIX else f"backend pid {row[0]}"
    return f"held by {holder}{since}"


def _connect(url: str, holder: str) -> psycopg.Connection:
    application = f"{APPLICATION_PREFIX} {holder}"[:63] if holder else APPLICATION_PREFIX
    try:
        connection = postgres.connect(url, dbname=MAINTENANCE_DATABASE, autocommit=True, connect_timeout=10,
                                      application_name=application, keepalives=1, keepalives_idle=30,
                                      keepalives_interval=10, keepalives_count=3,
                                      options="-c statement_timeout=30000 -c lock_timeout=10000")
    except psycopg.Error as error:
        raise LockUnavailable(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__) \
            from None
    except Exception as error:  # noqa: BLE001 - a malformed URL
        raise ConfigError("the database URL is not a valid PostgreSQL connection string") from error
    if connection.info.server_version >= 140000:
        connection.execute("SET idle_session_timeout = 0")
    return connection


@contextlib.contextmanager
def advisory_lock(url: str, namespace: int, name: str, what: str, *, holder: str = "",
                  wait_seconds: float = 0) -> Iterator[HeldLock]:
    """Hold a lock for the ``with`` block, waiting up to ``wait_seconds``. Raises LockBusy naming
    the holder, or LockUnavailable when the server cannot be reached."""
    first, second = lock_keys(namespace, name)
    connection = _connect(url, holder)
    with connection:
        deadline = time.monotonic() + wait_seconds
        while not connection.execute("SELECT pg_try_advisory_lock(%s, %s)", (first, second)).fetchone()[0]:
            if time.monotonic() >= deadline:
                waited = f"; waited {wait_seconds:g}s" if wait_seconds else ""
                raise LockBusy(f"{what} ({describe_holder(connection, namespace, name)}){waited}")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        try:
            yield HeldLock(namespace, name, connection)
        finally:
            with contextlib.suppress(psycopg.Error):
                connection.execute("SELECT pg_advisory_unlock(%s, %s)", (first, second))


def environment_lock(url: str, environment: str, *, holder: str = "", wait_seconds: float = 0):
    """One backup, restore, retention or drill of ``environment`` at a time. The lock is named
    after the environment and its database, so two platforms (or two test runs) sharing a server
    only exclude each other when they work on the same database."""
    try:
        database = conninfo_to_dict(url).get("dbname") or ""
    except Exception:  # noqa: BLE001 - a malformed URL fails when connecting, with its own message
        database = ""
    return advisory_lock(url, ENVIRONMENT_NAMESPACE, f"{environment}:{database}",
                         f"another backup, restore, retention or drill of {environment} is running",
                         holder=holder, wait_seconds=wait_seconds)


def database_lock(url: str, database: str, *, holder: str = "", wait_seconds: float = 0):
    """One restore of ``database`` at a time."""
    return advisory_lock(url, DATABASE_NAMESPACE, database, f"another restore of database {database} is running",
                         holder=holder, wait_seconds=wait_seconds)
