"""Backups are full copies of the application's data: every file the platform writes for them
(artifacts, manifests, partial files, the decompressed archive a restore or drill works from,
retention's alert state) is 0600 and every folder holding them 0700, owned by the platform's
user, under the usual umask 022. A folder found open to others is tightened and the run says so
once. Real PostgreSQL and Dagster runs; a sampler thread records the mode of every path while the
work runs, so files that exist only for a moment are checked too."""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest

from ops_platform.cli.runs import ensure_dagster_home
from ops_platform.config import EnvironmentConfig
from ops_platform.definitions import defs
from ops_platform.defs.backups import assets as backup_assets
from ops_platform.defs.resources import BackupBucketResource, BackupStorageResource, OpsSlackResource
from ops_platform.defs.retention.assets import backup_retention
from ops_platform.defs.settings import RestoreSettings
from ops_platform.lib import files
from ops_platform.lib.artifacts import Manifest
from ops_platform.lib.backup import perform_backup
from ops_platform.lib.dump import BackupStepError, run_dump
from ops_platform.lib.retention import alerts
from ops_platform.lib.stores import LocalStore
from ops_platform_tests.backup_helpers import (  # noqa: F401 - fixtures
    empty_database,
    fill_big_table,
    terminate_dump_when_streaming,
)
from ops_platform_tests.conftest import database_url, platform_resources
from ops_platform_tests.restore_e2e_helpers import (
    CLI,
    PREFIX,
    ROOT,
    confirmation,
    content,
    create_live,
    database_names,
    drop_database,
    run_sql_as,
    url_for,
)

UMASK = 0o022
LIVE = PREFIX + "private"


@contextlib.contextmanager
def umask(mask: int = UMASK):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


class Sampler:
    """Records the mode and owner of every file and folder under ``roots`` (the roots included),
    every few milliseconds, until stopped: a partial file or a restore's working file is seen
    while it exists."""

    def __init__(self, *roots: Path):
        self.roots = [Path(root) for root in roots]
        self.seen: dict[str, set[tuple[int, int, bool]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.002)

    def _record(self, path: str) -> None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        self.seen.setdefault(path, set()).add((stat.S_IMODE(info.st_mode), info.st_uid, stat.S_ISDIR(info.st_mode)))

    def sample(self):
        for root in self.roots:
            self._record(str(root))
            for folder, subfolders, names in os.walk(root):
                for name in subfolders + names:
                    self._record(os.path.join(folder, name))

    def paths(self, suffix: str = "") -> list[str]:
        return sorted(path for path in self.seen if path.endswith(suffix))

    def assert_private(self) -> None:
        loose = {path: sorted(f"{mode:04o} uid {uid}" for mode, uid, _ in states)
                 for path, states in self.seen.items()
                 if any(mode != (0o700 if is_dir else 0o600) or uid != os.getuid() for mode, uid, is_dir in states)}
        assert not loose, f"open to others (or not ours): {loose}"


def tree(*roots: Path) -> Sampler:
    """The modes of everything under ``roots`` now."""
    sampler = Sampler(*roots)
    sampler.sample()
    return sampler


def log_text(instance, run_id: str) -> str:
    return "\n".join(entry.user_message or "" for entry in instance.all_logs(run_id))


# ---------------------------------------------------------------- backups


def test_cli_backup_creates_private_folders_and_files_whatever_the_umask(databases, tmp_path):
    """Under umask 022, through the real console script: the backup root and its missing parents,
    the environment folder, the artifact, its manifest and $DAGSTER_HOME are private."""
    home, backup_dir = tmp_path / "instance" / "home", tmp_path / "store" / "backups"
    env = {**os.environ, "DAGSTER_HOME": str(home), "BACKUP_DIR": str(backup_dir)}
    env.pop("AWS_S3_BUCKET")
    with Sampler(tmp_path / "store") as sampler:
        result = subprocess.run([CLI, "backup", "development"], env=env, capture_output=True, text=True,
                                timeout=240, cwd=ROOT, preexec_fn=lambda: os.umask(UMASK))
    assert result.returncode == 0, result.stderr
    sampler.assert_private()
    assert len(sampler.paths(".manifest.json")) == 1 and len(sampler.paths(".dump.zst")) == 1
    assert sampler.paths(".partial"), "the partial file was never seen while the dump ran"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700 and stat.S_IMODE(home.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "dagster.yaml").stat().st_mode) == 0o600


