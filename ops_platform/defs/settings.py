"""The platform's tunable numbers as resources, so the UI's resource page shows each one with its
default and the variable that sets it (``lib/settings.py`` is the table they come from).

A set variable is bound with ``dg.EnvVar`` (integers) or by value (Dagster has no float EnvVar;
these are not secrets). A bad value does not stop the code location from loading, which would
also stop health checks and alerts: it stays at its default, is listed in ``invalid_settings``,
and every run that uses the resource fails at its first step with that one line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from ops_platform.config import ENVIRONMENT_PREFIXES, ConfigError
from ops_platform.lib import settings
from ops_platform.lib.backup import BackupLimits, is_transient
from ops_platform.lib.deploy import DeploymentLimits
from ops_platform.lib.incidents import IncidentSettings, SweepWatchSettings
from ops_platform.lib.insight.conditions import ConditionAlertSettings, StatsThresholds
from ops_platform.lib.insight.database_stats import StatsCollectionSettings
from ops_platform.lib.probes import ProbeSettings
from ops_platform.lib.retention.policy import RetentionPolicy


class _Settings(dg.ConfigurableResource):
    invalid_settings: list[str] = []

    def require_valid(self, what: str) -> None:
        """Fail the step, before any work, naming the first bad setting."""
        if self.invalid_settings:
            more = f" (and {len(self.invalid_settings) - 1} more)" if len(self.invalid_settings) > 1 else ""
            raise dg.Failure(description=f"{what}: {self.invalid_settings[0]}{more}", allow_retries=False)


class RetentionSettings(_Settings):
    """How long backups are kept (BACKUP_RETENTION_DAYS, BACKUP_KEEP_MIN, ...); each may be overridden
    per environment (PRODUCTION_BACKUP_KEEP_MIN=14), shown in ``environment_overrides``."""

    retention_days: int = 30
    keep_min: int = 7
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    pre_restore_days: int = 7
    environment_overrides: dict[str, dict[str, int]] = {}

    def policy(self, environment: str) -> RetentionPolicy:
        values = {setting.field: getattr(self, setting.field) for setting in settings.RETENTION}
        values.update(self.environment_overrides.get(environment, {}))
        return RetentionPolicy(**values)


class BackupSettings(_Settings):
    """Backups: BACKUP_TIMEOUT_MINUTES, BACKUP_LOCK_WAIT_TIMEOUT_SECONDS (pg_dump's table locks),
    BACKUP_S3_STALL_SECONDS, BACKUP_MIN_COPIES (verified copies a backup needs; 0: all), BACKUP_RETRIES and BACKUP_RETRY_DELAY_SECONDS (transient failures),
    ENVIRONMENT_LOCK_WAIT_SECONDS (waiting for another run of the environment), RUN_DEAD_AFTER_SECONDS
    (a run without a heartbeat that long is dead), and the alerts:
    BACKUP_FRESHNESS_GRACE_HOURS after the last scheduled backup, DRILL_MAX_AGE_DAYS."""

    timeout_minutes: int = 180
    lock_wait_timeout_seconds: int = 300
    s3_stall_seconds: int = 30
    min_copies: int = 0
    retries: int = 2
    retry_delay_seconds: int = 60
    lock_wait_seconds: int = 600
    dead_run_seconds: int = 300
    freshness_grace_hours: int = 3
    drill_max_age_days: int = 8

    def limits(self) -> BackupLimits:
        return BackupLimits(lock_wait_seconds=float(self.lock_wait_timeout_seconds),
                            timeout_seconds=self.timeout_minutes * 60.0, s3_stall_seconds=float(self.s3_stall_seconds))

    def retry_if_transient(self, context: dg.OpExecutionContext, step: str, error: Exception, who: str = "") -> None:
        """Raise ``dg.RetryRequested`` (with a warning saying when) if the failure at ``step`` is
        transient and retries are left; otherwise return, for the caller to fail the step."""
        if not is_transient(step, str(error)) or context.retry_number >= self.retries:
            return
        delay = self.retry_delay_seconds * 2 ** context.retry_number
        context.log.warning(f"{who}attempt {context.retry_number + 1} failed at {step}, a transient failure "
                            f"({error}); retrying in {delay}s")
        raise dg.RetryRequested(max_retries=self.retries, seconds_to_wait=delay) from None


class HealthSettings(_Settings):
    """Health sweeps (HEALTH_CHECK_TIMEOUT_SECONDS, HEALTH_DEGRADED_LATENCY_MS), incidents
    (HEALTH_FAILURE_THRESHOLD, HEALTH_RECOVERY_THRESHOLD, HEALTH_REMINDER_MINUTES, HEALTH_FLAP_CHANGES)
    and the dead-man's switch on the sweeps themselves (HEALTH_SILENCE_INTERVALS)."""

    timeout_seconds: int = 10
    degraded_ms: int = 2000
    failure_threshold: int = 3
    recovery_threshold: int = 2
    reminder_minutes: int = 60
    flap_changes: int = 4
    silence_intervals: int = 3

    def probe_settings(self) -> ProbeSettings:
        return ProbeSettings(timeout_seconds=float(self.timeout_seconds), degraded_seconds=self.degraded_ms / 1000)

    def incident_settings(self) -> IncidentSettings:
        return IncidentSettings(failure_threshold=self.failure_threshold, recovery_threshold=self.recovery_threshold,
                                reminder_seconds=self.reminder_minutes * 60.0, flap_changes=self.flap_changes)

    def watch_settings(self, interval_seconds: float) -> SweepWatchSettings:
        return SweepWatchSettings(interval_seconds=interval_seconds, silence_intervals=self.silence_intervals,
                                  reminder_seconds=self.reminder_minutes * 60.0)


class DeploymentSettings(_Settings):
    """Deployment verification: DEPLOY_POLL_INTERVAL_SECONDS, DEPLOY_ROLLBACK_TIMEOUT_SECONDS and
    DEPLOY_MAX_TIMEOUT_SECONDS (what a launch may ask for, and so how long health alerts are held),
    and COMMAND_VARIABLES (further variables the rollback command gets)."""

    poll_interval_seconds: float = 5.0
    rollback_timeout_seconds: float = 300.0
    max_timeout_seconds: float = 1800.0
    command_variables: str | None = None

    def limits(self) -> DeploymentLimits:
        return DeploymentLimits(self.max_timeout_seconds, self.rollback_timeout_seconds)


class RestoreSettings(_Settings):
    """Restores and drills: RESTORE_JOBS (0 = one per CPU), RESTORE_TIMEOUT_MINUTES for pg_restore,
    RESTORE_MIGRATE_TIMEOUT_SECONDS for the migrate command, RESTORE_S3_STALL_SECONDS for a fetch
    from S3 that receives nothing, RESTORE_WORK_DIR, where the decompressed archive is written
    (default: .restore under the backup folder, so on its disk), and COMMAND_VARIABLES (further
    variables the migrate command gets)."""

    jobs: int = 0
    timeout_minutes: int = 360
    migrate_timeout_seconds: float = 900.0
    s3_stall_seconds: float = 120.0
    lock_timeout_seconds: float = 60.0
    command_variables: str | None = None
    work_dir: str | None = None

    def parallel_jobs(self) -> int:
        return self.jobs or os.cpu_count() or 2


class InsightSettings(_Settings):
    """Operations insight (defs/insight). How a ``database_stats`` snapshot is taken
    (STATS_STATEMENT_TIMEOUT_MS, STATS_LOCK_TIMEOUT_MS, STATS_CONNECT_TIMEOUT_SECONDS, STATS_TOP_TABLES,
    STATS_TOP_STATEMENTS, STATS_EXACT_SIZES), the thresholds of its checks (STATS_CONNECTIONS_PERCENT,
    STATS_XID_AGE_FRACTION, STATS_IDLE_IN_TRANSACTION_MINUTES, STATS_LONG_TRANSACTION_MINUTES,
    STATS_DEAD_TUPLES_MIN, STATS_DEAD_TUPLES_PERCENT, STATS_VACUUM_MAX_DAYS, STATS_SLOT_RETAINED_GB,
    STATS_GROWTH_PERCENT), their Slack alerts (STATS_REMINDER_MINUTES, STATS_ALERT_WARNINGS) and the
    morning digest (DIGEST_SILENCE_QUIET_DAYS)."""

    statement_timeout_ms: int = 5000
    lock_timeout_ms: int = 200
    connect_timeout_seconds: int = 10
    top_tables: int = 20
    top_statements: int = 10
    exact_sizes: int = 1
    connections_percent: float = 80.0
    xid_age_fraction: float = 0.5
    idle_in_transaction_minutes: float = 10.0
    long_transaction_minutes: float = 60.0
    dead_tuples_min: int = 10_000
    dead_tuples_percent: float = 10.0
    vacuum_max_days: float = 7.0
    slot_retained_gb: float = 10.0
    growth_percent: float = 20.0
    alert_reminder_minutes: int = 240
    alert_warnings: int = 0
    digest_silence_quiet_days: int = 0

    def collection(self) -> StatsCollectionSettings:
        return StatsCollectionSettings(**{s.field: getattr(self, s.field) for s in settings.INSIGHT_COLLECTION
                                          if s.field != "exact_sizes"}, exact_sizes=bool(self.exact_sizes))

    def thresholds(self) -> StatsThresholds:
        return StatsThresholds(**{s.field: getattr(self, s.field) for s in settings.INSIGHT_THRESHOLDS})

    def alert_settings(self) -> ConditionAlertSettings:
        return ConditionAlertSettings.from_values(self.alert_reminder_minutes, self.alert_warnings)


def _bind(group: tuple[settings.Setting, ...], environ: Mapping[str, str]) -> dict:
    """Constructor arguments for a settings resource: each set, valid variable bound, every bad one
    listed in ``invalid_settings``."""
    arguments: dict = {}
    invalid = settings.problems(group, environ)
    for setting in group:
        raw = environ.get(setting.variable, "").strip()
        if not raw:
            continue
        try:
            value = setting.parse(raw)
        except ConfigError:
            continue
        arguments[setting.field] = dg.EnvVar.int(setting.variable) if setting.kind is int else value
    overrides: dict[str, dict[str, int]] = {}
    for environment, prefix in ENVIRONMENT_PREFIXES.items():
        for setting in group:
            raw = environ.get(prefix + setting.variable, "").strip() if prefix and setting.per_environment else ""
            if raw:
                try:
                    overrides.setdefault(environment, {})[setting.field] = setting.parse(raw, prefix + setting.variable)
                except ConfigError:
                    pass
    if overrides:
        arguments["environment_overrides"] = overrides
    if invalid:
        arguments["invalid_settings"] = invalid
    return arguments


def settings_resources(environ: Mapping[str, str] | None = None) -> dict[str, _Settings]:
    environ = os.environ if environ is None else environ
    return {
        "retention_settings": RetentionSettings(**_bind(settings.RETENTION, environ)),
        "backup_settings": BackupSettings(**_bind(settings.BACKUP, environ)),
        "health_settings": HealthSettings(**_bind(settings.HEALTH, environ)),
        "deployment_settings": DeploymentSettings(**_bind(settings.DEPLOYMENT, environ)),
        "restore_settings": RestoreSettings(**_bind(settings.RESTORE, environ),
                                            **({"work_dir": dg.EnvVar("RESTORE_WORK_DIR")}
                                               if environ.get("RESTORE_WORK_DIR", "").strip() else {})),
        "insight_settings": InsightSettings(**_bind(settings.INSIGHT, environ)),
    }
