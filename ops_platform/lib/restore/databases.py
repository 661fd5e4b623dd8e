"""Server-side database operations of a restore, through psycopg on the maintenance database.

Names: a restore builds ``<db>__restore_<stamp>`` (the scratch database) and, when it replaces
``<db>``, keeps the old one as ``<db>__pre_restore_<stamp>``; a base too long for PostgreSQL's
63-byte identifiers is shortened deterministically (a prefix plus 8 hex of its sha256).
A session-level advisory lock per target database, held on a maintenance connection for the whole
restore, keeps two restores of one database from ever running together.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ops_platform.lib import locks, postgres
from ops_platform.lib.formatting import describe
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore.errors import RestoreBusy, step_error, with_secrets

MAINTENANCE_DATABASE = "postgres"
IDENTIFIER_MAX_BYTES = 63
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
SCRATCH_INFIX = "__restore_"
KEPT_INFIX = "__pre_restore_"
_STAMP_PATTERN = r"\d{8}T\d{6}Z"
APPLICATION_NAME = "ops_platform"


# ---------------------------------------------------------------- names


def make_stamp(now: datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ`` (UTC) for scratch and kept-database names."""
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime(STAMP_FORMAT)


def _shortened(database: str, room: int) -> str:
    """``database`` if it fits in ``room`` bytes, else a UTF-8-safe prefix plus ``_<sha256[:8]>``."""
    encoded = database.encode()
    if len(encoded) <= room:
        return database
    prefix = encoded[: room - 9].decode(errors="ignore")
    return f"{prefix}_{hashlib.sha256(encoded).hexdigest()[:8]}"


def _derived_name(database: str, infix: str, stamp: str) -> str:
    if not re.fullmatch(_STAMP_PATTERN, stamp):
        raise ValueError(f"stamp must look like 20260115T070000Z, got '{stamp}'")
    suffix = f"{infix}{stamp}"
    return _shortened(database, IDENTIFIER_MAX_BYTES - len(suffix)) + suffix


def scratch_name(database: str, stamp: str) -> str:
    """The scratch database a restore of ``database`` builds: ``<db>__restore_<stamp>``."""
    return _derived_name(database, SCRATCH_INFIX, stamp)


def pre_restore_name(database: str, stamp: str) -> str:
    """Where a swap keeps the replaced database: ``<db>__pre_restore_<stamp>``."""
    return _derived_name(database, KEPT_INFIX, stamp)


def _derived_pattern(database: str, infix: str) -> re.Pattern:
    base = _shortened(database, IDENTIFIER_MAX_BYTES - len(infix) - 16)
    return re.compile(re.escape(base + infix) + f"(?P<stamp>{_STAMP_PATTERN})")


def parse_stamp(stamp: str) -> datetime:
    """The UTC time of a ``YYYYMMDDTHHMMSSZ`` stamp."""
    return datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------- connections


def _params(url: str) -> dict[str, str]:
    try:
        return conninfo_to_dict(url)
    except Exception:
        raise step_error("scratch", "the database URL is not a valid PostgreSQL connection string") from None


def server_of(url: str) -> tuple[str, str]:
    """(host, port) of a URL, to tell whether two URLs reach the same server."""
    params = _params(url)
    return params.get("host") or "", params.get("port") or "5432"


def database_name(url: str) -> str:
    """The database a URL points at."""
    params = _params(url)
    return params.get("dbname") or params.get("user") or ""


def redactor_for(url: str, redactor: Redactor | None = None) -> Redactor:
    """A redactor that also knows the URL's own password."""
    return with_secrets(redactor, [_params(url).get("password")])


def database_url_for(url: str, dbname: str) -> str:
    """The same server, user and password as ``url``, for database ``dbname``, as a URL
    (what ``DATABASE_URL`` holds for Prisma or Alembic)."""
    if "://" in url:
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + quote(dbname, safe=""), parts.query, parts.fragment))
    params = {k: v for k, v in _params(url).items() if v is not None}
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    host = params.pop("host", "")
    port = params.pop("port", "")
    params.pop("dbname", None)
    userinfo = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    netloc = host if host and not host.startswith("/") else ""
    if host.startswith("/"):
        params["host"] = host
    query = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params.items())
    return f"postgresql://{userinfo}{netloc}{':' + port if port and netloc else ''}/{quote(dbname, safe='')}" + \
        (f"?{query}" if query else "")


def connect(url: str, dbname: str | None = None, *, connect_timeout: int = 10, statement_timeout: float = 60,
            lock_timeout: float = 10) -> psycopg.Connection:
    """An autocommit connection to ``dbname`` (default: the maintenance database) on the URL's
    server, with timeouts and ``application_name='ops_platform'``."""
    options = f"-c statement_timeout={int(statement_timeout * 1000)} -c lock_timeout={int(lock_timeout * 1000)}"
    return postgres.connect(url, dbname=dbname or MAINTENANCE_DATABASE, autocommit=True,
                            connect_timeout=connect_timeout, application_name=APPLICATION_NAME, options=options)


