"""Step 4: load a raw archive with ``pg_restore``.

Objects end up owned by the connecting role (``--no-owner``). Grants are kept when every role
they name exists on the server (and this role may issue them); otherwise the archive is restored
with ``--no-acl`` and a warning names the missing roles. The password reaches pg_restore only
through a 0600 passfile (``client_connection``), never argv.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from ops_platform.lib.commands import run_process
from ops_platform.lib.formatting import describe
from ops_platform.lib.postgres import client_connection
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore.databases import connect, redactor_for
from ops_platform.lib.restore.errors import RestoreStepError, one_line, step_error

DEFAULT_TIMEOUT_SECONDS = 6 * 3600.0
LIST_TIMEOUT_SECONDS = 300.0

_TOC_LINE = re.compile(r"^(?P<id>\d+);\s+\d+\s+\d+\s+(?P<rest>.*)$")
_ACL_DESC = re.compile(r"^(?:DEFAULT ACL|ACL) ")
_ROLE = r'(?P<role>"(?:[^"]|"")+"|[^\s";,]+)'
_GRANTEE = re.compile(rf" (?:TO|FROM) {_ROLE}(?: WITH GRANT OPTION)?;\s*$")
_FOR_ROLE = re.compile(rf"^ALTER DEFAULT PRIVILEGES FOR ROLE {_ROLE} ")
_SESSION_AUTH = re.compile(r"^SET SESSION AUTHORIZATION (?P<role>\"(?:[^\"]|\"\")+\"|'(?:[^']|'')+'|[^\s;]+);")
_ITEM_DONE = re.compile(rb"^pg_restore: (?:processing|finished) item (\d+) ")
_SERIAL_ITEM = re.compile(rb"^pg_restore: (?:creating|executing|processing data for table) ")
_PROGRESS_LINE = re.compile(rb"^pg_restore: (?:processing|finished|launching|creating|executing|entering|connecting|"
                            rb"restoring|restored|dropping|disabling|enabling|setting|implied|skipping)\b")

ProgressCallback = Callable[[int, int], None]


@dataclass
class GrantPlan:
    """Whether grants can be restored; ``roles`` are those the archive's ACL entries name."""

    keep_acl: bool
    roles: list[str] = field(default_factory=list)
    missing_roles: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class RestoreRun:
    """What one pg_restore run did."""

    database: str
    seconds: float
    jobs: int
    items: int
    acl_restored: bool
    warnings: list[str] = field(default_factory=list)


def _unquote_role(text: str) -> str:
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    return text


