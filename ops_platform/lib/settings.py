"""Every tunable number of the platform: its variable, default, bounds and meaning, in one table.

The Dagster resources in ``defs/settings.py`` show these in the UI (bound with ``dg.EnvVar``), and
the CLI checks the ones a command needs before it starts any work. A bad value is one line that
names the variable. Nothing here reads the environment at import time: callers pass ``environ``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ops_platform.config import ENVIRONMENT_PREFIXES, ConfigError, printable
from ops_platform.lib import s3_encryption


@dataclass(frozen=True)
class Setting:
    field: str
    variable: str
    default: int | float | str | None
    kind: type
    minimum: float
    description: str
    per_environment: bool = False
    exclusive_minimum: bool = False
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    check: Callable[[str, str], None] | None = None

    def parse(self, raw: str, variable: str | None = None) -> int | float | str:
        variable = variable or self.variable
        if self.kind is str:
            return self._parse_word(raw, variable)
        try:
            value = self.kind(raw.strip())
        except ValueError:
            noun = "an integer" if self.kind is int else "a number"
            raise ConfigError(f"{variable} must be {noun}, got '{printable(raw)}'") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{variable} must be a finite number, got '{printable(raw)}'")
        too_small = value <= self.minimum if self.exclusive_minimum else value < self.minimum
        if too_small:
            relation = ">" if self.exclusive_minimum else ">="
            raise ConfigError(f"{variable} must be {relation} {self.minimum:g}, got {value:g}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(f"{variable} must be <= {self.maximum:g}, got {value:g}")
        return value

    def _parse_word(self, raw: str, variable: str) -> str:
        """One of ``choices`` (any case, returned as spelled there), or any one word without spaces."""
        value = raw.strip()
        if self.choices:
            match = next((choice for choice in self.choices if choice.lower() == value.lower()), None)
            if match is None:
                raise ConfigError(f"{variable} must be {' or '.join(self.choices)}, got '{printable(raw)}'")
            return match
        if not value.isprintable() or any(character.isspace() for character in value):
            raise ConfigError(f"{variable} must be one word without spaces, got '{printable(raw)}'")
        if self.check:
            self.check(value, variable)
        return value

    def variables(self) -> list[str]:
        """The variable, then its per-environment overrides (``PRODUCTION_<VAR>``, ``STAGING_<VAR>``)."""
        overrides = [f"{prefix}{self.variable}" for prefix in ENVIRONMENT_PREFIXES.values() if prefix]
        return [self.variable, *(overrides if self.per_environment else [])]


def _int(field, variable, default, minimum, description, **options) -> Setting:
    return Setting(field, variable, default, int, minimum, description, **options)


def _seconds(field, variable, default, description) -> Setting:
    return Setting(field, variable, default, float, 0, description, exclusive_minimum=True)


RETENTION = (
    _int("retention_days", "BACKUP_RETENTION_DAYS", 30, 1, "keep every backup younger than this many days",
         per_environment=True),
    _int("keep_min", "BACKUP_KEEP_MIN", 7, 1, "always keep at least this many newest verified backups",
         per_environment=True),
    _int("keep_daily", "BACKUP_KEEP_DAILY", 0, 0, "also keep the newest backup of each of the last N days",
         per_environment=True),
    _int("keep_weekly", "BACKUP_KEEP_WEEKLY", 0, 0, "... of each of the last N ISO weeks", per_environment=True),
    _int("keep_monthly", "BACKUP_KEEP_MONTHLY", 0, 0, "... of each of the last N months", per_environment=True),
    _int("pre_restore_days", "BACKUP_PRE_RESTORE_DAYS", 7, 1, "retention window for pre-restore safety backups",
         per_environment=True),
)

BACKUP = (
    _int("timeout_minutes", "BACKUP_TIMEOUT_MINUTES", 180, 1,
         "a backup (dump and verification) is stopped after this; the run's max runtime adds a margin"),
    _int("lock_wait_timeout_seconds", "BACKUP_LOCK_WAIT_TIMEOUT_SECONDS", 300, 1,
         "pg_dump waits at most this long for a table lock held by another session (a migration)"),
    _int("s3_stall_seconds", "BACKUP_S3_STALL_SECONDS", 30, 1,
         "S3 accepting no data this long gives up the streamed upload; the finished file is uploaded instead"),
    _int("min_copies", "BACKUP_MIN_COPIES", 0, 0,
         "a backup with fewer verified copies (local, S3, each destination) fails enough_copies and alerts; "
         "0: every configured place"),
    _int("retries", "BACKUP_RETRIES", 2, 0, "retries of a backup that failed for a transient reason"),
    _int("retry_delay_seconds", "BACKUP_RETRY_DELAY_SECONDS", 60, 0, "first wait before a retry, doubled each time"),
    _int("lock_wait_seconds", "ENVIRONMENT_LOCK_WAIT_SECONDS", 600, 0,
         "how long a backup, retention or drill waits for another run of its environment to finish"),
    _int("dead_run_seconds", "RUN_DEAD_AFTER_SECONDS", 300, 60,
         "a backup, retention, restore or drill run silent this long (no heartbeat) is marked failed"),
    _int("freshness_grace_hours", "BACKUP_FRESHNESS_GRACE_HOURS", 3, 1,
         "alert when no verified backup was made since the last scheduled backup time plus this"),
    _int("drill_max_age_days", "DRILL_MAX_AGE_DAYS", 8, 1, "alert when no restore drill has passed for this long"),
)

HEALTH = (
    _int("timeout_seconds", "HEALTH_CHECK_TIMEOUT_SECONDS", 10, 1, "per-check timeout"),
    _int("degraded_ms", "HEALTH_DEGRADED_LATENCY_MS", 2000, 1, "slower answers are degraded"),
    _int("failure_threshold", "HEALTH_FAILURE_THRESHOLD", 3, 1, "failed checks in a row before an incident opens"),
    _int("recovery_threshold", "HEALTH_RECOVERY_THRESHOLD", 2, 1, "good checks in a row before the recovery"),
    _int("reminder_minutes", "HEALTH_REMINDER_MINUTES", 60, 1, "reminder interval while an incident is open"),
    _int("flap_changes", "HEALTH_FLAP_CHANGES", 4, 1, "more up/down changes within an hour is flapping"),
    _int("silence_intervals", "HEALTH_SILENCE_INTERVALS", 3, 1,
         "sweep intervals (5 minutes each) without a result before 'health checks have stopped'"),
)

# The platform's own secrets and every environment's connection URLs: never handed to a command.
_PLATFORM_VARIABLES = re.compile(
    r"^(AWS_|SLACK_|OPS_PLATFORM_|DAGSTER_)|(^|_)(DATABASE_URL|REDIS_URL|ROLLBACK_WEBHOOK_URL|DEPLOY_TOKEN_SHA256)$")


def _variable_names(value: str, variable: str) -> None:
    for name in filter(None, value.split(",")):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(f"{variable} must list variable names separated by commas, got '{printable(name)}'")
        if _PLATFORM_VARIABLES.search(name):
            raise ConfigError(f"{variable} may not pass {name} to a command: it belongs to the platform")


COMMAND_VARIABLES = Setting(
    "command_variables", "COMMAND_VARIABLES", None, str, 0,
    "names of further variables (comma-separated) that migrate and rollback commands get; they always get "
    "PATH, HOME, the locale, TZ, TMPDIR, USER and their database's DATABASE_URL, never the platform's secrets",
    check=_variable_names)


def command_variables(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The names COMMAND_VARIABLES lists. Raises ConfigError."""
    return tuple(filter(None, (value_of(COMMAND_VARIABLES, environ) or "").split(",")))


