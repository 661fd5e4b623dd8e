"""Post-deployment verification with an automatic rollback hook."""


import dagster as dg

from ops_platform.config import ENVIRONMENT_PREFIXES, ConfigError, get_environment
from ops_platform.defs.alerts.marking import mark_alerted
from ops_platform.defs.health.assets import component_asset_key
from ops_platform.defs.resources import OpsSlackResource
from ops_platform.defs.settings import DeploymentSettings
from ops_platform.lib import deploy
from ops_platform.lib.messages import deployments as messages
from ops_platform.lib.messages.common import run_url
from ops_platform.lib.redact import Redactor
from ops_platform.lib.tags import ENVIRONMENT, KIND, MAX_RETRIES, MAX_RUNTIME


class VerifyDeploymentConfig(dg.Config):
    environment: str
    expected_version: str
    timeout_seconds: float = deploy.DEFAULT_VERIFY_TIMEOUT_SECONDS
    poll_interval_seconds: float | None = None
    rollback_timeout_seconds: float | None = None


def _fail(context, message: str, **metadata) -> dg.Failure:
    mark_alerted(context.instance, context.run_id)
    return dg.Failure(description=message, metadata=metadata, allow_retries=False)


@dg.op(description="Poll /health until the expected version is healthy; otherwise run the rollback hook.")
def verify_deployment(context: dg.OpExecutionContext, config: VerifyDeploymentConfig, slack: OpsSlackResource,
                      deployment_settings: DeploymentSettings):
    name, version = config.environment, config.expected_version
    context.instance.add_run_tags(context.run_id, {ENVIRONMENT: name})
    redactor = Redactor.from_environ()
    deployment_settings.require_valid(f"verification of {name}")
    try:
        deployment_settings.limits().check(config.timeout_seconds, config.rollback_timeout_seconds,
                                           config.poll_interval_seconds)
    except ConfigError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    poll_interval = config.poll_interval_seconds or deployment_settings.poll_interval_seconds
    rollback_timeout = config.rollback_timeout_seconds or deployment_settings.rollback_timeout_seconds
    # The hold on health alerts follows this tag, whatever the launcher set: now it is the run's own bound.
    context.instance.add_run_tags(context.run_id, {
        MAX_RUNTIME: str(int(deploy.max_runtime_seconds(config.timeout_seconds, rollback_timeout)))})
    try:
        environment = get_environment(name)
    except ConfigError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    if not environment.api_url:
        raise dg.Failure(description=f"{ENVIRONMENT_PREFIXES[name]}API_URL is not set; cannot verify a "
                                     f"deployment of {name}", allow_retries=False)
    notifier = slack.notifier(context.log)
    link = run_url(context.run_id)
    notifier.post(messages.deployment_started(name, version, config.timeout_seconds, link))
    context.log.info(f"verifying {name} at version {version} within {config.timeout_seconds:g}s")

    def progress(attempt: int, reason: str) -> None:
        context.log.info(f"attempt {attempt}: {reason}")

    outcome = deploy.wait_for_version(environment.api_url, version, config.timeout_seconds,
                                      poll_interval=poll_interval, redactor=redactor, on_attempt=progress)
    api_key = component_asset_key(name, "api")
    if outcome.ok:
        notifier.post(messages.deployment_succeeded(name, version, outcome.seconds, link))
        context.log_event(dg.AssetObservation(asset_key=api_key, metadata={
            "deployed_version": version, "verified_in_seconds": dg.MetadataValue.float(round(outcome.seconds, 2)),
            "attempts": outcome.attempts, "outcome": "succeeded"}))
        return
    context.log.warning(outcome.reason)
    rollback = deploy.run_rollback(environment, version, outcome.observed_version, outcome.reason,
                                   rollback_timeout, redactor)
    context.log.info(f"rollback: {rollback.summary}" + (f"\n{rollback.output}" if rollback.output else ""))
    notifier.post(messages.deployment_failed(name, version, outcome.reason,
                                                    rollback.ok if rollback.attempted else None,
                                                    rollback.summary, rollback.output, link))
    context.log_event(dg.AssetObservation(asset_key=api_key, metadata={
        "failed_version": version, "observed_version": outcome.observed_version or "none",
        "rollback": rollback.summary, "reason": outcome.reason,
        # read by the operations report (defs/insight): failed, rolled_back or rollback_failed
        "outcome": ("rolled_back" if rollback.ok else "rollback_failed") if rollback.attempted else "failed"}))
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
                "timeouts plus a margin, which DEPLOY_MAX_TIMEOUT_SECONDS and DEPLOY_ROLLBACK_TIMEOUT_SECONDS "
                "bound), and the hold is announced in Slack when it starts and ends.",
    tags={MAX_RETRIES: "0", KIND: "deployment",
          MAX_RUNTIME: str(int(deploy.max_runtime_seconds(deploy.DEFAULT_VERIFY_TIMEOUT_SECONDS,
                                                          deploy.DEFAULT_ROLLBACK_TIMEOUT_SECONDS)))},
)
def verify_deployment_job():
    verify_deployment()
