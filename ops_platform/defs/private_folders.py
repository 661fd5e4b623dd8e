"""Folders that hold backups or a restore's files are private (0700, ``lib/files.py``). A folder
found open to others is tightened and the run's log says so; the next run finds it private and
says nothing."""

from pathlib import Path

from ops_platform.lib.files import private_dir
from ops_platform.lib.stores import LocalStore


def private_folder(log, folder: Path | str, root: Path | str | None, what: str) -> Path:
    """Create ``folder`` private, tighten it and its parents up to ``root``, and log each change."""
    for change in private_dir(folder, root):
        log.warning(f"tightened the permissions of {what}, which others could read: {change}")
    return Path(folder)


def private_backup_folder(log, local: LocalStore, environment: str) -> Path:
    """The environment's backup folder and the backup root above it."""
    return private_folder(log, local.env_dir(environment), local.root, "a backup folder")