DEPLOY_ROLLBACK_TIMEOUT = _seconds("rollback_timeout_seconds", "DEPLOY_ROLLBACK_TIMEOUT_SECONDS", 300.0,
                                   "the rollback command or webhook is stopped after this; a launch may ask "
                                   "for less, never more")
DEPLOY_MAX_TIMEOUT = _seconds("max_timeout_seconds", "DEPLOY_MAX_TIMEOUT_SECONDS", 1800.0,
                              "the longest verification timeout a launch may ask for; health alerts are held "
                              "at most this plus DEPLOY_ROLLBACK_TIMEOUT_SECONDS plus 5 minutes")
DEPLOYMENT = (
    _seconds("poll_interval_seconds", "DEPLOY_POLL_INTERVAL_SECONDS", 5.0, "how often verification polls /health"),
    DEPLOY_ROLLBACK_TIMEOUT,
    DEPLOY_MAX_TIMEOUT,
    COMMAND_VARIABLES,
)

RESTORE = (
    _int("jobs", "RESTORE_JOBS", 0, 0, "pg_restore parallel jobs; 0 = one per CPU"),
    _int("timeout_minutes", "RESTORE_TIMEOUT_MINUTES", 360, 1, "pg_restore is stopped after this"),
    _seconds("migrate_timeout_seconds", "RESTORE_MIGRATE_TIMEOUT_SECONDS", 900.0,
             "the migrate command is stopped after this"),
    _seconds("s3_stall_seconds", "RESTORE_S3_STALL_SECONDS", 120.0,
             "a fetch from S3 that receives nothing for this long stops the restore"),
    _seconds("lock_timeout_seconds", "RESTORE_LOCK_TIMEOUT_SECONDS", 60.0,
             "a restore in place (a role without CREATEDB) waits this long for each lock, then stops"),
    COMMAND_VARIABLES,
)