@contextlib.contextmanager
def maintenance(url: str, step: str, redactor: Redactor | None, **timeouts) -> Iterator[psycopg.Connection]:
    """A maintenance connection whose psycopg errors become RestoreStepError(step)."""
    redactor = redactor_for(url, redactor)
    try:
        with connect(url, **timeouts) as connection:
            yield connection
    except psycopg.Error as error:
        raise step_error(step, describe(error), redactor) from None


def exists(connection: psycopg.Connection, name: str) -> bool:
    return connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def can_create_databases(url: str, *, redactor: Redactor | None = None) -> bool:
    """Whether the URL's role may create databases (CREATEDB or superuser): the scratch-and-swap
    restore needs it; without it only the in-place fallback is possible."""
    with maintenance(url, "scratch", redactor) as connection:
        row = connection.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def database_exists(url: str, name: str, *, redactor: Redactor | None = None) -> bool:
    """Whether a database of that exact name exists on the URL's server."""
    return database_oid(url, name, redactor=redactor) is not None


def database_oid(url: str, name: str, *, redactor: Redactor | None = None) -> int | None:
    """The oid of the database of that exact name on the URL's server, or None: a database
    renamed away and another renamed in its place have different oids."""
    with maintenance(url, "scratch", redactor) as connection:
        row = connection.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return int(row[0]) if row else None


def create_database(url: str, name: str, *, like: str | None = None, redactor: Redactor | None = None) -> None:
    """``CREATE DATABASE name TEMPLATE template0``, with the encoding and locale of ``like`` when
    that database exists (so a swapped-in copy sorts and compares text like the one it replaces)."""
    with maintenance(url, "scratch", redactor, statement_timeout=600) as connection:
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        if like and exists(connection, like):
            statement += _locale_clause(connection, like)
        connection.execute(statement)


def _locale_clause(connection: psycopg.Connection, like: str) -> sql.Composable:
    version = connection.info.server_version
    columns = "pg_encoding_to_char(encoding), datcollate, datctype"
    if version >= 170000:
        columns += ", datlocprovider, datlocale"
    elif version >= 150000:
        columns += ", datlocprovider, daticulocale"
    row = connection.execute(f"SELECT {columns} FROM pg_database WHERE datname = %s", (like,)).fetchone()
    clause = sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(*(sql.Literal(v) for v in row[:3]))
    if len(row) > 3 and row[3] == "i":
        keyword = "LOCALE" if version >= 170000 else "ICU_LOCALE"
        clause += sql.SQL(" LOCALE_PROVIDER icu {} {}").format(sql.SQL(keyword), sql.Literal(row[4]))
    return clause


def terminate_sessions(connection: psycopg.Connection, name: str) -> tuple[int, set[str]]:
    """Terminate every other session on ``name``; returns (terminated, roles that could not be)."""
    wait = ", 5000" if connection.info.server_version >= 140000 else ""
    rows = connection.execute("SELECT pid, usename FROM pg_stat_activity WHERE datname = %s "
                              "AND pid <> pg_backend_pid()", (name,)).fetchall()
    terminated, refused = 0, set()
    for pid, role in rows:
        try:
            if connection.execute(f"SELECT pg_terminate_backend(%s{wait})", (pid,)).fetchone()[0]:
                terminated += 1
        except psycopg.errors.InsufficientPrivilege:
            refused.add(role or "?")
    return terminated, refused


def drop_database(url: str, name: str, *, redactor: Redactor | None = None, step: str = "scratch") -> bool:
    """Terminate the database's sessions, then ``DROP DATABASE IF EXISTS ... WITH (FORCE)``.
    Returns whether it existed."""
    with maintenance(url, step, redactor, statement_timeout=600) as connection:
        if not exists(connection, name):
            return False
        terminate_sessions(connection, name)
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        return True


# ---------------------------------------------------------------- the per-database lock


@dataclass
class RestoreLock:
    """The lock on one target database (``locks.database_lock``), held by ``connection``'s session."""

    database: str
    connection: psycopg.Connection = field(repr=False)

    def is_held(self) -> bool:
        """Whether this session still holds the lock (false once the connection is gone)."""
        return locks.HeldLock(locks.DATABASE_NAMESPACE, self.database, self.connection).is_held()

    def require(self, database: str, step: str = "scratch") -> None:
        """Raise unless this lock is for ``database`` and still held."""
        if database != self.database or not self.is_held():
            raise step_error(step, f"the restore lock on {database} is not held; refusing to continue")


