"""Off-site copies: the ``destinations:`` of ops_platform.yaml, each on its own moto server (its own
endpoint and credentials), written from the one dump stream beside the local file and the main
bucket. One destination sits behind the S3 fault proxy and fails mid-upload; the real CLI backs
up, lists, verifies and restores."""

from __future__ import annotations

import hashlib
import json
import os

import dagster as dg
import pytest

from ops_platform.lib.artifacts import Manifest
from ops_platform_testkit.s3_fault_proxy import S3FaultProxy
from ops_platform_tests.backup_helpers import fill_big_table
from ops_platform_tests.conftest import free_port
from ops_platform_tests.restore_e2e_helpers import (
    Site,
    content,
    create_live,
    database_names,
    drop_database,
    make_env,
)

PREFIX = f"ops_dst_{os.getpid()}_"
LIVE = PREFIX + "app"
MAIN_BUCKET = f"ops-dst-main-{os.getpid()}"
BUCKET_A, BUCKET_B = "offsite-a-bucket", "offsite-b-bucket"
# Under variable names the generic redaction does not take for secrets: only the destinations'
# own entries in the file make them secrets.
SECRET_A = "offsiteAsecretValue0123456789"
KEY_ID_A = "AKIAOFFSITEA0000001"


class Offsite:
    """Two more S3 servers: destination offsite-a direct, offsite-b through a fault proxy."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        from ops_platform.lib.stores import make_s3_client

        self.servers = []
        endpoints = []
        for _ in range(2):
            port = free_port()
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            self.servers.append(server)
            endpoints.append(f"http://127.0.0.1:{port}")
        self.endpoint_a, self.endpoint_b = endpoints
        self.proxy = S3FaultProxy(self.endpoint_b)
        self.client_a = make_s3_client(endpoint_url=self.endpoint_a, credentials=(KEY_ID_A, SECRET_A))
        self.client_b = make_s3_client(endpoint_url=self.endpoint_b)
        self.client_a.create_bucket(Bucket=BUCKET_A)
        self.client_b.create_bucket(Bucket=BUCKET_B)

    def keys(self, client, bucket: str) -> list[str]:
        return sorted(item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", []))

    def close(self):
        self.proxy.close()
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="module")
def offsite():
    servers = Offsite()
    yield servers
    servers.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, moto_server, offsite):
    """An operator's shell: development is this module's database (big enough for two 8 MiB
    parts), the main bucket on the session's moto server, two destinations in the file."""
    from ops_platform.lib.stores import make_s3_client

    root = tmp_path_factory.mktemp("destinations")
    create_live(LIVE)
    fill_big_table(LIVE, rows=150_000)
    make_s3_client().create_bucket(Bucket=MAIN_BUCKET)
    config = root / "ops_platform.yaml"
    config.write_text("""
destinations:
  offsite-a:
    s3_bucket: offsite-a-bucket
    endpoint_url_env: OFFSITE_A_ENDPOINT
    access_key_id_env: OFFSITE_A_ID
    secret_access_key_env: OFFSITE_A_CREDS
  offsite-b:
    s3_bucket: offsite-b-bucket
    prefix: team/backups
    endpoint_url_env: OFFSITE_B_ENDPOINT
""")
    env = make_env(root / "home", root / "backups", {"development": LIVE})
    env.update({"OPS_PLATFORM_CONFIG": str(config), "AWS_S3_BUCKET": MAIN_BUCKET, "AWS_MAX_ATTEMPTS": "2",
                "BACKUP_S3_STALL_SECONDS": "10", "OFFSITE_A_ENDPOINT": offsite.endpoint_a,
                "OFFSITE_A_ID": KEY_ID_A, "OFFSITE_A_CREDS": SECRET_A, "OFFSITE_B_ENDPOINT": offsite.proxy.url})
    yield Site(root / "home", root / "backups", env, LIVE)
    for name in database_names(PREFIX):
        drop_database(name)


def _manifest(site: Site, backup_id: str) -> Manifest:
    return Manifest.from_json((site.backup_dir / "development" / f"{backup_id}.manifest.json").read_bytes())


