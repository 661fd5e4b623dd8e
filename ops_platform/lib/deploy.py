"""Post-deployment verification: poll ``/health`` until the expected version is healthy, and run
the environment's rollback hook when it is not, under a timeout and with its output captured (the
command through ``lib/commands``, with an allow-listed environment)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from ops_platform.config import ENVIRONMENT_PREFIXES, ConfigError, EnvironmentConfig
from ops_platform.lib import probes, settings
from ops_platform.lib.commands import command_environment, run_shell_command
from ops_platform.lib.formatting import describe
from ops_platform.lib.redact import Redactor, tail

DEFAULT_VERIFY_TIMEOUT_SECONDS = 300.0
DEFAULT_POLL_INTERVAL_SECONDS = 5.0
DEFAULT_ROLLBACK_TIMEOUT_SECONDS = 300.0
DEFAULT_MAX_TIMEOUT_SECONDS = 1800.0
# Slack posts (started, result), the last /health poll and the rollback's own cleanup on top of
# the verification and rollback timeouts.
RUNTIME_MARGIN_SECONDS = 300.0
MAX_REQUEST_SECONDS = 10.0


def max_runtime_seconds(timeout_seconds: float | None = None, rollback_timeout_seconds: float | None = None,
                        environ=None) -> float:
    """The longest a verification run can legitimately take: the verification timeout, the
    rollback timeout and a margin. Past it the run is dead (its process was killed)."""
    if not rollback_timeout_seconds:
        try:
            rollback_timeout_seconds = settings.value_of(settings.DEPLOY_ROLLBACK_TIMEOUT, environ)
        except ConfigError:
            rollback_timeout_seconds = DEFAULT_ROLLBACK_TIMEOUT_SECONDS
    return float(timeout_seconds or DEFAULT_VERIFY_TIMEOUT_SECONDS) + float(rollback_timeout_seconds) \
        + RUNTIME_MARGIN_SECONDS


@dataclass(frozen=True)
class DeploymentLimits:
    """What a launch of a verification may ask for, whoever launches it (UI, CLI, CI): a timeout up
    to ``max_timeout_seconds`` and a rollback timeout up to ``rollback_timeout_seconds``. The health
    alerts of the environment are held at most ``hold_seconds``."""

    max_timeout_seconds: float = DEFAULT_MAX_TIMEOUT_SECONDS
    rollback_timeout_seconds: float = DEFAULT_ROLLBACK_TIMEOUT_SECONDS

    @classmethod
    def from_environ(cls, environ=None) -> DeploymentLimits:
        """The limits DEPLOY_MAX_TIMEOUT_SECONDS and DEPLOY_ROLLBACK_TIMEOUT_SECONDS set. Raises ConfigError."""
        return cls(float(settings.value_of(settings.DEPLOY_MAX_TIMEOUT, environ)),
                   float(settings.value_of(settings.DEPLOY_ROLLBACK_TIMEOUT, environ)))

    @property
    def hold_seconds(self) -> float:
        return max_runtime_seconds(self.max_timeout_seconds, self.rollback_timeout_seconds)

    def check(self, timeout_seconds: float, rollback_timeout_seconds: float | None = None,
              poll_interval_seconds: float | None = None) -> None:
        """Raise ConfigError (one line) when a launch asks for more than the settings allow."""
        if not timeout_seconds > 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout_seconds:g}")
        if timeout_seconds > self.max_timeout_seconds:
            raise ConfigError(f"timeout may be at most {self.max_timeout_seconds:g}s "
                              f"({settings.DEPLOY_MAX_TIMEOUT.variable}), got {timeout_seconds:g}")
        if rollback_timeout_seconds is not None and not 0 < rollback_timeout_seconds <= self.rollback_timeout_seconds:
            raise ConfigError(f"rollback timeout must be > 0 and at most {self.rollback_timeout_seconds:g}s "
                              f"({settings.DEPLOY_ROLLBACK_TIMEOUT.variable}), got {rollback_timeout_seconds:g}")
        if poll_interval_seconds is not None and not poll_interval_seconds > 0:
            raise ConfigError(f"poll interval must be > 0 seconds, got {poll_interval_seconds:g}")


@dataclass
class VerificationOutcome:
    ok: bool
    reason: str
    observed_version: str | None
    attempts: int
    seconds: float


def wait_for_version(api_url: str, expected_version: str, timeout_seconds: float, *,
                     poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
                     redactor: Redactor | None = None,
                     on_attempt: Callable[[int, str], None] | None = None) -> VerificationOutcome:
    """Poll until ``/health`` says healthy with ``version == expected_version``, or the budget runs out."""
    redactor = redactor or Redactor.from_environ()
    started = time.monotonic()
    deadline = started + timeout_seconds
    attempts, reason, observed = 0, "no answer yet", None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        attempts += 1
        settings = probes.ProbeSettings(timeout_seconds=max(0.1, min(MAX_REQUEST_SECONDS, remaining)),
                                        degraded_seconds=float("inf"))
        results = {r.component: r for r in probes.probe_api("deployment", api_url, settings)}
        api = results["api"]
        version = api.details.get("version")
        observed = version or observed
        if api.status == probes.UNHEALTHY:
            reason = redactor(api.reason)
        elif version != expected_version:
            reason = f"/health reports version {version!r}, expected {expected_version!r}"
        else:
            return VerificationOutcome(True, f"version {expected_version} is healthy", version, attempts,
                                       time.monotonic() - started)
        if on_attempt:
            on_attempt(attempts, reason)
        time.sleep(max(0.0, min(poll_interval, deadline - time.monotonic())))
    return VerificationOutcome(False, f"not healthy at version {expected_version} within {timeout_seconds:g}s: "
                                      f"{reason}", observed, attempts, time.monotonic() - started)


@dataclass
class RollbackOutcome:
    attempted: bool
    ok: bool
    summary: str
    output: str
    seconds: float


def rollback_variables(environment: str) -> tuple[str, str]:
    prefix = ENVIRONMENT_PREFIXES.get(environment, "")
    return f"{prefix}ROLLBACK_COMMAND", f"{prefix}ROLLBACK_WEBHOOK_URL"


def run_rollback(environment: EnvironmentConfig, expected_version: str, observed_version: str | None,
                 reason: str, timeout_seconds: float = DEFAULT_ROLLBACK_TIMEOUT_SECONDS,
                 redactor: Redactor | None = None) -> RollbackOutcome:
    """Run ``<ENV>_ROLLBACK_COMMAND`` (through the shell), or else POST to ``<ENV>_ROLLBACK_WEBHOOK_URL``."""
    redactor = redactor or Redactor.from_environ()
    started = time.monotonic()
    if environment.rollback_command:
        outcome = _run_command(environment, expected_version, observed_version, reason, timeout_seconds, redactor)
    elif environment.rollback_webhook_url:
        outcome = _call_webhook(environment, expected_version, observed_version, reason, timeout_seconds)
    else:
        command_var, webhook_var = rollback_variables(environment.name)
        return RollbackOutcome(False, False, f"no rollback configured (set {command_var} or {webhook_var})", "", 0.0)
    ok, summary, output = outcome
    return RollbackOutcome(True, ok, redactor(summary), tail(redactor(output), lines=40, limit=4000),
                           time.monotonic() - started)


def _run_command(environment: EnvironmentConfig, expected_version: str, observed_version: str | None,
                 reason: str, timeout_seconds: float, redactor: Redactor) -> tuple[bool, str, str]:
    """The rollback command through ``lib/commands`` (the migrate command's runner), with an
    allow-listed environment: the environment's ``DATABASE_URL`` and the ``OPS_*`` facts."""
    try:
        env = command_environment({"DATABASE_URL": environment.database_url, "OPS_ENVIRONMENT": environment.name,
                                   "OPS_EXPECTED_VERSION": expected_version,
                                   "OPS_OBSERVED_VERSION": observed_version or "", "OPS_FAILURE_REASON": reason})
    except ConfigError as error:
        return False, f"rollback command not run: {error}", ""
    try:
        result = run_shell_command(environment.rollback_command, env, timeout_seconds, redactor,
                                   name="rollback command")
    except OSError as error:
        return False, f"rollback command could not start: {describe(error)}", ""
    summary = "rollback command succeeded" if result.ok else result.summary
    return result.ok, summary, result.output


def _call_webhook(environment: EnvironmentConfig, expected_version: str, observed_version: str | None,
                  reason: str, timeout_seconds: float) -> tuple[bool, str, str]:
    payload = {"environment": environment.name, "expected_version": expected_version,
               "observed_version": observed_version, "reason": reason}
    try:
        response = httpx.post(environment.rollback_webhook_url, json=payload, timeout=timeout_seconds,
                              trust_env=False)
    except httpx.HTTPError as error:
        return False, f"rollback webhook failed: {probes.describe_error(error, environment.rollback_webhook_url)}", ""
    body = response.text[:2000]
    if not 200 <= response.status_code < 300:
        return False, f"rollback webhook answered HTTP {response.status_code}", body
    return True, f"rollback webhook accepted (HTTP {response.status_code})", body
