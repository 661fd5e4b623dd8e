"""The database_backup asset end to end: real PostgreSQL, moto S3, the Slack test server and a
Dagster instance. Also the secrets rule: the password appears nowhere."""

from __future__ import annotations

import json

import dagster as dg

from ops_platform.defs.backups import assets as backup_assets
from ops_platform.defs.resources import (
    BackupBucketResource,
    BackupStorageResource,
    OpsSlackResource,
)
from ops_platform.lib.artifacts import Manifest
from ops_platform.lib.tags import ALERTED, BACKUP_KIND
from ops_platform_tests.backup_helpers import (  # noqa: F401 - fixtures
    big_database,
    empty_database,
    terminate_dump_when_streaming,
)
from ops_platform_tests.conftest import (
    AWS_SECRET,
    DB_PASSWORD,
    DB_USER,
    S3_BUCKET,
    SLACK_TOKEN,
    database_url,
    platform_resources,
)


def materialize(instance, environment, slack, backup_dir, s3=True, tags=None):
    return dg.materialize(
        [backup_assets.database_backup],
        partition_key=environment,
        instance=instance,
        resources=platform_resources(slack=slack, backup_storage=BackupStorageResource(backup_dir=str(backup_dir)),
                                     backup_bucket=BackupBucketResource(bucket=S3_BUCKET if s3 else None)),
        raise_on_error=False,
        tags=tags or {},
    )


def check_results(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def event_log_text(instance, run_id) -> str:
    return "\n".join(str(entry) for entry in instance.all_logs(run_id))


def test_backup_to_local_and_s3_is_verified_and_reported(databases, instance, slack_resource, slack_server,
                                                         backup_dir, s3_bucket):
    result = materialize(instance, "production", slack_resource, backup_dir,
                         tags={BACKUP_KIND: "scheduled"})
    assert result.success
    checks = check_results(result)
    assert {name: c.passed for name, c in checks.items()} == {
        "decodes_completely": True, "not_empty": True, "s3_copy_matches": True, "size_not_dropped": True}

    metadata = result.asset_materializations_for_node("database_backup")[0].metadata
    for key in ("stored_bytes", "raw_bytes", "compression_ratio", "duration_seconds", "throughput_mb_per_s",
                "sha256", "destinations", "server_version", "table_row_counts"):
        assert key in metadata, key
    assert metadata["table_row_counts"].value == {"public.customers": 500, "public.orders": 2000}

    backup_id = metadata["backup_id"].value
    manifest = Manifest.from_json((backup_dir / "production" / f"{backup_id}.manifest.json").read_text())
    assert manifest.verified and manifest.kind == "scheduled"
    assert manifest.sha256 == metadata["sha256"].value
    assert manifest.verification["decodes_completely"]["passed"]
    assert manifest.locations == [str(backup_dir / "production" / manifest.artifact),
                                  f"s3://{S3_BUCKET}/backups/production/{manifest.artifact}"]
    s3_manifest = json.loads(s3_bucket.get_object(
        Bucket=S3_BUCKET, Key=f"backups/production/{backup_id}.manifest.json")["Body"].read())
    assert s3_manifest["sha256"] == manifest.sha256
    # The checksum S3 keeps for the artifact, recorded at upload so later checks need no download.
    head = s3_bucket.head_object(Bucket=S3_BUCKET, Key=f"backups/production/{manifest.artifact}",
                                 ChecksumMode="ENABLED")
    assert manifest.s3_checksum == s3_manifest["s3_checksum"] == f"SHA256:{head['ChecksumSHA256']}"
    assert checks["s3_copy_matches"].metadata["s3_checksum"].value == manifest.s3_checksum

    texts = slack_server.texts()
    assert len(texts) == 2  # one bot-token message, one webhook message
    assert "backup succeeded" in texts[0] and "production" in texts[0] and backup_id in texts[0]
    assert "duration" in texts[0] and "KB" in texts[0]


def test_slack_answering_500_never_fails_the_backup(databases, instance, slack_resource, slack_server,
                                                   backup_dir, s3_bucket):
    slack_server.fail_status = 500
    result = materialize(instance, "production", slack_resource, backup_dir)
    assert result.success
    assert len(slack_server.requests) >= 4, "expected retries against both Slack destinations"
    logs = event_log_text(instance, result.run_id)
    assert "Slack delivery via" in logs


def test_unreachable_database_fails_with_one_alert(instance, slack_server, backup_dir, s3_bucket, monkeypatch):
    monkeypatch.setenv("PRODUCTION_DATABASE_URL", f"postgresql://ops_test:{DB_PASSWORD}@127.0.0.1:1/nowhere")
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url, max_retries=0)
    result = materialize(instance, "production", slack, backup_dir)
    assert not result.success
    texts = slack_server.texts()
    assert len(texts) == 1
    assert "backup failed" in texts[0] and "connect" in texts[0]
    assert DB_PASSWORD not in slack_server.all_bodies()
    assert instance.get_run_by_id(result.run_id).tags.get(ALERTED) == "true"
    assert "(after 3 attempts)" in texts[0]  # a refused connection is retried (BACKUP_RETRIES=2), alerted once
    assert not [path for path in backup_dir.rglob("*") if path.is_file()]


