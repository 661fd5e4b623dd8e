"""Step 7: put a verified copy in place of a live database, so that whatever stops the process
leaves something the next command can finish or undo.

The swap is four changes on the server, each preceded by a journal entry (a private JSON file
under ``<backup root>/.swaps/<environment>/``, fsynced before the change is made):

    blocking        the live database stops accepting new connections (its setting is recorded)
    renaming_live   its sessions are ended and it is renamed ``<live>__pre_restore_<stamp>``
    renaming_copy   the copy is renamed ``<live>``
    reopening       both accept connections again (the kept one as the live one did)

The journal is removed once the swap is done, or cleanly undone. A swap stopped by SIGINT or
SIGTERM is finished or undone before the interruption goes on. One stopped for good (SIGKILL, a
power cut) is found by the next command that touches the environment (a restore, a backup,
``ops-platform restore --recover ENV``), which does the same; health says what happened until then.

The rule is the same everywhere (``recover_on_server``): before the live database was renamed,
the swap is undone (it stays as it was and serves again, the copy is dropped); after, it is
finished (the copy was verified, and it is what the operator asked for). The server's state is
read each time, so a change the journal announced but that never happened is handled too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from ops_platform.lib import locks
from ops_platform.lib.artifacts import utc_iso
from ops_platform.lib.formatting import describe
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore import databases
from ops_platform.lib.restore.databases import (
    RestoreLock,
    exists,
    maintenance,
    pre_restore_name,
    redactor_for,
    rename_database,
    set_allow_connections,
    terminate_sessions,
)
from ops_platform.lib.restore.errors import RestoreStepError, step_error
from ops_platform.lib.stores import write_atomically

SWAP_STEPS = ("blocking", "renaming_live", "renaming_copy", "reopening")
JOURNAL_FOLDER = ".swaps"
# Tests only: "<step>=<seconds>" pauses the swap right after that step's journal entry is written,
# so a test can kill the process exactly there.
PAUSE_VARIABLE = "OPS_PLATFORM_FAULT_SWAP_PAUSE"


@dataclass
class SwapResult:
    """``kept`` is the old live database's new name; ``terminated`` counts ended sessions."""

    live: str
    kept: str
    terminated: int
    attempts: int
    warnings: list[str] = field(default_factory=list)


@dataclass
class SwapRecord:
    """One journal entry: the names involved, what the live database allowed before, who swaps,
    and the step about to be taken."""

    environment: str
    live: str
    copy: str
    kept: str
    live_allowed: bool
    backup_id: str
    step: str
    run_id: str | None = None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: str = field(default_factory=lambda: utc_iso(datetime.now(timezone.utc)))

    def describe_step(self) -> str:
        return {"blocking": "while blocking new connections to it",
                "renaming_live": "while ending its sessions to rename it",
                "renaming_copy": "between renaming it and renaming the restored copy",
                "reopening": "while opening the databases to connections again"}.get(self.step, self.step)


