"""A gentle, read-only snapshot of one PostgreSQL database from its catalog and statistics views.

One connection (autocommit, ``application_name`` ``ops_platform_insight``), a ``statement_timeout``
and ``lock_timeout`` set before the first statement that reads anything, and about ten queries in
all (each one counted in ``DatabaseSnapshot.query_count``). Nothing reads user tables: sizes come
from the relation files (``pg_table_size`` and friends), row counts from ``pg_class.reltuples``
and the statistics collector.

No lock that waits: size functions take a brief ACCESS SHARE lock on each relation, so tables
with an ACCESS EXCLUSIVE lock held or queued on them (or on their indexes or TOAST) are left out
of the exact sizes and counted in ``locked_tables``. If a lock still arrives in the instant
between the check and the read, ``lock_timeout`` stops the wait and the table figures are
rebuilt from ``pg_class.relpages`` (which takes no relation locks), with a note.

Every view and column used exists in PostgreSQL 13 to 17 (``reserved_connections`` is read when
present, PG16+; ``pg_stat_statements`` older than 1.8 is read through ``total_time``); the tests
run on 15.

Privileges (tested with such a role): a role without superuser needs only

    GRANT pg_monitor TO ops_insight;                 -- every session, all statistics and settings
    GRANT CONNECT ON DATABASE app TO ops_insight;    -- only if CONNECT was revoked from PUBLIC
    GRANT USAGE ON SCHEMA <schema> TO ops_insight;   -- only if pg_stat_statements is not in public

``pg_monitor`` contains ``pg_read_all_stats`` (other roles' sessions in ``pg_stat_activity`` and
their statement texts in ``pg_stat_statements``) and ``pg_read_all_settings``
(``shared_preload_libraries``). The relation size functions and ``pg_database_size`` of a
database one may connect to need no grant. Without ``pg_monitor`` the snapshot still works, but
other roles' sessions have no state and a note says so.

``pg_stat_statements`` is read only when the extension exists in this database AND the library
is in ``shared_preload_libraries``: querying it otherwise raises an error (and logs one on the
server every time). Either case gives a note saying what to do instead of statements.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ops_platform.lib import settings as settings_table
from ops_platform.lib.artifacts import parse_utc
from ops_platform.lib.insight import known_fields
from ops_platform.lib import postgres
from ops_platform.lib.redact import Redactor
from ops_platform.lib.sql_text import sanitize_statement

APPLICATION_NAME = "ops_platform_insight"
XID_LIMIT = 2 ** 31
_IDLE_IN_TRANSACTION = ("idle in transaction", "idle in transaction (aborted)")


class StatsError(Exception):
    """A snapshot could not be taken; the message is one line for an operator. ``kind`` is one of
    connect, timeout, lock, privilege, connection (lost mid-way) or query."""

    def __init__(self, message: str, kind: str = "query"):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class StatsCollectionSettings:
    """How a snapshot is taken. See ``from_environ`` for the variables."""

    statement_timeout_ms: int = 5000
    lock_timeout_ms: int = 200
    top_tables: int = 20
    top_statements: int = 10
    connect_timeout_seconds: int = 10
    exact_sizes: bool = True

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> StatsCollectionSettings:
        """From the ``INSIGHT_COLLECTION`` rows of ``lib/settings.py``: ``STATS_STATEMENT_TIMEOUT_MS``
        (5000), ``STATS_LOCK_TIMEOUT_MS`` (200), ``STATS_TOP_TABLES`` (20), ``STATS_TOP_STATEMENTS`` (10),
        ``STATS_CONNECT_TIMEOUT_SECONDS`` (10), ``STATS_EXACT_SIZES`` (1; 0 reads sizes from
        pg_class.relpages). A non-numeric or out-of-range value raises a one-line ConfigError."""
        values = settings_table.values(settings_table.INSIGHT_COLLECTION, environ)
        return cls(**{**values, "exact_sizes": bool(values["exact_sizes"])})


@dataclass
class ConnectionStats:
    """Client connections (``backend_type = 'client backend'``) against the ordinary-user limit
    ``max_connections - superuser_reserved_connections - reserved_connections`` (the latter PG16+).
    Background workers, autovacuum and WAL senders have their own slots and are not counted.
    Without pg_monitor, other roles' sessions hide their type and state: those with a database
    are counted, under the state ``unknown``."""

    max_connections: int
    superuser_reserved: int
    reserved: int
    used: int
    by_state: dict[str, int] = field(default_factory=dict)

    @property
    def limit(self) -> int:
        return max(1, self.max_connections - self.superuser_reserved - self.reserved)

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.limit


@dataclass
class SessionInfo:
    """One session of this database from ``pg_stat_activity`` (its query text is deliberately not
    kept: it may hold literal values). Sessions of other databases on the server hold back neither
    this database's vacuum horizon nor its locks, so they are not considered."""

    pid: int
    user: str | None
    application_name: str | None
    database: str | None
    state: str | None
    transaction_seconds: float | None
    idle_seconds: float | None
    wait_event: str | None = None


