"""Step 1: choose the backup to restore, as an ordered list of copies to try.

``latest`` is the newest backup with ``verified: true`` that is not a pre-restore safety backup;
a named id must belong to the environment. Each backup yields its local copy first (no download), then its S3 copy, so the
caller can fall back to the next copy, and then to the next backup, when one turns out corrupt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ops_platform.config import ENVIRONMENT_NAMES, ConfigError, printable
from ops_platform.lib.artifacts import Manifest, manifest_name, parse_backup_id
from ops_platform.lib.formatting import describe
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore.errors import RestoreInputError, step_error
from ops_platform.lib.stores import LocalStore, S3Store

LATEST = "latest"
# A pre-restore safety backup holds what a restore replaced (often the very data being recovered
# from): it is restored only by its id, never as "latest".
NOT_LATEST_KINDS = ("pre-restore",)


@dataclass(frozen=True)
class BackupCandidate:
    """One stored copy of one backup: ``source`` is "local" or "s3"."""

    manifest: Manifest
    source: str
    location: str
    store: LocalStore | S3Store = field(compare=False, repr=False)

    @property
    def backup_id(self) -> str:
        return self.manifest.id

    def describe(self) -> str:
        """How messages name this copy, e.g. ``production-20260115T070000Z (s3 copy)``."""
        return f"{self.manifest.id} ({self.source} copy)"


@dataclass
class Resolution:
    """The copies to try, in order, and what the operator should know about the choice."""

    candidates: list[BackupCandidate]
    warnings: list[str] = field(default_factory=list)

    @property
    def first(self) -> BackupCandidate:
        """The copy to try first."""
        return self.candidates[0]


def resolve_backup(environment: str, selector: str, local: LocalStore, s3: S3Store | None = None, *,
                   allow_other_environment: bool = False, allow_unverified: bool = False,
                   redactor: Redactor | None = None) -> Resolution:
    """Candidates for ``selector`` ("latest" or a backup id) of ``environment``, best first.
    Raises RestoreInputError for a malformed, unknown or other environment's id, and
    RestoreStepError("resolve") when there is nothing to restore or S3 cannot be read."""
    redactor = redactor or Redactor.from_environ()
    if environment not in ENVIRONMENT_NAMES:
        raise step_error("resolve", f"unknown environment '{printable(environment)}'; expected one of "
                                    f"{', '.join(ENVIRONMENT_NAMES)}", redactor, RestoreInputError)
    if selector == LATEST:
        return _resolve_latest(environment, local, s3, redactor)
    return _resolve_named(environment, selector, local, s3, allow_other_environment, allow_unverified, redactor)


def _s3_where(s3: S3Store, environment: str) -> str:
    return f"s3://{s3.bucket}/{s3.key(environment, '')}"


def local_candidates(environment: str, local: LocalStore) -> tuple[dict[str, BackupCandidate], list[str]]:
    """Local copies by backup id (manifest plus artifact present), and warnings about the rest."""
    listing = local.list_manifests(environment)
    warnings = [f"skipped unreadable local manifest {name}" for name in listing.unreadable]
    found = {}
    for manifest in listing.manifests:
        path = local.path(environment, manifest.artifact)
        if path.is_file():
            found[manifest.id] = BackupCandidate(manifest, "local", str(path), local)
        else:
            warnings.append(f"{manifest.id}: local manifest found but its artifact is missing")
    return found, warnings


def s3_candidates(environment: str, s3: S3Store) -> tuple[dict[str, BackupCandidate], list[str]]:
    """S3 copies by backup id (manifest plus artifact present). Raises on S3 errors."""
    names = s3.list_names(environment)
    listing = s3.list_manifests(environment)
    warnings = [f"skipped unreadable S3 manifest {name}" for name in listing.unreadable]
    found = {}
    for manifest in listing.manifests:
        if manifest.artifact in names:
            found[manifest.id] = BackupCandidate(manifest, "s3", s3.location(environment, manifest.artifact), s3)
        else:
            warnings.append(f"{manifest.id}: S3 manifest found but its artifact is missing")
    return found, warnings


def _resolve_latest(environment: str, local: LocalStore, s3: S3Store | None, redactor: Redactor) -> Resolution:
    local_found, warnings = local_candidates(environment, local)
    remote_found: dict[str, BackupCandidate] = {}
    s3_error = None
    if s3 is not None:
        try:
            remote_found, s3_warnings = s3_candidates(environment, s3)
            warnings += s3_warnings
        except Exception as error:  # noqa: BLE001 - local copies may still be enough
            s3_error = f"{type(error).__name__}: {describe(error)}"
    manifests = {c.backup_id: c.manifest for c in [*remote_found.values(), *local_found.values()]}
    verified = sorted((m for m in manifests.values() if m.verified and m.kind not in NOT_LATEST_KINDS),
                      key=lambda m: m.created, reverse=True)
    candidates = [copy for manifest in verified
                  for copy in (local_found.get(manifest.id), remote_found.get(manifest.id)) if copy]
    if not candidates:
        where = f"local folder {local.env_dir(environment)}"
        if s3 is not None:
            where += f" and {_s3_where(s3, environment)}"
        if s3_error:
            raise step_error("resolve", f"no verified local backup of {environment}, and S3 is unreachable "
                                        f"({_s3_where(s3, environment)}): {s3_error}", redactor)
        unverified = len(manifests) - len(verified)
        detail = f" ({unverified} found, none verified)" if unverified else ""
        raise step_error("resolve", f"no verified backups of {environment} in {where}{detail}", redactor,
                         RestoreInputError)
    if s3_error:
        warnings.append(redactor(f"S3 is unreachable, only local copies are considered: {s3_error}"))
    return Resolution(candidates, [redactor(w) for w in warnings])


def _resolve_named(environment: str, backup_id: str, local: LocalStore, s3: S3Store | None,
                   allow_other_environment: bool, allow_unverified: bool, redactor: Redactor) -> Resolution:
    try:
        owner, _created = parse_backup_id(backup_id)
    except ConfigError as error:
        raise step_error("resolve", str(error), redactor, RestoreInputError) from None
    if owner != environment and not allow_other_environment:
        raise step_error("resolve", f"backup {backup_id} belongs to {owner}, not {environment}; restoring another "
                                    "environment's backup needs allow_other_environment", redactor, RestoreInputError)
    warnings: list[str] = []
    candidates = []
    local_copy = _named_local(owner, backup_id, local)
    if local_copy:
        candidates.append(local_copy)
    s3_error = None
    if s3 is not None:
        try:
            remote_copy = _named_s3(owner, backup_id, s3)
        except Exception as error:  # noqa: BLE001 - the local copy may still be enough
            s3_error = f"{type(error).__name__}: {describe(error)}"
        else:
            if remote_copy:
                candidates.append(remote_copy)
    if not candidates:
        if s3_error:
            raise step_error("resolve", f"backup {backup_id} is not in the local folder {local.env_dir(owner)} and S3 "
                                        f"is unreachable ({_s3_where(s3, owner)}): {s3_error}", redactor)
        where = f"{local.env_dir(owner)}" + (f" or {_s3_where(s3, owner)}" if s3 is not None else "")
        raise step_error("resolve", f"unknown backup id {backup_id}: no committed backup in {where}", redactor,
                         RestoreInputError)
    if s3_error:
        warnings.append(f"S3 is unreachable, only the local copy is considered: {s3_error}")
    manifest = candidates[0].manifest
    if manifest.environment != owner:
        raise step_error("resolve", f"manifest of {backup_id} names environment {manifest.environment}", redactor,
                         RestoreInputError)
    if not manifest.verified:
        if not allow_unverified:
            raise step_error("resolve", f"backup {backup_id} is not verified (its checks failed); restoring it needs "
                                        "allow_unverified", redactor, RestoreInputError)
        warnings.append(f"backup {backup_id} is not verified")
    if owner != environment:
        warnings.append(f"restoring {owner}'s backup {backup_id} into {environment}")
    return Resolution(candidates, [redactor(w) for w in warnings])


def _named_local(environment: str, backup_id: str, local: LocalStore) -> BackupCandidate | None:
    path = local.path(environment, manifest_name(backup_id))
    try:
        manifest = Manifest.from_json(path.read_bytes())
    except (OSError, ValueError, TypeError):
        return None
    artifact = local.path(environment, manifest.artifact)
    if manifest.id != backup_id or not artifact.is_file():
        return None
    return BackupCandidate(manifest, "local", str(artifact), local)


def _named_s3(environment: str, backup_id: str, s3: S3Store) -> BackupCandidate | None:
    from botocore.exceptions import ClientError

    try:
        manifest = Manifest.from_json(s3.read_bytes(environment, manifest_name(backup_id)))
        s3.client.head_object(Bucket=s3.bucket, Key=s3.key(environment, manifest.artifact))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    except (ValueError, TypeError):
        return None
    if manifest.id != backup_id:
        return None
    return BackupCandidate(manifest, "s3", s3.location(environment, manifest.artifact), s3)
