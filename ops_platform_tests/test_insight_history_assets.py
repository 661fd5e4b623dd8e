"""uptime and backup_history as Dagster assets, on fabricated history with known answers: health
check results recorded in the instance, backups in the local folder and the moto S3 bucket, failed
backup and drill runs in the run history."""

from __future__ import annotations

import time
from datetime import timedelta

import dagster as dg
import pytest

from ops_platform.defs.insight import history as history_defs
from ops_platform.defs.insight import records
from ops_platform.defs.resources import BackupStorageResource
from ops_platform.lib.stores import S3Store, make_s3_client
from ops_platform_tests.conftest import S3_BUCKET, platform_resources
from ops_platform_tests.dagster_private import DagsterRunStatus
from ops_platform_tests.insight_helpers import add_run, hours_ago, now_utc, record_health, write_backup

STEP = 600.0  # one fabricated check every 10 minutes: each covers the time until the next


def test_uptime_from_the_recorded_health_checks(instance, monkeypatch):
    """Six hours of checks every 10 minutes; the api is down for three of them (30 minutes)."""
    monkeypatch.setattr(records, "PAGE", 7)  # many pages, replayed oldest first through the spool
    start = time.time() - 36 * STEP
    for index in range(36):
        at = start + index * STEP
        record_health(instance, at, "production", "api", ok=not 10 <= index < 13, latency_ms=120.0)
        record_health(instance, at, "production", "postgres", ok=True, latency_ms=40.0)
    record_health(instance, start, "staging", "api", ok=False)  # another environment's: not read
    result = dg.materialize([history_defs.uptime], partition_key="production", instance=instance)
    [materialization] = result.asset_materializations_for_node("uptime")
    metadata = materialization.metadata
    assert materialization.partition == "production"
    assert metadata["results_read"].value == 72
    availability = metadata["api_availability_24h"]
    assert isinstance(availability, dg.FloatMetadataValue)
    assert availability.value == pytest.approx(100 * (1 - 1800 / 21600), abs=0.01)  # 91.67 %
    assert metadata["postgres_availability_7d"].value == 100.0
    assert metadata["api_p50_ms_7d"].value == 120.0 and metadata["postgres_p95_ms_7d"].value == 40.0
    assert metadata["incidents_7d"].value == 1 and metadata["downtime_7d_seconds"].value == pytest.approx(1800)
    rows = {row.data["component"]: row.data for row in metadata["by_component"].records}
    assert rows["api"]["availability_24h"] == "91.67 %" and rows["api"]["longest_down_7d"] == "30m 00s"
    assert rows["api"]["observed_7d"] == "4 %"  # six hours of a week: availability is not coverage
    figures = records.metadata_json(metadata["uptime"].value)
    assert {(item["component"], item["window"]) for item in figures} == {
        (component, window) for component in ("api", "postgres") for window in ("24h", "7d", "30d")}


def test_uptime_with_no_history_materializes_empty(instance):
    result = dg.materialize([history_defs.uptime], partition_key="staging", instance=instance)
    [materialization] = result.asset_materializations_for_node("uptime")
    assert materialization.metadata["results_read"].value == 0
    assert materialization.metadata["by_component"].records == []


def test_backup_history_from_manifests_s3_and_runs(instance, tmp_path, s3_bucket):
    local_root = tmp_path / "backups"
    newest = write_backup(local_root, "production", hours_ago(2), stored=5000)
    drilled = write_backup(local_root, "production", hours_ago(26), stored=4000, duration=10.0,
                           drill={"at": (now_utc() - timedelta(hours=20)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                  "passed": True, "seconds": 42.0, "run_id": "drill-run", "summary": "ok"})
    write_backup(local_root, "production", hours_ago(50), stored=3000, verified=False)
    write_backup(local_root, "staging", hours_ago(3), stored=999)  # another environment's: not counted
    s3 = S3Store(make_s3_client(), S3_BUCKET, "backups")
    s3_bucket.put_object(Bucket=S3_BUCKET, Key=s3.key("production", newest.artifact), Body=b"\0" * 5000)
    s3.write_manifest(newest)
    add_run(instance, "backup_job", tags={"dagster/partition": "production"})
    add_run(instance, "backup_job", DagsterRunStatus.SUCCESS, tags={"dagster/partition": "production"})
    add_run(instance, "backup_job", tags={"dagster/partition": "staging"})
    add_run(instance, "restore_drill_job", tags={"dagster/partition": "production"})
    resources = platform_resources(backup_storage=BackupStorageResource(backup_dir=str(local_root)))
    result = dg.materialize([history_defs.backup_history], partition_key="production", instance=instance,
                            resources=resources)
    [materialization] = result.asset_materializations_for_node("backup_history")
    metadata = materialization.metadata
    assert isinstance(metadata["backups_7d"], dg.IntMetadataValue)
    assert (metadata["backups_1d"].value, metadata["backups_7d"].value, metadata["verified_7d"].value) == (1, 3, 2)
    assert metadata["failed_runs_1d"].value == 1 and metadata["failed_runs_30d"].value == 1
    assert metadata["newest_verified"].value == newest.id
    assert metadata["newest_verified_age_hours"].value == pytest.approx(2, abs=0.1)
    assert metadata["local_bytes"].value == 12000 and metadata["s3_bytes"].value == 5000
    assert metadata["last_successful_drill"].value.endswith(f"({drilled.id})")
    assert metadata["last_drill_failed"].value.endswith(": the run failed")  # a drill run that chose no backup
    history = records.metadata_json(metadata["history"].value)
    assert history["environment"] == "production" and history["s3_count"] == 1
