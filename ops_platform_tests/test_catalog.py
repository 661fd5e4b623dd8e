"""`backups list` merges local and S3 manifests and survives S3 being down."""

from __future__ import annotations

from ops_platform.lib.artifacts import Manifest
from ops_platform.lib.catalog import merge_listings
from ops_platform.lib.stores import LocalStore, S3Store, make_s3_client
from ops_platform_tests.conftest import S3_BUCKET


def manifest(backup_id: str, created_at: str) -> Manifest:
    return Manifest(id=backup_id, environment="production", kind="scheduled", created_at=created_at,
                    database="app", server_version="15", pg_dump_version="15", compression="zstd",
                    compression_level=3, artifact=f"{backup_id}.dump.zst", raw_bytes=10, stored_bytes=5,
                    sha256="ab" * 32, duration_seconds=1.0, verified=True)


def put_local(local: LocalStore, m: Manifest, artifact: bool = True):
    local.env_dir("production").mkdir(parents=True, exist_ok=True)
    if artifact:
        local.path("production", m.artifact).write_bytes(b"x" * 5)
    local.write_manifest(m)


def put_s3(s3: S3Store, m: Manifest):
    s3.client.put_object(Bucket=s3.bucket, Key=s3.key("production", m.artifact), Body=b"x" * 5)
    s3.write_manifest(m)


def test_merge_local_and_s3_newest_first(tmp_path, s3_bucket):
    local, s3 = LocalStore(tmp_path), S3Store(s3_bucket, S3_BUCKET, "backups")
    both = manifest("production-20260110T070000Z", "2026-01-10T07:00:00Z")
    only_local = manifest("production-20260111T070000Z", "2026-01-11T07:00:00Z")
    only_s3 = manifest("production-20260109T070000Z", "2026-01-09T07:00:00Z")
    pruned_locally = manifest("production-20260108T070000Z", "2026-01-08T07:00:00Z")
    for m in (both, only_local):
        put_local(local, m)
    for m in (both, only_s3, pruned_locally):
        put_s3(s3, m)
    put_local(local, pruned_locally, artifact=False)
    s3_bucket.put_object(Bucket=S3_BUCKET, Key="backups/production/production-20260107T070000Z.manifest.json",
                         Body=manifest("production-20260107T070000Z", "2026-01-07T07:00:00Z").to_json().encode())
    listing = merge_listings("production", local, s3)
    ids = [entry["id"] for entry in listing.entries]
    assert ids == [only_local.id, both.id, only_s3.id, pruned_locally.id]
    by_id = {entry["id"]: entry for entry in listing.entries}
    assert len(by_id[both.id]["locations"]) == 2
    assert by_id[only_s3.id]["locations"] == [s3.location("production", only_s3.artifact)]
    assert by_id[pruned_locally.id]["locations"] == [s3.location("production", pruned_locally.artifact)]
    assert any("production-20260107T070000Z" in warning for warning in listing.warnings)


def test_s3_down_still_lists_local_backups_with_a_warning(tmp_path, monkeypatch):
    from ops_platform_tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    local = LocalStore(tmp_path)
    put_local(local, manifest("production-20260110T070000Z", "2026-01-10T07:00:00Z"))
    s3 = S3Store(make_s3_client(max_attempts=1, connect_timeout=1), S3_BUCKET, "backups")
    recorded = manifest("production-20260111T070000Z", "2026-01-11T07:00:00Z")
    recorded.locations = [s3.location("production", recorded.artifact)]
    put_local(local, recorded)
    listing = merge_listings("production", local, s3)
    assert [entry["id"] for entry in listing.entries] == ["production-20260111T070000Z", "production-20260110T070000Z"]
    assert listing.warnings and "could not list S3" in listing.warnings[0]
    # The S3 copy its manifest records is still shown, as not checked, and --verify counts it.
    newest = listing.entries[0]
    assert newest["locations"][-1] == s3.location("production", recorded.artifact)
    (unchecked,) = [copy for copy in newest["copies"] if copy["store"] == "s3"]
    assert unchecked["check"] == "error" and unchecked["size_bytes"] is None
    assert unchecked["detail"].startswith("not checked: could not list S3")
    assert [(copy.manifest.id, copy.store) for copy in listing.bad_copies()] == [(recorded.id, "s3")]


def test_an_s3_copy_the_manifest_records_but_s3_lost_is_missing(tmp_path, s3_bucket):
    local, s3 = LocalStore(tmp_path), S3Store(s3_bucket, S3_BUCKET, "backups")
    lost = manifest("production-20260112T070000Z", "2026-01-12T07:00:00Z")
    lost.locations = [s3.location("production", lost.artifact)]
    put_local(local, lost)
    put_s3(s3, lost)
    s3_bucket.delete_object(Bucket=S3_BUCKET, Key=s3.key("production", lost.artifact))
    listing = merge_listings("production", local, s3)
    (entry,) = listing.entries
    assert entry["locations"] == [str(local.path("production", lost.artifact)), s3.location("production", lost.artifact)]
    assert [(copy["store"], copy["check"]) for copy in entry["copies"]] == [("local", None), ("s3", "corrupt")]
    assert entry["intact"] is False and "missing" in entry["copies"][1]["detail"]


