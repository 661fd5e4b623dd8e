"""The retention policy as pure logic: examples, and a property test over random backup histories."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops_platform.config import ConfigError
from ops_platform.lib.artifacts import (
    MANIFEST_SUFFIX,
    Manifest,
    make_backup_id,
    utc_iso,
)
from ops_platform.lib.retention.policy import (
    DELETE,
    KEEP,
    RetentionPolicy,
    StoreInventory,
    classify_name,
    collect_candidates,
    guarantors,
    parse_as_of,
    plan_retention,
    policy_from_environ,
)

NOW = datetime(2027, 1, 15, 12, 0, tzinfo=timezone.utc)
ENV = "production"
FOREIGN_NAMES = [
    "README.txt",
    "staging-20270110T000000Z.dump.zst",
    "staging-20260110T000000Z.manifest.json",
    "production-20260101T000000Z.dump.zst.bak",
    "production-20260101T000000Z.dump.zst.partial",
    ".production-20260101T000000Z.dump.zst",
    "production-2026.dump.zst",
    "production-20261399T000000Z.dump.zst",
    "nested/production-20260101T000000Z.dump.zst",
]


def make_manifest(backup_id: str, created: datetime, *, verified: bool = True, kind: str = "scheduled",
                  environment: str = ENV, stored_bytes: int = 100) -> Manifest:
    return Manifest(
        id=backup_id, environment=environment, kind=kind, created_at=utc_iso(created), database="app",
        server_version="16.4", pg_dump_version="16.4", compression="zstd", compression_level=3,
        artifact=backup_id + ".dump.zst", raw_bytes=stored_bytes * 4, stored_bytes=stored_bytes,
        sha256="0" * 64, duration_seconds=1.0, verified=verified,
    )


def inventory_with(location: str, backups: list[tuple[datetime, bool, str]]) -> StoreInventory:
    inventory = StoreInventory(location)
    for created, verified, kind in backups:
        backup_id = make_backup_id(ENV, created)
        manifest = make_manifest(backup_id, created, verified=verified, kind=kind)
        inventory.files[manifest.artifact] = (100, created)
        inventory.files[backup_id + MANIFEST_SUFFIX] = (10, created)
        inventory.manifests[backup_id + MANIFEST_SUFFIX] = manifest
    return inventory


def plan_for(inventories, policy=RetentionPolicy(), now=NOW):
    candidates, warnings = collect_candidates(ENV, inventories)
    return plan_retention(ENV, candidates, policy, now, warnings)


def actions(plan) -> dict[str, str]:
    return {item.id: item.action for item in plan.items}


def test_backups_that_stopped_40_days_ago_keep_the_newest_seven_verified():
    created = [NOW - timedelta(days=40 + n) for n in range(20)]
    plan = plan_for([inventory_with("local", [(c, True, "scheduled") for c in created])])
    kept = [item.id for item in plan.items if item.action == KEEP]
    assert kept == [make_backup_id(ENV, c) for c in created[:7]]
    assert all("floor" in item.reason for item in plan.kept)
    assert len(plan.deleted) == 13 and all("past the 30-day" in item.reason for item in plan.deleted)


def test_window_floor_and_unverified():
    backups = [(NOW - timedelta(days=d), d != 2, "scheduled") for d in range(0, 60, 2)]
    plan = plan_for([inventory_with("local", backups)], RetentionPolicy(retention_days=30, keep_min=3))
    by_id = {item.id: item for item in plan.items}
    two_days = by_id[make_backup_id(ENV, NOW - timedelta(days=2))]
    assert (two_days.action, two_days.status) == (DELETE, "unverified")
    for days in range(0, 30, 2):
        if days != 2:
            assert by_id[make_backup_id(ENV, NOW - timedelta(days=days))].action == KEEP
    for days in range(30, 60, 2):
        assert by_id[make_backup_id(ENV, NOW - timedelta(days=days))].action == DELETE


def test_gfs_tiers_keep_newest_of_each_period():
    created = sorted((NOW - timedelta(days=d, hours=h) for d in range(0, 200) for h in (1, 13)), reverse=True)
    policy = RetentionPolicy(retention_days=7, keep_min=1, keep_daily=10, keep_weekly=6, keep_monthly=4)
    plan = plan_for([inventory_with("local", [(c, True, "scheduled") for c in created])], policy)

    def newest_per(bucket, count):
        chosen = {}
        for moment in created:
            chosen.setdefault(bucket(moment), moment)
        return set(sorted(chosen.values(), reverse=True)[:count])

    expected = {c for c in created if NOW - c < timedelta(days=7)}
    expected |= newest_per(lambda t: t.date(), 10)
    expected |= newest_per(lambda t: t.isocalendar()[:2], 6)
    expected |= newest_per(lambda t: (t.year, t.month), 4)
    assert {item.id for item in plan.kept} == {make_backup_id(ENV, c) for c in expected}
    monthly = sorted(item.created_at for item in plan.kept if "monthly tier" in item.reason)
    assert monthly == ["2026-10-31T23:00:00Z", "2026-11-30T23:00:00Z", "2026-12-31T23:00:00Z"]


def test_pre_restore_window_then_normal_rules():
    backups = [(NOW - timedelta(days=d), True, "scheduled") for d in range(0, 10)]
    backups += [(NOW - timedelta(days=5, hours=3), True, "pre-restore"),
                (NOW - timedelta(days=9, hours=3), True, "pre-restore")]
    plan = plan_for([inventory_with("local", backups)], RetentionPolicy(keep_min=3))
    by_id = {item.id: item for item in plan.items}
    recent = by_id[make_backup_id(ENV, NOW - timedelta(days=5, hours=3))]
    older = by_id[make_backup_id(ENV, NOW - timedelta(days=9, hours=3))]
    assert recent.action == KEEP and "pre-restore window" in recent.reason
    assert older.action == DELETE and "7-day pre-restore window" in older.reason


def test_ordering_uses_manifest_created_at_not_the_name():
    # An id whose stamp says "new" but whose manifest says it was made long ago.
    inventory = inventory_with("local", [(NOW - timedelta(days=50 + d), True, "scheduled") for d in range(3)])
    odd_id = make_backup_id(ENV, NOW - timedelta(hours=1))
    manifest = make_manifest(odd_id, NOW - timedelta(days=90))
    inventory.files[manifest.artifact] = (100, NOW)
    inventory.files[odd_id + MANIFEST_SUFFIX] = (10, NOW)
    inventory.manifests[odd_id + MANIFEST_SUFFIX] = manifest
    plan = plan_for([inventory], RetentionPolicy(keep_min=3))
    assert actions(plan)[odd_id] == DELETE
    assert plan.items[-1].id == odd_id


def test_incomplete_dangling_and_unreadable():
    old, young = NOW - timedelta(days=3, minutes=7), NOW - timedelta(hours=2)
    inventory = inventory_with("local", [(NOW - timedelta(days=1 + d), True, "scheduled") for d in range(8)])
    orphan_old, orphan_young = make_backup_id(ENV, old), make_backup_id(ENV, young)
    inventory.files[orphan_old + ".dump.zst"] = (5, old)
    inventory.files[f".{orphan_young}.dump.zst.partial"] = (5, young)
    dangling = make_backup_id(ENV, old - timedelta(hours=1))
    inventory.files[dangling + MANIFEST_SUFFIX] = (10, old)
    inventory.manifests[dangling + MANIFEST_SUFFIX] = make_manifest(dangling, old)
    broken = make_backup_id(ENV, old - timedelta(days=100))
    inventory.files[broken + MANIFEST_SUFFIX] = (10, old)
    inventory.files[broken + ".dump.zst"] = (10, old)
    inventory.unreadable[broken + MANIFEST_SUFFIX] = "ValueError: bad json"
    plan = plan_for([inventory])
    by_id = {item.id: item for item in plan.items}
    assert (by_id[orphan_old].action, by_id[orphan_old].status) == (DELETE, "incomplete")
    assert (by_id[orphan_young].action, by_id[orphan_young].status) == (KEEP, "incomplete")
    assert (by_id[dangling].action, by_id[dangling].status) == (DELETE, "dangling")
    assert (by_id[broken].action, by_id[broken].status) == (KEEP, "unreadable")
    assert any(broken in warning for warning in plan.warnings)


def test_a_backup_complete_in_s3_only_still_counts():
    created = NOW - timedelta(days=45)
    backup_id = make_backup_id(ENV, created)
    local = StoreInventory("local")
    local.files[backup_id + MANIFEST_SUFFIX] = (10, created)
    local.manifests[backup_id + MANIFEST_SUFFIX] = make_manifest(backup_id, created)
    s3 = inventory_with("s3", [(created, True, "scheduled")])
    plan = plan_for([local, s3])
    assert [(item.id, item.action, item.status) for item in plan.items] == [(backup_id, KEEP, "verified")]


def test_a_corrupt_backup_is_kept_for_a_person_and_never_counts_toward_the_floor():
    """The issue's case with BACKUP_KEEP_MIN=1: the newest two backups were re-checked and do not
    match their manifests, so the floor moves to the newest intact one."""
    created = [NOW - timedelta(days=40 + n) for n in range(5)]
    local = inventory_with("local", [(c, True, "scheduled") for c in created])
    s3 = inventory_with("s3", [(c, True, "scheduled") for c in created])
    ids = [make_backup_id(ENV, c) for c in created]
    local.corrupt[ids[0] + ".dump.zst"] = "sha256 1234 differs from the manifest's 0000"
    s3.corrupt[ids[1] + ".dump.zst"] = "size 50 bytes differs from the manifest's 100"
    policy = RetentionPolicy(keep_min=1)
    candidates, _ = collect_candidates(ENV, [local, s3])
    plan = plan_retention(ENV, candidates, policy, NOW)
    by_id = {item.id: item for item in plan.items}
    assert [(by_id[i].action, by_id[i].status) for i in ids] == [
        (KEEP, "corrupt"), (KEEP, "corrupt"), (KEEP, "verified"), (DELETE, "verified"), (DELETE, "verified")]
    assert "local copy: sha256 1234 differs" in by_id[ids[0]].reason and "left for a person" in by_id[ids[0]].reason
    assert "s3 copy: size 50 bytes differs" in by_id[ids[1]].reason
    assert "floor" in by_id[ids[2]].reason
    assert plan.summary()["verified_kept"] == 1 and plan.summary()["corrupt"] == 2
    assert guarantors(candidates, policy) == {ids[2]}


def test_guarantors_are_the_floor_and_the_tiers_not_the_rest_of_the_window():
    created = [NOW - timedelta(days=n, hours=1) for n in range(0, 60, 3)]
    candidates, _ = collect_candidates(ENV, [inventory_with("local", [(c, True, "scheduled") for c in created])])
    ids = [make_backup_id(ENV, c) for c in created]
    assert guarantors(candidates, RetentionPolicy(keep_min=2)) == set(ids[:2])
    monthly = guarantors(candidates, RetentionPolicy(keep_min=2, keep_monthly=3))
    newest_per_month = {}
    for backup_id, moment in zip(ids, created):
        newest_per_month.setdefault((moment.year, moment.month), backup_id)
    assert monthly == set(ids[:2]) | set(list(newest_per_month.values())[:3])


def test_classify_name_recognises_only_this_environments_backup_files():
    assert classify_name("production-20270101T000000Z.dump.zst", ENV) == ("production-20270101T000000Z", "artifact")
    assert classify_name("production-20270101T000000Z.dump.gz", ENV)[1] == "artifact"
    assert classify_name("production-20270101T000000Z.manifest.json", ENV)[1] == "manifest"
    assert classify_name(".production-20270101T000000Z.manifest.json.partial", ENV)[1] == "temporary"
    for name in FOREIGN_NAMES:
        assert classify_name(name, ENV) is None, name


@pytest.mark.parametrize("environ, message", [
    ({"BACKUP_RETENTION_DAYS": "-3"}, "BACKUP_RETENTION_DAYS must be >= 1, got -3"),
    ({"BACKUP_KEEP_MIN": "seven"}, "BACKUP_KEEP_MIN must be an integer, got 'seven'"),
    ({"BACKUP_KEEP_MIN": "0"}, "BACKUP_KEEP_MIN must be >= 1, got 0"),
    ({"BACKUP_KEEP_WEEKLY": "-1"}, "BACKUP_KEEP_WEEKLY must be >= 0, got -1"),
    ({"PRODUCTION_BACKUP_RETENTION_DAYS": "1.5"}, "PRODUCTION_BACKUP_RETENTION_DAYS must be an integer, got '1.5'"),
])
def test_bad_settings_are_one_line_errors(environ, message):
    with pytest.raises(ConfigError) as error:
        policy_from_environ(ENV, environ)
    assert str(error.value) == message


def test_settings_and_per_environment_overrides():
    environ = {"BACKUP_RETENTION_DAYS": "14", "BACKUP_KEEP_DAILY": "7", "PRODUCTION_BACKUP_KEEP_MIN": "10"}
    assert policy_from_environ(ENV, environ) == RetentionPolicy(retention_days=14, keep_min=10, keep_daily=7)
    assert policy_from_environ("staging", environ) == RetentionPolicy(retention_days=14, keep_min=7, keep_daily=7)
    assert policy_from_environ("development", {}) == RetentionPolicy()


def test_as_of_parsing():
    assert parse_as_of("2027-01-15T00:00:00Z") == datetime(2027, 1, 15, tzinfo=timezone.utc)
    assert parse_as_of("2027-01-15T02:00:00+02:00") == datetime(2027, 1, 15, tzinfo=timezone.utc)
    for bad in ("yesterday", "15/01/2027", "2027-13-01", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        with pytest.raises(ConfigError, match="--as-of must be an ISO-8601 time"):
            parse_as_of(bad)
    with pytest.raises(ConfigError, match="--as-of must be between 1970-01-01 and 9000-01-01"):
        parse_as_of("0500-06-01T00:00:00Z")


# The property test.

KINDS = ["scheduled", "scheduled", "scheduled", "manual", "pre-restore", "drill"]

backup_strategy = st.fixed_dictionaries({
    "age_hours": st.integers(min_value=-48, max_value=24 * 150),
    "skew_minutes": st.integers(min_value=-180, max_value=180),  # id stamp vs manifest created_at
    "mtime_skew_hours": st.integers(min_value=-30, max_value=30),  # storage clock vs manifest
    "kind": st.sampled_from(KINDS),
    "verified": st.integers(0, 4).map(lambda n: n > 0),
    "unreadable": st.integers(0, 30).map(lambda n: n == 0),
    # local artifact, local manifest, s3 artifact, s3 manifest
    "presence": st.sampled_from([(1, 1, 0, 0), (1, 1, 1, 1), (1, 1, 1, 1), (1, 1, 1, 1), (1, 1, 1, 1),
                                 (1, 1, 0, 0), (0, 0, 1, 1), (1, 1, 1, 0),
                                 (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (1, 0, 1, 1),
                                 (0, 1, 1, 1)]),
    "temporary": st.integers(0, 12).map(lambda n: n == 0),
    # a copy re-checked and found not to match its manifest (only a complete copy is re-checked)
    "corrupt": st.sampled_from([None] * 8 + ["local", "s3"]),
})

policy_strategy = st.builds(
    RetentionPolicy,
    retention_days=st.integers(1, 40), keep_min=st.integers(1, 10), keep_daily=st.integers(0, 8),
    keep_weekly=st.integers(0, 6), keep_monthly=st.integers(0, 4), pre_restore_days=st.integers(1, 10),
)


def build_history(specs, stopped_days=0):
    """Inventories for both stores, and the ground truth computed from the specs themselves.
    ``stopped_days`` ages the whole history, as when backups silently stopped that long ago."""
    stores = {"local": StoreInventory("local"), "s3": StoreInventory("s3")}
    truth = {}
    for spec in specs:
        created = NOW - timedelta(days=stopped_days, hours=spec["age_hours"])
        backup_id = make_backup_id(ENV, created + timedelta(minutes=spec["skew_minutes"]))
        if backup_id in truth:
            continue
        manifest = make_manifest(backup_id, created, verified=spec["verified"], kind=spec["kind"])
        modified = created + timedelta(hours=spec["mtime_skew_hours"])
        local_art, local_man, s3_art, s3_man = spec["presence"]
        complete = corrupt = False
        for store, has_art, has_man in (("local", local_art, local_man), ("s3", s3_art, s3_man)):
            inventory = stores[store]
            if has_art:
                inventory.files[manifest.artifact] = (100, modified)
            if has_man:
                inventory.files[backup_id + MANIFEST_SUFFIX] = (10, modified)
                if spec["unreadable"]:
                    inventory.unreadable[backup_id + MANIFEST_SUFFIX] = "ValueError: truncated"
                else:
                    inventory.manifests[backup_id + MANIFEST_SUFFIX] = manifest
            complete = complete or (has_art and has_man)
            if spec["corrupt"] == store and has_art and has_man and not spec["unreadable"]:
                inventory.corrupt[manifest.artifact] = "sha256 differs from the manifest's"
                corrupt = True
        if spec["temporary"]:
            stores["local"].files[f".{manifest.artifact}.partial"] = (7, modified)
        # Without a readable manifest, its age can only be told from its id and its files' times.
        readable = (local_man or s3_man) and not spec["unreadable"]
        seen = created if readable else max(created + timedelta(minutes=spec["skew_minutes"]), modified)
        truth[backup_id] = {
            "created": created, "seen": seen, "kind": spec["kind"],
            "good": complete and spec["verified"] and not spec["unreadable"] and not corrupt,
            "corrupt": corrupt and spec["verified"],
            "unreadable": spec["unreadable"] and (local_man or s3_man),
        }
    for name in FOREIGN_NAMES:
        stores["local"].files[name] = (1, NOW - timedelta(days=400))
        stores["s3"].files[name] = (1, NOW - timedelta(days=400))
    return list(stores.values()), truth


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(backup_strategy, max_size=40), policy=policy_strategy,
       stopped_days=st.sampled_from([0, 0, 3, 20, 45, 100]))
def test_retention_properties(specs, policy, stopped_days):
    inventories, truth = build_history(specs, stopped_days)
    plan = plan_for(inventories, policy)
    action = actions(plan)
    statuses = {item.id: item.status for item in plan.items}
    # Newest first by the manifest's created_at; equal times are ordered by id.
    good = sorted((b for b in truth if truth[b]["good"]), key=lambda b: (truth[b]["created"], b), reverse=True)

    # The newest verified backup is never deleted, and the floor holds.
    if good:
        assert action[good[0]] == KEEP
    kept_good = [b for b in good if action[b] == KEEP]
    assert len(kept_good) >= min(policy.keep_min, len(good))
    assert set(good[:policy.keep_min]) <= set(kept_good)

    for backup_id, facts in truth.items():
        age = NOW - facts["created"]
        window = policy.pre_restore_days if facts["kind"] == "pre-restore" else policy.retention_days
        # Nothing good younger than its window, nothing at all younger than a day, is deleted.
        if facts["good"] and age < timedelta(days=window):
            assert action[backup_id] == KEEP
        if NOW - facts["seen"] < timedelta(days=1):  # (a backup without its manifest by what shows its age)
            assert action[backup_id] == KEEP
        if facts["unreadable"]:
            assert action[backup_id] == KEEP
        # A corrupt backup is left for a person (and, since ``good`` excludes it, the floor
        # assertions above show it never counts toward the floor).
        if facts["corrupt"]:
            assert action[backup_id] == KEEP
            assert statuses[backup_id] == "corrupt"

    # Only this environment's backup files are ever planned for deletion.
    recognised = {(inv.location, name) for inv in inventories for name in inv.files if classify_name(name, ENV)}
    planned = {(f.location, f.name) for item in plan.deleted for f in item.files}
    assert planned <= recognised
    assert not any(name in FOREIGN_NAMES for _, name in planned)

    # Applying the plan, then planning again, deletes nothing more.
    for inventory in inventories:
        for location, name in planned:
            if location == inventory.location:
                inventory.files.pop(name)
                inventory.manifests.pop(name, None)
                inventory.unreadable.pop(name, None)
                inventory.corrupt.pop(name, None)
    again = plan_for(inventories, policy)
    assert again.deleted == []
    assert {item.id for item in again.kept} == {item.id for item in plan.kept}
