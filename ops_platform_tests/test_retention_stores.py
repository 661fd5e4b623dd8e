"""Retention applied to a real local folder and to S3 (moto over HTTP)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops_platform.lib.artifacts import MANIFEST_SUFFIX, make_backup_id
from ops_platform.lib.catalog import merge_listings
from ops_platform.lib.retention.policy import DELETE, KEEP, RetentionPolicy
from ops_platform.lib.retention.stores import apply_plan, build_plan
from ops_platform.lib.stores import LocalStore, S3Store
from ops_platform_tests.backup_helpers import s3_fault_proxy  # noqa: F401 - fixture
from ops_platform_tests.conftest import S3_BUCKET
from ops_platform_tests.test_retention_policy import make_manifest

ENV = "production"
NOW = datetime.now(timezone.utc).replace(microsecond=0)
FOREIGN_KEYS = [
    "production/production-20200101T000000Z.dump.zst",
    "other/production/production-20200101T000000Z.dump.zst",
    "backups-old/production/production-20200101T000000Z.dump.zst",
    "backups/production/nested/production-20200101T000000Z.dump.zst",
    "backups/staging/staging-20200101T000000Z.dump.zst",
    "backups/production/README.txt",
]


BODY = b"x" * 64


def put_backup(created: datetime, *, local: LocalStore | None = None, s3: S3Store | None = None,
               verified: bool = True, kind: str = "scheduled", artifact: bool = True, manifest: bool = True,
               environment: str = ENV, body: bytes = BODY) -> str:
    """A backup as the pipeline leaves it: the manifests describe the artifact (size, sha256), and
    the S3 copy is uploaded with a SHA256 checksum that the manifests record."""
    backup_id = make_backup_id(environment, created)
    record = make_manifest(backup_id, created, verified=verified, kind=kind, environment=environment,
                           stored_bytes=len(body))
    record.sha256 = hashlib.sha256(body).hexdigest()
    if s3 is not None and artifact:
        s3.client.put_object(Bucket=s3.bucket, Key=s3.key(environment, record.artifact), Body=body,
                             ChecksumAlgorithm="SHA256")
        record.s3_checksum = s3.object_checksum(environment, record.artifact)[1]
    if local is not None:
        if artifact:
            path = local.path(environment, record.artifact)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            os.utime(path, (created.timestamp(), created.timestamp()))
        if manifest:
            os.utime(local.write_manifest(record), (created.timestamp(), created.timestamp()))
    if s3 is not None and manifest:
        s3.write_manifest(record)
    return backup_id


def all_keys(client) -> set[str]:
    paginator = client.get_paginator("list_objects_v2")
    return {item["Key"] for page in paginator.paginate(Bucket=S3_BUCKET) for item in page.get("Contents", [])}


@pytest.fixture
def stores(backup_dir, s3_bucket):
    return LocalStore(backup_dir), S3Store(s3_bucket, S3_BUCKET, "backups")


def test_backups_all_40_days_old_keep_the_newest_7_verified_in_both_stores(stores, s3_bucket):
    local, s3 = stores
    ids = [put_backup(NOW - timedelta(days=40 + n, hours=n), local=local, s3=s3, verified=n != 1)
           for n in range(12)]
    for key in FOREIGN_KEYS:
        s3_bucket.put_object(Bucket=S3_BUCKET, Key=key, Body=b"not ours")
    plan = build_plan(ENV, local, s3, RetentionPolicy(), NOW)
    expected_kept = [backup_id for n, backup_id in enumerate(ids) if n != 1][:7]
    assert [item.id for item in plan.kept] == expected_kept
    assert {item.id for item in plan.deleted} == set(ids) - set(expected_kept)

    applied = apply_plan(plan, local, s3)
    assert applied.bytes_freed == plan.bytes_freed > 0
    listing = merge_listings(ENV, local, s3)
    assert [m.id for m in listing.manifests] == expected_kept
    assert all(len(m.locations) == 2 for m in listing.manifests)
    assert set(FOREIGN_KEYS) <= all_keys(s3_bucket)
    assert build_plan(ENV, local, s3, RetentionPolicy(), NOW).deleted == []


def test_artifact_is_deleted_before_its_manifest(stores):
    local, s3 = stores
    for n in range(9):
        put_backup(NOW - timedelta(days=50 + n), local=local, s3=s3)
    plan = build_plan(ENV, local, s3, RetentionPolicy(), NOW)
    applied = apply_plan(plan, local, s3)
    for item in plan.deleted:
        for location in ("local", "s3"):
            order = [name for name in applied.deleted_files if name.startswith(f"{location}:{item.id}")]
            assert order == [f"{location}:{item.id}.dump.zst", f"{location}:{item.id}{MANIFEST_SUFFIX}"]


def test_more_than_1000_s3_objects(stores, s3_bucket):
    local, s3 = stores
    created = [NOW - timedelta(days=35, hours=6 * n) for n in range(510)]
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda moment: put_backup(moment, s3=s3), created))
    for key in FOREIGN_KEYS:
        s3_bucket.put_object(Bucket=S3_BUCKET, Key=key, Body=b"not ours")
    assert len(s3.list_names(ENV)) == 2 * 510 + 1
    plan = build_plan(ENV, local, s3, RetentionPolicy(keep_weekly=4), NOW)
    assert len(plan.items) == 510
    applied = apply_plan(plan, local, s3)
    kept_ids = {item.id for item in plan.kept}
    assert set(ids[:7]) <= kept_ids and len(kept_ids) < 12
    remaining = all_keys(s3_bucket)
    assert remaining == set(FOREIGN_KEYS) | {f"backups/{ENV}/{backup_id}{suffix}" for backup_id in kept_ids
                                             for suffix in (".dump.zst", MANIFEST_SUFFIX)}
    assert len(applied.deleted_files) == 2 * (510 - len(kept_ids))


def test_incomplete_multipart_upload_older_than_a_day_is_aborted(stores, s3_bucket):
    local, s3 = stores
    put_backup(NOW - timedelta(days=2), local=local, s3=s3)
    ours = s3_bucket.create_multipart_upload(Bucket=S3_BUCKET, Key=f"backups/{ENV}/{make_backup_id(ENV, NOW)}.dump.zst")
    theirs = s3_bucket.create_multipart_upload(Bucket=S3_BUCKET, Key="elsewhere/production/big.bin")
    other_env = s3_bucket.create_multipart_upload(Bucket=S3_BUCKET, Key="backups/staging/staging-x.dump.zst")

    def open_uploads() -> set[str]:
        return {u["UploadId"] for u in s3_bucket.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", [])}

    # moto reports every upload as initiated in 2010, so only the "old" side can be shown here.
    assert s3_bucket.list_multipart_uploads(Bucket=S3_BUCKET)["Uploads"][0]["Initiated"] < NOW - timedelta(days=1)
    applied = apply_plan(build_plan(ENV, local, s3, RetentionPolicy(), NOW), local, s3)
    assert applied.aborted_uploads == [ours["Key"]]
    assert open_uploads() == {theirs["UploadId"], other_env["UploadId"]}


def test_manifest_without_artifact_and_artifact_without_manifest(stores):
    """Intended outcome: neither is a backup. Neither counts toward the floor; both are kept while
    younger than a day (a backup may still be writing) and deleted, and reported, after that."""
    local, s3 = stores
    good = [put_backup(NOW - timedelta(days=3 + n), local=local, s3=s3) for n in range(8)]
    old = NOW - timedelta(days=2, minutes=30)
    dangling = put_backup(old, local=local, s3=s3, artifact=False)
    orphan = put_backup(old - timedelta(hours=1), local=local, artifact=True, manifest=False)
    fresh_orphan = put_backup(NOW - timedelta(hours=1), local=local, manifest=False)
    partial = local.path(ENV, f".{make_backup_id(ENV, old - timedelta(hours=2))}.dump.zst.partial")
    partial.write_bytes(b"half")
    os.utime(partial, (old.timestamp(), old.timestamp()))

    plan = build_plan(ENV, local, s3, RetentionPolicy(keep_min=7), NOW)
    by_id = {item.id: item for item in plan.items}
    assert (by_id[dangling].status, by_id[dangling].action) == ("dangling", DELETE)
    assert (by_id[orphan].status, by_id[orphan].action) == ("incomplete", DELETE)
    assert (by_id[fresh_orphan].status, by_id[fresh_orphan].action) == ("incomplete", KEEP)
    assert all(by_id[b].action == KEEP for b in good)

    apply_plan(plan, local, s3)
    names = set(local.list_names(ENV))
    assert dangling + MANIFEST_SUFFIX not in names and orphan + ".dump.zst" not in names
    assert not partial.exists() and fresh_orphan + ".dump.zst" in names
    assert dangling + MANIFEST_SUFFIX not in s3.list_names(ENV)
    assert [m.id for m in merge_listings(ENV, local, s3).manifests] == good


def test_an_unreadable_manifest_is_left_alone(stores):
    local, s3 = stores
    for n in range(8):
        put_backup(NOW - timedelta(days=60 + n), local=local)
    broken = put_backup(NOW - timedelta(days=90), local=local)
    local.path(ENV, broken + MANIFEST_SUFFIX).write_text("{ truncated")
    plan = build_plan(ENV, local, None, RetentionPolicy(), NOW)
    apply_plan(plan, local, None)
    assert {broken + MANIFEST_SUFFIX, broken + ".dump.zst"} <= set(local.list_names(ENV))
    assert any("unreadable manifest" in warning for warning in plan.warnings)


def test_s3_unreachable_leaves_s3_alone_and_still_cleans_the_local_folder(backup_dir, monkeypatch):
    from ops_platform.lib.stores import make_s3_client
    from ops_platform_tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    local = LocalStore(backup_dir)
    s3 = S3Store(make_s3_client(max_attempts=1, connect_timeout=1), S3_BUCKET, "backups")
    ids = [put_backup(NOW - timedelta(days=40 + n), local=local) for n in range(9)]
    plan = build_plan(ENV, local, s3, RetentionPolicy(), NOW)
    assert plan.locations == ["local"]
    assert plan.warnings and "could not be listed and was left as is" in plan.warnings[0]
    applied = apply_plan(plan, local, s3)
    assert applied.aborted_uploads == []
    assert [m.id for m in local.list_manifests(ENV).manifests] == ids[:7]


# Re-checking before deleting (issue 9).

def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate_to_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_with_keep_min_1_a_corrupt_newest_backup_never_replaces_the_intact_one(stores):
    """The issue's case: the newest artifact byte-flipped, the second truncated to half. Today the
    corrupt newest is the floor and the intact ones are deleted."""
    local, s3 = stores
    ids = [put_backup(NOW - timedelta(days=40 + n), local=local, s3=s3, body=os.urandom(4096)) for n in range(5)]
    _flip_a_byte(local.path(ENV, f"{ids[0]}.dump.zst"))
    _truncate_to_half(local.path(ENV, f"{ids[1]}.dump.zst"))

    plan = build_plan(ENV, local, s3, RetentionPolicy(keep_min=1), NOW)
    by_id = {item.id: item for item in plan.items}
    assert [(by_id[i].action, by_id[i].status) for i in ids] == [
        (KEEP, "corrupt"), (KEEP, "corrupt"), (KEEP, "verified"), (DELETE, "verified"), (DELETE, "verified")]
    assert "floor" in by_id[ids[2]].reason
    assert "local copy: sha256" in by_id[ids[0]].reason
    assert "local copy: size 2048 bytes differs from the manifest's 4096" in by_id[ids[1]].reason
    # Re-checked: each backup that had to stand in for the deleted ones, and nothing else.
    assert {(c["id"], c["location"], c["status"]) for c in plan.rechecks} == {
        (ids[0], "local", "corrupt"), (ids[0], "s3", "ok"), (ids[1], "local", "corrupt"), (ids[1], "s3", "ok"),
        (ids[2], "local", "ok"), (ids[2], "s3", "ok")}
    assert len(plan.corrupt_warnings()) == 2 and all("left for a person" in w for w in plan.corrupt_warnings())

    apply_plan(plan, local, s3)
    for backup_id in ids[:3]:
        assert {f"{backup_id}.dump.zst", backup_id + MANIFEST_SUFFIX} <= set(local.list_names(ENV))
        assert {f"{backup_id}.dump.zst", backup_id + MANIFEST_SUFFIX} <= set(s3.list_names(ENV))
    assert {m.id for m in merge_listings(ENV, local, s3).manifests} == set(ids[:3])


def test_s3_copies_are_rechecked_by_their_recorded_checksum_without_a_download(s3_fault_proxy, backup_dir):
    from ops_platform.lib.stores import make_s3_client

    local, s3 = LocalStore(backup_dir), S3Store(make_s3_client(), S3_BUCKET, "backups")
    ids = [put_backup(NOW - timedelta(days=40 + n), s3=s3, body=os.urandom(4096)) for n in range(4)]
    legacy = put_backup(NOW - timedelta(days=39), s3=s3, body=os.urandom(4096))
    record = make_manifest(legacy, NOW - timedelta(days=39), stored_bytes=4096)
    record.sha256 = "not checked: S3 copies are never downloaded by retention"
    s3.write_manifest(record)  # written before checksums were recorded: no s3_checksum
    # The newest checksummed copy replaced by other bytes of the same size.
    s3.client.put_object(Bucket=S3_BUCKET, Key=s3.key(ENV, f"{ids[0]}.dump.zst"), Body=os.urandom(4096))
    s3_fault_proxy.requests.clear()

    plan = build_plan(ENV, local, s3, RetentionPolicy(keep_min=2), NOW)
    by_id = {item.id: item for item in plan.items}
    assert by_id[ids[0]].status == "corrupt" and "was recorded at upload" in by_id[ids[0]].reason
    assert [by_id[i].action for i in [legacy] + ids] == [KEEP, KEEP, KEEP, DELETE, DELETE]
    checks = {(c["id"], c["method"], c["status"]) for c in plan.rechecks}
    assert checks == {(legacy, "size", "ok"), (ids[0], "s3-checksum", "corrupt"), (ids[1], "s3-checksum", "ok")}
    artifact_requests = [(method, path) for method, path in s3_fault_proxy.requests if ".dump.zst" in path]
    assert {method for method, _ in artifact_requests} == {"HEAD"} and len(artifact_requests) == 3


def test_nothing_is_rechecked_unless_a_verified_backup_is_to_be_deleted(stores):
    local, s3 = stores
    for n in range(5):
        put_backup(NOW - timedelta(days=2 + n), local=local, s3=s3)
    unverified = put_backup(NOW - timedelta(days=3, hours=5), local=local, s3=s3, verified=False)
    _flip_a_byte(local.path(ENV, f"{put_backup(NOW - timedelta(days=1), local=local)}.dump.zst"))
    plan = build_plan(ENV, local, s3, RetentionPolicy(keep_min=2), NOW)
    assert [item.id for item in plan.deleted] == [unverified]
    assert plan.rechecks == []


def test_window_keepers_beyond_the_floor_are_not_rechecked(stores):
    local, s3 = stores
    window = [put_backup(NOW - timedelta(days=1 + n), local=local) for n in range(6)]
    old = [put_backup(NOW - timedelta(days=40 + n), local=local) for n in range(3)]
    plan = build_plan(ENV, local, s3, RetentionPolicy(keep_min=2), NOW)
    assert {item.id for item in plan.deleted} == set(old)
    assert {c["id"] for c in plan.rechecks} == set(window[:2])


def test_a_copy_that_cannot_be_rechecked_postpones_deleting_verified_backups(s3_fault_proxy, backup_dir):
    from ops_platform.lib.stores import make_s3_client

    local, s3 = LocalStore(backup_dir), S3Store(make_s3_client(), S3_BUCKET, "backups")
    ids = [put_backup(NOW - timedelta(days=40 + n), local=local, s3=s3) for n in range(4)]
    unverified = put_backup(NOW - timedelta(days=5), local=local, s3=s3, verified=False)
    s3_fault_proxy.fail_heads = True
    plan = build_plan(ENV, local, s3, RetentionPolicy(keep_min=1), NOW)
    by_id = {item.id: item for item in plan.items}
    assert [by_id[i].action for i in ids] == [KEEP] * 4
    assert all("deletion postponed" in by_id[i].reason for i in ids[1:])
    assert by_id[unverified].action == DELETE  # not a verified backup: no stand-in needed
    assert any("verified backups were not deleted this time: could not re-check" in w and ids[0] in w
               for w in plan.warnings)
    assert [c["status"] for c in plan.rechecks if c["location"] == "s3"] == ["error"]


def test_a_corrupt_copy_is_alerted_once_until_it_is_found_intact_or_gone(backup_dir):
    from ops_platform.lib.retention import alerts
    from ops_platform.lib.retention.policy import PlanItem, RetentionPlan

    path = alerts.state_path(LocalStore(backup_dir), ENV)

    def run(checks: list[tuple[str, str, str]], present=("a", "b")) -> list[str]:
        plan = RetentionPlan(ENV, NOW, RetentionPolicy())
        plan.items = [PlanItem(i, KEEP, "", "verified", "scheduled", "", 0, []) for i in present]
        plan.rechecks = [{"id": i, "location": loc, "status": status, "method": "sha256", "detail": "differs"}
                         for i, loc, status in checks]
        new, state = alerts.new_corruption(plan, alerts.load(path))
        alerts.save(path, state)
        return [f"{c['id']} {c['location']}" for c in new]

    assert run([("a", "local", "corrupt"), ("a", "s3", "ok"), ("b", "local", "ok")]) == ["a local"]
    assert run([("a", "local", "corrupt")]) == []
    assert run([]) == []  # not re-checked this time: still remembered
    assert run([("a", "local", "error")]) == []
    assert run([("a", "local", "corrupt")]) == []
    assert run([("a", "local", "ok")]) == []  # repaired
    assert run([("a", "local", "corrupt")]) == ["a local"]  # broken again
    assert run([], present=("b",)) == []  # deleted by a person
    assert run([("a", "local", "corrupt")]) == ["a local"]
    path.write_text("{ not json")
    assert run([("a", "local", "corrupt")]) == ["a local"]  # at worst one repeated alert
    assert ".retention-alerted.json" in LocalStore(backup_dir).list_names(ENV)


def _empty_bucket(client) -> None:
    keys = list(all_keys(client))
    for start in range(0, len(keys), 1000):
        client.delete_objects(Bucket=S3_BUCKET, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=st.lists(st.tuples(st.integers(0, 24 * 90), st.booleans(), st.sampled_from(["both", "local", "s3"]),
                                  st.sampled_from(["complete", "complete", "no-manifest", "no-artifact"])),
                        max_size=14),
       keep_min=st.integers(1, 5))
def test_real_stores_apply_twice_and_touch_nothing_else(s3_bucket, history, keep_min):
    """A smaller run of the property test against the real folder and moto S3."""
    _empty_bucket(s3_bucket)
    with tempfile.TemporaryDirectory() as folder:
        local, s3 = LocalStore(folder), S3Store(s3_bucket, S3_BUCKET, "backups")
        foreign_local = Path(folder) / "staging" / "staging-20200101T000000Z.dump.zst"
        foreign_local.parent.mkdir(parents=True)
        foreign_local.write_bytes(b"other environment")
        (Path(folder) / ENV).mkdir()
        (Path(folder) / ENV / "notes.txt").write_text("keep me")
        for key in FOREIGN_KEYS:
            s3_bucket.put_object(Bucket=S3_BUCKET, Key=key, Body=b"not ours")
        good = {}
        for hours, verified, where, shape in history:
            created = NOW - timedelta(hours=hours, minutes=len(good))
            backup_id = put_backup(created, local=local if where in ("both", "local") else None,
                                   s3=s3 if where in ("both", "s3") else None, verified=verified,
                                   artifact=shape != "no-artifact", manifest=shape != "no-manifest")
            if verified and shape == "complete":
                good[backup_id] = created
        policy = RetentionPolicy(retention_days=30, keep_min=keep_min)
        plan = build_plan(ENV, local, s3, policy, NOW)
        apply_plan(plan, local, s3)

        surviving = {m.id for m in merge_listings(ENV, local, s3).manifests}
        newest = sorted(good, key=good.get, reverse=True)
        assert set(newest[:keep_min]) <= surviving
        assert {b for b, created in good.items() if NOW - created < timedelta(days=30)} <= surviving
        assert build_plan(ENV, local, s3, policy, NOW).deleted == []
        assert set(FOREIGN_KEYS) <= all_keys(s3_bucket)
        assert foreign_local.exists() and (Path(folder) / ENV / "notes.txt").exists()
