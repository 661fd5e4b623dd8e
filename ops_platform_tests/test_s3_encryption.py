"""S3 server-side encryption (AWS_S3_SSE, AWS_S3_SSE_KMS_KEY_ID): every object the platform writes
(the streamed multipart upload, the upload of the finished file, manifests, the drill's manifest
rewrite, the health canary) asks for it, s3_copy_matches confirms what S3 reports, and a store that
drops it is caught. Without the setting nothing changes; a bad value is one line.

Real moto S3 behind the fault proxy, which records the headers of every request and can drop the
encryption headers as a store ignoring them would; real PostgreSQL and Dagster runs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from ops_platform.config import EnvironmentConfig
from ops_platform.definitions import defs
from ops_platform.defs.backups import assets as backup_assets
from ops_platform.defs.health.assets import build_probes
from ops_platform.defs.resources import BackupBucketResource, BackupStorageResource, build_resources
from ops_platform.defs.settings import RestoreSettings
from ops_platform.lib import settings
from ops_platform.lib.backup import check_s3_copy
from ops_platform.lib.dump import UPLOAD_ARGS, DumpResult, S3Leg, S3LegResult
from ops_platform.lib.probes import UNHEALTHY, ProbeSettings, run_sweep
from ops_platform.lib.redact import Redactor
from ops_platform.lib.s3_encryption import ServerSideEncryption, kms_key_matches
from ops_platform.lib.stores import S3Store
from ops_platform_tests.backup_helpers import fill_big_table, s3_fault_proxy  # noqa: F401 - fixture
from ops_platform_tests.conftest import S3_BUCKET, database_url, platform_resources
from ops_platform_tests.restore_e2e_helpers import CLI, ROOT

KMS_KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SSE_HEADER = "x-amz-server-side-encryption"
KMS_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"


def object_writes(proxy) -> list[tuple[str, str, dict]]:
    """Every request that creates an object: PutObject and CreateMultipartUpload (its parts
    inherit the upload's encryption and carry no header of their own)."""
    return [(method, path, headers) for method, path, headers in proxy.headers
            if (method == "PUT" and "partNumber=" not in path and path.strip("/").count("/") >= 1)
            or (method == "POST" and path.endswith("?uploads"))]


def backup(instance, environment: str, backup_dir: Path):
    return dg.materialize(
        [backup_assets.database_backup], partition_key=environment, instance=instance, raise_on_error=False,
        resources=platform_resources(backup_storage=BackupStorageResource(backup_dir=str(backup_dir))))


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def backup_keys(result, environment: str) -> tuple[str, str]:
    backup_id = result.asset_materializations_for_node("database_backup")[0].metadata["backup_id"].value
    return f"backups/{environment}/{backup_id}.dump.zst", f"backups/{environment}/{backup_id}.manifest.json"


def bucket_probe():
    """One health sweep of production's bucket with the backup bucket as the code location binds it."""
    with dg.build_resources({"backup_bucket": build_resources(os.environ)["backup_bucket"]}) as built:
        sweep = run_sweep(build_probes([EnvironmentConfig("production", database_url("production"))],
                                       ProbeSettings(), built.backup_bucket))
    [result] = [result for result in sweep.results if result.component == "bucket"]
    return result


def encryption_of(client, key: str) -> tuple[str | None, str | None]:
    head = client.head_object(Bucket=S3_BUCKET, Key=key)
    return head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("environ,message", [
    ({"AWS_S3_SSE": "AES-256"}, "AWS_S3_SSE must be AES256 or aws:kms, got 'AES-256'"),
    ({"AWS_S3_SSE": "kms"}, "AWS_S3_SSE must be AES256 or aws:kms, got 'kms'"),
    ({"AWS_S3_SSE": "AES256", "AWS_S3_SSE_KMS_KEY_ID": KMS_KEY},
     "AWS_S3_SSE_KMS_KEY_ID is set, but AWS_S3_SSE is AES256: set AWS_S3_SSE=aws:kms to use the key, or unset it"),
    ({"AWS_S3_SSE_KMS_KEY_ID": KMS_KEY},
     "AWS_S3_SSE_KMS_KEY_ID is set, but AWS_S3_SSE is not set: set AWS_S3_SSE=aws:kms to use the key, or unset it"),
    ({"AWS_S3_SSE": "aws:kms", "AWS_S3_SSE_KMS_KEY_ID": "my key"},
     "AWS_S3_SSE_KMS_KEY_ID must be one word without spaces, got 'my key'"),
])
def test_a_bad_encryption_setting_is_one_line_and_listed_by_the_bucket_resource(environ, message):
    assert settings.problems(settings.S3, environ) == [message]
    bucket = build_resources({"AWS_S3_BUCKET": "b", **environ})["backup_bucket"]
    assert bucket.invalid_settings == [message]
    assert bucket.server_side_encryption is None and bucket.sse_kms_key_id is None


def test_good_encryption_settings_are_bound_by_name_and_understood():
    assert settings.encryption_of({}) is None
    assert settings.encryption_of({"AWS_S3_SSE": "aes256"}) == ServerSideEncryption("AES256")
    environ = {"AWS_S3_BUCKET": "b", "AWS_S3_SSE": "aws:kms", "AWS_S3_SSE_KMS_KEY_ID": KMS_KEY}
    bucket = build_resources(environ)["backup_bucket"]
    assert bucket.invalid_settings == []
    assert bucket.server_side_encryption == dg.EnvVar("AWS_S3_SSE")
    assert bucket.sse_kms_key_id == dg.EnvVar("AWS_S3_SSE_KMS_KEY_ID")
    resolved = BackupBucketResource(bucket="b", server_side_encryption="aws:kms", sse_kms_key_id=KMS_KEY)
    assert resolved.encryption().put_args() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KMS_KEY}
    assert S3Leg(None, "b", "k", resolved.encryption()).upload_args() == {
        **UPLOAD_ARGS, "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KMS_KEY}
    assert S3Leg(None, "b", "k").upload_args() == UPLOAD_ARGS


def test_kms_keys_match_by_id_arn_or_alias():
    key_id = "1234abcd-12ab-34cd-56ef-1234567890ab"
    assert kms_key_matches(key_id, KMS_KEY) and kms_key_matches(KMS_KEY, KMS_KEY) and kms_key_matches(KMS_KEY, key_id)
    assert not kms_key_matches(key_id, KMS_KEY.replace("1234abcd", "9999abcd")) and not kms_key_matches(key_id, None)
    assert kms_key_matches("alias/backups", KMS_KEY)  # S3 reports the key an alias names: only aws:kms is confirmed


@pytest.mark.parametrize("argv", [["backup", "development"], ["restore", "latest", "development", "--yes"],
                                  ["retention", "development"], ["health", "development"]])
def test_cli_refuses_a_bad_encryption_setting_before_any_work(argv, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "BACKUP_DIR": str(tmp_path / "backups"),
           "AWS_S3_SSE": "AES-256"}
    result = subprocess.run([CLI, *argv], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert result.stderr == "ops-platform: error: AWS_S3_SSE must be AES256 or aws:kms, got 'AES-256'\n"
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- what is written


def test_aes256_streamed_multipart_backup_and_its_manifest_are_encrypted(databases, instance, tmp_path, s3_bucket,
                                                                         s3_fault_proxy, monkeypatch):
    monkeypatch.setenv("AWS_S3_SSE", "AES256")
    fill_big_table(databases["production"], rows=200_000)  # about 13 MB stored: a multipart upload
    result = backup(instance, "production", tmp_path / "backups")
    assert result.success
    artifact, manifest = backup_keys(result, "production")
    assert sum(1 for method, path in s3_fault_proxy.requests if method == "PUT" and "partNumber=" in path) >= 2
    assert s3_bucket.head_object(Bucket=S3_BUCKET, Key=artifact)["ContentLength"] > 8 << 20
    assert encryption_of(s3_bucket, artifact) == ("AES256", None)
    assert encryption_of(s3_bucket, manifest) == ("AES256", None)
    writes = object_writes(s3_fault_proxy)
    assert len(writes) == 2 and all(headers.get(SSE_HEADER) == "AES256" for _, _, headers in writes), writes
    check = checks(result)["s3_copy_matches"]
    assert check.passed and "encrypted with AES256" in check.description
    assert check.metadata["s3_encryption"].value == "AES256"
    assert f"s3://{S3_BUCKET}/{artifact}" in json.loads(
        s3_bucket.get_object(Bucket=S3_BUCKET, Key=manifest)["Body"].read())["locations"]


def test_aws_kms_with_a_customer_key_on_the_finished_file_upload_manifests_drill_and_canary(
        databases, instance, tmp_path, s3_bucket, s3_fault_proxy, monkeypatch):
    """The streamed upload fails mid-way, so the finished file is uploaded instead; then a drill
    rewrites the manifest, and a health sweep writes its canary."""
    monkeypatch.setenv("AWS_S3_SSE", "aws:kms")
    monkeypatch.setenv("AWS_S3_SSE_KMS_KEY_ID", KMS_KEY)
    fill_big_table(databases["production"], rows=200_000)
    s3_fault_proxy.fail_first_upload = True
    result = backup(instance, "production", tmp_path / "backups")
    assert result.success
    check = checks(result)["s3_copy_matches"]
    assert check.passed and "uploaded from the finished file" in check.description, check.description
    assert f"encrypted with aws:kms with key {KMS_KEY}" in check.description
    artifact, manifest = backup_keys(result, "production")
    assert encryption_of(s3_bucket, artifact) == ("aws:kms", KMS_KEY)
    assert encryption_of(s3_bucket, manifest) == ("aws:kms", KMS_KEY)

    s3_fault_proxy.headers.clear()
    drill = defs().resolve_job_def("restore_drill_job").execute_in_process(
        instance=instance, partition_key="production", raise_on_error=False,
        resources=platform_resources(backup_storage=BackupStorageResource(backup_dir=str(tmp_path / "backups")),
                                     restore_settings=RestoreSettings(work_dir=str(tmp_path / "work"))))
    assert drill.success
    rewritten = json.loads(s3_bucket.get_object(Bucket=S3_BUCKET, Key=manifest)["Body"].read())
    assert rewritten["drill"]["passed"] is True
    assert encryption_of(s3_bucket, manifest) == ("aws:kms", KMS_KEY)

    assert bucket_probe().status == "healthy"
    writes = object_writes(s3_fault_proxy)
    assert [path.split("/")[3] for _, path, _ in writes] == ["production", ".health"]
    assert all(headers.get(SSE_HEADER) == "aws:kms" and headers.get(KMS_HEADER) == KMS_KEY
               for _, _, headers in writes), writes


def test_without_the_setting_nothing_asks_for_encryption(databases, instance, tmp_path, s3_bucket, s3_fault_proxy):
    result = backup(instance, "production", tmp_path / "backups")
    assert result.success
    artifact, manifest = backup_keys(result, "production")
    assert encryption_of(s3_bucket, artifact) == (None, None) == encryption_of(s3_bucket, manifest)
    check = checks(result)["s3_copy_matches"]
    assert check.passed and "encrypted" not in check.description and "s3_encryption" not in check.metadata
    assert bucket_probe().status == "healthy"
    writes = object_writes(s3_fault_proxy)
    assert len(writes) == 3 and not any(name.startswith(SSE_HEADER) for _, _, headers in writes for name in headers)


# ---------------------------------------------------------------- a store that drops it


def test_a_store_that_drops_encryption_fails_the_check_and_the_canary(databases, instance, tmp_path, s3_bucket,
                                                                     s3_fault_proxy, monkeypatch):
    monkeypatch.setenv("AWS_S3_SSE", "AES256")
    s3_fault_proxy.drop_encryption = True
    result = backup(instance, "production", tmp_path / "backups")
    assert result.success  # the local backup is verified; the off-site copy is not committed
    check = checks(result)["s3_copy_matches"]
    assert not check.passed
    assert check.description.startswith("S3 copy is not encrypted as configured: S3 reports no server-side "
                                        "encryption for it, but AWS_S3_SSE asks for AES256"), check.description
    assert check.metadata["s3_encryption"].value == "none"
    artifact, manifest = backup_keys(result, "production")
    assert not s3_bucket.list_objects_v2(Bucket=S3_BUCKET, Prefix=manifest).get("Contents")
    local_manifest = json.loads((tmp_path / "backups" / "production" / Path(manifest).name).read_text())
    assert local_manifest["locations"] == [str(tmp_path / "backups" / "production" / Path(artifact).name)]

    canary = bucket_probe()
    assert canary.status == UNHEALTHY
    assert canary.reason == (f"canary write on s3://{S3_BUCKET}: S3 reports no server-side encryption for it, "
                             "but AWS_S3_SSE asks for AES256")


def test_s3_copy_matches_names_the_wrong_kms_key(tmp_path, s3_bucket):
    """An object put by hand: without encryption, with another key, then as configured."""
    data = os.urandom(4096)
    path = tmp_path / "production-20270101T000000Z.dump.zst"
    path.write_bytes(data)
    dump = DumpResult(path, 8192, len(data), hashlib.sha256(data).hexdigest(), 1.0,
                      s3=S3LegResult(f"s3://{S3_BUCKET}/backups/production/{path.name}", ok=True))
    store = S3Store(s3_bucket, S3_BUCKET, "backups", ServerSideEncryption("aws:kms", KMS_KEY))
    key = store.key("production", path.name)
    other = KMS_KEY.replace("1234abcd", "9999abcd")

    def check_after(**put):
        s3_bucket.put_object(Bucket=S3_BUCKET, Key=key, Body=data, **put)
        return check_s3_copy(dump, store, "production", path.name, Redactor())

    unencrypted = check_after()
    assert not unencrypted.passed and "S3 reports no server-side encryption for it, but AWS_S3_SSE asks for " \
                                      "aws:kms" in unencrypted.description
    wrong = check_after(ServerSideEncryption="aws:kms", SSEKMSKeyId=other)
    assert not wrong.passed
    assert f"S3 encrypted it with KMS key {other}, not {KMS_KEY} (AWS_S3_SSE_KMS_KEY_ID)" in wrong.description
    right = check_after(ServerSideEncryption="aws:kms", SSEKMSKeyId=KMS_KEY)
    assert right.passed and right.metadata["s3_encryption"] == f"aws:kms {KMS_KEY}"


def test_a_bad_encryption_setting_in_the_code_location_degrades_to_a_local_backup(
        databases, instance, tmp_path, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_S3_SSE", "AES-256")
    result = backup(instance, "production", tmp_path / "backups")
    assert result.success
    check = checks(result)["s3_copy_matches"]
    assert not check.passed and "AWS_S3_SSE must be AES256 or aws:kms, got 'AES-256'" in check.description
    assert "the backup is local only" in check.description
    assert not s3_bucket.list_objects_v2(Bucket=S3_BUCKET).get("Contents")
    assert len(list((tmp_path / "backups" / "production").glob("*.manifest.json"))) == 1
