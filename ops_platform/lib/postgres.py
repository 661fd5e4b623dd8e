"""Connecting PostgreSQL client programs without putting the password on argv."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ops_platform.config import ConfigError


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
    """Yields the connection settings for pg_dump/pg_restore/psql. The password goes into a
    0600 passfile that is removed afterwards; argv only ever sees the password-free conninfo."""
    try:
        params = conninfo_to_dict(database_url)
    except Exception:
        raise ConfigError("the database URL is not a valid PostgreSQL connection string") from None
    password = params.pop("password", None)
    if dbname:
        params["dbname"] = dbname
    params.setdefault("connect_timeout", str(connect_timeout))
    conninfo = make_conninfo(**{k: v for k, v in params.items() if v is not None})
    env = {key: value for key, value in os.environ.items() if key not in ("PGPASSWORD", "PGPASSFILE")}
    env["PGAPPNAME"] = "ops_platform"
    database = params.get("dbname") or params.get("user") or os.environ.get("USER", "")
    if not password:
        yield ClientConnection(conninfo, env, database)
        return
    handle, passfile = tempfile.mkstemp(prefix="ops_platform_pgpass_")
    try:
        os.fchmod(handle, 0o600)
        os.write(handle, f"*:*:*:*:{_escape_passfile(password)}\n".encode())
        os.close(handle)
        env["PGPASSFILE"] = passfile
        yield ClientConnection(conninfo, env, database)
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
    import psycopg

    with psycopg.connect(database_url, connect_timeout=timeout, autocommit=True) as connection:
        return connection.execute("SHOW server_version").fetchone()[0].split()[0]
