"""The whole code location loads, with the expected assets, checks, jobs, schedules and sensors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml

from ops_platform.definitions import defs
from ops_platform_tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_graph_has_lineage_from_databases_to_backups_to_checks():
    definitions = defs()
    graph = definitions.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"database", "database_backup"} <= keys
    backup = graph.get(dg.AssetKey("database_backup"))
    assert {k.to_user_string() for k in backup.parent_keys} == {"database"}
    assert isinstance(backup.partition_mappings[dg.AssetKey("database")], dg.IdentityPartitionMapping)
    assert isinstance(backup.partitions_def, dg.DynamicPartitionsDefinition) and backup.partitions_def.name == "targets"
    assert graph.get(dg.AssetKey("database")).partitions_def == backup.partitions_def
    assert backup.group_name == "backups"
    check_names = {key.name for key in graph.asset_check_keys if key.asset_key == dg.AssetKey("database_backup")}
    assert {"decodes_completely", "not_empty", "s3_copy_matches", "size_not_dropped"} <= check_names
    assert graph.get(dg.AssetKey("database")).is_external


def test_schedules_and_sensors_ship_running():
    definitions = defs()
    schedules = {s.name: s for s in definitions.schedules}
    assert schedules["production_backup_schedule"].cron_schedule == "0 2 * * *"
    assert schedules["staging_backup_schedule"].cron_schedule == "0 3 * * *"
    for name in ("production_backup_schedule", "staging_backup_schedule"):
        assert schedules[name].execution_timezone == "America/New_York"
        assert schedules[name].default_status == dg.DefaultScheduleStatus.RUNNING
    assert "development_backup_schedule" not in schedules
    sensor = definitions.resolve_sensor_def("run_failure_slack_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert definitions.resolve_job_def("backup_job") is not None


def test_only_configured_environments_become_partitions():
    env = {k: v for k, v in os.environ.items() if k not in ("STAGING_DATABASE_URL", "DATABASE_URL")}
    code = ("from ops_platform.definitions import defs; d = defs(); "
            "print(sorted(s.name for s in d.schedules if 'backup' in s.name)); "
            "from ops_platform.defs.environments import ENVIRONMENT_NAMES; print(ENVIRONMENT_NAMES)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["['production_backup_schedule']", "['production']"]


def test_every_jobs_steps_fork_from_the_preloaded_pool():
    """A run worker's steps start from a forkserver that has loaded the definitions, not from a
    fresh interpreter each (2-3 s a step); restore_job runs in its worker's own process."""
    from ops_platform.defs.fleet.spread import LOCAL_POOL
    from ops_platform.defs.run_guards import FORKSERVER_POOL, PROCESS_POOL

    assert FORKSERVER_POOL["start_method"] == {"forkserver": {"preload_modules": ["ops_platform.preload"]}}
    executors = {job.name: job.executor_def for job in defs().resolve_all_job_defs()}
    assert executors.pop("restore_job") is dg.in_process_executor
    assert executors.pop("fleet_backup_job") is LOCAL_POOL
    assert all(executor is PROCESS_POOL for executor in executors.values()), executors


def test_dagster_definitions_validate_passes():
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "Validation successful for code location ops_platform" in output
    assert "does not match the name" not in output, "the code location's name must not depend on the folder"


def test_instance_configs_are_valid_dagster_yaml(tmp_path):
    from ops_platform_tests.dagster_private import dagster_instance_config

    for source in (ROOT / "dagster.yaml", ROOT / "deploy" / "dagster.postgres.yaml"):
        home = tmp_path / source.stem
        home.mkdir()
        (home / "dagster.yaml").write_text(source.read_text())
        config, _ = dagster_instance_config(str(home))
        limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
        assert limits[0]["key"] == "dagster/partition" and limits[0]["limit"] == 1
        assert config["run_monitoring"]["enabled"] and config["run_retries"]["enabled"]
        assert config["run_queue"]["dequeue_interval_seconds"] == 1  # a queued run waits at most a second
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        assert instance.run_coordinator.dequeue_interval_seconds == 1
    assert yaml.safe_load((ROOT / "deploy" / "dagster.postgres.yaml").read_text())["storage"]["postgres"]


def test_postgres_instance_storage_records_a_backup_run(databases, tmp_path, monkeypatch, slack_server):
    """The production instance config (deploy/dagster.postgres.yaml) against the real server."""
    from ops_platform_tests.conftest import psql

    psql("DROP DATABASE IF EXISTS ops_test_dagster_storage")
    psql("CREATE DATABASE ops_test_dagster_storage")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/ops_test_dagster_storage")
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.postgres.yaml").read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        from ops_platform.defs.environments import ensure_partitions

        ensure_partitions(instance, ["development"])
        result = defs().resolve_job_def("backup_job").execute_in_process(
            instance=instance, partition_key="development", raise_on_error=False)
        assert result.success
    tables = psql("SELECT count(*) FROM runs", database="ops_test_dagster_storage")
    assert int(tables) == 1
    psql("DROP DATABASE ops_test_dagster_storage WITH (FORCE)")


