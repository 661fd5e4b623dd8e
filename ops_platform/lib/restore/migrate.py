"""Step 5: run the environment's migrate command (``npx prisma migrate deploy``, ``alembic upgrade
head``) against the restored database before it goes live.

The command runs through the shell with ``DATABASE_URL`` pointing at the restored database; the
password lives only in that variable, never on argv. Its environment is allow-listed
(``commands.command_environment``). A timeout kills the whole process group.
"""

from __future__ import annotations

from collections.abc import Mapping

from ops_platform.config import ConfigError
from ops_platform.lib.commands import CommandResult, command_environment, run_shell_command
from ops_platform.lib.formatting import describe
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore.databases import database_url_for, redactor_for
from ops_platform.lib.restore.errors import step_error

DEFAULT_MIGRATE_TIMEOUT_SECONDS = 900.0


def migrate_environment(database_url: str, database: str, base: Mapping[str, str] | None = None
                        ) -> dict[str, str]:
    """The migrate command's environment: what ``command_environment`` allows from ``base`` (default:
    this process's), ``DATABASE_URL`` set to ``database`` on the same server and ``OPS_RESTORE_DATABASE``
    naming it."""
    return command_environment({"DATABASE_URL": database_url_for(database_url, database),
                                "OPS_RESTORE_DATABASE": database}, base)


def run_migrations(command: str, database_url: str, database: str, *,
                   timeout: float = DEFAULT_MIGRATE_TIMEOUT_SECONDS, cwd: str | None = None,
                   base_env: Mapping[str, str] | None = None, redactor: Redactor | None = None) -> CommandResult:
    """Run ``command`` against ``database`` (normally the scratch database). Returns the redacted
    result; raises RestoreStepError("migrate") with the output's tail when it fails or times out."""
    redactor = redactor_for(database_url, redactor)
    try:
        env = migrate_environment(database_url, database, base_env)
    except ConfigError as error:
        raise step_error("migrate", str(error), redactor) from None
    try:
        result = run_shell_command(command, env, timeout, redactor, name="migrate command", cwd=cwd)
    except OSError as error:
        raise step_error("migrate", f"the migrate command could not start: {describe(error)}", redactor) from None
    if not result.ok:
        output = result.output.strip().splitlines()
        shown = " | ".join(output[-8:]) if output else "no output"
        raise step_error("migrate", f"{result.summary} on {database}: {shown}", redactor)
    return result
