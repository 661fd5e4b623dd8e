"""``ops-platform restore (latest|BACKUP_ID) ENV [--target-database NAME [--replace-target]] [--yes]``."""

from __future__ import annotations

from ops_platform.cli.errors import EXIT_BAD_INPUT, CommandError


def restore_command(args) -> int:
    raise CommandError("'restore' is not available in this version yet; restore by hand as the README's "
                       "\"Restoring by hand\" says", EXIT_BAD_INPUT)