@dataclass
class TableStats:
    """Sizes in bytes (None when the table was locked), estimated rows from ``pg_class`` and the
    statistics collector's tuple counts and maintenance times (UTC ISO-8601)."""

    schema: str
    name: str
    total_bytes: int | None
    heap_bytes: int | None
    index_bytes: int | None
    toast_bytes: int | None
    estimated_rows: int | None
    live_tuples: int | None = None
    dead_tuples: int | None = None
    last_vacuum: str | None = None
    last_autovacuum: str | None = None
    last_analyze: str | None = None
    last_autoanalyze: str | None = None

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def last_vacuumed(self) -> str | None:
        """The later of the manual and automatic vacuum times."""
        times = [t for t in (self.last_vacuum, self.last_autovacuum) if t]
        return max(times) if times else None


@dataclass
class DatabaseAge:
    """Transaction-ID and multixact age of one database (wraparound at 2^31)."""

    database: str
    xid_age: int
    mxid_age: int | None = None


@dataclass
class ReplicationSlot:
    name: str
    slot_type: str
    active: bool
    wal_status: str | None
    retained_bytes: int | None
    database: str | None = None


@dataclass
class StatementStats:
    """A ``pg_stat_statements`` entry. ``query`` is safe to show (``lib/sql_text.py``): a planned
    statement with its constants masked and comments removed, or only the command tag of any
    other (``ALTER ROLE (text not shown)``)."""

    queryid: int | None
    query: str
    calls: int
    total_ms: float
    mean_ms: float
    rows: int


@dataclass
class ActivityDelta:
    """Counters from ``pg_stat_database`` since the previous snapshot (or since a stats reset)."""

    interval_seconds: float | None
    blks_hit: int
    blks_read: int
    deadlocks: int
    temp_bytes: int
    temp_files: int
    transactions: int
    stats_reset: bool = False

    @property
    def cache_hit_ratio(self) -> float | None:
        total = self.blks_hit + self.blks_read
        return self.blks_hit / total if total > 0 else None