def _backup(site: Site, **env) -> tuple[str, object]:
    result = site.cli("backup", "development", env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[1], result


def test_each_destination_gets_a_checked_copy_and_a_failed_one_is_named(site, offsite, slack_server):
    offsite.proxy.fail_parts_after = 1
    try:
        backup_id, result = _backup(site, SLACK_WEBHOOK_URL=slack_server.webhook_url)
    finally:
        offsite.proxy.fail_parts_after = None
    assert offsite.proxy.parts_passed >= 1 and offsite.proxy.parts_failed >= 1  # it failed mid-upload
    manifest = _manifest(site, backup_id)
    assert manifest.verified
    assert manifest.verified_copies == ["local", "s3", "offsite-a"]
    assert [record["name"] for record in manifest.copies] == ["local", "s3", "offsite-a", "offsite-b"]
    assert not manifest.copy_record("offsite-b")["verified"]
    assert "InternalError" in manifest.copy_record("offsite-b")["detail"]

    artifact_key = f"backups/development/{manifest.artifact}"
    body = offsite.client_a.get_object(Bucket=BUCKET_A, Key=artifact_key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == manifest.sha256 and len(body) == manifest.stored_bytes
    assert manifest.copy_record("offsite-a")["s3_checksum"].startswith("SHA256:")
    in_a = Manifest.from_json(offsite.client_a.get_object(
        Bucket=BUCKET_A, Key=f"backups/development/{backup_id}.manifest.json")["Body"].read())
    assert in_a.sha256 == manifest.sha256
    assert f"s3://{BUCKET_A}/{artifact_key}" in manifest.locations
    assert offsite.keys(offsite.client_b, BUCKET_B) == []
    assert not offsite.client_b.list_multipart_uploads(Bucket=BUCKET_B).get("Uploads")

    enough = manifest.verification["enough_copies"]
    assert not enough["passed"] and "offsite-b" in enough["description"] and "3" in enough["description"]
    with dg.DagsterInstance.from_config(str(site.home)) as instance:
        (record,) = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("database_backup"), "enough_copies"), limit=1)
        assert record.status.value == "FAILED"
    alerts = [request.text for request in slack_server.requests if "too few verified copies" in request.text]
    assert len(alerts) == 1 and "offsite-b" in alerts[0] and backup_id in alerts[0]
    seen = result.stdout + result.stderr + "".join(r.body.decode() for r in slack_server.requests)
    assert SECRET_A not in seen and SECRET_A not in manifest.to_json()

    listed = site.cli("backups", "list", "development", "--verify", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = [item for item in json.loads(listed.stdout) if item["id"] == backup_id]
    checks = {copy["store"]: copy["check"] for copy in entry["copies"]}
    assert checks == {"local": "ok", "s3": "ok", "offsite-a": "ok"}
    assert entry["verified_copies"] == ["local", "s3", "offsite-a"]


def test_a_restore_takes_a_destination_copy_when_local_and_s3_are_gone(site, offsite, slack_server):
    from ops_platform.lib.stores import make_s3_client

    backup_id, _ = _backup(site)
    manifest = _manifest(site, backup_id)
    assert manifest.verified_copies == ["local", "s3", "offsite-a", "offsite-b"]
    assert offsite.keys(offsite.client_b, BUCKET_B) == [f"team/backups/development/{manifest.artifact}",
                                                        f"team/backups/development/{backup_id}.manifest.json"]
    for path in (site.backup_dir / "development").iterdir():
        path.unlink()
    main = make_s3_client()
    for key in [item["Key"] for item in main.list_objects_v2(Bucket=MAIN_BUCKET).get("Contents", [])]:
        main.delete_object(Bucket=MAIN_BUCKET, Key=key)

    copy = PREFIX + "copy"
    restored = site.cli("restore", "latest", "development", "--target-database", copy,
                        env={"SLACK_WEBHOOK_URL": slack_server.webhook_url})
    assert restored.returncode == 0, restored.stderr
    assert f"restored {backup_id} into {copy}" in restored.stdout
    assert f"copy used: s3://{BUCKET_A}/backups/development/{manifest.artifact}" in restored.stdout
    assert "off-site copy in destination offsite-a" in restored.stderr
    assert content(copy) == content(LIVE)
    (done,) = [request.text for request in slack_server.requests if backup_id in request.text
               and "off-site copy in destination offsite-a" in request.text]

    replaced = site.cli("restore", "latest", "development", "--yes")
    assert replaced.returncode == 0, replaced.stderr
    (safety,) = [Manifest.from_json(path.read_bytes()) for path in (site.backup_dir / "development").glob("*.manifest.json")
                 if Manifest.from_json(path.read_bytes()).kind == "pre-restore"]
    assert safety.verified_copies == ["local", "s3", "offsite-a", "offsite-b"]  # the safety backup goes off-site too
    assert content(LIVE) == content(copy)


def test_a_bad_destination_line_is_one_line_naming_it(site, tmp_path):
    bad = tmp_path / "ops_platform.yaml"
    bad.write_text("destinations:\n  offsite-c:\n    s3_bucket: s3://not-a-bucket\n")
    env = {"OPS_PLATFORM_CONFIG": str(bad)}
    listed = site.cli("targets", "list", env=env)
    (line,) = listed.stderr.strip().splitlines()
    assert listed.returncode == 2 and "destinations.offsite-c.s3_bucket: must be an S3 bucket name" in line
    backups = site.cli("backups", "list", "development", env=env)
    assert backups.returncode == 0, backups.stderr
    (warning,) = [line for line in backups.stderr.splitlines() if "destinations" in line]
    assert warning.startswith("warning: the off-site destinations are not listed:") and "offsite-c.s3_bucket" in warning
    # A backup goes on without them, and counts them as a missing copy rather than forgetting them.
    backup_id, result = _backup(site, **env)
    enough = _manifest(site, backup_id).verification["enough_copies"]
    assert not enough["passed"] and "missing destinations: " in enough["description"]
    assert "destinations.offsite-c.s3_bucket" in enough["description"]
    assert "only 2 verified copies (local, s3) of the 3 required" in result.stderr


def _ids(client, bucket: str, prefix: str) -> set[str]:
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {key.rsplit("/", 1)[1].removesuffix(".manifest.json") for key in keys if key.endswith(".manifest.json")}


def test_retention_keeps_the_last_good_backup_of_each_place(site, offsite):
    """Each destination is planned on its own: offsite-b missed the newest backup, so its own newest
    is kept there although newer ones exist elsewhere; offsite-a keeps only its newest."""
    _backup(site)
    offsite.proxy.down = True
    try:
        newest, _ = _backup(site)
    finally:
        offsite.proxy.down = False
    in_a = _ids(offsite.client_a, BUCKET_A, "backups/development/")
    in_b = _ids(offsite.client_b, BUCKET_B, "team/backups/development/")
    assert newest in in_a and newest not in in_b and len(in_a) >= 2 and in_b
    later = "2099-01-01T00:00:00Z"
    env = {"BACKUP_KEEP_MIN": "1", "BACKUP_RETENTION_DAYS": "1"}
    planned = site.cli("retention", "development", "--dry-run", "--as-of", later, "--json", env=env)
    assert planned.returncode == 0, planned.stderr
    plans = json.loads(planned.stdout)["destinations"]
    deleted = {name: {item["id"] for item in plan["items"] if item["action"] == "delete"}
               for name, plan in plans.items()}
    assert deleted == {"offsite-a": in_a - {newest}, "offsite-b": in_b - {max(in_b)}}
    assert _ids(offsite.client_a, BUCKET_A, "backups/development/") == in_a  # a dry run deletes nothing

    # Applied as the retention run does (a run refuses a time in the future, so the backups cannot age).
    from ops_platform.lib.artifacts import parse_utc
    from ops_platform.lib.retention.policy import RetentionPolicy
    from ops_platform.lib.retention.stores import apply_plan, build_destination_plan
    from ops_platform.lib.stores import destination_stores

    for store in destination_stores({**site.env, **env}):
        apply_plan(build_destination_plan("development", store, RetentionPolicy(retention_days=1, keep_min=1),
                                          parse_utc(later)), None, store)
    assert _ids(offsite.client_a, BUCKET_A, "backups/development/") == {newest}
    assert _ids(offsite.client_b, BUCKET_B, "team/backups/development/") == {max(in_b)}
    assert len(offsite.keys(offsite.client_a, BUCKET_A)) == 2  # its artifact and manifest, nothing else


def test_enough_copies_counts_every_configured_place_unless_told_fewer():
    from ops_platform.lib.backup import check_enough_copies

    copies = {"local": {"verified": True}, "s3": {"verified": True},
              "offsite-a": {"verified": False, "detail": "destination offsite-a upload failed: boom"}}
    failed = check_enough_copies(copies, {}, 0)
    assert not failed.passed and not failed.blocking
    assert "only 2 verified copies (local, s3) of the 3 required" in failed.description
    assert "offsite-a: destination offsite-a upload failed: boom" in failed.description
    assert failed.metadata["missing_copies"] == ["offsite-a"]
    enough = check_enough_copies(copies, {}, 2)
    assert enough.passed and "missing offsite-a" in enough.description
    unusable = check_enough_copies({"local": {"verified": True}}, {"destinations": "bad file"}, 0)
    assert not unusable.passed and "destinations: bad file" in unusable.description


def test_older_manifests_without_copies_still_read(tmp_path):
    older = {"id": "production-20260115T070000Z", "environment": "production", "kind": "scheduled",
             "created_at": "2026-01-15T07:00:00Z", "database": "app", "server_version": "15", "pg_dump_version": "15",
             "compression": "zstd", "compression_level": 2, "artifact": "production-20260115T070000Z.dump.zst",
             "raw_bytes": 10, "stored_bytes": 5, "sha256": "ab", "duration_seconds": 1.0, "verified": True,
             "s3_checksum": "SHA256:xyz", "manifest_version": 1}
    manifest = Manifest.from_json(json.dumps(older))
    assert manifest.copies == [] and manifest.verified_copies == []
    assert manifest.checksum_in("s3") == "SHA256:xyz" and manifest.checksum_in("offsite-a") is None
    assert manifest.summary()["verified_copies"] is None
    with pytest.raises(ValueError, match="copies"):
        Manifest.from_json(json.dumps({**older, "copies": {"local": {}}}))


def test_destination_credentials_are_redacted_whatever_their_variables_are_called(tmp_path):
    from ops_platform.lib.redact import Redactor

    config = tmp_path / "ops_platform.yaml"
    config.write_text("destinations:\n  offsite-a:\n    s3_bucket: offsite-a-bucket\n"
                      "    access_key_id_env: OFFSITE_A_ID\n    secret_access_key_env: OFFSITE_A_CREDS\n")
    environ = {"OPS_PLATFORM_CONFIG": str(config), "OFFSITE_A_ID": KEY_ID_A, "OFFSITE_A_CREDS": SECRET_A}
    text = f"signing with {KEY_ID_A} and {SECRET_A} failed"
    assert Redactor.from_environ(environ)(text) == "signing with *** and *** failed"
    assert SECRET_A in Redactor.from_environ({k: v for k, v in environ.items() if k != "OPS_PLATFORM_CONFIG"})(text)


def test_a_worker_without_a_local_folder_keeps_its_backup_in_s3_only(site, offsite, tmp_path):
    """``keep_local=False`` (a Celery worker without BACKUP_DIR): the copies are checked against
    a scratch file that is then removed; S3 holds the backup and its manifest. When S3 fails too
    the backup is not verified (it has no copy), and without a bucket it is refused up front."""
    from ops_platform.config import EnvironmentConfig
    from ops_platform.lib.backup import perform_backup
    from ops_platform.lib.dump import BackupStepError
    from ops_platform.lib.stores import LocalStore, S3Store, make_s3_client
    from ops_platform_tests.restore_e2e_helpers import url_for

    environment = EnvironmentConfig("development", url_for(LIVE))
    scratch = LocalStore(tmp_path / "scratch")
    s3 = S3Store(make_s3_client(), MAIN_BUCKET, prefix="worker")
    outcome = perform_backup(environment, scratch, s3, keep_local=False)
    manifest = outcome.manifest
    assert manifest.verified and [copy["name"] for copy in manifest.copies] == ["s3"]
    assert manifest.locations == [s3.location("development", manifest.artifact)]
    assert [path for path in (tmp_path / "scratch").rglob("*") if path.is_file()] == []
    stored = Manifest.from_json(make_s3_client().get_object(
        Bucket=MAIN_BUCKET, Key=f"worker/development/{manifest.id}.manifest.json")["Body"].read())
    assert stored.sha256 == manifest.sha256 and stored.verified

    offsite.proxy.down = True
    try:
        down = S3Store(make_s3_client(endpoint_url=offsite.proxy.url, max_attempts=1), BUCKET_B)
        failed = perform_backup(environment, scratch, down, keep_local=False)
    finally:
        offsite.proxy.down = False
    assert not failed.manifest.verified and failed.manifest.locations == []
    assert not failed.check("committed_somewhere").passed
    assert [path for path in (tmp_path / "scratch").rglob("*") if path.is_file()] == []

    with pytest.raises(BackupStepError, match="^no local copy is kept on this machine") as refused:
        perform_backup(environment, scratch, None, keep_local=False)
    assert refused.value.step == "prepare"


def test_the_drill_reads_back_every_off_site_copy_and_names_a_corrupt_one(site, offsite, slack_server, tmp_path,
                                                                          monkeypatch):
    """restore_drill restores the newest backup from its local copy, then reads back its S3 and
    off-site copies in full: one with a flipped byte fails the drill (the restore itself passed),
    named in the check, the manifest's drill record and one Slack alert."""
    from ops_platform.definitions import defs
    from ops_platform.defs.settings import RestoreSettings
    from ops_platform_tests.conftest import platform_resources

    backup_id, _ = _backup(site)
    manifest = _manifest(site, backup_id)
    for name, value in {**site.env, "SLACK_WEBHOOK_URL": slack_server.webhook_url}.items():
        monkeypatch.setenv(name, value)

    def drill() -> dict[str, dg.AssetCheckEvaluation]:
        with site.instance() as instance:
            result = defs().resolve_job_def("restore_drill_job").execute_in_process(
                instance=instance, partition_key="development", raise_on_error=False,
                resources=platform_resources(restore_settings=RestoreSettings(work_dir=str(tmp_path / "work"))))
        return {check.check_name: check for check in result.get_asset_check_evaluations()}

    checks = drill()
    assert all(check.passed for check in checks.values()), checks
    assert checks["every_copy_intact"].metadata["copies"].value == {
        "local": "intact", "s3": "intact", "offsite-a": "intact", "offsite-b": "intact"}
    assert _manifest(site, backup_id).drill["copies"]["offsite-b"] == "intact"

    key = f"team/backups/development/{manifest.artifact}"
    good = offsite.client_b.get_object(Bucket=BUCKET_B, Key=key)["Body"].read()
    middle = len(good) // 2
    offsite.client_b.put_object(Bucket=BUCKET_B, Key=key, Body=good[:middle] + bytes([good[middle] ^ 1]) + good[middle + 1:])
    slack_server.requests.clear()
    try:
        checks = drill()
    finally:
        offsite.client_b.put_object(Bucket=BUCKET_B, Key=key, Body=good)
    assert checks["latest_backup_restores"].passed and checks["row_counts_match"].passed
    failed = checks["every_copy_intact"]
    assert not failed.passed and "(offsite-b copy) is unusable" in failed.description
    assert failed.metadata["intact"].value == 3
    recorded = _manifest(site, backup_id).drill
    assert recorded["passed"] is False and "is unusable" in recorded["copies"]["offsite-b"]
    (alert,) = [request.text for request in slack_server.requests if "Restore drill failed" in request.text]
    assert "another copy of it is not intact" in alert and "offsite-b" in alert and backup_id in alert
    assert not [name for name in database_names(PREFIX) if "__drill" in name]
    assert not list((tmp_path / "work").rglob("*.dump"))


def test_a_servers_night_with_an_off_site_copy_missing_alerts_once_naming_it(site, offsite, slack_server,
                                                                              monkeypatch):
    """fleet_backup_job counts copies as backup_job does: with offsite-b down its backup is made
    and verified, enough_copies fails on the target's partition, and the night's one Slack
    message is an alert naming the missing copy."""
    from ops_platform.definitions import defs

    for name, value in {**site.env, "SLACK_WEBHOOK_URL": slack_server.webhook_url}.items():
        monkeypatch.setenv(name, value)
    slack_server.requests.clear()
    site.home.mkdir(parents=True, exist_ok=True)
    offsite.proxy.down = True
    try:
        with site.instance() as instance:
            result = defs().resolve_job_def("fleet_backup_job").execute_in_process(
                instance=instance, run_config={"ops": {"fleet_backup_targets": {"config": {"targets": ["development"]}}}})
            assert result.success
            (record,) = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey("database_backup"), "enough_copies"), limit=1)
            evaluation = record.event.dagster_event.event_specific_data
    finally:
        offsite.proxy.down = False
    assert record.status.value == "FAILED" and evaluation.partition == "development"
    assert "offsite-b" in evaluation.description
    (text,) = [request.text for request in slack_server.requests]
    assert "1 database backup made, 1 with too few verified copies" in text
    assert "too few copies: development" in text and "offsite-b" in text
