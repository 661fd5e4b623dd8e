"""The retention policy: which backups to keep and which to delete, and why.

It is pure: an inventory of what the stores hold, a policy and "now" give a plan with a
reason for every backup. It can never delete the newest verified backup, nor any of the newest
``keep_min`` verified ones, whatever their age, so backups that silently stop are never followed
by a cleanup that removes the last good one.

Rules, per backup id (a backup's files in every store are decided together):
- verified (a readable manifest saying verified, and its artifact present in some store):
  kept when younger than the window (``retention_days``; ``pre_restore_days`` for pre-restore
  backups), when among the newest ``keep_min`` verified backups, or when it is the newest of one of
  the last ``keep_daily`` days / ``keep_weekly`` ISO weeks / ``keep_monthly`` months (UTC) that
  hold a verified backup; deleted otherwise.
- unverified (manifest says not verified), incomplete (artifact or temporary file without a
  manifest) and dangling (manifest whose artifact is missing everywhere): deleted once older than
  a day, kept (too recent to judge) before.
- unreadable manifest: everything for that id is kept and reported; a person should look.
- corrupt (a verified backup one of whose copies was re-checked and does not match the manifest
  in its store): kept, never counted toward the floor or a tier, left for a person. The re-check is
  store I/O (``retention/stores.py``); it reaches the policy as ``StoreInventory.corrupt``.
- anything whose name is not a backup file of this environment is never touched.

Ages and order come from the manifest's ``created_at`` (equal times are ordered by id). Without a manifest, the newest of the id's timestamp
and the store's modification time is used, so a file still being written is never old enough.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from ops_platform.config import ConfigError, printable
from ops_platform.lib import settings
from ops_platform.lib.artifacts import (
    COMPRESSION_EXTENSIONS,
    MANIFEST_SUFFIX,
    Manifest,
    parse_backup_id,
    parse_utc,
    utc_iso,
)

FUTURE_TOLERANCE = timedelta(minutes=5)
EARLIEST_AS_OF = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST_AS_OF = datetime(9000, 1, 1, tzinfo=timezone.utc)

KEEP, DELETE = "keep", "delete"
VERIFIED, UNVERIFIED, INCOMPLETE, DANGLING, UNREADABLE, CORRUPT = (
    "verified", "unverified", "incomplete", "dangling", "unreadable", "corrupt")
ARTIFACT, MANIFEST, TEMPORARY = "artifact", "manifest", "temporary"
GRACE = timedelta(days=1)

_SUFFIXES = tuple(COMPRESSION_EXTENSIONS.values()) + (MANIFEST_SUFFIX,)
_NAME = re.compile(r"^(?P<dot>\.)?(?P<id>[a-z0-9][a-z0-9_.-]*-\d{8}T\d{6}Z)(?P<suffix>\.[a-z.]+?)(?P<partial>\.partial)?$")


@dataclass(frozen=True)
class RetentionPolicy:
    retention_days: int = 30
    keep_min: int = 7
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    pre_restore_days: int = 7

    def describe(self) -> str:
        tiers = ", ".join(f"{count} {name}" for name, count in
                          (("daily", self.keep_daily), ("weekly", self.keep_weekly), ("monthly", self.keep_monthly))
                          if count)
        return (f"keep {self.retention_days} days ({self.pre_restore_days} for pre-restore), "
                f"at least {self.keep_min} verified" + (f", tiers: {tiers}" if tiers else ""))


def policy_from_environ(environment: str, environ: Mapping[str, str] | None = None) -> RetentionPolicy:
    """The policy for an environment. ``<ENV>_BACKUP_RETENTION_DAYS`` (e.g.
    ``PRODUCTION_BACKUP_KEEP_MIN``) overrides ``BACKUP_RETENTION_DAYS`` and so on for each setting."""
    return RetentionPolicy(**settings.values(settings.RETENTION, environ, environment))


def parse_as_of(text: str | None, now: datetime | None = None) -> datetime:
    """``--as-of``: an ISO-8601 time (UTC unless it says otherwise), or now."""
    if text is None or not str(text).strip():
        return now or datetime.now(timezone.utc)
    try:
        moment = parse_utc(str(text).strip())
    except (ValueError, OverflowError):
        raise ConfigError("--as-of must be an ISO-8601 time such as 2027-01-15T00:00:00Z, "
                          f"got '{printable(str(text))}'") from None
    if not EARLIEST_AS_OF <= moment <= LATEST_AS_OF:
        raise ConfigError(f"--as-of must be between {EARLIEST_AS_OF:%Y-%m-%d} and {LATEST_AS_OF:%Y-%m-%d}, "
                          f"got '{printable(str(text))}'")
    return moment


def resolve_as_of(text: str | None, now: datetime | None = None) -> datetime:
    """``as_of`` for applying a plan: like ``parse_as_of``, but a time in the future is refused,
    since it would age backups early."""
    now = now or datetime.now(timezone.utc)
    as_of = parse_as_of(text, now)
    if as_of > now + FUTURE_TOLERANCE:
        raise ConfigError(f"refusing to apply retention as of {text}, which is in the future "
                          "(use --dry-run to preview a future plan)")
    return as_of


@dataclass(frozen=True)
class StoredFile:
    location: str
    name: str
    role: str
    size: int = 0
    modified: datetime | None = None


@dataclass
class StoreInventory:
    """What one store holds for one environment: every file name with its size and modification
    time, the manifests that parsed, the manifest names that did not, and the artifacts that were
    re-checked and found not to match their manifest (name -> what differs)."""

    location: str
    files: dict[str, tuple[int, datetime | None]] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    corrupt: dict[str, str] = field(default_factory=dict)


@dataclass
class Candidate:
    id: str
    status: str
    created: datetime
    kind: str | None = None
    files: list[StoredFile] = field(default_factory=list)
    note: str = ""

    @property
    def stored_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass
class PlanItem:
    id: str
    action: str
    reason: str
    status: str
    kind: str | None
    created_at: str
    bytes: int
    files: list[StoredFile]

    def as_record(self) -> dict:
        record = asdict(self)
        record["files"] = [{"location": f.location, "name": f.name, "role": f.role, "size": f.size}
                           for f in self.files]
        return record


@dataclass
class RetentionPlan:
    environment: str
    as_of: datetime
    policy: RetentionPolicy
    items: list[PlanItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    locations: list[str] = field(default_factory=lambda: ["local", "s3"])
    rechecks: list[dict] = field(default_factory=list)
    """Copies re-checked against their manifests before deleting: id, location, status
    (ok/corrupt/error), method and detail."""

    @property
    def kept(self) -> list[PlanItem]:
        return [item for item in self.items if item.action == KEEP]

    @property
    def deleted(self) -> list[PlanItem]:
        return [item for item in self.items if item.action == DELETE]

    @property
    def bytes_freed(self) -> int:
        return sum(item.bytes for item in self.deleted)

    def kept_backups(self) -> list[PlanItem]:
        return [item for item in self.kept if item.status == VERIFIED]

    def corrupt_copies(self) -> list[dict]:
        return [check for check in self.rechecks if check["status"] == "corrupt"]

    def corrupt_warnings(self) -> list[str]:
        return [f"{check['id']}: its {check['location']} copy does not match its manifest ({check['detail']}); "
                "kept, not counted toward the floor, left for a person" for check in self.corrupt_copies()]

    def summary(self) -> dict:
        kept = self.kept_backups()
        return {
            "kept": len(self.kept),
            "deleted": len(self.deleted),
            "verified_kept": len(kept),
            "corrupt": sum(1 for item in self.items if item.status == CORRUPT),
            "bytes_freed": self.bytes_freed,
            "oldest_kept": kept[-1].id if kept else None,
            "newest_kept": kept[0].id if kept else None,
        }

    def as_record(self) -> dict:
        return {
            "environment": self.environment,
            "as_of": utc_iso(self.as_of),
            "policy": asdict(self.policy),
            "locations": list(self.locations),
            "summary": self.summary(),
            "items": [item.as_record() for item in self.items],
            "rechecks": list(self.rechecks),
            "warnings": list(self.warnings) + self.corrupt_warnings(),
        }

    def to_json(self) -> str:
        return json.dumps(self.as_record(), indent=2)


def classify_name(name: str, environment: str) -> tuple[str, str] | None:
    """(backup id, role) for a backup file of this environment; None for anything else."""
    match = _NAME.match(name)
    if not match or match["suffix"] not in _SUFFIXES:
        return None
    if bool(match["dot"]) != bool(match["partial"]):
        return None
    try:
        env, _ = parse_backup_id(match["id"])
    except ConfigError:
        return None
    if env != environment:
        return None
    if match["partial"]:
        return match["id"], TEMPORARY
    return match["id"], MANIFEST if match["suffix"] == MANIFEST_SUFFIX else ARTIFACT


def collect_candidates(environment: str, inventories: list[StoreInventory]) -> tuple[list[Candidate], list[str]]:
    """Group every recognised file of every store by backup id and decide what each id is."""
    files_by_id: dict[str, list[StoredFile]] = {}
    for inventory in inventories:
        for name, (size, modified) in inventory.files.items():
            classified = classify_name(name, environment)
            if classified:
                backup_id, role = classified
                files_by_id.setdefault(backup_id, []).append(
                    StoredFile(inventory.location, name, role, size, modified))
    warnings = []
    candidates = []
    by_location = {inventory.location: inventory for inventory in inventories}
    for backup_id, files in files_by_id.items():
        _, stamp = parse_backup_id(backup_id)
        manifest_name = backup_id + MANIFEST_SUFFIX
        unreadable = [f for f in files if f.role == MANIFEST and (
            manifest_name in by_location[f.location].unreadable
            or manifest_name not in by_location[f.location].manifests)]
        if unreadable:
            where = ", ".join(f.location for f in unreadable)
            warnings.append(f"{backup_id}: unreadable manifest ({where}); kept, please inspect")
            candidates.append(Candidate(backup_id, UNREADABLE, stamp, None, files, "unreadable manifest"))
            continue
        complete = []
        for f in files:
            if f.role != MANIFEST:
                continue
            manifest = by_location[f.location].manifests[manifest_name]
            names = {g.name for g in files if g.location == f.location and g.role == ARTIFACT}
            if manifest.artifact in names and manifest.id == backup_id:
                complete.append(manifest)
        manifests = [by_location[f.location].manifests[manifest_name] for f in files if f.role == MANIFEST]
        if complete:
            verified = any(m.verified for m in complete)
            chosen = next((m for m in complete if m.verified), complete[0])
            status = VERIFIED if verified else UNVERIFIED
            bad = [f"{f.location} copy: {by_location[f.location].corrupt[f.name]}" for f in files
                   if f.role == ARTIFACT and f.name in by_location[f.location].corrupt]
            if verified and bad:
                candidates.append(Candidate(backup_id, CORRUPT, chosen.created, chosen.kind, files, "; ".join(bad)))
                continue
            candidates.append(Candidate(backup_id, status, chosen.created, chosen.kind, files))
        elif manifests:
            candidates.append(Candidate(backup_id, DANGLING, manifests[0].created, manifests[0].kind, files,
                                        "manifest without its artifact"))
        else:
            newest = max([stamp] + [f.modified for f in files if f.modified is not None])
            candidates.append(Candidate(backup_id, INCOMPLETE, newest, None, files, "artifact without a manifest"))
    candidates.sort(key=lambda c: (c.created, c.id), reverse=True)
    return candidates, warnings


def _tier_keepers(verified: list[Candidate], count: int, bucket) -> set[str]:
    """The newest backup of each of the ``count`` most recent buckets holding a verified backup."""
    keepers, seen = set(), set()
    for candidate in verified:
        key = bucket(candidate.created)
        if key in seen:
            continue
        if len(seen) >= count:
            break
        seen.add(key)
        keepers.add(candidate.id)
    return keepers


def _floor_and_tiers(ordered: list[Candidate], policy: RetentionPolicy) -> tuple[dict[str, int], dict[str, set[str]]]:
    verified = [c for c in ordered if c.status == VERIFIED]
    floor = {c.id: rank for rank, c in enumerate(verified[:max(policy.keep_min, 1)], start=1)}
    tiers = {
        "daily": _tier_keepers(verified, policy.keep_daily, lambda t: t.date()),
        "weekly": _tier_keepers(verified, policy.keep_weekly, lambda t: t.isocalendar()[:2]),
        "monthly": _tier_keepers(verified, policy.keep_monthly, lambda t: (t.year, t.month)),
    }
    return floor, tiers


def guarantors(candidates: list[Candidate], policy: RetentionPolicy) -> set[str]:
    """The verified backups whose being intact makes deleting older ones safe: the floor (the
    newest ``keep_min``, whether the window or the floor keeps them) and the tier keepers. The
    other backups inside the window are kept whatever happens, so they justify no deletion."""
    floor, tiers = _floor_and_tiers(sorted(candidates, key=lambda c: (c.created, c.id), reverse=True), policy)
    return set(floor).union(*tiers.values())


def hold_verified_deletions(plan: RetentionPlan, why: str) -> None:
    """Keep, this time, every verified backup the plan would delete (the backups meant to replace
    them could not all be re-checked)."""
    for item in plan.items:
        if item.action == DELETE and item.status == VERIFIED:
            item.action, item.reason = KEEP, f"deletion postponed: {why}"


def plan_retention(environment: str, candidates: list[Candidate], policy: RetentionPolicy,
                   now: datetime, warnings: list[str] | None = None) -> RetentionPlan:
    """Keep or delete each candidate, with the reason. ``candidates`` may be in any order."""
    ordered = sorted(candidates, key=lambda c: (c.created, c.id), reverse=True)
    floor, tiers = _floor_and_tiers(ordered, policy)
    plan = RetentionPlan(environment, now, policy, warnings=list(warnings or []))
    for candidate in ordered:
        age = now - candidate.created
        action, reason = _decide(candidate, age, policy, floor, tiers)
        plan.items.append(PlanItem(candidate.id, action, reason, candidate.status, candidate.kind,
                                   utc_iso(candidate.created), candidate.stored_bytes, list(candidate.files)))
    return plan


_TIER_UNITS = {"daily": "day", "weekly": "ISO week", "monthly": "month"}


def _days(age: timedelta) -> str:
    return f"{age.total_seconds() / 86400:.1f} days old"


def _decide(candidate: Candidate, age: timedelta, policy: RetentionPolicy, floor: dict[str, int],
            tiers: dict[str, set[str]]) -> tuple[str, str]:
    if candidate.status == UNREADABLE:
        return KEEP, "unreadable manifest: left for a person to inspect"
    if candidate.status == CORRUPT:
        return KEEP, f"corrupt ({candidate.note}): not counted toward the floor, left for a person"
    if candidate.status != VERIFIED:
        label = candidate.note or "failed verification"
        if age <= GRACE:
            return KEEP, f"{candidate.status} ({label}), younger than a day"
        return DELETE, f"{candidate.status} ({label}), {_days(age)}"
    if candidate.kind == "pre-restore":
        window, window_name = policy.pre_restore_days, "pre-restore window"
    else:
        window, window_name = policy.retention_days, "retention window"
    if age < timedelta(days=window):
        return KEEP, f"within the {window}-day {window_name}"
    if candidate.id in floor:
        return KEEP, f"verified #{floor[candidate.id]} of the newest {max(policy.keep_min, 1)} (floor)"
    for tier, ids in tiers.items():
        if candidate.id in ids:
            return KEEP, f"newest of its {_TIER_UNITS[tier]} ({tier} tier)"
    return DELETE, f"{_days(age)}, past the {window}-day {window_name}, beyond the floor and tiers"
