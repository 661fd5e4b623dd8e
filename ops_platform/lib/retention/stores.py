"""Retention against the stores: reading what the local folder and S3 hold for an environment,
re-checking the backups that make a deletion safe, and applying a plan to them (artifacts first,
manifests last)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ops_platform.lib.artifacts import MANIFEST_SUFFIX, Manifest
from ops_platform.lib.retention.policy import (
    ARTIFACT,
    GRACE,
    MANIFEST,
    TEMPORARY,
    VERIFIED,
    Candidate,
    RetentionPlan,
    RetentionPolicy,
    StoreInventory,
    classify_name,
    collect_candidates,
    guarantors,
    hold_verified_deletions,
    plan_retention,
)
from ops_platform.lib.stores import CopyCheck


def _read_manifests(inventory: StoreInventory, environment: str, read) -> None:
    """Parse each manifest by its own file name; one that fails to parse, or names another id or
    environment, is unreadable."""
    for name in inventory.files:
        classified = classify_name(name, environment)
        if not classified or classified[1] != MANIFEST:
            continue
        try:
            body = read(name)
            if isinstance(body, Exception):
                raise OSError(f"{type(body).__name__}: {body}")
            manifest = Manifest.from_json(body)
            if manifest.id != classified[0] or manifest.environment != environment:
                raise ValueError(f"manifest names {manifest.environment}/{manifest.id}")
        except (OSError, ValueError, TypeError) as error:
            inventory.unreadable[name] = f"{type(error).__name__}: {error}"
            continue
        inventory.manifests[name] = manifest


def local_inventory(store, environment: str) -> StoreInventory:
    inventory = StoreInventory("local")
    for name in store.list_names(environment):
        try:
            stat = store.path(environment, name).stat()
        except FileNotFoundError:
            continue
        inventory.files[name] = (stat.st_size, datetime.fromtimestamp(stat.st_mtime, timezone.utc))
    _read_manifests(inventory, environment, lambda name: store.path(environment, name).read_bytes())
    return inventory


def s3_inventory(store, environment: str) -> StoreInventory:
    inventory = StoreInventory(store.name)
    for name, item in store.list_names(environment).items():
        inventory.files[name] = (int(item.get("Size", 0)), item.get("LastModified"))

    def read(name: str) -> bytes:
        return store.read_bytes(environment, name)

    names = [name for name in inventory.files if name.endswith(MANIFEST_SUFFIX)]
    with ThreadPoolExecutor(8) as pool:
        bodies = dict(zip(names, pool.map(_safe(read), names)))
    _read_manifests(inventory, environment, bodies.__getitem__)
    return inventory


def _safe(read):
    """Read errors become values, so _read_manifests reports them as unreadable; S3 being
    unreachable still fails the listing above."""
    def wrapped(name: str):
        try:
            return read(name)
        except Exception as error:  # noqa: BLE001
            return error
    return wrapped


def build_plan(environment: str, local, s3, policy: RetentionPolicy, now: datetime) -> RetentionPlan:
    """Read both stores and plan. ``s3`` may be None. When S3 cannot be listed, it is left as is
    and reported; the local folder is still planned on its own (its floor counts local backups only).

    Before the plan deletes any verified backup, the backups that make that safe (the floor and
    the tier keepers, see ``policy.guarantors``) are re-checked against the manifest in each store
    that holds them: local copies by size and sha256, S3 copies by size and the checksum recorded at
    upload. A copy that does not match marks its backup corrupt, and the policy runs again without
    it, which re-checks whichever backup takes its place; nothing is cached between runs. When a
    copy cannot be checked at all, verified backups are not deleted this time."""
    inventories = [local_inventory(local, environment)]
    skipped = []
    if s3 is not None:
        try:
            inventories.append(s3_inventory(s3, environment))
        except Exception as error:  # noqa: BLE001 - an S3 outage must not stop local cleanup
            skipped.append(f"S3 (s3://{s3.bucket}/{s3.prefix}) could not be listed and was left as is: "
                           f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    return _plan(environment, {"local": local, "s3": s3}, inventories, skipped, policy, now)


def build_destination_plan(environment: str, store, policy: RetentionPolicy, now: datetime) -> RetentionPlan:
    """The same policy applied to one off-site destination on its own (``store.name`` is its
    location): its floor and tiers count the verified backups that place holds, so the last good
    backup of every place is kept whatever the others hold. A destination holds a backup's
    manifest only when its copy there was read back intact. One that cannot be listed is left as
    is, with a warning."""
    try:
        inventories = [s3_inventory(store, environment)]
    except Exception as error:  # noqa: BLE001 - an outage of one place must not stop the others
        problem = (f"destination {store.name} ({store.location(environment, '')}) could not be listed and was left "
                   f"as is: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        plan = plan_retention(environment, [], policy, now, [problem])
        plan.locations = []
        return plan
    return _plan(environment, {store.name: store}, inventories, [], policy, now)


def _plan(environment: str, stores: dict, inventories: list[StoreInventory], skipped: list[str],
          policy: RetentionPolicy, now: datetime) -> RetentionPlan:
    by_location = {inventory.location: inventory for inventory in inventories}
    rechecked: dict[str, list[CopyCheck]] = {}
    while True:
        candidates, warnings = collect_candidates(environment, inventories)
        plan = plan_retention(environment, candidates, policy, now, skipped + warnings)
        errors = [(backup_id, check) for backup_id, checks in rechecked.items() for check in checks if check.ok is None]
        if errors or not any(item.status == VERIFIED for item in plan.deleted):
            break
        standing_in = guarantors(candidates, policy)
        needed = [c for c in candidates if c.id in standing_in and c.id not in rechecked]
        if not needed:
            break
        for candidate in needed:
            rechecked[candidate.id] = _recheck(candidate, by_location, stores)
            for check in rechecked[candidate.id]:
                if check.ok is False:
                    by_location[check.location].corrupt[check.name] = check.detail
    if errors:
        why = "; ".join(f"{backup_id} ({check.location} copy {check.detail})" for backup_id, check in errors)
        plan.warnings.append(f"verified backups were not deleted this time: could not re-check {why}")
        hold_verified_deletions(plan, "the backups kept in its place could not all be re-checked")
    plan.rechecks = [{"id": backup_id, "location": check.location, "status": check.status, "method": check.method,
                      "detail": check.detail} for backup_id, checks in rechecked.items() for check in checks]
    plan.locations = [inventory.location for inventory in inventories]
    return plan


def _recheck(candidate: Candidate, by_location: dict[str, StoreInventory], stores: dict) -> list[CopyCheck]:
    """Each copy of the backup that its store holds whole (artifact and readable manifest),
    checked against that store's manifest."""
    manifest_name = candidate.id + MANIFEST_SUFFIX
    checks = []
    for location, inventory in by_location.items():
        manifest = inventory.manifests.get(manifest_name)
        if manifest is not None and manifest.artifact in inventory.files:
            checks.append(stores[location].check_copy(manifest))
    return checks


