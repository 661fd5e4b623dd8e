"""Backups on a bad night: a hung S3 endpoint, a bad S3 setting, a table locked by a migration,
two backups started together, a backup process killed with SIGKILL, Ctrl-C and SIGTERM. Each
was observed on the platform before it was fixed; the CLI is the real script in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from ops_platform_testkit.health_server import SilentListener
from ops_platform_tests.backup_helpers import fill_big_table
from ops_platform_tests.conftest import (
    TEST_DATABASES,
    database_url,
    platform_resources,
    psql,
)

CLI = str(Path(sys.executable).parent / "ops-platform")


def cli_env(tmp_path, **extra) -> dict:
    env = dict(os.environ)
    env.update({"DAGSTER_HOME": str(tmp_path / "home"), "BACKUP_DIR": str(tmp_path / "backups")})
    env.pop("AWS_S3_BUCKET", None)
    env.update(extra)
    return env


def run_cli(env, *args, timeout=240):
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def committed(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*.manifest.json"))


def test_a_hung_s3_endpoint_never_holds_back_the_local_backup(databases, tmp_path):
    """S3 accepts connections and never answers: the stream is given up after the stall limit,
    the local backup is verified and committed, and the S3 copy is reported missing."""
    with _silent() as hung:
        env = cli_env(tmp_path, AWS_S3_BUCKET="ops-backups-hung", AWS_ENDPOINT_URL_S3=hung.url,
                      BACKUP_S3_STALL_SECONDS="2", AWS_MAX_ATTEMPTS="1")
        started = time.monotonic()
        result = run_cli(env, "backup", "development")
        elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert len(committed(tmp_path / "backups")) == 1
    assert "S3 took no data for 2s" in result.stderr or "S3 accepted no data for 2s" in result.stderr
    assert elapsed < 90, elapsed  # retention after it also gives up on the hung S3 quickly


@pytest.mark.parametrize("attempts", [1, 3])
def test_aws_max_attempts_counts_the_first_try(attempts):
    """AWS_MAX_ATTEMPTS is the number of requests an S3 call makes, as the AWS tools read it (not
    botocore's count of retries after the first): 1 means one request, and a hung S3 costs one
    read timeout, not two."""
    import socket

    from botocore.exceptions import ReadTimeoutError

    from ops_platform.lib.stores import make_s3_client

    server, accepted = socket.create_server(("127.0.0.1", 0)), []
    threading.Thread(target=lambda: accepted.extend(iter(server.accept, None)), daemon=True).start()
    client = make_s3_client(max_attempts=attempts, connect_timeout=1, read_timeout=0.5,
                            endpoint_url=f"http://127.0.0.1:{server.getsockname()[1]}",
                            credentials=("test-key", "test-secret"))
    with pytest.raises(ReadTimeoutError):
        client.list_objects_v2(Bucket="hung", Prefix="backups/")
    server.close()
    assert len(accepted) == attempts


def test_ctrl_c_stops_a_backup_stuck_on_s3_within_seconds(databases, tmp_path):
    fill_big_table(TEST_DATABASES["development"], rows=200_000)
    with _silent() as hung:
        env = cli_env(tmp_path, AWS_S3_BUCKET="ops-backups-hung", AWS_ENDPOINT_URL_S3=hung.url,
                      BACKUP_S3_STALL_SECONDS="600", AWS_MAX_ATTEMPTS="1")
        process = subprocess.Popen([CLI, "backup", "development"], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: _pg_dump_running(TEST_DATABASES["development"]), 60)
        time.sleep(3)  # the dump is blocked behind the upload that S3 never answers
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        stopped_in = time.monotonic() - sent
    assert process.returncode == 130, stderr
    assert stderr.strip().count("\n") == 0 and "interrupted by SIGINT" in stderr
    assert stopped_in < 15, stopped_in
    assert committed(tmp_path / "backups") == []
    assert not list((tmp_path / "backups").rglob(".*.partial"))
    assert not _pg_dump_running(TEST_DATABASES["development"])


def test_sigterm_exits_143_with_one_line(databases, tmp_path):
    fill_big_table(TEST_DATABASES["development"], rows=300_000)
    env = cli_env(tmp_path)
    process = subprocess.Popen([CLI, "backup", "development"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _pg_dump_running(TEST_DATABASES["development"]), 60)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    assert stderr.strip().count("\n") == 0 and "interrupted by SIGTERM" in stderr and "Traceback" not in stderr
    assert committed(tmp_path / "backups") == []


def test_a_bad_s3_setting_degrades_to_a_local_backup_with_a_warning(databases, tmp_path, slack_server, moto_server,
                                                                    s3_bucket):
    for bad in ("x", "-3"):
        env = cli_env(tmp_path / bad, AWS_S3_BUCKET="ops-backups-test", AWS_ENDPOINT_URL_S3=moto_server,
                      AWS_MAX_ATTEMPTS=bad, SLACK_WEBHOOK_URL=slack_server.webhook_url)
        result = run_cli(env, "backup", "development")
        assert result.returncode == 0, result.stderr
        assert len(committed(tmp_path / bad / "backups")) == 1
        assert "AWS_MAX_ATTEMPTS must be" in result.stderr and "local only" in result.stderr
    texts = slack_server.texts()
    assert len(texts) == 2 and all("backup succeeded" in text and "AWS_MAX_ATTEMPTS" in text for text in texts)


def test_a_table_locked_by_a_migration_fails_the_backup_in_bounded_time(databases, tmp_path, slack_server):
    name = TEST_DATABASES["development"]
    locker = psycopg.connect(database_url("development"), autocommit=False)
    locker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")  # a migration's ALTER TABLE
    try:
        env = cli_env(tmp_path, BACKUP_LOCK_WAIT_TIMEOUT_SECONDS="2", BACKUP_RETRIES="1",
                      SLACK_WEBHOOK_URL=slack_server.webhook_url)
        started = time.monotonic()
        result = run_cli(env, "backup", "development")
        elapsed = time.monotonic() - started
    finally:
        locker.rollback()
        locker.close()
    assert result.returncode == 1
    assert "could not lock table" in result.stderr and "BACKUP_LOCK_WAIT_TIMEOUT_SECONDS" in result.stderr
    assert "(after 2 attempts)" in result.stderr
    assert elapsed < 90, elapsed
    assert len(slack_server.texts()) == 1 and "lock-wait" in slack_server.texts()[0]
    assert committed(tmp_path / "backups") == [] and not _pg_dump_running(name)


def test_two_backups_started_together_never_overlap(databases, tmp_path):
    """Both are recorded; each runs alone (one dump at a time, the environment's lock), and each
    gets its own id. Neither fails half-way for the other's sake."""
    fill_big_table(TEST_DATABASES["development"], rows=200_000)
    env = cli_env(tmp_path)
    results = []

    def backup():
        results.append(run_cli(env, "backup", "development"))

    threads = [threading.Thread(target=backup) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        assert result.returncode == 0 or ("is running" in result.stderr and result.returncode == 1), result.stderr
        assert "FileNotFoundError" not in result.stderr and "Traceback" not in result.stderr
    manifests = committed(tmp_path / "backups")
    assert len(manifests) == sum(result.returncode == 0 for result in results) >= 1
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        windows = []
        for record in instance.get_run_records():
            dump = [event for event in instance.get_records_for_run(record.dagster_run.run_id).records
                    if event.event_log_entry.step_key == "database_backup" and event.event_log_entry.dagster_event
                    and event.event_log_entry.dagster_event.event_type_value in ("STEP_START", "STEP_SUCCESS")]
            if len(dump) == 2:
                windows.append((dump[0].event_log_entry.timestamp, dump[1].event_log_entry.timestamp))
    windows.sort()
    assert all(earlier[1] <= later[0] for earlier, later in zip(windows, windows[1:])), windows


def test_a_killed_backup_never_holds_the_environment(databases, tmp_path, moto_server, s3_bucket):
    """kill -9 mid-dump on this host: the next backup finds the run's process gone, marks it failed,
    clears its .partial file and multipart upload, and works."""
    fill_big_table(TEST_DATABASES["development"], rows=400_000)
    env = cli_env(tmp_path, AWS_S3_BUCKET="ops-backups-test", AWS_ENDPOINT_URL_S3=moto_server)
    killed_run = _kill_mid_dump(env, tmp_path)
    again = run_cli(env, "backup", "development")
    assert again.returncode == 0, again.stderr
    assert not list((tmp_path / "backups").rglob(".*.partial"))
    assert s3_bucket.list_multipart_uploads(Bucket="ops-backups-test").get("Uploads", []) == []
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        run = instance.get_run_by_id(killed_run)
        assert run.status == dg.DagsterRunStatus.FAILURE


def test_a_backup_killed_on_another_host_is_found_by_its_silence(databases, tmp_path, moto_server, s3_bucket,
                                                                 slack_server):
    """A run of another host (the CLI on a CI runner sharing the instance): while its heartbeat is
    fresh it holds the environment; once it is silent, dead_run_sensor marks it failed, cleans up,
    and the run-failure sensor posts it once."""
    fill_big_table(TEST_DATABASES["development"], rows=400_000)
    env = cli_env(tmp_path, AWS_S3_BUCKET="ops-backups-test", AWS_ENDPOINT_URL_S3=moto_server)
    killed_run = _kill_mid_dump(env, tmp_path)
    from ops_platform.lib.tags import HOST

    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        instance.add_run_tags(killed_run, {HOST: "another-host"})
    refused = run_cli(env, "backup", "development")
    assert refused.returncode == 1 and "already running" in refused.stderr

    from ops_platform.defs.alerts import dead_runs, sensors
    from ops_platform.defs.resources import BackupBucketResource, BackupStorageResource, OpsSlackResource

    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        _age_heartbeat(instance, killed_run, seconds=3600)
        resources = platform_resources(backup_storage=BackupStorageResource(backup_dir=str(tmp_path / "backups")),
                                       backup_bucket=BackupBucketResource(bucket="ops-backups-test"))
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            result = dead_runs.dead_run_sensor(context)
        assert "marked 1 dead run(s) failed" in result.skip_message
        run = instance.get_run_by_id(killed_run)
        assert run.status == dg.DagsterRunStatus.FAILURE
        failure = instance.get_records_for_run(killed_run, of_type=dg.DagsterEventType.RUN_FAILURE).records[-1]
        slack = OpsSlackResource(webhook_url=slack_server.webhook_url)
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_slack_sensor", dagster_instance=instance, dagster_run=run,
            dagster_event=failure.event_log_entry.dagster_event, resources={"slack": slack}).for_run_failure()
        sensors.run_failure_slack_sensor(context)
    texts = slack_server.texts()
    assert len(texts) == 1 and "its process is gone" in texts[0] and "removed" in texts[0]
    assert not list((tmp_path / "backups").rglob(".*.partial"))
    assert s3_bucket.list_multipart_uploads(Bucket="ops-backups-test").get("Uploads", []) == []


def test_a_retry_of_a_killed_run_is_not_taken_for_dead(databases, tmp_path):
    """The daemon's retry of a killed run starts with the killed run's tags: its stale heartbeat
    and its pid. Neither is the retry's own sign of life: a retry that just started is alive."""
    from ops_platform.defs.alerts.dead_runs import dead_runs
    from ops_platform.lib.tags import HEARTBEAT, HEARTBEAT_OF, HOST, PARTITION, PID

    with dg.instance_for_test() as instance:
        parent_tags = {PARTITION: "development", HEARTBEAT: "2026-01-01T00:00:00Z", HOST: __import__("socket").gethostname(),
                       PID: "999999999"}
        parent = instance.create_run_for_job(_started_job, tags={**parent_tags, HEARTBEAT_OF: "parent"})
        retry = instance.create_run_for_job(_started_job, tags={**parent_tags, HEARTBEAT_OF: parent.run_id,
                                                                 "dagster/parent_run_id": parent.run_id,
                                                                 "dagster/retry_number": "1"})
        for run in (parent, retry):
            instance.handle_run_event(run.run_id, dg.DagsterEvent(
                event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name))
        dead = {record.dagster_run.run_id for record in dead_runs(instance, dead_after_seconds=120)}
    assert dead == {parent.run_id}


@dg.job(name="backup_job")
def _started_job():
    pass


def test_backup_ids_are_unique_within_one_second(databases, tmp_path):
    from datetime import datetime, timezone

    from ops_platform.config import get_environment
    from ops_platform.lib.backup import perform_backup
    from ops_platform.lib.stores import LocalStore

    local = LocalStore(tmp_path / "backups")
    moment = datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc)
    environment = get_environment("development")
    ids = [perform_backup(environment, local, None, now=lambda: moment).manifest.id for _ in range(2)]
    assert ids == ["development-20261126T120000Z", "development-20261126T120001Z"]


# ---------------------------------------------------------------- helpers


class _silent:
    def __enter__(self):
        self.listener = SilentListener()
        return self.listener

    def __exit__(self, *exc):
        self.listener.close()


def _pg_dump_running(database: str) -> bool:
    out = psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' "
               "AND application_name = 'ops_platform' AND backend_type = 'client backend'")
    return int(out or 0) > 0


def _wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def _kill_mid_dump(env: dict, tmp_path: Path) -> str:
    """Start a CLI backup, SIGKILL it while it streams, and return its run id."""
    process = subprocess.Popen([CLI, "backup", "development"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    _wait_for(lambda: list((tmp_path / "backups").rglob(".*.partial")), 60)
    process.kill()
    process.wait()
    assert list((tmp_path / "backups").rglob(".*.partial"))
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        [record] = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    return record.dagster_run.run_id


def _age_heartbeat(instance, run_id: str, seconds: float) -> None:
    from datetime import datetime, timedelta, timezone

    from ops_platform.lib.artifacts import utc_iso
    from ops_platform.lib.tags import HEARTBEAT

    instance.add_run_tags(run_id, {HEARTBEAT: utc_iso(datetime.now(timezone.utc) - timedelta(seconds=seconds))})