S3_MAX_ATTEMPTS = _int("max_attempts", "AWS_MAX_ATTEMPTS", 5, 1, "botocore standard-mode attempts per S3 call")
S3_SSE = Setting("server_side_encryption", "AWS_S3_SSE", None, str, 0,
                 "server-side encryption of every object written (AES256 or aws:kms); s3_copy_matches confirms it",
                 choices=s3_encryption.ALGORITHMS)
S3_SSE_KMS_KEY_ID = Setting("sse_kms_key_id", "AWS_S3_SSE_KMS_KEY_ID", None, str, 0,
                            "the KMS key for aws:kms (id, ARN or alias); unset: the bucket's default KMS key")
S3_ENCRYPTION = (S3_SSE, S3_SSE_KMS_KEY_ID)
S3 = (S3_MAX_ATTEMPTS, *S3_ENCRYPTION)

# --- operations insight (defs/insight): database statistics, their checks, alerts and reports ---

def _number(field, variable, default, minimum, description, maximum=None) -> Setting:
    return Setting(field, variable, default, float, minimum, description, maximum=maximum)


def _flag(field, variable, default, description) -> Setting:
    return Setting(field, variable, default, int, 0, description, maximum=1)


INSIGHT_COLLECTION = (
    _int("statement_timeout_ms", "STATS_STATEMENT_TIMEOUT_MS", 5000, 1,
         "statement_timeout of every query a database_stats snapshot makes"),
    _int("lock_timeout_ms", "STATS_LOCK_TIMEOUT_MS", 200, 1, "lock_timeout of every such query: it never waits long"),
    _int("connect_timeout_seconds", "STATS_CONNECT_TIMEOUT_SECONDS", 10, 1, "connecting gives up after this"),
    _int("top_tables", "STATS_TOP_TABLES", 20, 1, "the biggest tables (and most dead tuples) kept per snapshot"),
    _int("top_statements", "STATS_TOP_STATEMENTS", 10, 1, "statements kept from pg_stat_statements, by total time"),
    _flag("exact_sizes", "STATS_EXACT_SIZES", 1,
          "1 reads table sizes from their files; 0 estimates them from pg_class (huge catalogs)"),
)

INSIGHT_THRESHOLDS = (
    _number("connections_percent", "STATS_CONNECTIONS_PERCENT", 80.0, 0,
            "check connections: client connections above this % of max_connections minus reserved", maximum=100),
    _number("xid_age_fraction", "STATS_XID_AGE_FRACTION", 0.5, 0,
            "check xid_wraparound: transaction-ID age above this fraction of 2^31", maximum=1),
    _number("idle_in_transaction_minutes", "STATS_IDLE_IN_TRANSACTION_MINUTES", 10.0, 0,
            "check idle_in_transaction: a session idle in a transaction longer than this"),
    _number("long_transaction_minutes", "STATS_LONG_TRANSACTION_MINUTES", 60.0, 0,
            "check long_transaction (warning): a transaction open longer than this"),
    _int("dead_tuples_min", "STATS_DEAD_TUPLES_MIN", 10_000, 0,
         "check dead_tuples (warning): at least this many dead tuples in a table ..."),
    _number("dead_tuples_percent", "STATS_DEAD_TUPLES_PERCENT", 10.0, 0, "... and at least this % of its tuples ...",
            maximum=100),
    _number("vacuum_max_days", "STATS_VACUUM_MAX_DAYS", 7.0, 0, "... with no (auto)vacuum for this many days"),
    _number("slot_retained_gb", "STATS_SLOT_RETAINED_GB", 10.0, 0,
            "check replication_slot_wal: a slot retaining more WAL than this (GB)"),
    _number("growth_percent", "STATS_GROWTH_PERCENT", 20.0, 0,
            "check database_growth (warning): the database grew more than this % in a day"),
)

