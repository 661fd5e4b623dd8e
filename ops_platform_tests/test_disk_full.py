"""A full disk: under the backup folder while the dump or the manifest is written, and under the
default instance (SQLite in $DAGSTER_HOME). Each says clearly what happened, in one line, and
leaves nothing half-written. The disks are small tmpfs mounts (this machine's tests run as root)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ops_platform.config import get_environment
from ops_platform.lib.backup import perform_backup
from ops_platform.lib.dump import BackupStepError, Progress
from ops_platform.lib.stores import LocalStore

CLI = str(Path(sys.executable).parent / "ops-platform")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB filesystem of its own."""
    mountpoint = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)], check=True)
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(folder: Path) -> None:
    """Write until the filesystem has no room left."""
    with open(folder / "ballast", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass


def test_the_disk_filling_up_before_the_manifest_leaves_no_partial_manifest(databases, small_disk):
    local = LocalStore(small_disk / "backups")

    def fill_when_dumped(progress: Progress) -> None:
        if progress.done:
            fill(small_disk)

    with pytest.raises(BackupStepError) as failure:
        perform_backup(get_environment("development"), local, None, progress=fill_when_dumped)
    assert failure.value.step == "manifest"
    message = str(failure.value)
    assert "manifest could not be written" in message and "No space left on device" in message
    assert "\n" not in message and "not committed" in message
    folder = local.env_dir("development")
    assert not list(folder.glob("*.manifest.json*")) and not list(folder.glob(".*.partial"))


def test_the_disk_full_during_the_dump_fails_with_one_alert_and_no_partial_file(databases, small_disk, tmp_path,
                                                                                slack_server):
    from ops_platform_tests.backup_helpers import fill_big_table
    from ops_platform_tests.conftest import TEST_DATABASES

    fill_big_table(TEST_DATABASES["development"], rows=100_000)  # bigger than the 2 MiB disk
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"), BACKUP_DIR=str(small_disk / "backups"),
               SLACK_WEBHOOK_URL=slack_server.webhook_url)
    env.pop("AWS_S3_BUCKET", None)
    result = subprocess.run([CLI, "backup", "development"], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "No space left on device" in result.stderr
    assert "write-local" in result.stderr
    assert not list((small_disk / "backups").rglob("*.partial")) and not list((small_disk / "backups").rglob("*.zst"))
    texts = slack_server.texts()
    assert len(texts) == 1 and "No space left on device" in texts[0]


def test_a_full_instance_disk_is_one_clear_line(databases, small_disk, tmp_path):
    home = small_disk / "home"
    fill(small_disk)
    env = dict(os.environ, DAGSTER_HOME=str(home), BACKUP_DIR=str(tmp_path / "backups"))
    env.pop("AWS_S3_BUCKET", None)
    result = subprocess.run([CLI, "backup", "development"], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"the Dagster instance's storage in {home} is full" in lines[0]
    assert not (tmp_path / "backups").exists()