def test_missing_pg_dump_fails_at_the_pg_dump_step_with_one_alert(databases, instance, slack_server, backup_dir,
                                                                   s3_bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url, max_retries=0)
    result = materialize(instance, "production", slack, backup_dir)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_failure_data.user_failure_data.description == (
        "backup of production failed at pg_dump: pg_dump not found on PATH (install the PostgreSQL client)")
    texts = slack_server.texts()
    assert len(texts) == 1 and "failed step: pg_dump" in texts[0] and "not found on PATH" in texts[0]
    assert [p for p in backup_dir.rglob("*") if p.is_file()] == []


def test_dump_killed_midway_is_retried_and_alerted_once(big_database, instance, slack_server, backup_dir, s3_bucket):
    """A terminated backend (a database restart at 02:00) is transient: the backup is tried again."""
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url, max_retries=0)
    killer = terminate_dump_when_streaming(big_database, backup_dir)
    result = materialize(instance, "production", slack, backup_dir)
    killer.join()
    assert killer.result.get("terminated")
    assert result.success
    texts = slack_server.texts()
    assert len(texts) == 1 and "backup succeeded" in texts[0] and "attempt 2" in texts[0]
    backups = [p.name for p in backup_dir.rglob("*.manifest.json")]
    assert len(backups) == 1 and not list(backup_dir.rglob(".*.partial"))
    uploads = s3_bucket.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", [])
    assert uploads == []


def test_dump_killed_midway_fails_the_run_with_one_alert(big_database, instance, slack_server, backup_dir, s3_bucket,
                                                         monkeypatch):
    monkeypatch.setenv("BACKUP_RETRIES", "0")
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url, max_retries=0)
    killer = terminate_dump_when_streaming(big_database, backup_dir)
    result = materialize(instance, "production", slack, backup_dir)
    killer.join()
    assert killer.result.get("terminated")
    assert not result.success
    assert [name for name in (p.name for p in backup_dir.rglob("*")) if not name == "production"] == []
    assert s3_bucket.list_objects_v2(Bucket=S3_BUCKET).get("KeyCount") == 0
    assert s3_bucket.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", []) == []
    texts = slack_server.texts()
    assert len(texts) == 1 and "pg_dump" in texts[0]


def test_empty_database_fails_a_blocking_check_and_is_not_verified(empty_database, instance, slack_server,
                                                                  backup_dir, s3_bucket):
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url)
    result = materialize(instance, "staging", slack, backup_dir)
    checks = check_results(result)
    assert checks["not_empty"].passed is False
    assert not result.success, "a failed blocking check must fail the run"
    manifests = list((backup_dir / "staging").glob("*.manifest.json"))
    assert len(manifests) == 1
    assert Manifest.from_json(manifests[0].read_text()).verified is False
    texts = slack_server.texts()
    assert len(texts) == 1 and "verification" in texts[0] and "no tables" in texts[0]


def test_size_drop_is_a_warning(databases, big_database, instance, slack_server, backup_dir, s3_bucket):
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url)
    assert materialize(instance, "production", slack, backup_dir, s3=False).success
    from ops_platform_tests.conftest import reset_database

    reset_database("production")
    import time

    time.sleep(1.1)  # backup ids have one-second resolution
    result = materialize(instance, "production", slack, backup_dir, s3=False)
    assert result.success
    check = check_results(result)["size_not_dropped"]
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    assert "size dropped" in slack_server.texts()[-1]