@dataclass
class DatabaseSnapshot:
    """Everything one collection found. ``to_dict``/``from_dict`` round-trip through JSON."""

    database: str
    collected_at: str
    server_version: str
    server_version_num: int
    in_recovery: bool
    size_bytes: int
    connections: ConnectionStats
    counters: dict = field(default_factory=dict)
    activity: ActivityDelta | None = None
    oldest_transaction: SessionInfo | None = None
    oldest_idle_in_transaction: SessionInfo | None = None
    database_ages: list[DatabaseAge] = field(default_factory=list)
    tables: list[TableStats] = field(default_factory=list)
    table_count: int = 0
    tables_total_bytes: int | None = None
    locked_tables: int = 0
    sizes_exact: bool = True
    dead_tuple_tables: list[TableStats] = field(default_factory=list)
    replication_slots: list[ReplicationSlot] = field(default_factory=list)
    statements: list[StatementStats] = field(default_factory=list)
    statements_note: str | None = None
    notes: list[str] = field(default_factory=list)
    query_count: int = 0
    duration_seconds: float = 0.0

    @property
    def collected(self) -> datetime:
        return parse_utc(self.collected_at)

    @property
    def max_xid_age(self) -> int:
        return max((age.xid_age for age in self.database_ages), default=0)

    def to_dict(self) -> dict:
        """A JSON-compatible dict (every value a str, number, bool, None, list or dict)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> DatabaseSnapshot:
        """The inverse of ``to_dict``; unknown keys are ignored, so older readers accept newer data."""
        values = known_fields(cls, data)
        values["connections"] = ConnectionStats(**known_fields(ConnectionStats, data["connections"]))
        values["activity"] = _optional(ActivityDelta, data.get("activity"))
        values["oldest_transaction"] = _optional(SessionInfo, data.get("oldest_transaction"))
        values["oldest_idle_in_transaction"] = _optional(SessionInfo, data.get("oldest_idle_in_transaction"))
        for name, item_cls in (("database_ages", DatabaseAge), ("tables", TableStats),
                               ("dead_tuple_tables", TableStats), ("replication_slots", ReplicationSlot),
                               ("statements", StatementStats)):
            values[name] = [item_cls(**known_fields(item_cls, item)) for item in data.get(name) or []]
        values["counters"] = dict(data.get("counters") or {})
        values["notes"] = list(data.get("notes") or [])
        return cls(**values)


def _optional(cls, data):
    return cls(**known_fields(cls, data)) if data else None


def _iso(moment: datetime | None, timespec: str = "seconds") -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


# --- queries ------------------------------------------------------------------------------------

_SET_TIMEOUTS = "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false)"

_DATABASE = """
SELECT current_database(), d.oid::bigint, current_setting('server_version'),
       current_setting('server_version_num')::int, pg_is_in_recovery(), now(),
       current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true), '0')::int,
       current_setting('block_size')::int,
       (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'),
       (SELECT e.extversion FROM pg_extension e WHERE e.extname = 'pg_stat_statements'),
       (SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'pg_stat_statements'),
       pg_database_size(d.oid),
       s.blks_hit, s.blks_read, s.deadlocks, s.temp_bytes, s.temp_files,
       s.xact_commit + s.xact_rollback, s.stats_reset
FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid
WHERE d.datname = current_database()
"""

_CONNECTIONS = """
SELECT coalesce(state, 'unknown'), count(*)::int FROM pg_stat_activity
WHERE backend_type = 'client backend' OR (backend_type IS NULL AND datname IS NOT NULL)
GROUP BY 1 ORDER BY 1
"""

_SESSION_COLUMNS = """pid, usename::text, application_name, datname::text, state,
       extract(epoch FROM now() - xact_start)::float8, extract(epoch FROM now() - state_change)::float8,
       CASE WHEN wait_event IS NULL THEN NULL ELSE wait_event_type || ':' || wait_event END"""

_OLDEST_SESSIONS = f"""
(SELECT 'transaction', {_SESSION_COLUMNS} FROM pg_stat_activity
  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = current_database()
    AND xact_start IS NOT NULL
  ORDER BY xact_start LIMIT 1)
UNION ALL
(SELECT 'idle_in_transaction', {_SESSION_COLUMNS} FROM pg_stat_activity
  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = current_database()
    AND state IN ('idle in transaction', 'idle in transaction (aborted)')
  ORDER BY state_change LIMIT 1)
"""

_DATABASE_AGES = """
SELECT datname::text, age(datfrozenxid)::bigint, mxid_age(datminmxid)::bigint
FROM pg_database ORDER BY 2 DESC, 1
"""

# Tables with an ACCESS EXCLUSIVE lock held or queued on them, their indexes, their TOAST table or
# its index: reading their size would wait for that lock.
_LOCKED_TABLES = """
locked AS (
    SELECT l.relation FROM pg_locks l
    WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
), locked_tables AS (
    SELECT relation AS oid FROM locked
    UNION SELECT i.indrelid FROM pg_index i JOIN locked l ON l.relation = i.indexrelid
    UNION SELECT c.oid FROM pg_class c JOIN locked l ON l.relation = c.reltoastrelid
    UNION SELECT c.oid FROM pg_class c JOIN pg_index i ON i.indrelid = c.reltoastrelid
          JOIN locked l ON l.relation = i.indexrelid
)"""

_USER_TABLES = """c.relkind IN ('r', 'm') AND c.relpersistence <> 't'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"""

_EXACT_SIZES = f"""
WITH {_LOCKED_TABLES}, sized AS (
    SELECT c.oid, n.nspname::text AS nspname, c.relname::text AS relname, c.reltuples,
           lt.oid IS NOT NULL AS locked,
           CASE WHEN lt.oid IS NULL THEN pg_table_size(c.oid) END AS table_bytes,
           CASE WHEN lt.oid IS NULL THEN pg_indexes_size(c.oid) END AS index_bytes,
           CASE WHEN lt.oid IS NOT NULL THEN NULL WHEN c.reltoastrelid = 0 THEN 0
                ELSE pg_total_relation_size(c.reltoastrelid) END AS toast_bytes
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN locked_tables lt ON lt.oid = c.oid
    WHERE {_USER_TABLES}
)"""

_ESTIMATED_SIZES = f"""
WITH sized AS (
    SELECT c.oid, n.nspname::text AS nspname, c.relname::text AS relname, c.reltuples, false AS locked,
           (c.relpages::bigint + coalesce(t.relpages, 0)) * %(block_size)s AS table_bytes,
           coalesce((SELECT sum(ic.relpages) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                     WHERE i.indrelid = c.oid), 0)::bigint * %(block_size)s AS index_bytes,
           coalesce(t.relpages, 0)::bigint * %(block_size)s AS toast_bytes
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
    WHERE {_USER_TABLES}
)"""

_TABLES_SELECT = """
SELECT s.nspname, s.relname, s.table_bytes + s.index_bytes, s.table_bytes - s.toast_bytes, s.index_bytes,
       s.toast_bytes, CASE WHEN s.reltuples < 0 THEN NULL ELSE s.reltuples::bigint END,
       st.n_live_tup, st.n_dead_tup, st.last_vacuum, st.last_autovacuum, st.last_analyze, st.last_autoanalyze,
       count(*) OVER ()::int, (count(*) FILTER (WHERE s.locked) OVER ())::int,
       (sum(s.table_bytes + s.index_bytes) OVER ())::bigint
FROM sized s LEFT JOIN pg_stat_user_tables st ON st.relid = s.oid
ORDER BY s.table_bytes + s.index_bytes DESC NULLS LAST, s.nspname, s.relname
LIMIT %(limit)s
"""

_DEAD_TUPLES = """
SELECT st.schemaname::text, st.relname::text, CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END,
       st.n_live_tup, st.n_dead_tup, st.last_vacuum, st.last_autovacuum, st.last_analyze, st.last_autoanalyze
FROM pg_stat_user_tables st JOIN pg_class c ON c.oid = st.relid
WHERE st.n_dead_tup > 0
ORDER BY st.n_dead_tup DESC, 1, 2
LIMIT %s
"""

_COUNT_TABLES = f"""
SELECT count(*)::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_USER_TABLES}
"""

_REPLICATION_SLOTS = """
SELECT slot_name::text, slot_type, active, wal_status, database::text,
       pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
                       restart_lsn)::bigint
