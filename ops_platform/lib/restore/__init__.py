"""Restoring a backup, one plain-Python step per module (no Dagster here):

resolve (which backup, which copies) -> fetch (verified raw archive) -> databases (lock, scratch
database) -> pg_restore -> migrate -> verify (against the manifest) -> swap.

Every step raises RestoreStepError(step, message) with a one-line, redacted message.
"""

from ops_platform.lib.restore.errors import (
    RESTORE_STEPS,
    RestoreInputError,
    RestoreStepError,
)

__all__ = ["RESTORE_STEPS", "RestoreInputError", "RestoreStepError"]
