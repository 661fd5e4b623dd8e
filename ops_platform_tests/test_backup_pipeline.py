"""The streaming dump pipeline (ops_platform.lib.dump) against the real PostgreSQL and moto S3."""

from __future__ import annotations

import os
import stat
import subprocess
import threading

import pytest
import zstandard

from ops_platform.lib.dump import BackupStepError, Compression, S3Leg, run_dump
from ops_platform.lib.stores import make_s3_client
from ops_platform.lib.verify import decode_artifact
from ops_platform_tests.backup_helpers import (  # noqa: F401 - fixtures
    big_database,
    s3_fault_proxy,
    terminate_dump_when_streaming,
    watch_cmdlines,
)
from ops_platform_tests.conftest import DB_PASSWORD, S3_BUCKET, database_url


def test_zstd_dump_restores_by_hand_with_the_readme_command(databases, tmp_path):
    destination = tmp_path / "development" / "development-20260101T000000Z.dump.zst"
    result = run_dump(database_url("development"), destination)
    assert destination.exists() and not list(destination.parent.glob(".*.partial"))
    assert result.stored_bytes == destination.stat().st_size > 0
    assert result.raw_bytes > result.stored_bytes
    # The README's manual restore: zstd -dc <id>.dump.zst | pg_restore --no-owner -d "$DATABASE_URL"
    from ops_platform_tests.conftest import psql

    psql("DROP DATABASE IF EXISTS ops_test_manual_restore")
    psql("CREATE DATABASE ops_test_manual_restore")
    restore = subprocess.run(
        f"zstd -dc {destination} | pg_restore --no-owner -d postgresql://postgres@127.0.0.1/ops_test_manual_restore",
        shell=True, capture_output=True, text=True)
    assert restore.returncode == 0, restore.stderr
    assert psql("SELECT count(*) FROM orders", database="ops_test_manual_restore") == "2000"
    psql("DROP DATABASE ops_test_manual_restore")


def test_gzip_is_selectable_and_decodes(databases, tmp_path):
    destination = tmp_path / "x.dump.gz"
    run_dump(database_url("development"), destination, compression=Compression("gzip", 6))
    decoded = decode_artifact(destination, "gzip")
    assert decoded.ok and decoded.table_row_counts == {"public.customers": 500, "public.orders": 2000}


@pytest.mark.parametrize("name,level", [("lz4", 3), ("zstd", 0), ("zstd", 23), ("gzip", 10)])
def test_bad_compression_settings_are_rejected(name, level):
    with pytest.raises(ValueError, match="compression must be|level must be"):
        Compression(name, level)


def test_password_reaches_pg_dump_only_through_a_0600_passfile(databases, tmp_path, monkeypatch):
    """The passfile is written where this process writes its temporary files (a folder of the
    test's own here, so another session's dumps in /tmp are not counted), 0600, and removed."""
    import tempfile

    from ops_platform_tests.backup_helpers import fill_big_table

    fill_big_table(databases["development"], rows=200_000)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    stop = threading.Event()
    seen, scanner = watch_cmdlines("pg_dump", stop)
    passfiles: dict[str, int] = {}

    def progress(_):
        for entry in temporary.glob("ops_platform_pgpass_*"):
            passfiles[entry.name] = stat.S_IMODE(entry.stat().st_mode)

    run_dump(database_url("development"), tmp_path / "a.dump.zst", progress=progress, progress_interval=0)
    stop.set()
    scanner.join()
    assert seen, "pg_dump was never observed running"
    assert all(DB_PASSWORD not in line and "password=" not in line for line in seen)
    assert passfiles and set(passfiles.values()) == {0o600}
    assert list(temporary.iterdir()) == []


def test_local_and_s3_in_one_pass_with_multipart(big_database, tmp_path, s3_bucket):
    key = "backups/production/production-20260101T000000Z.dump.zst"
    result = run_dump(database_url("production"), tmp_path / "p.dump.zst", s3=S3Leg(s3_bucket, S3_BUCKET, key))
    assert result.s3.ok, result.s3.error
    head = s3_bucket.head_object(Bucket=S3_BUCKET, Key=key)
    assert head["ContentLength"] == result.stored_bytes
    assert "-" in head["ETag"], "expected a multipart upload for a dump larger than one part"
    assert s3_bucket.head_object(Bucket=S3_BUCKET, Key=key, ChecksumMode="ENABLED").get("ChecksumSHA256")
    body = s3_bucket.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read()
    import hashlib

    assert hashlib.sha256(body).hexdigest() == result.sha256
    assert zstandard.ZstdDecompressor().stream_reader(body).read(5) == b"PGDMP"