@contextlib.contextmanager
def restore_lock(url: str, database: str, *, wait_seconds: float = 0, holder: str = "",
                 redactor: Redactor | None = None) -> Iterator[RestoreLock]:
    """Hold ``database``'s restore lock for the ``with`` block. Refuses with
    RestoreStepError("scratch") when another restore holds it or the server cannot be reached."""
    redactor = redactor_for(url, redactor)
    try:
        with locks.database_lock(url, database, holder=holder, wait_seconds=wait_seconds) as held:
            yield RestoreLock(database, held.connection)
    except locks.LockBusy as error:
        raise step_error("scratch", str(error), redactor, RestoreBusy) from None
    except locks.LockUnavailable as error:
        raise step_error("scratch", f"cannot connect to take the restore lock: {error}", redactor) from None


def list_scratch_databases(url: str, database: str, *, redactor: Redactor | None = None) -> list[str]:
    """Every ``<database>__restore_<stamp>`` database on the server."""
    pattern = _derived_pattern(database, SCRATCH_INFIX)
    with maintenance(url, "scratch", redactor) as connection:
        names = [row[0] for row in connection.execute("SELECT datname FROM pg_database")]
    return sorted(name for name in names if pattern.fullmatch(name))


def drop_stale_scratch(url: str, database: str, lock: RestoreLock, *, keep: Iterable[str] = (),
                       redactor: Redactor | None = None) -> list[str]:
    """Drop scratch databases of ``database`` left by a killed restore. Only while holding its
    restore lock: then no other restore of it can be using them. Returns the dropped names."""
    lock.require(database)
    keep = set(keep)
    dropped = []
    for name in list_scratch_databases(url, database, redactor=redactor):
        if name not in keep and drop_database(url, name, redactor=redactor):
            dropped.append(name)
    return dropped


# ---------------------------------------------------------------- database-level properties


_LIST_SETTINGS = {"search_path", "temp_tablespaces", "session_preload_libraries", "shared_preload_libraries",
                  "local_preload_libraries", "unix_socket_directories"}


def _split_guc_list(value: str) -> list[str]:
    """Elements of a list-valued setting as stored in pg_db_role_setting (``"$user", public``)."""
    items, current, quoted, index = [], "", False, 0
    while index < len(value):
        char = value[index]
        if quoted:
            if char == '"' and value[index + 1:index + 2] == '"':
                current += '"'
                index += 1
            elif char == '"':
                quoted = False
            else:
                current += char
        elif char == '"':
            quoted = True
        elif char == ",":
            items.append(current.strip())
            current = ""
        else:
            current += char
        index += 1
    items.append(current.strip())
    return [item for item in items if item]


def _setting_statement(target: str, entry: str, role: str | None) -> sql.Composable:
    name, _, value = entry.partition("=")
    values = _split_guc_list(value) if name in _LIST_SETTINGS else [value]
    head = (sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), sql.Identifier(target)) if role
            else sql.SQL("ALTER DATABASE {}").format(sql.Identifier(target)))
    return head + sql.SQL(" SET {} TO {}").format(sql.Identifier(name),
                                                 sql.SQL(", ").join(sql.Literal(v) for v in values))


def read_database_properties(connection: psycopg.Connection, name: str) -> dict:
    """The database-level properties of ``name`` that a dump of its contents does not carry, as
    plain data (what a manifest records): owner, comment, connection limit, the grants on the
    database (None: the default ones) and ``ALTER DATABASE/ROLE ... IN DATABASE ... SET`` settings."""
    oid, owner, comment, connlimit, default_acl = connection.execute(
        "SELECT d.oid, pg_get_userbyid(d.datdba), shobj_description(d.oid, 'pg_database'), d.datconnlimit, "
        "d.datacl IS NULL FROM pg_database d WHERE d.datname = %s", (name,)).fetchone()
    grants = None if default_acl else [list(row) for row in connection.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, "
        "a.is_grantable FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = %s AND a.grantee <> d.datdba "
        "ORDER BY 1 NULLS FIRST, 2", (oid,))]
    settings = [[role, entry] for role, entries in connection.execute(
        "SELECT CASE WHEN setrole = 0 THEN NULL ELSE pg_get_userbyid(setrole) END, setconfig "
        "FROM pg_db_role_setting WHERE setdatabase = %s ORDER BY 1 NULLS FIRST", (oid,)) for entry in entries or []]
    return {"owner": owner, "comment": comment, "connection_limit": connlimit, "grants": grants,
            "settings": settings}


