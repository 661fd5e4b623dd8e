"""The code location: every definition under ``ops_platform/defs``, plus the executor."""

import os
from pathlib import Path

import dagster as dg

_built: dict[tuple, dg.Definitions] = {}


def _inputs() -> tuple:
    """What the definitions are built from besides the code: the variables, and ops_platform.yaml
    as it is on disk now."""
    from ops_platform.config import ConfigError
    from ops_platform.lib.targets import config_path

    try:
        path = config_path()
        stat = path.stat() if path else None
        file = (str(path), stat.st_mtime_ns, stat.st_size) if stat else None
    except (ConfigError, OSError):
        file = "unreadable"
    return tuple(sorted(os.environ.items())), file


@dg.definitions
def defs() -> dg.Definitions:
    """Built once per process for the same variables and file: a step process forked from a
    forkserver that built them (``ops_platform.preload``) starts without loading them again."""
    from ops_platform.defs.run_guards import PROCESS_POOL

    key = _inputs()
    if key not in _built:
        _built.clear()
        _built[key] = dg.Definitions.merge(
            dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
            dg.Definitions(executor=PROCESS_POOL),
        )
    return _built[key]
