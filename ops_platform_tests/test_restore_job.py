"""``restore_job`` run directly, as the launchpad runs it (no CLI in front of it): the typed
confirmation, the step structure, what the ``database`` asset records, and the restore lock,
which is what keeps two runs apart when the run queue is bypassed. Real PostgreSQL and the
Slack test server; the staging partition points at this module's own database."""

from __future__ import annotations

import functools
from datetime import datetime, timezone

import dagster as dg
import pytest

from ops_platform.config import EnvironmentConfig
from ops_platform.definitions import defs
from ops_platform.defs.resources import (
    BackupBucketResource,
    BackupStorageResource,
    OpsSlackResource,
)
from ops_platform.lib.backup import perform_backup
from ops_platform.lib.restore import databases
from ops_platform.lib.stores import LocalStore
from ops_platform.lib.tags import ALERTED
from ops_platform_tests.conftest import DB_PASSWORD, platform_resources
from ops_platform_tests.restore_e2e_helpers import (
    PREFIX,
    ROWS,
    confirmation,
    content,
    create_live,
    database_names,
    drop_database,
    fingerprint,
    run_sql_as,
    url_for,
)

LIVE = PREFIX + "job_live"
OPS = ["resolve_restore", "fetch_backup", "take_safety_backup", "restore_database", "run_migrations",
       "verify_restore", "swap_into_place"]


@functools.lru_cache(maxsize=1)
def restore_job():
    return defs().resolve_job_def("restore_job")


@pytest.fixture(scope="module")
def backup(tmp_path_factory):
    """One verified staging backup of LIVE (dated in the past, so a safety backup never takes its id)."""
    folder = tmp_path_factory.mktemp("restore_job_backups")
    create_live(LIVE)
    outcome = perform_backup(EnvironmentConfig("staging", url_for(LIVE)), LocalStore(folder), None,
                             now=lambda: datetime(2026, 1, 15, 7, 0, tzinfo=timezone.utc))
    assert outcome.manifest.verified
    yield folder, outcome.manifest, content(LIVE)
    for name in database_names(LIVE):
        drop_database(name)


@pytest.fixture
def live(backup, monkeypatch):
    """LIVE with the backup's content plus one later row, as the staging environment's database."""
    create_live(LIVE)
    run_sql_as(LIVE, "INSERT INTO customers (email) VALUES ('after@example.com');")
    monkeypatch.setenv("STAGING_DATABASE_URL", url_for(LIVE))
    monkeypatch.delenv("STAGING_MIGRATE_COMMAND", raising=False)
    yield LIVE
    for name in database_names(LIVE):
        if name != LIVE:
            drop_database(name)


def run_restore(instance, module_backup, slack_server, **config):
    folder = module_backup[0]
    resources = platform_resources(
        slack=OpsSlackResource(webhook_url=slack_server.webhook_url, max_retries=0),
        backup_storage=BackupStorageResource(backup_dir=str(folder)),
        backup_bucket=BackupBucketResource(bucket=None))
    return restore_job().execute_in_process(
        run_config={"ops": {"resolve_restore": {"config": config}}}, instance=instance, partition_key="staging",
        raise_on_error=False, resources=resources)


def step_events(result, kind: str) -> list:
    return [event for event in result.all_events if event.event_type_value == kind]


@pytest.mark.parametrize("confirm, said", [("", "nothing was typed"), ("staging", "got 'staging'"),
                                            (" Staging", "got ' Staging'")])
def test_replacing_the_environments_database_without_its_confirmation_is_refused_at_the_first_step(
        backup, live, instance, slack_server, confirm, said):
    """A refusal: the run fails with its one line (no step past the first, nothing touched, no
    alert in the channel, which it is not an incident for)."""
    before, names = fingerprint(live), database_names()
    result = run_restore(instance, backup, slack_server, confirm=confirm)
    assert not result.success
    assert [event.step_key for event in step_events(result, "STEP_START")] == ["resolve_restore"]
    (failure,) = step_events(result, "STEP_FAILURE")
    description = failure.step_failure_data.user_failure_data.description
    phrase = confirmation(backup[1].id, live)
    assert description.startswith(f"restore of staging was refused: replacing staging's database {live} needs "
                                  f"confirm: '{phrase}' (the backup to restore, over the database as it is now; "
                                  f"{said}); nothing was touched")
    assert fingerprint(live) == before and database_names() == names
    assert slack_server.texts() == []
    assert instance.get_run_by_id(result.run_id).tags.get(ALERTED) == "true"