def materialize_backup(instance, environment: str, backup_dir: Path, slack):
    return dg.materialize(
        [backup_assets.database_backup], partition_key=environment, instance=instance, raise_on_error=False,
        resources=platform_resources(slack=slack, backup_storage=BackupStorageResource(backup_dir=str(backup_dir)),
                                     backup_bucket=BackupBucketResource(bucket=None)))


def test_a_loose_backup_folder_is_tightened_and_the_run_says_so_once(databases, instance, slack_resource, tmp_path):
    backup_dir = tmp_path / "backups"
    (backup_dir / "production").mkdir(parents=True)
    os.chmod(backup_dir, 0o755)
    os.chmod(backup_dir / "production", 0o775)
    with umask():
        first = materialize_backup(instance, "production", backup_dir, slack_resource)
        second = materialize_backup(instance, "production", backup_dir, slack_resource)
    assert first.success and second.success
    said = [line for line in log_text(instance, first.run_id).splitlines() if "tightened the permissions" in line]
    assert len(said) == 2, said
    assert f"{backup_dir / 'production'}: 0775 -> 0700" in said[0] and f"{backup_dir}: 0755 -> 0700" in said[1]
    assert "tightened" not in log_text(instance, second.run_id)
    tree(backup_dir).assert_private()


def test_retention_tightens_a_loose_backup_folder_once_and_keeps_its_alert_state_private(
        databases, instance, slack_resource, tmp_path):
    backup_dir = tmp_path / "backups"
    store = LocalStore(backup_dir)
    with umask():
        perform_backup(EnvironmentConfig("staging", database_url("staging")), store, None)
    os.chmod(backup_dir / "staging", 0o755)

    def retention():
        return dg.materialize([backup_retention], partition_key="staging", instance=instance, raise_on_error=False,
                              resources=platform_resources(
                                  slack=slack_resource, backup_storage=BackupStorageResource(backup_dir=str(backup_dir)),
                                  backup_bucket=BackupBucketResource(bucket=None)))

    with umask():
        first, second = retention(), retention()
    assert first.success and second.success
    assert f"a backup folder, which others could read: {backup_dir / 'staging'}: 0755 -> 0700" in \
        log_text(instance, first.run_id)
    assert "tightened" not in log_text(instance, second.run_id)

    # The file that remembers which corrupt copies were alerted, in a folder that does not exist yet.
    state = alerts.state_path(LocalStore(tmp_path / "elsewhere" / "backups"), "production")
    with umask():
        alerts.save(state, {"production-20270101T000000Z local": "sha256 differs"})
    assert state.name == ".retention-alerted.json"
    tree(backup_dir, tmp_path / "elsewhere").assert_private()


def test_a_killed_dump_leaves_nothing_and_its_partial_file_was_private(databases, tmp_path):
    name = databases["development"]
    fill_big_table(name)  # long enough that the kill lands while the dump streams, even on a busy machine
    folder = tmp_path / "backups" / "development"
    watcher = terminate_dump_when_streaming(name, folder)
    with umask(), Sampler(tmp_path / "backups") as sampler, pytest.raises(BackupStepError) as error:
        run_dump(database_url("development"), folder / "development-20270101T000000Z.dump.zst")
    watcher.join()
    assert watcher.result.get("terminated"), "the dump ended before it could be interrupted"
    assert error.value.step == "pg_dump"
    assert sampler.paths(".partial"), "the partial file was never seen"
    sampler.assert_private()
    assert [path.name for path in folder.iterdir()] == []


def test_a_backup_that_fails_verification_leaves_only_private_files(empty_database, instance, slack_resource,
                                                                      tmp_path):
    backup_dir = tmp_path / "backups"
    with umask(), Sampler(backup_dir) as sampler:
        result = materialize_backup(instance, "staging", backup_dir, slack_resource)
    assert not result.success
    left = sorted(path.name for path in (backup_dir / "staging").iterdir())
    assert any(name.endswith(".dump.zst") for name in left) and any(name.endswith(".manifest.json") for name in left)
    manifest = Manifest.from_json(next((backup_dir / "staging").glob("*.manifest.json")).read_text())
    assert not manifest.verified
    sampler.assert_private()


