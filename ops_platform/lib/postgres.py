"""Turning a database URL into a connection: for psycopg (``connect``) and for the client programs
(``client_connection``: pg_dump, pg_restore, psql), without putting the password on argv.

Both go through ``connection_params``, which requires TLS (``sslmode=require``) for a server that
is not on this machine unless the URL itself says otherwise (``sslmode=verify-full`` with
``sslrootcert=`` checks the server's certificate too; ``sslmode=disable`` turns TLS off, and the
process says so once in its log).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ops_platform.config import ConfigError
from ops_platform.lib.network import is_loopback

log = logging.getLogger(__name__)

REQUIRED_SSLMODE = "require"
# sslmodes at least as strict as require; anything else may talk to the server in the clear.
TLS_SSLMODES = ("require", "verify-ca", "verify-full")
_announced: set[tuple[str, str]] = set()
_announced_lock = threading.Lock()


def _hosts(params: Mapping[str, str], environ: Mapping[str, str]) -> list[str]:
    """Every address libpq may connect to: ``hostaddr`` when given (it is what is dialled), else ``host``."""
    value = params.get("hostaddr") or params.get("host") or environ.get("PGHOSTADDR") or environ.get("PGHOST") or ""
    return [host for host in value.split(",")] or [""]


def connection_params(database_url: str, environ: Mapping[str, str] | None = None, **overrides) -> dict[str, str]:
    """The libpq parameters of ``database_url`` with ``overrides`` applied (``dbname``, ``connect_timeout``,
    ...). A server that is not on this machine gets ``sslmode=require`` unless the URL names an
    sslmode (or PGSSLMODE asks for one at least as strict); a URL that turns TLS off for such a
    server is logged once per process. Raises ConfigError for a malformed URL."""
    environ = os.environ if environ is None else environ
    try:
        params = conninfo_to_dict(database_url)
    except Exception:
        raise ConfigError("the database URL is not a valid PostgreSQL connection string") from None
    params.update({key: str(value) for key, value in overrides.items() if value is not None})
    remote = [host for host in _hosts(params, environ) if not is_loopback(host)]
    if remote:
        sslmode = params.get("sslmode")
        if sslmode is None:
            inherited = environ.get("PGSSLMODE", "").strip()
            params["sslmode"] = inherited if inherited in TLS_SSLMODES else REQUIRED_SSLMODE
        elif sslmode not in TLS_SSLMODES:
            _announce_plaintext(",".join(remote), params.get("port") or "5432", sslmode)
    return {key: value for key, value in params.items() if value is not None}


def _announce_plaintext(host: str, port: str, sslmode: str) -> None:
    with _announced_lock:
        if (f"{host}:{port}", sslmode) in _announced:
            return
        _announced.add((f"{host}:{port}", sslmode))
    log.warning("TLS is not required for PostgreSQL at %s:%s: its URL says sslmode=%s, so the password and "
                "data may cross the network in the clear", host, port, sslmode)


def conninfo(database_url: str, **overrides) -> str:
    """``connection_params`` as a libpq connection string (it holds the password: never for argv)."""
    return make_conninfo(**connection_params(database_url, **overrides))


def connect(database_url: str, **kwargs) -> psycopg.Connection:
    """``psycopg.connect`` on ``connection_params(database_url)``; ``kwargs`` as psycopg takes them.
    Raises psycopg.Error as psycopg.connect does, for a malformed URL too."""
    try:
        info = conninfo(database_url)
    except ConfigError as error:
        raise psycopg.ProgrammingError(str(error)) from None
    return psycopg.connect(info, **kwargs)


@dataclass(frozen=True)
class ClientConnection:
    """A conninfo string without the password, and the environment that carries it."""

    conninfo: str
    env: dict[str, str]
    database: str


def _escape_passfile(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def client_connection(database_url: str, *, dbname: str | None = None, connect_timeout: int = 10) -> Iterator[ClientConnection]:
    """Yields the connection settings for pg_dump/pg_restore/psql (``connection_params``, so TLS
    as for every connection). The password goes into a 0600 passfile that is removed afterwards;
    argv only ever sees the password-free conninfo."""
    params = connection_params(database_url, dbname=dbname or None)
    password = params.pop("password", None)
    params.setdefault("connect_timeout", str(connect_timeout))
    client_conninfo = make_conninfo(**params)
    env = {key: value for key, value in os.environ.items() if key not in ("PGPASSWORD", "PGPASSFILE")}
    env["PGAPPNAME"] = "ops_platform"
    database = params.get("dbname") or params.get("user") or os.environ.get("USER", "")
    if not password:
        yield ClientConnection(client_conninfo, env, database)
        return
    handle, passfile = tempfile.mkstemp(prefix="ops_platform_pgpass_")
    try:
        os.fchmod(handle, 0o600)
        os.write(handle, f"*:*:*:*:{_escape_passfile(password)}\n".encode())
        os.close(handle)
        env["PGPASSFILE"] = passfile
        yield ClientConnection(client_conninfo, env, database)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(passfile)


def client_version(program: str) -> str:
    """The version of a client program, e.g. ``15.20``, as ``SHOW server_version`` reports the server's."""
    output = subprocess.run([program, "--version"], capture_output=True, text=True, check=True).stdout
    return parse_client_version(output)


def parse_client_version(output: str) -> str:
    """``pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)`` -> ``15.20``: the word after
    ``(PostgreSQL)``, without the distribution's build in parentheses."""
    match = re.search(r"\(PostgreSQL\)\s+([^\s()]+)", output)
    if match:
        return match.group(1)
    words = [word for word in output.split() if word[:1].isdigit()]
    return words[0].strip("()") if words else output.strip()


def server_version(database_url: str, timeout: int = 10) -> str:
    with connect(database_url, connect_timeout=timeout, autocommit=True) as connection:
        return connection.execute("SHOW server_version").fetchone()[0].split()[0]