_DELETE_ORDER = {ARTIFACT: 0, TEMPORARY: 1, MANIFEST: 2}


@dataclass
class ApplyResult:
    deleted_files: list[str] = field(default_factory=list)
    aborted_uploads: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    dropped_databases: list[str] = field(default_factory=list)
    dropped_leftovers: list[str] = field(default_factory=list)


def apply_plan(plan: RetentionPlan, local, s3, now: datetime | None = None) -> ApplyResult:
    """Delete what the plan says from each store: every artifact first, then temporary files, then
    manifests, so an interruption leaves a dangling manifest (cleaned up next time), never a listed
    backup without its data. Then abort the S3 multipart uploads under this environment's folder
    started more than a day before ``now``. ``s3`` may be a destination (its plan from
    ``build_destination_plan``, whose location is its name)."""
    result = ApplyResult()
    s3_location = s3.name if s3 is not None else None
    for role in sorted(_DELETE_ORDER, key=_DELETE_ORDER.get):
        files = [f for item in plan.deleted for f in item.files if f.role == role]
        local_files = [f for f in files if f.location == "local"] if local is not None else []
        s3_files = [f for f in files if f.location == s3_location] if s3 is not None else []
        for f in local_files:
            local.delete(plan.environment, f.name)
        if s3_files:
            s3.delete_many(plan.environment, [f.name for f in s3_files])
        for f in local_files + s3_files:
            result.deleted_files.append(f"{f.location}:{f.name}")
            result.bytes_freed += f.size
    if s3 is not None and s3_location in plan.locations:
        cutoff = (now or plan.as_of) - GRACE
        result.aborted_uploads = s3.abort_incomplete_uploads(s3.key(plan.environment, ""), older_than=cutoff)
    return result