def test_dump_killed_midway_leaves_nothing_behind(big_database, tmp_path, s3_bucket):
    folder = tmp_path / "production"
    destination = folder / "production-20260101T000000Z.dump.zst"
    key = "backups/production/production-20260101T000000Z.dump.zst"
    killer = terminate_dump_when_streaming(big_database, folder)
    with pytest.raises(BackupStepError) as failure:
        run_dump(database_url("production"), destination, s3=S3Leg(s3_bucket, S3_BUCKET, key))
    killer.join()
    assert killer.result.get("terminated"), "the test did not manage to kill the dump mid-way"
    assert failure.value.step == "pg_dump"
    assert "pg_dump exited with code" in str(failure.value)
    assert DB_PASSWORD not in str(failure.value)
    assert list(folder.iterdir()) == []
    assert s3_bucket.list_objects_v2(Bucket=S3_BUCKET).get("KeyCount") == 0
    assert s3_bucket.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", []) == []


def test_s3_failing_mid_upload_keeps_the_local_backup(big_database, tmp_path, s3_fault_proxy, s3_bucket):
    s3_fault_proxy.fail_parts_after = 1
    key = "backups/production/production-20260101T000000Z.dump.zst"
    destination = tmp_path / "production" / "production-20260101T000000Z.dump.zst"
    result = run_dump(database_url("production"), destination,
                      s3=S3Leg(make_s3_client(), S3_BUCKET, key))
    assert s3_fault_proxy.parts_failed >= 1
    assert destination.exists() and destination.stat().st_size == result.stored_bytes
    assert decode_artifact(destination, "zstd").ok
    assert not result.s3.ok and "InternalError" in result.s3.error
    assert s3_bucket.list_objects_v2(Bucket=S3_BUCKET).get("KeyCount") == 0
    assert s3_bucket.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", []) == []


def test_unreachable_database_is_a_clear_pg_dump_failure(tmp_path):
    url = f"postgresql://ops_test:{DB_PASSWORD}@127.0.0.1:1/nowhere"
    with pytest.raises(BackupStepError) as failure:
        run_dump(url, tmp_path / "x.dump.zst")
    assert failure.value.step == "pg_dump"
    assert "connection" in str(failure.value).lower()
    assert DB_PASSWORD not in str(failure.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_pg_dump_is_the_pg_dump_step(tmp_path, s3_bucket, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    key = "backups/development/development-20260101T000000Z.dump.zst"
    with pytest.raises(BackupStepError) as failure:
        run_dump(database_url("development"), tmp_path / "development" / "x.dump.zst",
                 s3=S3Leg(s3_bucket, S3_BUCKET, key))
    assert failure.value.step == "pg_dump"
    assert "pg_dump not found on PATH" in str(failure.value)
    assert not (tmp_path / "development").exists() or list((tmp_path / "development").iterdir()) == []
    assert s3_bucket.list_objects_v2(Bucket=S3_BUCKET).get("KeyCount") == 0
    assert s3_bucket.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", []) == []


def test_corrupt_artifact_fails_decoding(databases, tmp_path):
    destination = tmp_path / "c.dump.zst"
    run_dump(database_url("development"), destination)
    data = bytearray(destination.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = os.urandom(64)
    destination.write_bytes(bytes(data))
    decoded = decode_artifact(destination, "zstd")
    assert not decoded.ok and decoded.error


def test_truncated_artifact_fails_decoding(databases, tmp_path):
    destination = tmp_path / "t.dump.zst"
    run_dump(database_url("development"), destination)
    destination.write_bytes(destination.read_bytes()[: destination.stat().st_size // 2])
    assert not decode_artifact(destination, "zstd").ok


def test_existing_final_name_is_never_overwritten(databases, tmp_path):
    destination = tmp_path / "x.dump.zst"
    destination.write_bytes(b"keep me")
    with pytest.raises(BackupStepError, match="already exists"):
        run_dump(database_url("development"), destination)
    assert destination.read_bytes() == b"keep me"
