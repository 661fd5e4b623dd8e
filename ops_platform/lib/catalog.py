"""The list of committed backups for an environment, merged across the local folder and S3."""

from __future__ import annotations

from dataclasses import dataclass, field

from ops_platform.lib.artifacts import Manifest
from ops_platform.lib.stores import LocalStore, S3Store


@dataclass
class BackupListing:
    manifests: list[Manifest] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def entries(self) -> list[dict]:
        return [manifest.summary() for manifest in self.manifests]


def merge_listings(environment: str, local: LocalStore, s3: S3Store | None) -> BackupListing:
    """Newest first. A backup present in both places is one entry listing both locations."""
    result = BackupListing()
    by_id: dict[str, Manifest] = {}
    local_listing = local.list_manifests(environment)
    for name, reason in local_listing.unreadable.items():
        result.warnings.append(f"skipped unreadable manifest {name}: {reason}")
    for manifest in local_listing.manifests:
        manifest.locations = [loc for loc in manifest.locations if not loc.startswith("s3://")]
        manifest.locations.insert(0, local.location(environment, manifest.artifact))
        manifest.locations = list(dict.fromkeys(manifest.locations))
        by_id[manifest.id] = manifest
    if s3 is not None:
        try:
            s3_listing = s3.list_manifests(environment)
        except Exception as error:  # noqa: BLE001 - S3 being down must not hide local backups
            result.warnings.append(f"could not list S3 (s3://{s3.bucket}/{s3.prefix}): {type(error).__name__}: {error}")
        else:
            for name, reason in s3_listing.unreadable.items():
                result.warnings.append(f"skipped unreadable S3 manifest {name}: {reason}")
            s3_names = set(s3.list_names(environment)) if s3_listing.manifests else set()
            for manifest in s3_listing.manifests:
                if manifest.artifact not in s3_names:
                    if manifest.id not in by_id:
                        result.warnings.append(f"{manifest.id}: S3 manifest found but its artifact is missing")
                    continue
                location = s3.location(environment, manifest.artifact)
                if manifest.id in by_id:
                    if location not in by_id[manifest.id].locations:
                        by_id[manifest.id].locations.append(location)
                else:
                    manifest.locations = [location]
                    by_id[manifest.id] = manifest
    for manifest_id, manifest in list(by_id.items()):
        local_artifact = local.path(environment, manifest.artifact)
        if not local_artifact.exists():
            manifest.locations = [loc for loc in manifest.locations if loc != str(local_artifact)]
        if not manifest.locations:
            result.warnings.append(f"{manifest_id}: manifest found but its artifact is missing")
            del by_id[manifest_id]
    result.manifests = sorted(by_id.values(), key=lambda m: m.created, reverse=True)
    return result


def list_backups(environment: str) -> BackupListing:
    """Uses the same settings as the code location (BACKUP_DIR, AWS_S3_BUCKET, AWS_S3_PREFIX)."""
    from ops_platform.lib.stores import stores_from_environ

    return merge_listings(environment, *stores_from_environ())
