"""The cluster's roles, kept with every backup and created on request on a server that lacks them.

A dump holds a database's contents and its grants, but not the roles the grants name: restored
onto a new server, those grants would be dropped (``--no-acl``). Each backup therefore keeps
``pg_dumpall --globals-only --no-role-passwords --no-tablespaces`` (it reads ``pg_roles``, so any
role may run it; passwords are never read or kept), and ``ops-platform restore --create-roles``
creates the roles a server is missing before the restore, with their attributes, settings and
memberships. Roles that exist are never altered.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

import psycopg

from ops_platform.lib.formatting import describe
from ops_platform.lib.postgres import client_connection
from ops_platform.lib.redact import Redactor

DUMPALL_TIMEOUT_SECONDS = 120
_IDENTIFIER = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_ROLE_STATEMENT = re.compile(rf"^(?:CREATE ROLE|ALTER ROLE|COMMENT ON ROLE) (?P<role>{_IDENTIFIER})[ ;]")
_MEMBERSHIP = re.compile(rf"^GRANT (?P<group>{_IDENTIFIER}) TO (?P<member>{_IDENTIFIER})(?P<rest>[^;]*);$")
_GRANTED_BY = re.compile(rf" GRANTED BY {_IDENTIFIER}")


@dataclass
class RoleStatements:
    """The statements of a roles dump, by role, and the memberships between roles."""

    by_role: dict[str, list[str]] = field(default_factory=dict)
    memberships: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def roles(self) -> list[str]:
        return sorted(self.by_role)


def _unquote(identifier: str) -> str:
    return identifier[1:-1].replace('""', '"') if identifier.startswith('"') else identifier


def dump_roles(url: str, *, redactor: Redactor | None = None,
               timeout: float = DUMPALL_TIMEOUT_SECONDS) -> tuple[str | None, str | None]:
    """(the roles as SQL, None), or (None, why they could not be kept)."""
    redactor = redactor or Redactor.from_environ()
    with client_connection(url) as client:
        try:
            result = subprocess.run(["pg_dumpall", "--globals-only", "--no-role-passwords", "--no-tablespaces",
                                     "--no-password", f"--dbname={client.conninfo}"],
                                    capture_output=True, text=True, timeout=timeout, env=client.env)
        except (OSError, subprocess.TimeoutExpired) as error:
            return None, redactor(f"the roles could not be kept: pg_dumpall did not run ({describe(error)})")
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return None, redactor(f"the roles could not be kept: pg_dumpall failed ({detail})")
    statements = [line for line in result.stdout.splitlines()
                  if _ROLE_STATEMENT.match(line) or _MEMBERSHIP.match(line)]
    return "\n".join(statements) + "\n", None


def parse_roles(roles_sql: str) -> RoleStatements:
    parsed = RoleStatements()
    for line in roles_sql.splitlines():
        if match := _ROLE_STATEMENT.match(line):
            parsed.by_role.setdefault(_unquote(match["role"]), []).append(line)
        elif match := _MEMBERSHIP.match(line):
            parsed.memberships.append((_unquote(match["group"]), _unquote(match["member"]), line))
    return parsed


def missing_roles(connection: psycopg.Connection, roles_sql: str) -> list[str]:
    """The roles of the dump that this server does not have."""
    wanted = parse_roles(roles_sql).roles
    existing = {row[0] for row in connection.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                                     (wanted,))}
    return [role for role in wanted if role not in existing]


def create_missing_roles(url: str, roles_sql: str, *, redactor: Redactor | None = None) -> tuple[list[str], list[str]]:
    """Create the roles of ``roles_sql`` that the server lacks (attributes, settings, comments),
    then the memberships that involve one of them. Returns (created roles, warnings): a statement
    this role may not run (SUPERUSER without being one, say) is a warning, never an error. The
    roles have no password: set one before anything logs in as them."""
    from ops_platform.lib.restore.databases import connect

    redactor = redactor or Redactor.from_environ()
    parsed = parse_roles(roles_sql)
    created, warnings = [], []
    with connect(url) as connection:
        absent = missing_roles(connection, roles_sql)

        def attempt(statement: str, what: str) -> bool:
            try:
                with connection.transaction():
                    connection.execute(statement)
            except psycopg.Error as error:
                warnings.append(redactor(f"{what}: {describe(error)}"))
                return False
            return True

        for role in absent:
            statements = parsed.by_role[role]
            if not attempt(statements[0], f"could not create role {role}"):
                continue
            created.append(role)
            for statement in statements[1:]:
                attempt(statement, f"role {role} was created without part of its definition")
        for group, member, statement in parsed.memberships:
            if group in created or member in created:
                attempt(_GRANTED_BY.sub("", statement), f"could not make {member} a member of {group}")
    return created, warnings