def apply_database_properties(connection: psycopg.Connection, target: str, properties: dict) -> list[str]:
    """Give ``target`` the properties ``read_database_properties`` returned (of another database,
    or from a manifest). Each one this role may not set, or that names a role missing here,
    becomes a warning instead of an error."""
    warnings: list[str] = []
    target_id = sql.Identifier(target)
    current_owner = connection.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                                       (target,)).fetchone()[0]

    def attempt(statement: sql.Composable, what: str) -> None:
        try:
            connection.execute(statement)
        except psycopg.Error as error:
            warnings.append(f"could not give the restored database {what}: {describe(error)}")

    owner = properties.get("owner")
    if owner and owner != current_owner:
        attempt(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(target_id, sql.Identifier(owner)), f"owner {owner}")
    if properties.get("comment") is not None:
        attempt(sql.SQL("COMMENT ON DATABASE {} IS {}").format(target_id, sql.Literal(properties["comment"])),
                "its comment")
    if properties.get("connection_limit", -1) != -1:
        attempt(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
            target_id, sql.Literal(properties["connection_limit"])), "its connection limit")
    if properties.get("grants") is not None:
        attempt(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(target_id), "its grants")
        for grantee, privilege, grantable in properties["grants"]:
            statement = sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                sql.SQL(privilege), target_id, sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"))
            if grantable:
                statement += sql.SQL(" WITH GRANT OPTION")
            attempt(statement, f"grant {privilege} to {grantee or 'PUBLIC'}")
    for role, entry in properties.get("settings") or []:
        attempt(_setting_statement(target, entry, role), f"setting {entry.partition('=')[0]}"
                + (f" of role {role}" if role else ""))
    return warnings


def copy_database_properties(connection: psycopg.Connection, source: str, target: str) -> list[str]:
    """Give ``target`` the database-level properties of ``source`` (see the two above)."""
    return apply_database_properties(connection, target, read_database_properties(connection, source))


def set_allow_connections(connection: psycopg.Connection, name: str, allowed: bool) -> str | None:
    try:
        connection.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.SQL("true" if allowed else "false")))
    except psycopg.Error as error:
        return describe(error)
    return None


def rename_database(connection: psycopg.Connection, old: str, new: str) -> None:
    connection.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))



# ---------------------------------------------------------------- a new target database


def promote_scratch(url: str, scratch: str, target: str, *, lock: RestoreLock | None = None,
                    redactor: Redactor | None = None) -> None:
    """Rename ``scratch`` to ``target`` when no database of that name exists (a restore into a
    new ``--target-database``); there is nothing to keep, so no swap. Raises RestoreStepError("swap")."""
    redactor = redactor_for(url, redactor)
    if lock is not None:
        lock.require(target, "swap")
    with maintenance(url, "swap", redactor) as connection:
        if exists(connection, target):
            raise step_error("swap", f"database {target} already exists; replacing it needs a swap", redactor)
        _count, refused = terminate_sessions(connection, scratch)
        if refused:
            raise step_error("swap", f"cannot rename {scratch}: sessions of {', '.join(sorted(refused))} on it "
                                     "cannot be ended by this role", redactor)
        rename_database(connection, scratch, target)


# ---------------------------------------------------------------- kept databases


def list_pre_restore_databases(url: str, live: str, *, redactor: Redactor | None = None
                               ) -> list[tuple[str, datetime]]:
    """The kept ``<live>__pre_restore_<stamp>`` databases with their times, newest first."""
    pattern = _derived_pattern(live, KEPT_INFIX)
    with maintenance(url, "swap", redactor) as connection:
        names = [row[0] for row in connection.execute("SELECT datname FROM pg_database")]
    found = []
    for name in names:
        match = pattern.fullmatch(name)
        if match:
            with contextlib.suppress(ValueError):
                found.append((name, parse_stamp(match["stamp"])))
    return sorted(found, key=lambda item: item[1], reverse=True)


def expired_pre_restore(url: str, live: str, keep_days: float, now: datetime | None = None, *,
                        keep_min: int = 0, redactor: Redactor | None = None) -> list[str]:
    """Kept databases of ``live`` older than ``keep_days`` (always sparing the newest ``keep_min``)."""
    if keep_days < 0:
        raise ValueError("keep_days must be >= 0")
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=keep_days)
    kept = list_pre_restore_databases(url, live, redactor=redactor)
    return [name for index, (name, moment) in enumerate(kept) if index >= keep_min and moment < cutoff]


def drop_expired_pre_restore(url: str, live: str, keep_days: float, now: datetime | None = None, *,
                             keep_min: int = 0, redactor: Redactor | None = None) -> list[str]:
    """Drop kept databases of ``live`` older than ``keep_days`` (always keeping the newest
    ``keep_min``). Returns the dropped names."""
    return [name for name in expired_pre_restore(url, live, keep_days, now, keep_min=keep_min, redactor=redactor)
            if drop_database(url, name, redactor=redactor, step="swap")]
