"""Environments and settings, read from the variables in the configuration contract (docs/architecture.md).

An environment exists when its database URL is set. With no database URL set at all (a fresh
clone, no settings), ``development`` is the demo database on the local server
(``DEFAULT_DATABASE_URL``): this is the one default, used by ``make dev``, the UI and the CLI alike.
It never applies once any environment's database URL is set, so a production deployment does not
grow a development environment pointing at localhost.

Nothing here is read at import time: callers pass the mapping (``os.environ`` by default) so tests
can supply their own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ops_platform.lib.formatting import did_you_mean

ENVIRONMENT_PREFIXES = {"production": "PRODUCTION_", "staging": "STAGING_", "development": ""}
ENVIRONMENT_NAMES = tuple(ENVIRONMENT_PREFIXES)
DATABASE_URL_VARIABLES = tuple(f"{prefix}DATABASE_URL" for prefix in ENVIRONMENT_PREFIXES.values())

DEMO_DATABASE = "ops_platform_demo"
DEFAULT_DATABASE_URL = f"postgresql://postgres@127.0.0.1:5432/{DEMO_DATABASE}"


class ConfigError(ValueError):
    """A setting or argument is wrong; the message is one line meant for the operator."""


@dataclass(frozen=True)
class EnvironmentConfig:
    name: str
    database_url: str
    redis_url: str | None = None
    api_url: str | None = None
    frontend_url: str | None = None
    migrate_command: str | None = None
    rollback_command: str | None = None
    rollback_webhook_url: str | None = None
    restore_checks_file: str | None = None
    replaceable_databases: tuple[str, ...] = ()


def _get(environ: Mapping[str, str], key: str) -> str | None:
    value = environ.get(key, "").strip()
    return value or None


def uses_default_database(environ: Mapping[str, str] | None = None) -> bool:
    """True when no environment's database URL is set: ``development`` is then the demo database."""
    environ = os.environ if environ is None else environ
    return not any(_get(environ, variable) for variable in DATABASE_URL_VARIABLES)


def load_environments(environ: Mapping[str, str] | None = None) -> dict[str, EnvironmentConfig]:
    """The configured environments, in the fixed order production, staging, development."""
    environ = os.environ if environ is None else environ
    default = uses_default_database(environ)
    environments = {}
    for name, prefix in ENVIRONMENT_PREFIXES.items():
        database_url = _get(environ, f"{prefix}DATABASE_URL")
        if default and name == "development":
            database_url = DEFAULT_DATABASE_URL
        if not database_url:
            continue
        environments[name] = EnvironmentConfig(
            name=name,
            database_url=database_url,
            redis_url=_get(environ, f"{prefix}REDIS_URL"),
            api_url=_get(environ, f"{prefix}API_URL"),
            frontend_url=_get(environ, f"{prefix}FRONTEND_URL"),
            migrate_command=_get(environ, f"{prefix}MIGRATE_COMMAND"),
            rollback_command=_get(environ, f"{prefix}ROLLBACK_COMMAND"),
            rollback_webhook_url=_get(environ, f"{prefix}ROLLBACK_WEBHOOK_URL"),
            restore_checks_file=_get(environ, f"{prefix}RESTORE_CHECKS_FILE"),
            replaceable_databases=tuple(pattern.strip() for pattern in
                                        (_get(environ, f"{prefix}RESTORE_REPLACEABLE_DATABASES") or "").split(",")
                                        if pattern.strip()),
        )
    return environments


def configured_environment_names(environ: Mapping[str, str] | None = None) -> list[str]:
    return list(load_environments(environ))


def get_environment(name: str, environ: Mapping[str, str] | None = None) -> EnvironmentConfig:
    """The named environment, or a target of ``ops_platform.yaml`` (an entry of ``targets:``, or
    ``<server>.<database>``), or a ConfigError naming the configured ones."""
    environments = load_environments(environ)
    if name in environments:
        return environments[name]
    if name not in ENVIRONMENT_PREFIXES:
        from ops_platform.lib.targets import resolve_target

        target = resolve_target(name, environ)
        if target is not None:
            return EnvironmentConfig(name=name, database_url=target.database_url(environ))
    configured = ", ".join(environments) or "none"
    if uses_default_database(environ):
        configured += f" (no database URL is set, so development is the demo database {DEMO_DATABASE})"
    if name in ENVIRONMENT_PREFIXES:
        variable = f"{ENVIRONMENT_PREFIXES[name]}DATABASE_URL"
        raise ConfigError(
            f"environment '{name}' is not configured (set {variable}); configured: {configured}"
        )
    raise ConfigError(f"unknown environment '{printable(name)}'{did_you_mean(name, ENVIRONMENT_NAMES)}; "
                      f"configured: {configured}")


def printable(value: str, limit: int = 60) -> str:
    """A value safe to echo in a one-line error: printable ASCII, shortened."""
    cleaned = re.sub(r"[^\x20-\x7e]", "?", value)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def dagster_home(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(_get(environ, "DAGSTER_HOME") or Path.cwd() / ".dagster_home")


def backup_root(environ: Mapping[str, str] | None = None) -> Path:
    """``BACKUP_DIR``, or ``backups/`` under the instance home."""
    environ = os.environ if environ is None else environ
    explicit = _get(environ, "BACKUP_DIR")
    return Path(explicit) if explicit else dagster_home(environ) / "backups"