def test_every_domain_is_wired():
    definitions = defs()
    keys = {key.to_user_string() for key in definitions.resolve_asset_graph().get_all_asset_keys()}
    assert {"backup_retention", "production_api", "production_frontend", "production_redis",
            "production_bucket"} <= keys
    assert {job.name for job in definitions.jobs} >= {
        "backup_job", "retention_job", "health_check_job", "verify_deployment_job"}
    schedules = {s.name: s for s in definitions.schedules}
    for name in ("health_check_schedule", "production_retention_schedule", "staging_retention_schedule"):
        assert schedules[name].default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedules["health_check_schedule"].cron_schedule == "*/5 * * * *"
    sensors = {s.name: s for s in definitions.sensors}
    assert sensors["health_alert_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["backup_freshness_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    graph = definitions.resolve_asset_graph()
    retention = graph.get(dg.AssetKey("backup_retention"))
    assert dg.AssetKey("database_backup") in retention.parent_keys
    backup_job_assets = definitions.resolve_job_def("backup_job").asset_layer.selected_asset_keys
    assert dg.AssetKey("backup_retention") in backup_job_assets


def test_retention_follows_every_backup_with_the_automation_sensor_running():
    definitions = defs()
    sensor = definitions.resolve_sensor_def("retention_automation_sensor")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    retention = definitions.resolve_asset_graph().get(dg.AssetKey("backup_retention"))
    assert retention.automation_condition.get_label() == "eager"
    assert "default_automation_condition_sensor" not in {s.name for s in definitions.sensors}


def test_the_top_level_workspace_and_instance_config_are_the_ones_used():
    """workspace.yaml names the code location (the name pyproject's [tool.dg.project] gives it, so
    load_from_defs_folder does not warn), make dev's code server is started from its entry, and
    dagster.yaml at the top level is what the CLI and make dev give a new $DAGSTER_HOME."""
    from ops_platform import dev
    from ops_platform.cli.runs import REPO_INSTANCE_CONFIG

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    [entry] = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    assert entry == {"python_module": {"module_name": "ops_platform.definitions", "location_name": "ops_platform"}}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    assert project["code_location_name"] == "ops_platform"
    assert dev.code_location(dev.project_root()) == ("ops_platform", "ops_platform.definitions")
    assert REPO_INSTANCE_CONFIG == ROOT / "dagster.yaml" and REPO_INSTANCE_CONFIG.exists()
    assert not (ROOT / "deploy" / "dagster.yaml").exists()
    makefile = (ROOT / "Makefile").read_text()
    assert "$(DAGSTER_HOME)/dagster.yaml: dagster.yaml" in makefile and "deploy/dagster.yaml" not in makefile


def test_a_fresh_clone_serves_the_code_location_with_the_top_level_workspace(tmp_path):
    """`dagster-webserver -w workspace.yaml` in a clone whose folder has another name (pitfall 11:
    the project used to be named after the folder, with a warning on every load)."""
    from ops_platform_tests.dev_server import copy_checkout, shell_without_settings
    from ops_platform_tests.waiting import wait_for
    from ops_platform_tests.webserver import BIN, graphql, stop

    clone = copy_checkout(tmp_path / "newcomer")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "dagster.yaml").write_text((clone / "dagster.yaml").read_text())
    port = free_port()
    log = tmp_path / "webserver.log"
    with open(log, "w") as output:
        process = subprocess.Popen([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                                    "-w", "workspace.yaml"], cwd=clone, stdout=output, stderr=subprocess.STDOUT,
                                   env=shell_without_settings(DAGSTER_HOME=str(home)))
    url = f"http://127.0.0.1:{port}"

    def location():
        assert process.poll() is None, f"dagster-webserver exited: {log.read_text()[-2000:]}"
        try:
            data = graphql(url, """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
                locationOrLoadError { __typename ... on RepositoryLocation { repositories { name } } } } } } }""")
        except Exception:  # noqa: BLE001 - not serving yet
            return None
        entries = data["workspaceOrError"]["locationEntries"]
        return entries if entries and entries[0]["loadStatus"] == "LOADED" else None

    try:
        [entry] = wait_for(location, 180, "dagster-webserver did not load the code location", interval=0.5)
    finally:
        stop([process])
    text = log.read_text()
    assert entry["name"] == "ops_platform" and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", text
    assert "does not match the name" not in text and "will not be used" not in text


def test_without_a_bucket_no_asset_carries_the_s3_kind():
    env = {k: v for k, v in os.environ.items() if k != "AWS_S3_BUCKET"}
    code = ("import dagster as dg; from ops_platform.definitions import defs; g = defs().resolve_asset_graph(); "
            "print(sorted(k.to_user_string() for k in g.get_all_asset_keys() if 's3' in g.get(k).kinds))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