def test_dagster_home_is_created_private_and_a_loose_one_is_tightened_once(tmp_path, monkeypatch, capsys):
    home = tmp_path / "a" / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with umask():
        ensure_dagster_home()
    assert capsys.readouterr().err == ""
    assert stat.S_IMODE(home.stat().st_mode) == 0o700 and stat.S_IMODE(home.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "dagster.yaml").stat().st_mode) == 0o600
    os.chmod(home, 0o755)
    with umask():
        ensure_dagster_home()
        ensure_dagster_home()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: tightened the permissions of $DAGSTER_HOME, which others could read: {home}: 0755 -> 0700"]


def test_private_dir_never_touches_a_shared_sticky_folder(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with umask():
        changes = files.private_dir(shared / "ops" / "work", root=shared)
    assert changes == []
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "ops").stat().st_mode) == 0o700


# ---------------------------------------------------------------- restores and drills


@functools.lru_cache(maxsize=None)
def job(name: str):
    return defs().resolve_job_def(name)


@pytest.fixture
def staging_live(monkeypatch):
    """LIVE as the staging environment's database, with one verified backup made under umask 022."""
    create_live(LIVE)
    monkeypatch.setenv("STAGING_DATABASE_URL", url_for(LIVE))
    monkeypatch.delenv("STAGING_MIGRATE_COMMAND", raising=False)
    yield LIVE
    for name in database_names(LIVE):
        drop_database(name)


def restore_resources(slack_server, backup_dir: Path, work_dir: Path | None = None) -> dict:
    return platform_resources(
        slack=OpsSlackResource(webhook_url=slack_server.webhook_url, max_retries=0),
        backup_storage=BackupStorageResource(backup_dir=str(backup_dir)),
        backup_bucket=BackupBucketResource(bucket=None),
        restore_settings=RestoreSettings(work_dir=str(work_dir)) if work_dir else RestoreSettings())


def test_a_restore_works_from_private_files_and_its_safety_backup_is_private(staging_live, instance, slack_server,
                                                                            tmp_path):
    """The default work folder (BACKUP_DIR/.restore) does not exist yet: it and the decompressed
    archive are private while the restore runs, and so is the safety backup it takes."""
    backup_dir = tmp_path / "backups"
    with umask():
        outcome = perform_backup(EnvironmentConfig("staging", url_for(LIVE)), LocalStore(backup_dir), None,
                                 now=lambda: datetime(2026, 1, 15, 7, 0, tzinfo=timezone.utc))
    expected = content(LIVE)
    run_sql_as(LIVE, "INSERT INTO customers (email) VALUES ('after@example.com');")
    with umask(), Sampler(backup_dir) as sampler:
        result = job("restore_job").execute_in_process(
            run_config={"ops": {"resolve_restore": {"config": {"confirm": confirmation(outcome.manifest.id, LIVE)}}}},
            instance=instance,
            partition_key="staging", raise_on_error=False, resources=restore_resources(slack_server, backup_dir))
    assert result.success
    assert content(LIVE) == expected
    work_files = [path for path in sampler.paths(".dump") if "/.restore/" in path]
    assert work_files, "the restore's working file was never seen"
    assert len(sampler.paths(".manifest.json")) == 2  # the backup and the pre-restore safety backup
    sampler.assert_private()
    assert not any(path.is_file() for path in (backup_dir / ".restore").rglob("*"))


def test_a_drill_works_from_private_files_and_rewrites_the_manifest_privately(staging_live, instance, slack_server,
                                                                             tmp_path):
    """RESTORE_WORK_DIR does not exist yet: the drill creates it and its parents private."""
    backup_dir, work_dir = tmp_path / "backups", tmp_path / "scratch" / "restore-work"
    with umask():
        outcome = perform_backup(EnvironmentConfig("staging", url_for(LIVE)), LocalStore(backup_dir), None)
    with umask(), Sampler(backup_dir, tmp_path / "scratch") as sampler:
        result = job("restore_drill_job").execute_in_process(
            instance=instance, partition_key="staging", raise_on_error=False,
            resources=restore_resources(slack_server, backup_dir, work_dir))
    assert result.success
    assert [path for path in sampler.paths(".dump") if path.startswith(str(work_dir))], "no working file seen"
    sampler.assert_private()
    manifest = Manifest.from_json((backup_dir / "staging" / f"{outcome.manifest.id}.manifest.json").read_text())
    assert manifest.drill and manifest.drill["passed"]