FROM pg_replication_slots ORDER BY 6 DESC NULLS LAST, 1
"""

_STATEMENTS = """
SELECT queryid, query, calls, {total}, {mean}, rows FROM {schema}.pg_stat_statements
WHERE dbid = %s ORDER BY {total} DESC LIMIT %s
"""


class _Session:
    """One connection that counts its queries and turns errors into one-line StatsErrors."""

    def __init__(self, connection: psycopg.Connection, redactor: Redactor, statement_timeout_ms: int,
                 lock_timeout_ms: int):
        self.connection = connection
        self.redactor = redactor
        self.statement_timeout_ms = statement_timeout_ms
        self.lock_timeout_ms = lock_timeout_ms
        self.queries = 0

    def rows(self, step: str, query, params=None) -> list[tuple]:
        self.queries += 1
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(query, params)
                return cursor.fetchall()
        except psycopg.errors.QueryCanceled:
            raise StatsError(f"statement timeout ({self.statement_timeout_ms} ms) while reading {step}",
                             "timeout") from None
        except psycopg.errors.LockNotAvailable:
            raise StatsError(f"lock timeout ({self.lock_timeout_ms} ms) while reading {step}", "lock") from None
        except psycopg.errors.InsufficientPrivilege as error:
            raise StatsError(f"permission denied while reading {step} (grant pg_monitor to the role): "
                             f"{self._line(error)}", "privilege") from None
        except psycopg.Error as error:
            if self.connection.broken or self.connection.closed:
                raise StatsError(f"connection lost while reading {step}: {self._line(error)}", "connection") from None
            raise StatsError(f"reading {step} failed: {self._line(error)}") from None

    def _line(self, error: BaseException) -> str:
        text = self.redactor(str(error).strip() or type(error).__name__)
        return (text.splitlines() or [""])[0][:300]


def _describe_target(database_url: str) -> tuple[str, str | None]:
    """'host:port/dbname' for messages, and the password (to redact)."""
    try:
        params = conninfo_to_dict(database_url)
    except (psycopg.Error, ValueError, TypeError):
        raise StatsError("the database URL is not a valid PostgreSQL connection string") from None
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}", params.get("password")


def _connect(database_url: str, connect_timeout: int, redactor: Redactor, target: str) -> psycopg.Connection:
    try:
        return postgres.connect(database_url, autocommit=True, connect_timeout=connect_timeout,
                                application_name=APPLICATION_NAME, prepare_threshold=None)
    except psycopg.Error as error:
        reason = redactor(str(error).strip() or type(error).__name__)
        reason = " ".join(reason.split())[:300]
        raise StatsError(f"cannot connect to {target}: {reason}", "connect") from None


def collect_snapshot(database_url: str, *, statement_timeout_ms: int, lock_timeout_ms: int, top_tables: int,
                     top_statements: int, previous: DatabaseSnapshot | Mapping | None = None,
                     connect_timeout_seconds: int = 10, exact_sizes: bool = True,
                     secrets: Iterable[str] = ()) -> DatabaseSnapshot:
    """Read one database's statistics (see the module docstring); ``previous`` (a snapshot or its
    dict) turns the cumulative counters into an ``activity`` delta. ``secrets`` (with the URL's
    password) are redacted from errors and statement texts, before a text is cut to length. ``exact_sizes=False`` takes
    table sizes from ``pg_class.relpages`` (no relation is opened at all; figures as of the last
    VACUUM/ANALYZE), for catalogs so large that reading every table's files is too much.
    Raises StatsError."""
    if statement_timeout_ms < 1 or lock_timeout_ms < 1:
        raise StatsError("statement_timeout_ms and lock_timeout_ms must be at least 1 (0 would disable them)")
    started = time.monotonic()
    target, password = _describe_target(database_url)
    redactor = Redactor([*secrets, password] if password else secrets)
    connection = _connect(database_url, connect_timeout_seconds, redactor, target)
    try:
        session = _Session(connection, redactor, statement_timeout_ms, lock_timeout_ms)
        session.rows("session settings", _SET_TIMEOUTS, (f"{statement_timeout_ms}ms", f"{lock_timeout_ms}ms"))
        snapshot = _read_all(session, top_tables, top_statements, exact_sizes)
    finally:
        connection.close()
    if previous is not None and not isinstance(previous, DatabaseSnapshot):
        previous = DatabaseSnapshot.from_dict(previous)
    snapshot.activity, note = activity_since(previous, snapshot)
    if note:
        snapshot.notes.append(note)
    snapshot.query_count = session.queries
    snapshot.duration_seconds = round(time.monotonic() - started, 3)
    return snapshot


def _read_all(session: _Session, top_tables: int, top_statements: int, exact_sizes: bool) -> DatabaseSnapshot:
    [row] = session.rows("database settings and size", _DATABASE)
    (name, oid, version, version_num, in_recovery, now, max_conn, su_reserved, reserved, block_size,
     preload, pgss_version, pgss_schema, size, hit, read, deadlocks, temp_bytes, temp_files, xacts, reset) = row
    counters = {"database_oid": oid, "blks_hit": hit or 0, "blks_read": read or 0, "deadlocks": deadlocks or 0,
                "temp_bytes": temp_bytes or 0, "temp_files": temp_files or 0, "transactions": xacts or 0,
                "stats_reset": _iso(reset)}
    by_state = dict(session.rows("connections", _CONNECTIONS))
    snapshot = DatabaseSnapshot(
        database=name, collected_at=_iso(now, "milliseconds"), server_version=version.split()[0], server_version_num=version_num,
        in_recovery=in_recovery, size_bytes=size,
        connections=ConnectionStats(max_conn, su_reserved, reserved, sum(by_state.values()), by_state),
        counters=counters)
    if by_state.get("unknown"):
        snapshot.notes.append(f"{by_state['unknown']} other roles' sessions are hidden from this role (counted "
                              "as connections, state unknown): grant it pg_monitor")
    for kind, *values in session.rows("oldest sessions", _OLDEST_SESSIONS):
        info = SessionInfo(*values)
        if kind == "transaction":
            snapshot.oldest_transaction = info
        else:
            snapshot.oldest_idle_in_transaction = info
    snapshot.database_ages = [DatabaseAge(*r) for r in session.rows("transaction ID ages", _DATABASE_AGES)]
    _read_tables(session, snapshot, top_tables, block_size, exact_sizes)
    snapshot.dead_tuple_tables = [
        TableStats(schema, table, None, None, None, None, rows, live, dead, *map(_iso, times))
        for schema, table, rows, live, dead, *times in session.rows("dead tuples", _DEAD_TUPLES, (top_tables,))]
    snapshot.replication_slots = [
        ReplicationSlot(slot, kind, active, status, retained, database=db)
        for slot, kind, active, status, db, retained in session.rows("replication slots", _REPLICATION_SLOTS)]
    _read_statements(session, snapshot, oid, preload, pgss_version, pgss_schema, top_statements)
    return snapshot


def _estimated_tables(session: _Session, limit: int, block_size: int) -> list[tuple]:
    return session.rows("table size estimates", _ESTIMATED_SIZES + _TABLES_SELECT,
                        {"limit": limit, "block_size": block_size})


def _read_tables(session: _Session, snapshot: DatabaseSnapshot, limit: int, block_size: int, exact: bool) -> None:
    if not exact:
        rows = _estimated_tables(session, limit, block_size)
        snapshot.sizes_exact = False
        snapshot.notes.append("table sizes are estimates from pg_class.relpages (as of the last VACUUM/ANALYZE)")
    else:
        try:
            rows = session.rows("table sizes", _EXACT_SIZES + _TABLES_SELECT, {"limit": limit})
        except StatsError as error:
            if error.kind != "lock":
                raise
            rows = _estimated_tables(session, limit, block_size)
            snapshot.sizes_exact = False
            snapshot.notes.append("a table was locked while its size was read: table sizes are estimates "
                                  "from pg_class.relpages (as of the last VACUUM/ANALYZE)")
    snapshot.tables = [TableStats(*r[:9], *map(_iso, r[9:13])) for r in rows]
    if rows:
        snapshot.table_count, snapshot.locked_tables, snapshot.tables_total_bytes = rows[0][13:16]
    else:
        [(snapshot.table_count,)] = session.rows("table count", _COUNT_TABLES)
        snapshot.tables_total_bytes = 0
    if snapshot.locked_tables:
        snapshot.notes.append(f"{snapshot.locked_tables} tables were locked (ACCESS EXCLUSIVE) and left out of "
                              "the sizes rather than waited for")


def _read_statements(session: _Session, snapshot: DatabaseSnapshot, database_oid: int, preload: str | None,
                     version: str | None, schema: str | None, limit: int) -> None:
    if version is None:
        snapshot.statements_note = ("pg_stat_statements is not installed in this database: "
                                    "add it to shared_preload_libraries, restart, then CREATE EXTENSION "
                                    "pg_stat_statements")
        return
    libraries = None if preload is None else {lib.strip().strip('"') for lib in preload.split(",")}
    if libraries is not None and "pg_stat_statements" not in libraries:
        snapshot.statements_note = ("pg_stat_statements is installed but not loaded: add it to "
                                    "shared_preload_libraries and restart PostgreSQL")
        return
    new_columns = tuple(int(part) for part in version.split(".")[:2]) >= (1, 8)
    query = sql.SQL(_STATEMENTS).format(
        schema=sql.Identifier(schema),
        total=sql.SQL("total_exec_time" if new_columns else "total_time"),
        mean=sql.SQL("mean_exec_time" if new_columns else "mean_time"))
    try:
        rows = session.rows("pg_stat_statements", query, (database_oid, limit))
    except StatsError as error:
        if error.kind not in ("query", "privilege"):
            raise
        snapshot.statements_note = f"pg_stat_statements could not be read: {error}"
        return
    snapshot.statements = [StatementStats(qid, sanitize_statement(text, redact=session.redactor), calls,
                                          round(total, 3), round(mean, 3), rows_)
                           for qid, text, calls, total, mean, rows_ in rows]
    if not snapshot.statements:
        snapshot.statements_note = "pg_stat_statements has no statements for this database yet"


def activity_since(previous: DatabaseSnapshot | None, current: DatabaseSnapshot) -> tuple[ActivityDelta | None, str | None]:
    """The counters' change since ``previous``, and a note when there is nothing to compare with.

    A first snapshot has no delta. A statistics reset (``stats_reset`` changed, a counter went
    down, or the database was recreated) gives the counts since the reset, flagged
    ``stats_reset``, over the time since the reset when it is known."""
    counters = current.counters
    if not counters:
        return None, None
    names = ("blks_hit", "blks_read", "deadlocks", "temp_bytes", "temp_files", "transactions")
    if previous is None or not previous.counters:
        return None, "first snapshot: cache hit ratio, deadlocks and temp bytes start with the next one"
    before = previous.counters
    reset = (before.get("database_oid") != counters.get("database_oid")
             or before.get("stats_reset") != counters.get("stats_reset")
             or any(counters.get(n, 0) < before.get(n, 0) for n in names))
    if reset:
        since = counters.get("stats_reset")
        interval = (current.collected - parse_utc(since)).total_seconds() if since else None
        delta = ActivityDelta(interval, *(int(counters.get(n, 0)) for n in names), stats_reset=True)
        return delta, f"statistics were reset{' at ' + since if since else ''}: activity counts since then"
    interval = (current.collected - previous.collected).total_seconds()
    return ActivityDelta(interval, *(int(counters.get(n, 0) - before.get(n, 0)) for n in names)), None