class SwapJournal:
    """The journal of one swap of ``live`` in ``environment``, under ``root`` (the backup root).
    ``outcome`` is set when a swap was interrupted: what it was left as, in words."""

    def __init__(self, root: Path | str, environment: str, live: str):
        digest = hashlib.sha256(live.encode()).hexdigest()[:16]
        self.path = Path(root) / JOURNAL_FOLDER / environment / f"swap-{digest}.json"
        self.outcome: str | None = None

    @classmethod
    def pending(cls, root: Path | str, environment: str) -> list[SwapJournal]:
        """The journals of swaps in ``environment`` that were never finished or undone."""
        folder = Path(root) / JOURNAL_FOLDER / environment
        found = []
        for path in sorted(folder.glob("swap-*.json")) if folder.is_dir() else []:
            journal = cls.__new__(cls)
            journal.path, journal.outcome = path, None
            found.append(journal)
        return found

    def write(self, record: SwapRecord) -> None:
        write_atomically(self.path, json.dumps(asdict(record), indent=2).encode())
        step, _, seconds = os.environ.get(PAUSE_VARIABLE, "").partition("=")
        if step == record.step:
            time.sleep(float(seconds))

    def read(self) -> SwapRecord | None:
        try:
            return SwapRecord(**json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as error:
            raise RestoreStepError("swap", f"the swap journal {self.path} cannot be read: {describe(error)}") from None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------- the swap


def swap(url: str, live: str, scratch: str, stamp: str, *, journal: SwapJournal | None = None,
         environment: str = "", backup_id: str = "", run_id: str | None = None, lock: RestoreLock | None = None,
         attempts: int = 5, retry_delay: float = 0.5, copy_properties: bool = True,
         redactor: Redactor | None = None) -> SwapResult:
    """Put ``scratch`` in place of ``live``, keeping the old one as ``<live>__pre_restore_<stamp>``:
    copy live's database-level properties to scratch, block new connections to live, terminate its
    sessions and rename it (retried up to ``attempts`` times while clients reconnect), rename
    scratch to live, then allow connections on both again, writing ``journal`` before each change.
    A failed rename puts back what was there; an interruption (Ctrl-C, SIGTERM, a lost connection)
    finishes or undoes the swap first, and ``journal.outcome`` says which. Raises
    RestoreStepError("swap"), which says where everything is."""
    redactor = redactor_for(url, redactor)
    kept = pre_restore_name(live, stamp)
    if lock is not None:
        lock.require(live, "swap")
    with maintenance(url, "swap", redactor) as connection:
        for name, must_exist in ((live, True), (scratch, True), (kept, False)):
            if exists(connection, name) != must_exist:
                state = "does not exist" if must_exist else "already exists"
                raise step_error("swap", f"cannot swap: database {name} {state}; nothing was changed", redactor)
        warnings = databases.copy_database_properties(connection, live, scratch) if copy_properties else []
        live_allowed = connection.execute("SELECT datallowconn FROM pg_database WHERE datname = %s",
                                          (live,)).fetchone()[0]
        record = SwapRecord(environment, live, scratch, kept, live_allowed, backup_id, "blocking", run_id)

        def step(name: str) -> None:
            record.step = name
            if journal is not None:
                journal.write(record)

        try:
            step("blocking")
            blocked = set_allow_connections(connection, live, False) is None
            if not blocked:
                warnings.append(f"could not block new connections to {live} (not its owner); relying on retries")
            step("renaming_live")
            terminated, tries = _take_out_of_service(connection, live, kept, attempts, retry_delay, redactor,
                                                     restore_allowed=live_allowed if blocked else None)
            step("renaming_copy")
            _put_in_service(connection, live, scratch, kept, redactor, live_allowed)
            step("reopening")
            for name, allowed in ((live, True), (kept, live_allowed)):
                problem = set_allow_connections(connection, name, allowed)
                if problem:
                    warnings.append(f"could not set ALLOW_CONNECTIONS {str(allowed).lower()} on {name}: {problem}")
        except _PutBack:
            raise
        except RestoreStepError:
            if journal is not None:
                journal.remove()  # each failure above put back what was there before raising
            raise
        except BaseException as error:
            _settle_interrupted(url, record, journal, error, redactor)
            raise
    if journal is not None:
        journal.remove()
    return SwapResult(live, kept, terminated, tries, [redactor(w) for w in warnings])


class _PutBack(RestoreStepError):
    """Renaming the copy failed and so did renaming the old database back: the journal stays for
    the next command (or the operator) to finish."""


def _settle_interrupted(url: str, record: SwapRecord, journal: SwapJournal | None, error: BaseException,
                        redactor: Redactor) -> None:
    """Finish or undo a swap stopped by ``error`` (an interruption or a lost connection) on a new
    connection; ``journal.outcome`` says what the databases were left as."""
    try:
        outcome = recover_on_server(url, record, redactor)
    except Exception as recovery_error:  # noqa: BLE001 - the journal stays for the next command
        text = (f"the swap of {record.live} was interrupted {record.describe_step()} ({describe(error) or type(error).__name__}) "
                f"and could not be finished or undone now ({describe(recovery_error)}); the next restore or backup "
                f"of {record.environment}, or 'ops-platform restore --recover {record.environment}', does it")
    else:
        text = outcome.message
        if journal is not None and outcome.settled:
            journal.remove()
    if journal is not None:
        journal.outcome = redactor(text)


def _take_out_of_service(connection: psycopg.Connection, live: str, kept: str, attempts: int, retry_delay: float,
                         redactor: Redactor, restore_allowed: bool | None) -> tuple[int, int]:
    """Terminate live's sessions and rename it to ``kept``, retrying while sessions come back."""
    terminated, refused, last = 0, set(), ""
    for attempt in range(1, max(1, attempts) + 1):
        count, refused = terminate_sessions(connection, live)
        terminated += count
        if refused:  # the rename would wait 5 s for them, then fail
            last = f"database \"{live}\" is being accessed by other users"
            time.sleep(retry_delay)
            continue
        try:
            rename_database(connection, live, kept)
            return terminated, attempt
        except psycopg.errors.ObjectInUse as error:
            last = describe(error)
            time.sleep(retry_delay)
        except psycopg.Error as error:
            last = describe(error)
            break
    if restore_allowed is not None:
        set_allow_connections(connection, live, restore_allowed)
    detail = f"; sessions of {', '.join(sorted(refused))} cannot be ended by this role" if refused else ""
    raise step_error("swap", f"could not rename {live} to {kept} after {attempt} attempt(s): {last}{detail}; "
                             f"{live} is unchanged and still in service", redactor)


def _put_in_service(connection: psycopg.Connection, live: str, scratch: str, kept: str, redactor: Redactor,
                    live_allowed: bool) -> None:
    """Rename scratch to live; on failure rename the kept database back to live."""
    try:
        _count, refused = terminate_sessions(connection, scratch)
        if not refused:
            rename_database(connection, scratch, live)
            return
        failure = f"sessions of {', '.join(sorted(refused))} on it cannot be ended by this role"
    except psycopg.Error as error:
        failure = describe(error)
    try:
        rename_database(connection, kept, live)
    except psycopg.Error as error:
        raise step_error("swap", f"renaming {scratch} to {live} failed ({failure}) and renaming the old database "
                                 f"back failed too ({describe(error)}): the old database is now named {kept}; run "
                                 f"ALTER DATABASE \"{kept}\" RENAME TO \"{live}\"", redactor, _PutBack) from None
    set_allow_connections(connection, live, live_allowed)
    raise step_error("swap", f"renaming {scratch} to {live} failed ({failure}); the old database was renamed back "
                             f"to {live} and is unchanged; the restored copy is still {scratch}", redactor)


# ---------------------------------------------------------------- recovery


@dataclass
class Recovery:
    """What became of an interrupted swap: ``action`` is finished, undone, busy (a live process
    is swapping right now) or unclear (nothing was changed; a person must look)."""

    record: SwapRecord
    action: str
    message: str

    @property
    def settled(self) -> bool:
        return self.action in ("finished", "undone")


def recover_on_server(url: str, record: SwapRecord, redactor: Redactor | None = None) -> Recovery:
    """Finish or undo the swap ``record`` describes, from what the server holds now."""
    redactor = redactor_for(url, redactor)
    live, copy, kept = record.live, record.copy, record.kept
    with maintenance(url, "swap", redactor) as connection:
        live_there, copy_there, kept_there = (exists(connection, name) for name in (live, copy, kept))
        if live_there and not kept_there:
            set_allow_connections(connection, live, record.live_allowed)
            action = "undone"
            message = (f"the interrupted swap of {live} was undone: {live} is the database it was and accepts "
                       "connections again")
        elif kept_there and not live_there and copy_there:
            terminate_sessions(connection, copy)
            rename_database(connection, copy, live)
            set_allow_connections(connection, live, True)
            set_allow_connections(connection, kept, record.live_allowed)
            return Recovery(record, "finished", f"the interrupted swap of {live} was finished: {live} now holds the "
                                                f"restored copy of {record.backup_id}; the previous database is kept "
                                                f"as {kept}")
        elif kept_there and not live_there:
            rename_database(connection, kept, live)
            set_allow_connections(connection, live, record.live_allowed)
            return Recovery(record, "undone", f"the interrupted swap of {live} was undone: the restored copy {copy} "
                                              f"is gone, so {kept} was renamed back to {live}, as it was")
        elif kept_there and live_there and not copy_there:
            set_allow_connections(connection, live, True)
            set_allow_connections(connection, kept, record.live_allowed)
            return Recovery(record, "finished", f"the interrupted swap of {live} was finished: {live} holds the "
                                                f"restored copy of {record.backup_id} and accepts connections; the "
                                                f"previous database is kept as {kept}")
        else:
            present = ", ".join(name for name, there in ((live, live_there), (copy, copy_there), (kept, kept_there))
                                if there) or "none of them"
            return Recovery(record, "unclear", f"the interrupted swap of {live} left {present} on the server; "
                                               "nothing was changed: look at them and rename by hand")
    if copy_there:
        databases.drop_database(url, copy, redactor=redactor, step="swap")
        message += f"; the restored copy {copy} was dropped"
    return Recovery(record, action, message)


def recover_interrupted_swaps(url: str, root: Path | str, environment: str, *, held: RestoreLock | None = None,
                              redactor: Redactor | None = None) -> list[Recovery]:
    """Finish or undo every swap of ``environment`` that a stopped process left half done, each
    under its database's restore lock (``held`` when this process holds it already; a swap still
    running elsewhere is reported busy and left to it)."""
    recoveries = []
    for journal in SwapJournal.pending(root, environment):
        record = journal.read()
        if record is None:
            continue
        try:
            with contextlib.nullcontext() if held is not None and held.database == record.live and held.is_held() \
                    else locks.database_lock(url, record.live, holder="recovery"):
                recovery = recover_on_server(url, record, redactor)
        except locks.LockBusy:
            recovery = Recovery(record, "busy", f"a restore is swapping {record.live} right now (run "
                                                f"{record.run_id or '?'}); its swap was left to it")
        except locks.LockUnavailable as error:
            raise step_error("swap", f"cannot connect to finish the interrupted swap of {record.live}: {error}",
                             redactor) from None
        if recovery.settled:
            journal.remove()
        recoveries.append(recovery)
    return recoveries


def swaps_in_the_way(url: str, root: Path | str, environment: str) -> list[tuple[bool, str]]:
    """For health (read only): each swap of ``environment`` not yet done, as (still running on
    this host, what it means in words)."""
    found = []
    for journal in SwapJournal.pending(root, environment):
        try:
            record = journal.read()
        except RestoreStepError as error:
            found.append((False, str(error)))
            continue
        if record is None:
            continue
        if record.host == socket.gethostname() and _process_alive(record.pid):
            found.append((True, f"a restore is swapping {record.live} right now (run {record.run_id or '?'})"))
            continue
        state, names = _server_state(url, record)
        found.append((False, f"a restore's swap of {record.live} stopped {record.describe_step()}: {state}; "
                             f"'ops-platform restore --recover {record.environment}' (or the next restore or backup) "
                             f"finishes or undoes it{names} (run {record.run_id or '?'} on {record.host})"))
    return found


def _process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _server_state(url: str, record: SwapRecord) -> tuple[str, str]:
    """(the live database's state in words, the other names when they matter)."""
    try:
        with databases.connect(url, connect_timeout=5, statement_timeout=5) as connection:
            rows = dict(connection.execute("SELECT datname, datallowconn FROM pg_database WHERE datname = ANY(%s)",
                                           ([record.live, record.copy, record.kept],)).fetchall())
    except psycopg.Error as error:
        return f"the server cannot be asked ({describe(error)})", ""
    if record.live not in rows:
        return (f"no database is named {record.live}",
                f"; the previous one is {record.kept}, the restored copy {record.copy}")
    if not rows[record.live]:
        return f"{record.live} does not accept connections", ""
    return f"{record.live} accepts connections", ""
