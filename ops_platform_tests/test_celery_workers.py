"""Runs spread over machines: ``fleet_backup_job`` with ``OPS_PLATFORM_EXECUTOR=celery``, its steps
run by two Celery workers (deploy/'s unit's command line, ``celery -A ops_platform.celery_app
worker``), each its own process in a working folder of its own, as two hosts would be. Real parts: Redis
on loopback as the broker and result backend (a database number and a queue of this session's
own), PostgreSQL instance storage (deploy/dagster.postgres.yaml) that the run and both workers
share, moto S3 as the shared store (the backups' copies and the steps' outputs), and the local
PostgreSQL server holding the databases backed up."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops_platform_tests.deploy_units import WORKER_UNIT, command, unit
from ops_platform_tests.conftest import DB_PASSWORD, DB_USER, PG_HOST, PG_PORT, psql
from ops_platform_tests.restore_e2e_helpers import (
    create_live,
    database_names,
    descendants,
    drop_database,
    kill_pids,
    make_env,
    quoted,
)
from ops_platform_tests.waiting import wait_for

pytestmark = pytest.mark.xdist_group("test_celery_workers")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SESSION = os.getpid()
PREFIX = f"ops_cw_{SESSION}_"
TEMPLATE = PREFIX + "template"
INSTANCE_DATABASE = PREFIX + "dagster"
BUCKET = f"ops-celery-{SESSION}"
QUEUE = f"ops_test_celery_{SESSION}"
BROKER_SECRET = "brk-secret-Q7w2xZ"
# Redis's default user has no password here (nopass accepts any), so the URL can carry one, as a
# production broker's does, and the test can look for it everywhere it must not be.
BROKER = f"redis://default:{BROKER_SECRET}@127.0.0.1:6379/5"
DATABASES = 20
RUN_TIMEOUT_SECONDS = 150  # a hang guard: the run takes 40-70 s on 2 busy cores


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def site(tmp_path_factory, moto_server):
    """The databases, the bucket, the shared instance, and the environment every process shares."""
    from ops_platform.lib.stores import make_s3_client

    root = tmp_path_factory.mktemp("celery")
    create_live(TEMPLATE, customers=40, orders=120)
    names = [f"{PREFIX}db{index:02d}" for index in range(DATABASES)]
    for name in names:
        psql(f"CREATE DATABASE {quoted(name)} OWNER {DB_USER} TEMPLATE {quoted(TEMPLATE)}")
    psql(f"DROP DATABASE IF EXISTS {quoted(INSTANCE_DATABASE)}")
    psql(f"CREATE DATABASE {quoted(INSTANCE_DATABASE)}")
    s3 = make_s3_client()
    s3.create_bucket(Bucket=BUCKET)
    config = root / "ops_platform.yaml"
    config.write_text(f"""
servers:
  fleet:
    url_env: FLEET_SERVER_URL
    databases: ["{PREFIX}db*"]
