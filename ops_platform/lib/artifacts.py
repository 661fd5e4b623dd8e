"""Backup ids, file names and the manifest: the artifact contract (docs/architecture.md, "Artifacts")."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from ops_platform.config import ConfigError, printable

BACKUP_KINDS = ("scheduled", "manual", "pre-restore", "drill")
COMPRESSION_EXTENSIONS = {"zstd": ".dump.zst", "gzip": ".dump.gz"}
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_VERSION = 1

# <target>-<stamp>: an environment (production), a file's target (analytics) or a discovered database
# (shop.orders); the name pattern is lib/targets.py's TARGET_NAME.
_ID_PATTERN = re.compile(r"^(?P<env>[a-z0-9][a-z0-9_-]{0,62}(?:\.[a-z0-9][a-z0-9_-]{0,62})?)-(?P<stamp>\d{8}T\d{6}Z)$")
_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


def make_backup_id(environment: str, created_at: datetime) -> str:
    return f"{environment}-{created_at.astimezone(timezone.utc).strftime(_STAMP_FORMAT)}"


def parse_backup_id(backup_id: str) -> tuple[str, datetime]:
    """(environment, created_at) of a well-formed id; a ConfigError for anything else, `../` included."""
    match = _ID_PATTERN.match(backup_id or "")
    if not match:
        raise ConfigError(
            f"invalid backup id '{printable(backup_id or '', 80)}': expected <environment>-<YYYYMMDDTHHMMSSZ>, "
            "e.g. production-20260115T070000Z"
        )
    try:
        created = datetime.strptime(match["stamp"], _STAMP_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise ConfigError(f"invalid backup id '{backup_id}': the timestamp is not a real time") from None
    return match["env"], created


def artifact_name(backup_id: str, compression: str) -> str:
    return backup_id + COMPRESSION_EXTENSIONS[compression]


def manifest_name(backup_id: str) -> str:
    return backup_id + MANIFEST_SUFFIX


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


@dataclass
class Manifest:
    id: str
    environment: str
    kind: str
    created_at: str
    database: str
    server_version: str
    pg_dump_version: str
    compression: str
    compression_level: int
    artifact: str
    raw_bytes: int
    stored_bytes: int
    sha256: str
    duration_seconds: float
    table_row_counts: dict[str, int] = field(default_factory=dict)
    verification: dict[str, dict] = field(default_factory=dict)
    verified: bool = False
    locations: list[str] = field(default_factory=list)
    dagster_run_id: str | None = None
    drill: dict | None = None
    s3_checksum: str | None = None
    sequence_values: dict[str, list] = field(default_factory=dict)
    database_properties: dict | None = None
    roles_sql: str | None = None
    notes: list[str] = field(default_factory=list)
    # Each copy written by the backup, in order (local, s3, the destinations in file order), and whether
    # it was read back intact: [{"name", "location", "verified", "s3_checksum", "detail"}]. Empty in older manifests.
    copies: list[dict] = field(default_factory=list)
    manifest_version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("manifest is not a JSON object")
        known = {name for name in cls.__dataclass_fields__}
        manifest = cls(**{key: value for key, value in data.items() if key in known})
        try:
            parse_backup_id(manifest.id)
            manifest.created  # noqa: B018 - a manifest whose time cannot be read is unreadable
        except (ConfigError, AttributeError, TypeError) as error:
            raise ValueError(str(error)) from None
        if manifest.compression not in COMPRESSION_EXTENSIONS:
            raise ValueError(f"unknown compression '{manifest.compression}'")
        if not isinstance(manifest.verified, bool) or not isinstance(manifest.stored_bytes, int):
            raise ValueError("verified must be a boolean and stored_bytes an integer")
        if manifest.s3_checksum is not None and not isinstance(manifest.s3_checksum, str):
            raise ValueError("s3_checksum must be a string")
        if not isinstance(manifest.copies, list) or not all(isinstance(v, dict) and "name" in v
                                                            for v in manifest.copies):
            raise ValueError("copies must be a list of records with a name")
        return manifest

    def checksum_in(self, store: str) -> str | None:
        """The checksum S3 kept for the copy in ``store`` ("s3" or a destination) at upload."""
        recorded = self.copy_record(store).get("s3_checksum")
        return recorded if recorded or store != "s3" else self.s3_checksum

    @property
    def verified_copies(self) -> list[str]:
        """The copies read back intact at backup time (empty for a manifest from before copies were recorded)."""
        return [record["name"] for record in self.copies if record.get("verified")]

    def copy_record(self, store: str) -> dict:
        """What the backup recorded about its copy in ``store``; empty when it recorded none."""
        return next((record for record in self.copies if record["name"] == store), {})

    @property
    def created(self) -> datetime:
        return parse_utc(self.created_at)

    def summary(self) -> dict:
        """The `backups list --json` entry."""
        return {
            "id": self.id,
            "environment": self.environment,
            "kind": self.kind,
            "created_at": self.created_at,
            "size_bytes": self.stored_bytes,
            "raw_bytes": self.raw_bytes,
            "sha256": self.sha256,
            "compression": self.compression,
            "verified": self.verified,
            "locations": list(self.locations),
            "drill": dict(self.drill) if self.drill else None,
            "verified_copies": self.verified_copies if self.copies else None,
        }
