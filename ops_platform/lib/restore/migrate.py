"""Step 5: run the environment's migrate command (``npx prisma migrate deploy``, ``alembic upgrade
head``) against the restored database before it goes live.

The command runs through the shell with ``DATABASE_URL`` pointing at the restored database; the
password lives only in that variable, never on argv. A timeout kills the whole process group.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ops_platform.lib.commands import CommandResult, run_shell_command
from ops_platform.lib.formatting import describe
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore.databases import database_url_for, redactor_for
from ops_platform.lib.restore.errors import step_error

DEFAULT_MIGRATE_TIMEOUT_SECONDS = 900.0


def migrate_environment(database_url: str, database: str, base: Mapping[str, str] | None = None
                        ) -> dict[str, str]:
    """The migrate command's environment: ``base`` (default: this process's) with
    ``DATABASE_URL`` set to ``database`` on the same server and ``OPS_RESTORE_DATABASE`` naming it."""
    env = dict(os.environ if base is None else base)
    env["DATABASE_URL"] = database_url_for(database_url, database)
    env["OPS_RESTORE_DATABASE"] = database
    return env


def run_migrations(command: str, database_url: str, database: str, *,
                   timeout: float = DEFAULT_MIGRATE_TIMEOUT_SECONDS, cwd: str | None = None,
                   base_env: Mapping[str, str] | None = None, redactor: Redactor | None = None) -> CommandResult:
    """Run ``command`` against ``database`` (normally the scratch database). Returns the redacted
    result; raises RestoreStepError("migrate") with the output's tail when it fails or times out."""
    redactor = redactor_for(database_url, redactor)
    env = migrate_environment(database_url, database, base_env)
    try:
        result = run_shell_command(command, env, timeout, redactor, name="migrate command", cwd=cwd)
    except OSError as error:
        raise step_error("migrate", f"the migrate command could not start: {describe(error)}", redactor) from None
    if not result.ok:
        output = result.output.strip().splitlines()
        shown = " | ".join(output[-8:]) if output else "no output"
        raise step_error("migrate", f"{result.summary} on {database}: {shown}", redactor)
    return result