def test_manifest_with_an_unreadable_time_is_reported_not_fatal(tmp_path):
    """A manifest whose created_at cannot be parsed is unreadable: listed as a warning, and left
    for a person by retention, which still plans the rest."""
    import json
    from datetime import datetime, timezone

    from ops_platform.lib.retention.policy import RetentionPolicy
    from ops_platform.lib.retention.stores import build_plan

    local = LocalStore(tmp_path)
    good = manifest("production-20260110T070000Z", "2026-01-10T07:00:00Z")
    put_local(local, good)
    bad = manifest("production-20260109T070000Z", "2026-01-09T07:00:00Z")
    put_local(local, bad)
    path = local.path("production", f"{bad.id}.manifest.json")
    data = json.loads(path.read_text())
    data["created_at"] = "yesterday"
    path.write_text(json.dumps(data))

    listing = merge_listings("production", local, None)
    assert [entry["id"] for entry in listing.entries] == [good.id]
    assert any("unreadable" in warning and bad.id in warning for warning in listing.warnings)

    plan = build_plan("production", local, None, RetentionPolicy(),
                                datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert bad.id not in {item.id for item in plan.deleted}
    assert any(bad.id in warning for warning in plan.warnings)


def put_copies(local: LocalStore, s3: S3Store, backup_id: str, created_at: str, body: bytes,
               record_s3_checksum: bool = True) -> Manifest:
    """A backup whose manifests describe ``body`` exactly, in both stores, uploaded as the pipeline
    uploads (with an S3 SHA256 checksum, recorded in the manifest unless ``record_s3_checksum`` is
    off, as in manifests written before checksums were recorded)."""
    import hashlib

    m = manifest(backup_id, created_at)
    m.stored_bytes, m.sha256 = len(body), hashlib.sha256(body).hexdigest()
    local.env_dir("production").mkdir(parents=True, exist_ok=True)
    local.path("production", m.artifact).write_bytes(body)
    s3.client.put_object(Bucket=s3.bucket, Key=s3.key("production", m.artifact), Body=body, ChecksumAlgorithm="SHA256")
    if record_s3_checksum:
        m.s3_checksum = s3.object_checksum("production", m.artifact)[1]
    local.write_manifest(m)
    s3.write_manifest(m)
    return m


def corrupted_stores(tmp_path, s3_bucket):
    """Four backups: the newest byte-flipped locally (same size), the second truncated to half
    locally, the third replaced in S3 by other bytes of the same size, the fourth intact but from
    before S3 checksums were recorded."""
    import os

    local, s3 = LocalStore(tmp_path), S3Store(s3_bucket, S3_BUCKET, "backups")
    made = [put_copies(local, s3, f"production-2026011{n}T070000Z", f"2026-01-1{n}T07:00:00Z", os.urandom(3000),
                       record_s3_checksum=n != 1)
            for n in (4, 3, 2, 1)]
    flipped = local.path("production", made[0].artifact)
    data = bytearray(flipped.read_bytes())
    data[1500] ^= 0xFF
    flipped.write_bytes(bytes(data))
    truncated = local.path("production", made[1].artifact)
    truncated.write_bytes(truncated.read_bytes()[:1500])
    s3_bucket.put_object(Bucket=S3_BUCKET, Key=s3.key("production", made[2].artifact), Body=os.urandom(3000))
    return local, s3, [m.id for m in made]


def test_listing_shows_each_copys_real_size_and_flags_a_mismatch(tmp_path, s3_bucket):
    local, s3, (flipped, truncated, replaced, legacy) = corrupted_stores(tmp_path, s3_bucket)
    listing = merge_listings("production", local, s3)
    by_id = {entry["id"]: entry for entry in listing.entries}
    assert list(by_id) == [flipped, truncated, replaced, legacy]
    entry = by_id[truncated]
    assert entry["size_bytes"] == 3000 and entry["verified"] is True  # the manifest's own word, unchanged
    assert [(c["store"], c["size_bytes"], c["size_matches"]) for c in entry["copies"]] == [
        ("local", 1500, False), ("s3", 3000, True)]
    assert entry["intact"] is False
    assert any(truncated in w and "size 1500 bytes differs from the manifest's 3000" in w for w in listing.warnings)
    # Without --verify, a same-size change cannot be seen, and nothing claims it was checked.
    for backup_id in (flipped, replaced, legacy):
        assert by_id[backup_id]["intact"] is None
        assert all(c["size_matches"] and c["check"] is None for c in by_id[backup_id]["copies"])
    for field in ("id", "environment", "created_at", "size_bytes", "sha256", "verified", "locations"):
        assert field in entry


def test_verify_rehashes_local_copies_and_checks_s3_checksums(tmp_path, s3_bucket):
    local, s3, (flipped, truncated, replaced, legacy) = corrupted_stores(tmp_path, s3_bucket)
    listing = merge_listings("production", local, s3, verify=True)
    checks = {(entry["id"], c["store"]): (c["check"], c["check_method"]) for entry in listing.entries
              for c in entry["copies"]}
    assert checks == {
        (flipped, "local"): ("corrupt", "sha256"), (flipped, "s3"): ("ok", "s3-checksum"),
        (truncated, "local"): ("corrupt", "size"), (truncated, "s3"): ("ok", "s3-checksum"),
        (replaced, "local"): ("ok", "sha256"), (replaced, "s3"): ("corrupt", "s3-checksum"),
        (legacy, "local"): ("ok", "sha256"), (legacy, "s3"): ("ok", "size"),
    }
    intact = {entry["id"]: entry["intact"] for entry in listing.entries}
    assert intact == {flipped: False, truncated: False, replaced: False, legacy: True}
    assert {(c.manifest.id, c.store) for c in listing.bad_copies()} == {
        (flipped, "local"), (truncated, "local"), (replaced, "s3")}
    assert any(replaced in w and "was recorded at upload" in w for w in listing.warnings)
