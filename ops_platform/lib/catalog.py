"""The list of committed backups for an environment, merged across the local folder and S3, with
each stored copy's real size (and, when asked, its content checked against its manifest)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ops_platform.lib.artifacts import Manifest
from ops_platform.lib.formatting import describe
from ops_platform.lib.stores import CopyCheck, LocalStore, S3Store


LIST_S3_READ_TIMEOUT_SECONDS = 5


@dataclass
class StoredCopy:
    """One backup's artifact in one store, with the manifest held in that same store."""

    store: str
    location: str
    manifest: Manifest
    size: int | None
    check: CopyCheck | None = None

    @property
    def size_matches(self) -> bool:
        """False only when the stored size is known and differs."""
        return self.size is None or self.size == self.manifest.stored_bytes

    @property
    def ok(self) -> bool | None:
        """False when the copy is known not to match its manifest (or is gone), True when
        --verify found it intact, None when only its size was compared, or it could not be checked."""
        if not self.size_matches or (self.check is not None and self.check.ok is False):
            return False
        return self.check.ok if self.check else None

    def as_record(self) -> dict:
        return {
            "store": self.store,
            "location": self.location,
            "size_bytes": self.size,
            "manifest_size_bytes": self.manifest.stored_bytes,
            "size_matches": self.size_matches,
            "check": self.check.status if self.check else None,
            "check_method": self.check.method if self.check else None,
            "detail": self.check.detail if self.check else (
                None if self.size_matches else f"size {self.size} bytes differs from the manifest's "
                                               f"{self.manifest.stored_bytes}"),
        }


@dataclass
class BackupListing:
    manifests: list[Manifest] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    copies: dict[str, list[StoredCopy]] = field(default_factory=dict)
    verified_content: bool = False

    def intact(self, backup_id: str) -> bool | None:
        """False when any copy is known bad; True when every copy was checked and found intact."""
        states = [copy.ok for copy in self.copies.get(backup_id, [])]
        if any(state is False for state in states):
            return False
        if states and all(state is True for state in states):
            return True
        return None

    def bad_copies(self) -> list[StoredCopy]:
        """Copies known not to match (or gone) and, after --verify, those that could not be checked."""
        return [copy for copies in self.copies.values() for copy in copies if copy.ok is not True
                and (copy.ok is False or self.verified_content or copy.check is not None)]

    @property
    def entries(self) -> list[dict]:
        """The `backups list --json` entries: the manifest's summary (``size_bytes`` is the
        artifact's size as the manifest records it), plus each copy's real size and check."""
        return [manifest.summary() | {"copies": [copy.as_record() for copy in self.copies.get(manifest.id, [])],
                                      "intact": self.intact(manifest.id)}
                for manifest in self.manifests]


def merge_listings(environment: str, local: LocalStore, s3: S3Store | None, verify: bool = False,
                   destinations: Sequence[S3Store] = ()) -> BackupListing:
    """Newest first. Each destination of ops_platform.yaml adds its copies (``store`` is its name). A backup present in both places is one entry listing both locations. Each
    copy's size is the stored file's (a stat, or the S3 listing); with ``verify`` each local copy is
    re-hashed and each S3 copy's size and recorded checksum are checked (one HEAD request)."""
    result = BackupListing(verified_content=verify)
    by_id: dict[str, Manifest] = {}
    copies: dict[str, list[StoredCopy]] = {}
    local_listing = local.list_manifests(environment)
    for name, reason in local_listing.unreadable.items():
        result.warnings.append(f"skipped unreadable manifest {name}: {reason}")
    recorded_s3: dict[str, str] = {}  # backup id -> the S3 location its local manifest records
    for manifest in local_listing.manifests:
        artifact = local.path(environment, manifest.artifact)
        expected = s3.location(environment, manifest.artifact) if s3 is not None else None
        if expected in manifest.locations:
            recorded_s3[manifest.id] = expected
        manifest.locations = [loc for loc in manifest.locations if not loc.startswith("s3://")]
        manifest.locations.insert(0, str(artifact))
        manifest.locations = list(dict.fromkeys(manifest.locations))
        try:
            size = artifact.stat().st_size
        except FileNotFoundError:
            manifest.locations = [loc for loc in manifest.locations if loc != str(artifact)]
        else:
            copies.setdefault(manifest.id, []).append(StoredCopy("local", str(artifact), manifest, size))
        by_id[manifest.id] = manifest
    if s3 is not None:
        try:
            s3_listing = s3.list_manifests(environment)
            s3_objects = s3.list_names(environment) if s3_listing.manifests else {}
        except Exception as error:  # noqa: BLE001 - S3 being down must not hide local backups
            reason = f"could not list S3 (s3://{s3.bucket}/{s3.prefix}): {type(error).__name__}: {error}"
            result.warnings.append(reason)
            for backup_id, location in recorded_s3.items():
                by_id[backup_id].locations.append(location)
                copies.setdefault(backup_id, []).append(StoredCopy("s3", location, by_id[backup_id], None, CopyCheck(
                    "s3", by_id[backup_id].artifact, None, f"not checked: {reason}")))
        else:
            for name, reason in s3_listing.unreadable.items():
                result.warnings.append(f"skipped unreadable S3 manifest {name}: {reason}")
            for backup_id, location in recorded_s3.items():
                if by_id[backup_id].artifact not in s3_objects:
                    by_id[backup_id].locations.append(location)
                    copies.setdefault(backup_id, []).append(StoredCopy("s3", location, by_id[backup_id], None, CopyCheck(
                        "s3", by_id[backup_id].artifact, False, "missing: the manifest records it, S3 has no such "
                                                                "object")))
            for manifest in s3_listing.manifests:
                if manifest.artifact not in s3_objects:
                    if manifest.id not in by_id:
                        result.warnings.append(f"{manifest.id}: S3 manifest found but its artifact is missing")
                    continue
                location = s3.location(environment, manifest.artifact)
                copies.setdefault(manifest.id, []).append(
                    StoredCopy("s3", location, manifest, int(s3_objects[manifest.artifact].get("Size", 0))))
                if manifest.id in by_id:
                    if location not in by_id[manifest.id].locations:
                        by_id[manifest.id].locations.append(location)
                else:
                    manifest.locations = [location]
                    by_id[manifest.id] = manifest
    for store in destinations:
        _add_destination(environment, store, by_id, copies, result.warnings)
    for manifest_id, manifest in list(by_id.items()):
        if not manifest.locations:
            result.warnings.append(f"{manifest_id}: manifest found but its artifact is missing")
            del by_id[manifest_id]
    result.manifests = sorted(by_id.values(), key=lambda m: m.created, reverse=True)
    result.copies = {manifest.id: copies.get(manifest.id, []) for manifest in result.manifests}
    stores = {"local": local, "s3": s3, **{store.name: store for store in destinations}}
    for manifest in result.manifests:
        for copy in result.copies[manifest.id]:
            if verify and copy.check is None:
                copy.check = stores[copy.store].check_copy(copy.manifest)
            if copy.ok is False or (verify and copy.ok is None):
                result.warnings.append(f"{manifest.id}: {copy.store} copy {copy.as_record()['detail']}")
    return result


