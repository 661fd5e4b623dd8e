"""The code location: every definition under ``ops_platform/defs``, plus the executor."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(executor=dg.multiprocess_executor.configured({"max_concurrent": 2})),
    )