def list_entries(dump_path: Path, timeout: float = LIST_TIMEOUT_SECONDS) -> list[tuple[int, str]]:
    """(dump id, description line) of every entry ``pg_restore --list`` shows."""
    try:
        result = subprocess.run(["pg_restore", "--list", str(dump_path)], capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise step_error("pg_restore", f"pg_restore --list could not run: {describe(error)}") from None
    if result.returncode != 0:
        raise step_error("pg_restore", f"pg_restore --list failed: {one_line(result.stderr.decode(errors='replace'))}")
    entries = []
    for line in result.stdout.decode(errors="replace").splitlines():
        match = _TOC_LINE.match(line)
        if match:
            entries.append((int(match["id"]), match["rest"]))
    return entries


def acl_statements(dump_path: Path, entries: list[tuple[int, str]] | None = None,
                   timeout: float = LIST_TIMEOUT_SECONDS) -> list[str]:
    """The SQL lines of the archive's ACL and DEFAULT ACL entries (read through ``-L``)."""
    entries = list_entries(dump_path) if entries is None else entries
    wanted = [dump_id for dump_id, rest in entries if _ACL_DESC.match(rest)]
    if not wanted:
        return []
    with tempfile.NamedTemporaryFile("w", prefix="ops_platform_acl_", suffix=".list") as listing:
        listing.write("".join(f"{dump_id};\n" for dump_id in wanted))
        listing.flush()
        try:
            result = subprocess.run(["pg_restore", "--use-list", listing.name, "--file=-", str(dump_path)],
                                    capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise step_error("pg_restore", f"reading the archive's grants failed: {describe(error)}") from None
    if result.returncode != 0:
        raise step_error("pg_restore", f"reading the archive's grants failed: "
                                       f"{one_line(result.stderr.decode(errors='replace'))}")
    return [line for line in result.stdout.decode(errors="replace").splitlines()
            if line.startswith(("GRANT ", "REVOKE ", "ALTER DEFAULT PRIVILEGES ", "SET SESSION AUTHORIZATION "))]


def acl_roles(statements: list[str]) -> tuple[set[str], set[str], set[str]]:
    """(roles granted to or revoked from, roles whose default privileges are set, roles the
    statements switch to with SET SESSION AUTHORIZATION). PUBLIC is not a role."""
    grantees, owners, sessions = set(), set(), set()
    for statement in statements:
        if match := _SESSION_AUTH.match(statement):
            sessions.add(_unquote_role(match["role"]))
            continue
        if match := _FOR_ROLE.match(statement):
            owners.add(_unquote_role(match["role"]))
        if match := _GRANTEE.search(statement):
            role = match["role"]
            if role != "PUBLIC":
                grantees.add(_unquote_role(role))
    return grantees, owners, sessions


def plan_grants(url: str, dump_path: Path, *, entries: list[tuple[int, str]] | None = None,
                redactor: Redactor | None = None) -> GrantPlan:
    """Decide between restoring grants and ``--no-acl``: grants are kept only when every role
    they name exists here and this role can issue them all."""
    redactor = redactor_for(url, redactor)
    grantees, owners, sessions = acl_roles(acl_statements(dump_path, entries))
    named = sorted(grantees | owners | sessions)
    if not named:
        return GrantPlan(True)
    try:
        with connect(url) as connection:
            existing = {row[0] for row in connection.execute(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (named,))}
            superuser = connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
            not_member = [role for role in sorted(owners & existing) if not connection.execute(
                "SELECT pg_has_role(current_user, %s, 'MEMBER')", (role,)).fetchone()[0]]
    except psycopg.Error as error:
        raise step_error("pg_restore", f"cannot check the archive's roles: {describe(error)}", redactor) from None
    missing = [role for role in named if role not in existing]
    if missing:
        return GrantPlan(False, named, missing, [redactor(
            f"grants not restored (--no-acl): role(s) missing on this server: {', '.join(missing)}")])
    if sessions and not superuser:
        return GrantPlan(False, named, [], [redactor(
            "grants not restored (--no-acl): some were made by other roles (SET SESSION AUTHORIZATION "
            f"{', '.join(sorted(sessions))}), which only a superuser can replay")])
    if not_member and not superuser:
        return GrantPlan(False, named, [], [redactor(
            "grants not restored (--no-acl): default privileges of role(s) "
            f"{', '.join(not_member)} need membership in them")])
    return GrantPlan(True, named)


class _ProgressTracker:
    """Counts archive items pg_restore reports done (``--verbose``) and keeps its other lines.
    Parallel runs name item ids ("finished item N"); serial runs only name objects ("creating
    TABLE ..."), so those lines are counted too and the larger count is reported."""

    def __init__(self, total_ids: set[int], progress: ProgressCallback | None, interval: float = 1.0):
        self.total_ids = total_ids
        self.done: set[int] = set()
        self.serial_done = 0
        self.progress = progress
        self.interval = interval
        self.last = 0.0
        self.other_lines: deque[str] = deque(maxlen=30)

    @property
    def count(self) -> int:
        return min(len(self.total_ids), max(len(self.done), self.serial_done))

    def __call__(self, line: bytes) -> None:
        match = _ITEM_DONE.match(line)
        if match:
            item = int(match[1])
            if item in self.total_ids:
                self.done.add(item)
        elif _SERIAL_ITEM.match(line):
            self.serial_done += 1
        elif line.strip() and not _PROGRESS_LINE.match(line):
            self.other_lines.append(line.decode(errors="replace"))
            return
        if self.progress and time.monotonic() - self.last >= self.interval:
            self.last = time.monotonic()
            self.progress(self.count, len(self.total_ids))


def _run(url: str, database: str, dump_path: Path, options: list[str], *, timeout: float,
         progress: ProgressCallback | None, redactor: Redactor, jobs: int, grants: GrantPlan,
         pgoptions: str | None, application_name: str | None = None) -> RestoreRun:
    entries = list_entries(dump_path)
    tracker = _ProgressTracker({dump_id for dump_id, _ in entries}, progress)
    args = ["pg_restore", "--exit-on-error", "--no-owner", "--no-password", "--verbose", *options]
    if not grants.keep_acl:
        args.append("--no-acl")
    started = time.monotonic()
    with client_connection(url, dbname=database) as client:
        env = dict(client.env)
        if application_name:
            env["PGAPPNAME"] = application_name
        if pgoptions:
            env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {pgoptions}".strip()
        try:
            outcome = run_process([*args, f"--dbname={client.conninfo}", str(dump_path)], env=env, timeout=timeout,
                                  on_line=tracker)
        except OSError as error:
            raise step_error("pg_restore", f"pg_restore could not start: {describe(error)}", redactor) from None
    seconds = time.monotonic() - started
    if outcome.timed_out:
        raise step_error("pg_restore", f"pg_restore timed out after {timeout:g}s and was killed; database "
                                       f"{database} is incomplete", redactor)
    if outcome.returncode != 0:
        detail = " | ".join(list(tracker.other_lines)[-6:]) or "no output"
        raise step_error("pg_restore", f"pg_restore into {database} exited with code {outcome.returncode}: "
                                       f"{detail}", redactor)
    if progress:
        progress(len(tracker.total_ids), len(tracker.total_ids))
    warnings = list(grants.warnings) + [redactor(line) for line in tracker.other_lines if "warning" in line.lower()]
    return RestoreRun(database, seconds, jobs, len(entries), grants.keep_acl, warnings)


def restore_into(url: str, database: str, dump_path: Path, *, jobs: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS, progress: ProgressCallback | None = None,
                 grants: GrantPlan | None = None, redactor: Redactor | None = None) -> RestoreRun:
    """``pg_restore --exit-on-error --no-owner -j <jobs>`` into the (new, empty) ``database``,
    e.g. a scratch database. ``progress(done, total)`` counts archive items. On timeout the
    process group is killed. Raises RestoreStepError("pg_restore"); the database is then partial."""
    redactor = redactor_for(url, redactor)
    jobs = max(1, jobs or os.cpu_count() or 2)
    grants = grants or plan_grants(url, dump_path, redactor=redactor)
    return _run(url, database, dump_path, [f"--jobs={jobs}"], timeout=timeout, progress=progress,
                redactor=redactor, jobs=jobs, grants=grants, pgoptions="-c synchronous_commit=off")


def restore_in_place(url: str, database: str, dump_path: Path, *, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                     lock_timeout: float = 60.0, progress: ProgressCallback | None = None,
                     grants: GrantPlan | None = None, redactor: Redactor | None = None) -> RestoreRun:
    """The fallback for a role that cannot create databases: ``pg_restore --clean --if-exists
    --single-transaction --exit-on-error`` straight into ``database``. All or nothing: on any
    error the transaction rolls back and the database is as it was. A lock it waits for (dropping
    a table another session reads) is waited for at most ``lock_timeout`` seconds: the archive
    sets ``lock_timeout = 0`` itself, so a watch cancels the wait, and the error names the
    sessions in the way."""
    redactor = redactor_for(url, redactor)
    grants = grants or plan_grants(url, dump_path, redactor=redactor)
    watch = _LockWatch(url, database, f"ops_platform restore in place {os.getpid()}.{time.monotonic_ns()}",
                       lock_timeout, redactor)
    watch.start()
    try:
        return _run(url, database, dump_path, ["--clean", "--if-exists", "--single-transaction"], timeout=timeout,
                    progress=progress, redactor=redactor, jobs=1, grants=grants, pgoptions=None,
                    application_name=watch.application_name)
    except RestoreStepError:
        if watch.in_the_way is None:
            raise
        raise step_error("pg_restore", f"pg_restore waited {lock_timeout:g}s (RESTORE_LOCK_TIMEOUT_SECONDS) for a "
                                       f"lock on {database} and was stopped; {database} is as it was (the "
                                       f"single-transaction restore rolled back). In the way: {watch.in_the_way}",
                         redactor) from None
    finally:
        watch.finish()


class _LockWatch(threading.Thread):
    """Cancels the statement of the session named ``application_name`` once it has waited
    ``limit`` seconds for a lock, and says who held it (``in_the_way``)."""

    def __init__(self, url: str, database: str, application_name: str, limit: float, redactor: Redactor):
        super().__init__(name="restore-lock-watch", daemon=True)
        self.url, self.database, self.application_name, self.limit = url, database, application_name, limit
        self.redactor = redactor
        self.in_the_way: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with connect(self.url) as connection:
                while not self._stop_event.wait(0.25):
                    row = connection.execute(
                        "SELECT a.pid, extract(epoch FROM now() - min(l.waitstart)) FROM pg_stat_activity a "
                        "JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted WHERE a.application_name = %s "
                        "GROUP BY a.pid", (self.application_name,)).fetchone()
                    if row and row[1] is not None and row[1] >= self.limit:
                        self.in_the_way = sessions_in_the_way(connection, row[0], self.redactor)
                        connection.execute("SELECT pg_cancel_backend(%s)", (row[0],))
                        return
        except psycopg.Error:
            return  # the restore goes on unwatched; it is bounded by its own timeout

    def finish(self) -> None:
        self._stop_event.set()
        self.join(5)


def sessions_in_the_way(connection: psycopg.Connection, pid: int, redactor: Redactor) -> str:
    """The sessions blocking backend ``pid``, in words: who, from where, doing what."""
    from ops_platform.lib.sql_text import sanitize_statement

    rows = connection.execute(
        "SELECT a.pid, a.usename, a.application_name, a.client_addr::text, a.state, "
        "extract(epoch FROM now() - coalesce(a.xact_start, a.state_change))::int, a.query "
        "FROM pg_stat_activity a WHERE a.pid = ANY(pg_blocking_pids(%s)) ORDER BY 6 DESC LIMIT 5", (pid,)).fetchall()
    if not rows:
        return "no session holds the lock now (it has gone since)"
    return "; ".join(f"pid {other} ({user or '?'}{', ' + app if app else ''}{' from ' + address if address else ''}, "
                     f"{state or 'no state'} for {seconds}s: {sanitize_statement(query or '', 80, redactor)})"
                     for other, user, app, address, state, seconds, query in rows)
