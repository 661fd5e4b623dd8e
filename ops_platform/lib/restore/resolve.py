"""Step 1: choose the backup to restore, as an ordered list of copies to try.

``latest`` is the newest backup with ``verified: true`` that is not a pre-restore safety backup;
a named id must belong to the environment. Each backup yields its local copy first (no download),
then its S3 copy, so the fetch can fall back to the other copy of the same backup, and to an older
backup only when the newer one is proven bad (``passed_over`` says which and why).

When a bucket is configured and cannot be listed, ``latest`` cannot be known: the restore stops
and names the newest local backup, to be restored by its id on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ops_platform.config import ENVIRONMENT_NAMES, ConfigError, printable
from ops_platform.lib.artifacts import Manifest, manifest_name, parse_backup_id
from ops_platform.lib.formatting import describe
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore.errors import RestoreInputError, step_error
from ops_platform.lib.stores import LocalStore, S3Store
from ops_platform.lib.targets import TARGET_NAME_PATTERN

LATEST = "latest"
# A pre-restore safety backup holds what a restore replaced (often the very data being recovered
# from): it is restored only by its id, never as "latest".
NOT_LATEST_KINDS = ("pre-restore",)


@dataclass(frozen=True)
class BackupCandidate:
    """One stored copy of one backup: ``source`` is "local", "s3" or a destination's name, ``location`` its path or
    ``s3://`` URL. Plain data: the restore's steps pass it on (pickled between processes) and
    each builds its own clients."""

    manifest: Manifest
    source: str
    location: str

    @property
    def backup_id(self) -> str:
        return self.manifest.id

    def describe(self) -> str:
        """How messages name this copy, e.g. ``production-20260115T070000Z (s3 copy)``."""
        return f"{self.manifest.id} ({self.source} copy)"


@dataclass(frozen=True)
class PassedOver:
    """A backup newer than the one restored, and the proof that it is bad."""

    backup_id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.backup_id} {self.reason}"


@dataclass
class Resolution:
    """The copies to try, in order, and what the operator should know about the choice:
    ``passed_over`` lists newer backups found unusable before any download."""

    candidates: list[BackupCandidate]
    warnings: list[str] = field(default_factory=list)
    passed_over: list[PassedOver] = field(default_factory=list)

    @property
    def first(self) -> BackupCandidate:
        """The copy to try first."""
        return self.candidates[0]


def resolve_backup(environment: str, selector: str, local: LocalStore, s3: S3Store | None = None, *,
                   allow_other_environment: bool = False, allow_unverified: bool = False,
                   redactor: Redactor | None = None, destinations: Sequence[S3Store] = ()) -> Resolution:
    """Candidates for ``selector`` ("latest" or a backup id) of ``environment``, best first: each
    backup's local copy, its S3 copy, then its copy in each of ``destinations`` (the off-site
    copies of ops_platform.yaml, in file order; one that cannot be listed is a warning).
    Raises RestoreInputError for a malformed, unknown or other environment's id, and
    RestoreStepError("resolve") when there is nothing to restore or S3 cannot be read."""
    redactor = redactor or Redactor.from_environ()
    if not TARGET_NAME_PATTERN.match(environment or ""):
        raise step_error("resolve", f"unknown environment '{printable(environment)}'; expected one of "
                                    f"{', '.join(ENVIRONMENT_NAMES)} or a target's name", redactor, RestoreInputError)
    if selector == LATEST:
        return _resolve_latest(environment, local, s3, redactor, destinations)
    return _resolve_named(environment, selector, local, s3, allow_other_environment, allow_unverified, redactor,
                          destinations)


def _s3_where(s3: S3Store, environment: str) -> str:
    return f"s3://{s3.bucket}/{s3.key(environment, '')}"


@dataclass
class _Listing:
    """One store's committed copies by backup id, and what it holds that cannot be restored."""

    found: dict[str, BackupCandidate] = field(default_factory=dict)
    manifests_without_artifact: dict[str, Manifest] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _local_listing(environment: str, local: LocalStore) -> _Listing:
    listing = local.list_manifests(environment)
    result = _Listing(unreadable=dict(listing.unreadable))
    result.warnings = [f"skipped unreadable local manifest {name}" for name in listing.unreadable]
    for manifest in listing.manifests:
        path = local.path(environment, manifest.artifact)
        if path.is_file():
            result.found[manifest.id] = BackupCandidate(manifest, "local", str(path))
        else:
            result.manifests_without_artifact[manifest.id] = manifest
            result.warnings.append(f"{manifest.id}: local manifest found but its artifact is missing")
    return result


def _s3_listing(environment: str, s3: S3Store) -> _Listing:
    """Raises on S3 errors."""
    names = s3.list_names(environment)
    listing = s3.list_manifests(environment)
    result = _Listing(unreadable=dict(listing.unreadable))
    result.warnings = [f"skipped unreadable {_label(s3)} manifest {name}" for name in listing.unreadable]
    for manifest in listing.manifests:
        if manifest.artifact in names:
            result.found[manifest.id] = BackupCandidate(manifest, s3.name, s3.location(environment, manifest.artifact))
        else:
            result.manifests_without_artifact[manifest.id] = manifest
            result.warnings.append(f"{manifest.id}: {_label(s3)} manifest found but its artifact is missing")
    return result