def _add_destination(environment: str, store: S3Store, by_id: dict[str, Manifest],
                     copies: dict[str, list[StoredCopy]], warnings: list[str]) -> None:
    """The destination's copies: each beside the backup's other copies, or a backup of its own
    when only the destination holds it. A destination that cannot be listed leaves the copies the
    manifests record as verified there ``not checked``."""
    try:
        listing = store.list_manifests(environment)
        objects = store.list_names(environment) if listing.manifests else {}
    except Exception as error:  # noqa: BLE001 - one destination down must not hide the other copies
        reason = f"could not list destination {store.name} ({store.location(environment, '')}): {describe(error)}"
        warnings.append(reason)
        for backup_id, manifest in by_id.items():
            if store.name in manifest.verified_copies:
                location = store.location(environment, manifest.artifact)
                copies.setdefault(backup_id, []).append(StoredCopy(store.name, location, manifest, None, CopyCheck(
                    store.name, manifest.artifact, None, f"not checked: {reason}")))
        return
    for name, reason in listing.unreadable.items():
        warnings.append(f"skipped unreadable manifest {name} in destination {store.name}: {reason}")
    for manifest in listing.manifests:
        if manifest.artifact not in objects:
            continue
        location = store.location(environment, manifest.artifact)
        copies.setdefault(manifest.id, []).append(
            StoredCopy(store.name, location, manifest, int(objects[manifest.artifact].get("Size", 0))))
        if manifest.id in by_id:
            if location not in by_id[manifest.id].locations:
                by_id[manifest.id].locations.append(location)
        else:
            manifest.locations = [location]
            by_id[manifest.id] = manifest
    for backup_id, manifest in by_id.items():
        recorded = manifest.copy_record(store.name)
        if recorded.get("verified") and not any(copy.store == store.name for copy in copies.get(backup_id, [])):
            location = store.location(environment, manifest.artifact)
            copies.setdefault(backup_id, []).append(StoredCopy(store.name, location, manifest, None, CopyCheck(
                store.name, manifest.artifact, False, f"missing: the manifest records it, destination {store.name} "
                                                      "has no such object")))


def list_backups(environment: str, verify: bool = False) -> BackupListing:
    """Uses the same settings as the code location (BACKUP_DIR, AWS_S3_BUCKET, AWS_S3_PREFIX, the
    destinations of ops_platform.yaml), and short S3 timeouts: an operator at a terminal wants the
    local copies at once when S3 hangs."""
    from ops_platform.config import ConfigError
    from ops_platform.lib.stores import destination_stores, stores_from_environ

    problems = []
    try:
        destinations = destination_stores(max_attempts=2, read_timeout=LIST_S3_READ_TIMEOUT_SECONDS)
    except ConfigError as error:
        destinations, problems = [], [f"the off-site destinations are not listed: {error}"]
    listing = merge_listings(environment, *stores_from_environ(read_timeout=LIST_S3_READ_TIMEOUT_SECONDS),
                             verify=verify, destinations=destinations)
    listing.warnings[:0] = problems
    return listing
