"""The one error type of the restore steps, and how other errors become its one-line message."""

from __future__ import annotations

from ops_platform.lib.redact import Redactor

RESTORE_STEPS = ("resolve", "fetch", "safety_backup", "scratch", "pg_restore", "migrate", "verify", "swap")
MESSAGE_LIMIT = 600


class RestoreStepError(RuntimeError):
    """A restore step failed. ``step`` names it; the message is one line and already redacted."""

    def __init__(self, step: str, message: str):
        if step not in RESTORE_STEPS:
            raise ValueError(f"unknown restore step '{step}'")
        super().__init__(message)
        self.step = step


class CopyUnusable(RestoreStepError):
    """A stored copy is proven bad: its bytes differ from the manifest (size, sha256) or do not
    decompress. Only this lets a restore of ``latest`` move on to an older backup."""


class RestoreBusy(RestoreStepError):
    """Another restore of the same database holds its lock: a refusal, not a failure to alert on."""


class RestoreInputError(RestoreStepError):
    """The operator asked for something that cannot be restored (bad id, wrong environment).
    Raised before any work starts; a CLI maps it to exit code 2."""


def one_line(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """Collapse whitespace and newlines into one line, shortened to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def step_error(step: str, message: str, redactor: Redactor | None = None,
               cls: type[RestoreStepError] = RestoreStepError) -> RestoreStepError:
    """A RestoreStepError whose message has been redacted and made one line."""
    redactor = redactor or Redactor.from_environ()
    return cls(step, one_line(redactor(message)))


class _WithSecrets(Redactor):
    """A redactor that masks extra known values, then applies another redactor."""

    def __init__(self, base: Redactor, secrets):
        super().__init__(secrets)
        self._base = base

    def redact(self, text: object) -> str:
        return self._base.redact(super().redact(text))


def with_secrets(redactor: Redactor | None, secrets) -> Redactor:
    """``redactor`` (default: from the environment) that also masks ``secrets``."""
    base = redactor or Redactor.from_environ()
    secrets = [secret for secret in secrets if secret]
    return _WithSecrets(base, secrets) if secrets else base