def _restorable(manifest: Manifest) -> bool:
    return manifest.verified and manifest.kind not in NOT_LATEST_KINDS


def _passed_over(newest_restorable: Manifest, listings: list[_Listing]) -> list[PassedOver]:
    """Backups newer than ``newest_restorable`` that would have been ``latest`` but have no copy to
    restore (a manifest without its artifact, or a manifest that cannot be read), newest first."""
    found: dict[str, PassedOver] = {}
    for listing in listings:
        for backup_id, manifest in listing.manifests_without_artifact.items():
            if _restorable(manifest) and manifest.created > newest_restorable.created and not any(
                    backup_id in other.found for other in listings):
                found.setdefault(backup_id, PassedOver(backup_id, "has no artifact (its manifest is there, its "
                                                                  "dump file is gone)"))
        for name, error in listing.unreadable.items():
            backup_id = name.removesuffix(".manifest.json")
            try:
                _, created = parse_backup_id(backup_id)
            except ConfigError:
                continue
            if created > newest_restorable.created and not any(backup_id in other.found for other in listings):
                found.setdefault(backup_id, PassedOver(backup_id, f"has a manifest that cannot be read ({error})"))
    return sorted(found.values(), key=lambda item: item.backup_id, reverse=True)


def _label(store: S3Store) -> str:
    return "S3" if store.name == "s3" else f"destination {store.name}"


def _destination_listings(environment: str, destinations: Sequence[S3Store]) -> tuple[list[_Listing], list[str]]:
    """Each destination's listing; one that cannot be listed is left out with a warning (the local
    folder and the main bucket decide which backup is the newest)."""
    listings, warnings = [], []
    for store in destinations:
        try:
            listings.append(_s3_listing(environment, store))
        except Exception as error:  # noqa: BLE001 - a warning, see above
            warnings.append(f"destination {store.name} ({_s3_where(store, environment)}) cannot be listed, its "
                            f"copies are not considered: {type(error).__name__}: {describe(error)}")
    return listings, warnings


def _resolve_latest(environment: str, local: LocalStore, s3: S3Store | None, redactor: Redactor,
                    destinations: Sequence[S3Store] = ()) -> Resolution:
    local_listing = _local_listing(environment, local)
    listings = [local_listing]
    s3_error = None
    if s3 is not None:
        try:
            listings.append(_s3_listing(environment, s3))
        except Exception as error:  # noqa: BLE001 - said below, with what the local folder holds
            s3_error = f"{type(error).__name__}: {describe(error)}"
    extra, destination_warnings = _destination_listings(environment, destinations) if not s3_error else ([], [])
    listings += extra
    manifests = {copy.backup_id: copy.manifest for listing in reversed(listings) for copy in listing.found.values()}
    verified = sorted((m for m in manifests.values() if _restorable(m)), key=lambda m: m.created, reverse=True)
    if s3_error:
        raise step_error("resolve", _cannot_tell_latest(environment, s3, s3_error, verified), redactor)
    candidates = [copy for manifest in verified
                  for copy in (listing.found.get(manifest.id) for listing in listings) if copy]
    if not candidates:
        where = f"local folder {local.env_dir(environment)}"
        if s3 is not None:
            where += f" and {_s3_where(s3, environment)}"
        for store in destinations:
            where += f" and {_s3_where(store, environment)}"
        unverified = len(manifests) - len(verified)
        detail = f" ({unverified} found, none verified)" if unverified else ""
        raise step_error("resolve", f"no verified backups of {environment} in {where}{detail}", redactor,
                         RestoreInputError)
    warnings = [warning for listing in listings for warning in listing.warnings] + destination_warnings
    newer_unverified = [m.id for m in manifests.values() if not m.verified and m.created > verified[0].created]
    if newer_unverified:
        warnings.append(f"newer backup(s) {', '.join(sorted(newer_unverified, reverse=True))} failed their checks at "
                        f"backup time and are not restored as latest")
    return Resolution(candidates, [redactor(w) for w in warnings], _passed_over(verified[0], listings))


def _cannot_tell_latest(environment: str, s3: S3Store, error: str, local_verified: list[Manifest]) -> str:
    where = _s3_where(s3, environment)
    if not local_verified:
        return (f"no verified local backup of {environment}, and S3 is unreachable ({where}): {error}; nothing "
                "was touched")
    newest = local_verified[0]
    return (f"cannot tell which backup of {environment} is the newest: S3 ({where}) cannot be listed ({error}); "
            f"nothing was touched. The newest local backup is {newest.id}; to restore it on purpose: "
            f"ops-platform restore {newest.id} {environment} (backup: {newest.id} in the launchpad)")


def _resolve_named(environment: str, backup_id: str, local: LocalStore, s3: S3Store | None,
                   allow_other_environment: bool, allow_unverified: bool, redactor: Redactor,
                   destinations: Sequence[S3Store] = ()) -> Resolution:
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
    for store in destinations:
        try:
            remote_copy = _named_s3(owner, backup_id, store)
        except Exception as error:  # noqa: BLE001 - the other copies may be enough
            warnings.append(f"destination {store.name} is unreachable, its copy is not considered: "
                            f"{type(error).__name__}: {describe(error)}")
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
    return BackupCandidate(manifest, "local", str(artifact))


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
    return BackupCandidate(manifest, s3.name, s3.location(environment, manifest.artifact))
