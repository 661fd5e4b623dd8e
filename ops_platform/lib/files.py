"""Files only their owner can read: a backup is a full copy of the application's data.

Folders the platform writes into are 0700 and its files 0600, whatever the umask; an existing
folder with looser permissions is tightened (and the caller says so)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def _make_private_dirs(path: Path) -> None:
    """Create ``path`` and every missing parent as 0700. ``Path.mkdir(parents=True)`` would give
    the parents the umask's mode (0755 under umask 022)."""
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue
        os.chmod(folder, PRIVATE_DIR)  # a umask like 0277 takes bits away that mkdir asked for


def _shared(folder: Path, info: os.stat_result) -> bool:
    """A folder that is not ours to tighten: another user's, or a sticky shared one like /tmp."""
    return info.st_uid != os.getuid() or bool(info.st_mode & stat.S_ISVTX)


def private_dir(path: Path | str, root: Path | str | None = None) -> list[str]:
    """Create ``path`` (with its parents) as 0700, and tighten it and its parents up to ``root``
    (inclusive) when they are open to others. Returns what was tightened, e.g.
    ``["/backups/production: 0755 -> 0700"]``. A folder of another user, or a sticky shared one
    such as /tmp, is never changed: the 0700 folders below it keep the files private."""
    path = Path(path)
    root = Path(root) if root is not None else None
    _make_private_dirs(path)  # created private, so a new instance's first backup warns of nothing
    chain = [path]
    if root is not None:
        chain += [parent for parent in path.parents if parent == root or root in parent.parents]
    tightened = []
    for folder in chain:
        info = folder.stat()
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077 and not _shared(folder, info):
            os.chmod(folder, PRIVATE_DIR)
            tightened.append(f"{folder}: {mode:04o} -> {PRIVATE_DIR:04o}")
    return tightened


def open_private(path: Path | str, buffering: int = -1):
    """Create ``path`` exclusively with mode 0600 (whatever the umask) and open it for writing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        return os.fdopen(fd, "wb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise
