"""Files only their owner can read: a backup is a full copy of the application's data.

Folders the platform writes into are 0700 and its files 0600, whatever the umask; an existing
folder with looser permissions is tightened (and the caller says so)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path | str, root: Path | str | None = None) -> list[str]:
    """Create ``path`` (with its parents) as 0700, and tighten it and its parents up to ``root``
    (inclusive) when they are open to others. Returns what was tightened, e.g.
    ``["/backups/production: 0755 -> 0700"]``."""
    path = Path(path)
    root = Path(root) if root is not None else None
    chain = [path]
    if root is not None:
        chain += [parent for parent in path.parents if parent == root or root in parent.parents]
    missing = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):  # created private, so a new instance's first backup warns of nothing
        folder.mkdir(mode=PRIVATE_DIR if folder in chain else 0o777, exist_ok=True)
    tightened = []
    for folder in chain:
        mode = stat.S_IMODE(folder.stat().st_mode)
        if mode & 0o077:
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