def test_a_remembered_confirmation_never_replays_a_replace(backup, live, instance, slack_server):
    """The Launchpad keeps the last config: the same confirm, launched again after a replace, no
    longer matches (the database it named was replaced) and is refused."""
    phrase = confirmation(backup[1].id, live)
    first = run_restore(instance, backup, slack_server, backup=backup[1].id, confirm=phrase)
    assert first.success
    replaced = fingerprint(live)
    again = run_restore(instance, backup, slack_server, backup=backup[1].id, confirm=phrase)
    assert not again.success
    (failure,) = step_events(again, "STEP_FAILURE")
    assert f"needs confirm: '{confirmation(backup[1].id, live)}'" in \
        failure.step_failure_data.user_failure_data.description
    assert f"got '{phrase}'" in failure.step_failure_data.user_failure_data.description
    assert fingerprint(live) == replaced


def test_confirmed_restore_runs_each_step_and_materializes_the_database(backup, live, instance, slack_server):
    manifest, expected = backup[1], backup[2]
    result = run_restore(instance, backup, slack_server, backup=manifest.id, confirm=confirmation(manifest.id, live))
    assert result.success
    assert [event.step_key for event in step_events(result, "STEP_SUCCESS")] == OPS
    stats = {step.step_key: step for step in instance.get_run_step_stats(result.run_id)}
    assert set(stats) == set(OPS)
    assert all(step.end_time >= step.start_time for step in stats.values())
    restored = content(live)
    assert restored == expected

    (materialization,) = result.asset_materializations_for_node("swap_into_place")
    assert materialization.asset_key == dg.AssetKey("database") and materialization.partition == "staging"
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["backup_id"] == manifest.id and metadata["rows_verified"] == ROWS
    assert metadata["target_database"] == live and metadata["duration_seconds"] > 0
    assert metadata["kept_database"].startswith(f"{live}__pre_restore_")
    (safety,) = result.asset_materializations_for_node("take_safety_backup")
    assert safety.asset_key == dg.AssetKey("database_backup") and safety.metadata["kind"].value == "pre-restore"
    assert result.get_asset_observation_events() == []
    started, succeeded = slack_server.texts()
    assert "Restore started" in started and "Restore succeeded" in succeeded and manifest.id in succeeded
    logs = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    assert DB_PASSWORD not in logs and DB_PASSWORD not in slack_server.all_bodies()


def test_restore_into_a_new_database_needs_no_confirmation_and_is_observed(backup, live, instance, slack_server):
    before, target = fingerprint(live), PREFIX + "job_copy"
    result = run_restore(instance, backup, slack_server, backup=backup[1].id, target_database=target)
    try:
        assert result.success
        assert content(target) == backup[2] and fingerprint(live) == before
        assert result.asset_materializations_for_node("swap_into_place") == []
        assert result.asset_materializations_for_node("take_safety_backup") == []
        (observation,) = result.get_asset_observation_events()
        observed = observation.asset_observation_data.asset_observation
        assert observed.asset_key == dg.AssetKey("database") and observed.partition == "staging"
        assert observed.metadata["target_database"].value == target
    finally:
        drop_database(target)


def test_a_run_that_finds_the_restore_lock_taken_changes_nothing(backup, live, instance, slack_server):
    """Runs executed in process skip the run queue's per-environment limit; the lock still holds them apart."""
    before, names = fingerprint(live), database_names()
    with databases.restore_lock(url_for(live), live):
        result = run_restore(instance, backup, slack_server, confirm=confirmation(backup[1].id, live))
    assert not result.success
    (failure,) = step_events(result, "STEP_FAILURE")
    assert failure.step_key == "resolve_restore"
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("restore of staging was refused: ")
    assert f"another restore of database {live} is running" in description
    assert fingerprint(live) == before and database_names() == names
    assert slack_server.texts() == []  # the restore that holds the lock has said what it does


def test_retrying_a_failed_restore_of_latest_picks_the_same_backup(backup, live, instance, slack_server, monkeypatch):
    from ops_platform.lib.restore.resolve import resolve_backup

    folder, manifest = backup[0], backup[1]
    monkeypatch.setenv("STAGING_MIGRATE_COMMAND", "exit 3")
    result = run_restore(instance, backup, slack_server, backup=manifest.id, confirm=confirmation(manifest.id, live))
    assert [event.step_key for event in step_events(result, "STEP_FAILURE")] == ["run_migrations"]
    newest = resolve_backup("staging", "latest", LocalStore(folder)).first.manifest
    assert (newest.id, newest.kind) == (manifest.id, manifest.kind)
