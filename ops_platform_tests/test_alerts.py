"""The run-failure Slack sensor: every failed run alerts once, through the shared resource."""

from __future__ import annotations

import dagster as dg

from ops_platform.defs.alerts import sensors as alert_sensors
from ops_platform.defs.backups import assets as backup_assets
from ops_platform.defs.resources import BackupStorageResource, OpsSlackResource
from ops_platform_tests.conftest import DB_PASSWORD, platform_resources


@dg.op
def exploding_op():
    raise RuntimeError(f"disk full while writing postgresql://ops:{DB_PASSWORD}@db/app")


@dg.job
def exploding_job():
    exploding_op()


def run_sensor(instance, result, slack):
    run = instance.get_run_by_id(result.run_id)
    failure = next(e for e in instance.all_logs(result.run_id) if e.dagster_event and
                   e.dagster_event.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_slack_sensor", dagster_instance=instance, dagster_run=run,
        dagster_event=failure.dagster_event, resources={"slack": slack},
    ).for_run_failure()
    alert_sensors.run_failure_slack_sensor(context)


def test_unexpected_failure_posts_one_redacted_alert(instance, slack_server):
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url)
    result = exploding_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    run_sensor(instance, result, slack)
    texts = slack_server.texts()
    assert len(texts) == 1
    assert "exploding_job" in texts[0] and "disk full" in texts[0]
    assert DB_PASSWORD not in slack_server.all_bodies()


def test_runs_that_already_alerted_are_not_posted_twice(instance, slack_server, tmp_path, monkeypatch):
    monkeypatch.setenv("STAGING_DATABASE_URL", "postgresql://ops_test@127.0.0.1:1/nowhere")
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url, max_retries=0)
    result = dg.materialize([backup_assets.database_backup], partition_key="staging", instance=instance,
                            resources=platform_resources(slack=slack, backup_storage=BackupStorageResource(backup_dir=str(tmp_path))),
                            raise_on_error=False)
    assert not result.success and len(slack_server.texts()) == 1
    run_sensor(instance, result, slack)
    assert len(slack_server.texts()) == 1
