"""Post-deployment verification with an automatic rollback hook."""


import dagster as dg

from ops_platform.config import ConfigError, ENVIRONMENT_PREFIXES, get_environment
from ops_platform.defs.health import assets as health_assets
from ops_platform.defs.resources import OpsSlackResource, mark_alerted, run_url
from ops_platform.lib import deploy, health_messages
from ops_platform.lib.redact import Redactor

MAX_RUNTIME_TAG = "dagster/max_runtime_seconds"
DEFAULT_VERIFY_TIMEOUT_SECONDS = 300.0
# Slack posts (started, result), the last /health poll and the rollback's own cleanup on top of
# the verification and rollback timeouts.
RUNTIME_MARGIN_SECONDS = 300.0


def max_runtime_seconds(timeout_seconds: float | None = None, rollback_timeout_seconds: float | None = None,
                        environ=None) -> float:
    """The longest a verification run can legitimately take: the verification timeout, the
    rollback timeout and a margin. Past it the run is dead (its process was killed)."""
    if not rollback_timeout_seconds:
        try:
            rollback_timeout_seconds = deploy.env_seconds(environ, "DEPLOY_ROLLBACK_TIMEOUT_SECONDS",
                                                          deploy.DEFAULT_ROLLBACK_TIMEOUT_SECONDS)
        except ConfigError:
            rollback_timeout_seconds = deploy.DEFAULT_ROLLBACK_TIMEOUT_SECONDS
    return float(timeout_seconds or DEFAULT_VERIFY_TIMEOUT_SECONDS) + float(rollback_timeout_seconds) \
        + RUNTIME_MARGIN_SECONDS


class VerifyDeploymentConfig(dg.Config):
    environment: str
    expected_version: str
    timeout_seconds: float = DEFAULT_VERIFY_TIMEOUT_SECONDS
    poll_interval_seconds: float | None = None
    rollback_timeout_seconds: float | None = None


def _fail(context, message: str, **metadata) -> dg.Failure:
    mark_alerted(context.instance, context.run_id)
    return dg.Failure(description=message, metadata=metadata, allow_retries=False)


@dg.op(description="Poll /health until the expected version is healthy; otherwise run the rollback hook.")
def verify_deployment(context: dg.OpExecutionContext, config: VerifyDeploymentConfig, slack: OpsSlackResource):
    name, version = config.environment, config.expected_version
    context.instance.add_run_tags(context.run_id, {health_assets.ENVIRONMENT_TAG: name})
    redactor = Redactor.from_environ()
    try:
        environment = get_environment(name)
        poll_interval = config.poll_interval_seconds or deploy.env_seconds(
            None, "DEPLOY_POLL_INTERVAL_SECONDS", deploy.DEFAULT_POLL_INTERVAL_SECONDS)
        rollback_timeout = config.rollback_timeout_seconds or deploy.env_seconds(
            None, "DEPLOY_ROLLBACK_TIMEOUT_SECONDS", deploy.DEFAULT_ROLLBACK_TIMEOUT_SECONDS)
    except ConfigError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    if not environment.api_url:
        raise dg.Failure(description=f"{ENVIRONMENT_PREFIXES[name]}API_URL is not set; cannot verify a "
                                     f"deployment of {name}", allow_retries=False)
    if config.timeout_seconds <= 0:
        raise dg.Failure(description=f"timeout must be > 0 seconds, got {config.timeout_seconds:g}",
                         allow_retries=False)
    notifier = slack.notifier(context.log)
    link = run_url(context.run_id)
    notifier.post(health_messages.deployment_started(name, version, config.timeout_seconds, link))
    context.log.info(f"verifying {name} at version {version} within {config.timeout_seconds:g}s")

    def progress(attempt: int, reason: str) -> None:
        context.log.info(f"attempt {attempt}: {reason}")

    outcome = deploy.wait_for_version(environment.api_url, version, config.timeout_seconds,
                                      poll_interval=poll_interval, redactor=redactor, on_attempt=progress)
    api_key = health_assets.component_asset_key(name, "api")
    if outcome.ok:
        notifier.post(health_messages.deployment_succeeded(name, version, outcome.seconds, link))
        context.log_event(dg.AssetObservation(asset_key=api_key, metadata={
            "deployed_version": version, "verified_in_seconds": dg.MetadataValue.float(round(outcome.seconds, 2)),
            "attempts": outcome.attempts}))
        return
    context.log.warning(outcome.reason)
    rollback = deploy.run_rollback(environment, version, outcome.observed_version, outcome.reason,
                                   rollback_timeout, redactor)
    context.log.info(f"rollback: {rollback.summary}" + (f"\n{rollback.output}" if rollback.output else ""))
    notifier.post(health_messages.deployment_failed(name, version, outcome.reason,
                                                    rollback.ok if rollback.attempted else None,
                                                    rollback.summary, rollback.output, link))
    context.log_event(dg.AssetObservation(asset_key=api_key, metadata={
        "failed_version": version, "observed_version": outcome.observed_version or "none",
        "rollback": rollback.summary}))
    if rollback.ok:
        verdict = "rolled back"
    elif rollback.attempted:
        verdict = f"rollback failed ({rollback.summary})"
    else:
        verdict = rollback.summary
    raise _fail(context, f"deployment of {version} to {name} failed, {verdict}: {outcome.reason}",
                rollback_output=dg.MetadataValue.md(f"```\n{rollback.output}\n```") if rollback.output else "")


@dg.job(
    name="verify_deployment_job",
    description="Verify a deployment: post 'deployment started', poll the environment's /health until it is "
                "healthy at the expected version within the time budget, then post the result. When it is "
                "not, run <ENV>_ROLLBACK_COMMAND (or POST to <ENV>_ROLLBACK_WEBHOOK_URL) and fail. Periodic "
                "health alerts for the environment are held while it runs (at most its max runtime: the "
                "timeouts plus a margin; launches with other timeouts set their own tag).",
    tags={"dagster/max_retries": "0", "ops_platform/kind": "deployment",
          MAX_RUNTIME_TAG: str(int(max_runtime_seconds(DEFAULT_VERIFY_TIMEOUT_SECONDS,
                                                       deploy.DEFAULT_ROLLBACK_TIMEOUT_SECONDS)))},
)
def verify_deployment_job():
    verify_deployment()
