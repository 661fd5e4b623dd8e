"""A backup keeps the cluster's roles where its role may read them, and says so plainly where it
may not: the note names what was not kept and why, and carries no password."""

from __future__ import annotations

from ops_platform.lib.backup import database_globals
from ops_platform.lib.redact import Redactor
from ops_platform.lib.roles import dump_roles
from ops_platform_tests.conftest import DB_PASSWORD, PG_HOST, PG_PORT, database_url


def test_roles_that_cannot_be_read_are_a_note_naming_why_without_the_password():
    url = f"postgresql://ops_test_no_such_role:{DB_PASSWORD}@{PG_HOST}:{PG_PORT}/postgres"
    roles_sql, problem = dump_roles(url, redactor=Redactor.from_environ())
    assert roles_sql is None
    assert problem.startswith("the roles could not be kept: pg_dumpall failed (")
    assert "ops_test_no_such_role" in problem and DB_PASSWORD not in problem


def test_a_backup_of_a_database_whose_roles_cannot_be_read_keeps_going_with_the_note(databases, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no pg_dumpall on this host
    properties, roles_sql, notes = database_globals(database_url("development"), Redactor.from_environ())
    assert properties  # the database's own properties are read all the same
    assert roles_sql is None
    assert notes == [notes[0]] and notes[0].startswith("the roles could not be kept: pg_dumpall did not run (")