def test_size_not_dropped_compares_the_uncompressed_dump(databases, instance, slack_server, backup_dir):
    """A 100 KB random block repeated 20 times: zstd's window finds the repeats, gzip's 32 KB one
    cannot, so the stored size moves about tenfold with the compression setting while the data
    does not. Switching gzip -> zstd must not look like a drop; deleting most of the data must be
    one even when the switch back to gzip makes the file larger."""
    from ops_platform_tests.conftest import psql

    psql(f"SET ROLE {DB_USER}; CREATE TABLE blobs (id int PRIMARY KEY, body text); "
         "INSERT INTO blobs SELECT g, b FROM generate_series(1, 20) g, "
         "(SELECT string_agg(md5(random()::text), '') AS b FROM generate_series(1, 3200)) s",
         database=databases["production"])
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url)

    def backup(compression: str, level: str) -> tuple[dict, dict]:
        import time

        time.sleep(1.1)  # backup ids have one-second resolution
        storage = BackupStorageResource(backup_dir=str(backup_dir), compression=compression, compression_level=level)
        result = dg.materialize([backup_assets.database_backup], partition_key="production", instance=instance,
                                resources=platform_resources(slack=slack, backup_storage=storage,
                                                             backup_bucket=BackupBucketResource(bucket=None)))
        assert result.success
        return result.asset_materializations_for_node("database_backup")[0].metadata, check_results(result)

    gzip_metadata, _ = backup("gzip", "1")
    zstd_metadata, checks = backup("zstd", "19")
    assert zstd_metadata["stored_bytes"].value < 0.5 * gzip_metadata["stored_bytes"].value  # the would-be fake drop
    assert checks["size_not_dropped"].passed, checks["size_not_dropped"].description

    psql("DELETE FROM blobs WHERE id > 2", database=databases["production"])
    smaller_metadata, checks = backup("gzip", "1")
    assert smaller_metadata["stored_bytes"].value >= 0.5 * zstd_metadata["stored_bytes"].value  # would be hidden
    assert smaller_metadata["raw_bytes"].value < 0.5 * zstd_metadata["raw_bytes"].value
    check = checks["size_not_dropped"]
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    assert "uncompressed dump size dropped to" in check.description
    assert check.metadata["previous_raw_bytes"].value == zstd_metadata["raw_bytes"].value


def test_missing_s3_bucket_at_run_time_is_reported(databases, instance, slack_server, backup_dir):
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url)
    result = materialize(instance, "development", slack, backup_dir, s3=False)
    assert result.success
    assert check_results(result)["s3_copy_matches"].passed is False


def test_no_secret_reaches_logs_metadata_or_slack(databases, instance, slack_resource, slack_server,
                                                  backup_dir, s3_bucket, monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", SLACK_TOKEN)
    ok = materialize(instance, "production", slack_resource, backup_dir)
    monkeypatch.setenv("STAGING_DATABASE_URL", database_url("staging").replace("127.0.0.1:5432", "127.0.0.1:1"))
    failed = materialize(instance, "staging", slack_resource, backup_dir)
    assert ok.success and not failed.success
    secrets = (DB_PASSWORD, AWS_SECRET, SLACK_TOKEN)
    for run_id in (ok.run_id, failed.run_id):
        text = event_log_text(instance, run_id)
        run = instance.get_run_by_id(run_id)
        assert not any(secret in text for secret in secrets)
        assert not any(secret in json.dumps(run.run_config) for secret in secrets)
    manifest_text = "".join(p.read_text() for p in backup_dir.rglob("*.manifest.json"))
    assert not any(secret in manifest_text for secret in secrets)
    slack_text = "\n".join(r.body.decode() for r in slack_server.messages())
    assert not any(secret in slack_text for secret in secrets)
    assert len(slack_server.messages()) == 4


def test_s3_failing_mid_upload_keeps_a_verified_local_backup_and_warns(
        big_database, instance, slack_server, backup_dir, s3_bucket, monkeypatch):
    from ops_platform_tests.backup_helpers import S3FaultProxy

    proxy = S3FaultProxy(__import__("os").environ["AWS_ENDPOINT_URL_S3"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    proxy.fail_parts_after = 1
    try:
        slack = OpsSlackResource(webhook_url=slack_server.webhook_url)
        result = materialize(instance, "production", slack, backup_dir)
    finally:
        proxy.close()
    assert result.success, "the local backup stands"
    checks = check_results(result)
    assert checks["decodes_completely"].passed and not checks["s3_copy_matches"].passed
    assert "S3 upload failed" in checks["s3_copy_matches"].description
    manifest = Manifest.from_json(next((backup_dir / "production").glob("*.manifest.json")).read_text())
    assert manifest.verified and manifest.locations == [str(backup_dir / "production" / manifest.artifact)]
    assert s3_bucket.list_objects_v2(Bucket=S3_BUCKET).get("KeyCount") == 0
    assert s3_bucket.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", []) == []
    texts = slack_server.texts()
    assert len(texts) == 1 and "backup succeeded" in texts[0] and "S3 upload failed" in texts[0]