""")
    home = root / "run_home"
    home.mkdir(mode=0o700)
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.postgres.yaml").read_text())
    env = make_env(home, root / "run_backups", {})
    env.update({
        "OPS_PLATFORM_CONFIG": str(config),
        "FLEET_SERVER_URL": f"postgresql://{DB_USER}:{DB_PASSWORD}@{PG_HOST}:{PG_PORT}/postgres",
        "DAGSTER_POSTGRES_URL": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{INSTANCE_DATABASE}",
        "AWS_S3_BUCKET": BUCKET, "AWS_S3_PREFIX": "backups",
        "OPS_PLATFORM_EXECUTOR": "celery", "CELERY_BROKER_URL": BROKER, "CELERY_QUEUE": QUEUE,
    })
    yield root, env, names, s3
    import redis

    client = redis.Redis.from_url(BROKER)
    for key in client.scan_iter(f"*{QUEUE}*"):
        client.delete(key)
    for name in database_names(PREFIX):
        drop_database(name)


def start_worker(root: Path, env: dict, name: str, backup_dir: Path | None) -> tuple[subprocess.Popen, Path]:
    """A worker as on a host of its own: its own working folder and DAGSTER_HOME; BACKUP_DIR only
    when given (without it the worker keeps no local copy: S3 only)."""
    folder = root / name
    (folder / "home").mkdir(parents=True, mode=0o700)
    worker_env = {**env, "DAGSTER_HOME": str(folder / "home")}
    worker_env.pop("BACKUP_DIR")
    if backup_dir is not None:
        worker_env["BACKUP_DIR"] = str(backup_dir)
    argv = command(unit(WORKER_UNIT)["ExecStart"][0], {"%": "%"}, {})
    argv[argv.index("-n") + 1] = f"{name}@%h"
    argv[argv.index("--concurrency") + 1] = "1"  # two workers on a 2-core machine shared with others
    log = folder / "worker.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(argv, cwd=folder, env=worker_env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return process, log


def test_two_workers_back_up_twenty_databases_in_one_run_each_once_and_verified(site):
    root, env, names, s3 = site
    started = time.monotonic()
    workers = [start_worker(root, env, "worker-a", None), start_worker(root, env, "worker-b", root / "b_backups")]
    try:
        for process, log in workers:
            wait_for(lambda: process.poll() is not None or b" ready." in log.read_bytes(), 60, f"{log} ready")
            assert process.poll() is None, log.read_text()
        run_config = root / "run.yaml"
        run_config.write_text(json.dumps({"ops": {"fleet_backup_targets": {"config": {"servers": ["fleet"]}}}}))
        result = subprocess.run(
            [str(BIN / "dagster"), "job", "execute", "-m", "ops_platform.definitions", "-j", "fleet_backup_job",
             "-c", str(run_config)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        seen = result.stdout + result.stderr
        for process, _ in workers:
            seen += " ".join(os.fsdecode(arg) for arg in Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0"))
    finally:
        for process, _ in workers:
            stop(process)
    elapsed = time.monotonic() - started
    print(f"{DATABASES} databases backed up through two Celery workers in {elapsed:.1f}s")

    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="backups/")
            for item in page.get("Contents", [])]
    manifests = {}
    for key in keys:
        if key.endswith(".manifest.json"):
            manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            manifests.setdefault(manifest["environment"], []).append(manifest)
    assert sorted(manifests) == sorted(f"fleet.{name}" for name in names)
    assert all(len(found) == 1 and found[0]["verified"] for found in manifests.values()), manifests

    worker_of, logged = step_workers(env)
    assert not [workers for workers in worker_of.values() if "," in workers], worker_of
    seen += logged + "".join(log.read_text() for _, log in workers)
    for secret in (BROKER_SECRET, DB_PASSWORD):
        assert secret not in seen
    assert len(worker_of) == DATABASES, worker_of
    assert {worker.split("@")[0] for worker in worker_of.values()} == {"worker-a", "worker-b"}, worker_of
    # worker-a has no BACKUP_DIR: S3 only, nothing left on its disk; worker-b keeps a local copy of its own
    left_on_a = [path for path in (root / "worker-a" / "home" / "backups").rglob("*") if path.is_file()]
    assert not left_on_a, left_on_a
    local_b = list((root / "b_backups").rglob("*.manifest.json"))
    steps_on_b = [step for step, worker in worker_of.items() if worker.startswith("worker-b@")]
    assert len(local_b) == len(steps_on_b)
    s3_only = [found[0] for found in manifests.values() if not any(c["name"] == "local" for c in found[0]["copies"])]
    assert len(s3_only) == DATABASES - len(steps_on_b)
    assert all(manifest["locations"] == [f"s3://{BUCKET}/backups/{manifest['environment']}/{manifest['artifact']}"]
               for manifest in s3_only), s3_only


def step_workers(env: dict, run_id: str | None = None) -> tuple[dict[str, str], str]:
    """Each backup step of the run (the only one, unless ``run_id``) and the Celery workers that
    took it, in order (their engine events), and everything the run recorded (its config, tags and
    event log)."""
    import dagster as dg

    os.environ["DAGSTER_POSTGRES_URL"] = env["DAGSTER_POSTGRES_URL"]
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        if run_id is None:
            (run,) = instance.get_runs(dg.RunsFilter(job_name="fleet_backup_job"))
        else:
            run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        found, logged = {}, repr(run.run_config) + repr(run.tags)
        for record in instance.all_logs(run.run_id):
            logged += record.user_message + repr(record.dagster_event)
            event = record.dagster_event
            if event is None or not (event.step_key or "").startswith("backup_target"):
                continue
            metadata = getattr(event.event_specific_data, "metadata", None) or {}
            worker = metadata.get("Celery worker")
            if worker is not None:
                name = worker.value if hasattr(worker, "value") else str(worker)
                found[event.step_key] = f"{found[event.step_key]},{name}" if event.step_key in found else name
        return found, logged


def test_a_worker_killed_mid_dump_leaves_its_backup_to_the_other_one(site):
    """RabbitMQ as the broker (it hands an unacknowledged step to another worker as soon as the
    lost worker's connection closes). The dump waits on a table lock, the worker running it is
    killed with its whole process tree (a machine lost), and the other worker backs the database
    up once; the run succeeds with no failure alert."""
    import psycopg

    root, env, names, s3 = site
    target_database = names[0]
    env = {**env, "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//", "CELERY_RESULT_BACKEND": BROKER,
           "CELERY_QUEUE": QUEUE + "_lost"}
    folder = root / "lost"
    folder.mkdir()
    workers = {name: start_worker(folder, env, name, folder / f"{name}_backups") for name in ("worker-c", "worker-d")}
    run = None
    try:
        for process, log in workers.values():
            wait_for(lambda: process.poll() is not None or b" ready." in log.read_bytes(), 60, f"{log} ready")
            assert process.poll() is None, log.read_text()
        with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user=postgres dbname={target_database}") as blocker:
            blocker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            run_config = folder / "run.yaml"
            run_config.write_text(json.dumps(
                {"ops": {"fleet_backup_targets": {"config": {"targets": [f"fleet.{target_database}"]}}}}))
            run = subprocess.Popen(
                [str(BIN / "dagster"), "job", "execute", "-m", "ops_platform.definitions", "-j", "fleet_backup_job",
                 "-c", str(run_config)],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

            def dumping():
                return next((name for name, (process, _) in workers.items()
                             if "pg_dump" in descendants(process.pid).values()), None)

            lost = wait_for(dumping, 90, "a worker's pg_dump waiting on the lock")
            process, _ = workers[lost]
            tree = list(descendants(process.pid))
            os.killpg(process.pid, signal.SIGKILL)
            kill_pids(tree)
            process.wait(timeout=30)
            blocker.rollback()
        output, _ = run.communicate(timeout=RUN_TIMEOUT_SECONDS)
        assert run.returncode == 0, output[-4000:]
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        for process, _ in workers.values():
            stop(process)
        from kombu import Connection

        with Connection(env["CELERY_BROKER_URL"]) as connection, contextlib.suppress(Exception):
            connection.default_channel.queue_delete(env["CELERY_QUEUE"])
            connection.default_channel.exchange_delete(env["CELERY_QUEUE"])

    run_id = next(word for word in output.split() if re.fullmatch(r"[0-9a-f]{8}-[0-9a-f-]{27}", word))
    worker_of, logged = step_workers(env, run_id)
    (step_workers_in_order,) = worker_of.values()
    other = ({"worker-c", "worker-d"} - {lost}).pop()
    assert [name.split("@")[0] for name in step_workers_in_order.split(",")] == [lost, other], worker_of
    manifests = [json.loads(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
                 for page in s3.get_paginator("list_objects_v2").paginate(
                     Bucket=BUCKET, Prefix=f"backups/fleet.{target_database}/")
                 for item in page.get("Contents", []) if item["Key"].endswith(".manifest.json")]
    made = [manifest for manifest in manifests if manifest["dagster_run_id"] == run_id]
    assert len(made) == 1 and made[0]["verified"], made
    assert "Database backup failed" not in logged


def test_without_the_setting_the_job_keeps_the_code_locations_executor_and_files():
    from ops_platform.defs.fleet.spread import step_io_manager
    from ops_platform.lib import celery_settings

    assert celery_settings.executor_name({}) == "multiprocess"
    assert type(step_io_manager({"AWS_S3_BUCKET": "b"})).__name__ == "FilesystemIOManager"
    celery = {"OPS_PLATFORM_EXECUTOR": "Celery", "AWS_S3_BUCKET": "b"}
    assert type(step_io_manager(celery)).__name__ == "S3PickleIOManager"
    assert celery_settings.celery_app_settings(celery)["task_default_queue"] == "ops_platform"
    assert celery_settings.backend_variable(celery) == "CELERY_BROKER_URL"
    assert celery_settings.backend_variable({**celery, "CELERY_RESULT_BACKEND": "redis://x/6"}) == "CELERY_RESULT_BACKEND"


def test_a_bad_setting_is_one_line_and_the_code_location_still_loads():
    from ops_platform.config import ConfigError
    from ops_platform.lib import celery_settings

    with pytest.raises(ConfigError, match="^OPS_PLATFORM_EXECUTOR must be one of multiprocess, celery, got 'k8s'$"):
        celery_settings.executor_name({"OPS_PLATFORM_EXECUTOR": "k8s"})
    with pytest.raises(ConfigError, match="^CELERY_QUEUE must be letters"):
        celery_settings.queue_name({"CELERY_QUEUE": "a queue"})
    with pytest.raises(ConfigError, match="^CELERY_BROKER_URL is not set"):
        celery_settings.broker_url({})
    code = ("from ops_platform.definitions import defs; "
            "print(defs().resolve_job_def('fleet_backup_job').executor_def.name)")
    loaded = subprocess.run([sys.executable, "-c", code], env={**os.environ, "OPS_PLATFORM_EXECUTOR": "k8s"},
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0 and loaded.stdout.split() == ["ops_platform_forkserver"], loaded.stderr