INSIGHT_ALERTS = (
    _int("alert_reminder_minutes", "STATS_REMINDER_MINUTES", 240, 1,
         "reminder interval while a database check keeps failing"),
    _flag("alert_warnings", "STATS_ALERT_WARNINGS", 0, "1 also posts failing warning checks to Slack (errors always)"),
    _flag("digest_silence_quiet_days", "DIGEST_SILENCE_QUIET_DAYS", 0,
          "1 posts no morning digest on a day when nothing needs attention (0: one short line)"),
)

INSIGHT = INSIGHT_COLLECTION + INSIGHT_THRESHOLDS + INSIGHT_ALERTS

ALL = tuple(dict.fromkeys(RETENTION + BACKUP + HEALTH + DEPLOYMENT + RESTORE + S3 + INSIGHT))


def _raw(environ: Mapping[str, str], variable: str) -> str | None:
    value = environ.get(variable, "").strip()
    return value or None


def value_of(setting: Setting, environ: Mapping[str, str] | None = None, environment: str | None = None):
    """The setting's value: the environment's override, else the variable, else the default."""
    environ = os.environ if environ is None else environ
    value = setting.default
    raw = _raw(environ, setting.variable)
    if raw is not None:
        value = setting.parse(raw)
    prefix = ENVIRONMENT_PREFIXES.get(environment or "", "")
    if setting.per_environment and prefix:
        override = _raw(environ, prefix + setting.variable)
        if override is not None:
            value = setting.parse(override, prefix + setting.variable)
    return value


def values(settings: Iterable[Setting], environ: Mapping[str, str] | None = None,
           environment: str | None = None) -> dict[str, int | float]:
    """``{field: value}`` for a group of settings; the first bad value raises ConfigError."""
    return {setting.field: value_of(setting, environ, environment) for setting in settings}


def problems(settings: Iterable[Setting], environ: Mapping[str, str] | None = None) -> list[str]:
    """One line for every bad value among the settings and their per-environment overrides."""
    environ = os.environ if environ is None else environ
    settings = tuple(settings)
    found = []
    for setting in settings:
        for variable in setting.variables():
            raw = _raw(environ, variable)
            if raw is None:
                continue
            try:
                setting.parse(raw, variable)
            except ConfigError as error:
                found.append(str(error))
    if S3_SSE_KMS_KEY_ID in settings:
        try:
            encryption_of(environ)
        except ConfigError as error:
            if str(error) not in found:
                found.append(str(error))
    return found


def encryption_of(environ: Mapping[str, str] | None = None) -> s3_encryption.ServerSideEncryption | None:
    """The encryption AWS_S3_SSE and AWS_S3_SSE_KMS_KEY_ID ask for, or None. Raises ConfigError."""
    return s3_encryption.from_settings(value_of(S3_SSE, environ), value_of(S3_SSE_KMS_KEY_ID, environ))


def check(settings: Iterable[Setting], environ: Mapping[str, str] | None = None) -> None:
    """Raise one ConfigError naming the first bad value (and how many more there are)."""
    found = problems(settings, environ)
    if found:
        more = f" (and {len(found) - 1} more bad setting(s))" if len(found) > 1 else ""
        raise ConfigError(found[0] + more)


def values_or_defaults(group: Iterable[Setting], environ: Mapping[str, str] | None = None) -> dict[str, int | float]:
    """``values`` where every bad value is replaced by its default (a bad value is reported where it
    is used; this is for what the definitions declare when they load, such as run time limits)."""
    found = {}
    for setting in group:
        try:
            found[setting.field] = value_of(setting, environ)
        except ConfigError:
            found[setting.field] = setting.default
    return found


def backup_max_runtime_seconds(environ: Mapping[str, str] | None = None) -> int:
    """The longest a backup run can legitimately take: every attempt with its lock wait, the
    waits between attempts, and retention after it. Past it the run is dead or stuck."""
    backup = values_or_defaults(BACKUP, environ)
    attempt = backup["timeout_minutes"] * 60 + backup["lock_wait_seconds"] + 600
    waits = sum(backup["retry_delay_seconds"] * 2 ** n for n in range(backup["retries"]))
    return int(attempt * (backup["retries"] + 1) + waits + RETENTION_RUNTIME_SECONDS)


RETENTION_RUNTIME_SECONDS = 3600
