"""Test servers and environments. Everything runs against real services on loopback:
the local PostgreSQL and Redis, a moto S3 server, and a Slack-compatible test server.

The environment variables below are set before any ``ops_platform.defs`` module is imported,
because the code location reads the configured environments when it loads."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
DB_PASSWORD = "pw-Zx81QrT5vLm2dbsecret"
DB_USER = "ops_test"
_SESSION = os.getpid()  # parallel pytest sessions on one server never share databases
TEST_DATABASES = {
    "production": f"ops_test_production_{_SESSION}",
    "staging": f"ops_test_staging_{_SESSION}",
    "development": f"ops_test_development_{_SESSION}",
}
S3_BUCKET = "ops-backups-test"
AWS_SECRET = "aws-secret-Yt6Kp0Lm3Nq8"
SLACK_TOKEN = "xoxb-0000-test-slack-token-secret"


def database_url(environment: str, password: str = DB_PASSWORD) -> str:
    return f"postgresql://{DB_USER}:{password}@{PG_HOST}:{PG_PORT}/{TEST_DATABASES[environment]}"


_SCRATCH = Path(tempfile.mkdtemp(prefix="ops_platform_tests_"))
os.environ.update({
    "PRODUCTION_DATABASE_URL": database_url("production"),
    "STAGING_DATABASE_URL": database_url("staging"),
    "DATABASE_URL": database_url("development"),
    "AWS_S3_BUCKET": S3_BUCKET,
    "AWS_S3_PREFIX": "backups",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    "AWS_DEFAULT_REGION": "us-east-1",
    "DAGSTER_HOME": str(_SCRATCH / "dagster_home"),
    "BACKUP_DIR": str(_SCRATCH / "backups"),
    "BACKUP_RETRY_DELAY_SECONDS": "0",  # retries of transient failures happen at once in tests
})
for variable in ("SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "SLACK_CHANNEL", "SLACK_API_URL", "PGPASSWORD"):
    os.environ.pop(variable, None)
(_SCRATCH / "dagster_home").mkdir(parents=True, exist_ok=True, mode=0o700)  # private, as the CLI makes it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PSQL_TIMEOUT_SECONDS = 60
# A helper's statement never waits long on a lock held elsewhere on the shared server.
_PSQL_ENV = {**os.environ, "PGCONNECT_TIMEOUT": "10", "PGOPTIONS": "-c lock_timeout=30s -c statement_timeout=50s"}


def psql(sql: str, database: str = "postgres") -> str:
    """Run ``sql`` as the superuser. The text goes through stdin, never argv: tests scan every
    process's argv for secrets (and test sessions run side by side)."""
    result = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG_HOST, "-p", str(PG_PORT), "-U", "postgres",
         "-d", database, "-At", "-f", "-"],
        input=sql, capture_output=True, text=True, timeout=PSQL_TIMEOUT_SECONDS, env=_PSQL_ENV,
    )
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
    return result.stdout.strip()


SAMPLE_SCHEMA = """
CREATE TABLE customers (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, profile jsonb, created_at timestamptz DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers(id), total numeric(12,2), note text);
CREATE INDEX orders_customer ON orders(customer_id);
INSERT INTO customers (email, profile)
  SELECT 'user' || g || '@example.com', jsonb_build_object('n', g, 'tag', md5(g::text)) FROM generate_series(1, {customers}) g;
INSERT INTO orders (customer_id, total, note)
  SELECT 1 + (g % {customers}), (g * 7.31)::numeric(12,2), repeat(md5(g::text), 3) FROM generate_series(1, {orders}) g;
"""


def reset_database(environment: str, customers: int = 500, orders: int = 2000) -> str:
    """Recreate the environment's test database with a small, known dataset."""
    name = TEST_DATABASES[environment]
    psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()")
    psql(f'DROP DATABASE IF EXISTS "{name}"')
    psql(f'CREATE DATABASE "{name}" OWNER {DB_USER}')
    sql = SAMPLE_SCHEMA.format(customers=customers, orders=orders)
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG_HOST, "-U", DB_USER, "-d", name, "-f", "-"],
                   input=sql, capture_output=True, text=True, check=True, timeout=PSQL_TIMEOUT_SECONDS, env=_PSQL_ENV)
    return name


_services_used = []


@pytest.fixture(scope="module", autouse=True)
def test_role(request):
    """The test role on the local PostgreSQL, created once. A test module that sets
    ``NEEDS_SERVICES = False`` runs without any server."""
    if getattr(request.module, "NEEDS_SERVICES", True) and not _services_used:
        # Test sessions run side by side (make test: pytest -n 2): the first one creates the role.
        psql(f"DO $$ BEGIN CREATE ROLE {DB_USER} LOGIN CREATEDB PASSWORD '{DB_PASSWORD}'; "
             "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$")
        _services_used.append(True)
    yield


@pytest.fixture(scope="session", autouse=True)
def cleanup_test_databases():
    yield
    if _services_used:
        for name in TEST_DATABASES.values():
            psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    shutil.rmtree(_SCRATCH, ignore_errors=True)


@pytest.fixture
def databases():
    """Fresh test databases for every environment."""
    for environment in TEST_DATABASES:
        reset_database(environment)
    return dict(TEST_DATABASES)


@pytest.fixture(scope="session")
def moto_server():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    yield endpoint
    server.stop()


@pytest.fixture
def s3_bucket(moto_server):
    """An empty bucket on the moto server, and a client for it."""
    from ops_platform.lib.stores import make_s3_client

    client = make_s3_client()
    existing = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
    if S3_BUCKET in existing:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=S3_BUCKET):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=S3_BUCKET, Key=item["Key"])
        for upload in client.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", []):
            client.abort_multipart_upload(Bucket=S3_BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
    else:
        client.create_bucket(Bucket=S3_BUCKET)
    return client


@pytest.fixture(scope="session")
def slack_server_session():
    from ops_platform_testkit.slack_server import SlackServer

    server = SlackServer()
    yield server
    server.close()


@pytest.fixture
def slack_server(slack_server_session):
    slack_server_session.reset()
    yield slack_server_session
    slack_server_session.reset()


@pytest.fixture
def slack_resource(slack_server):
    """The real OpsSlackResource, with bot token and webhook both pointed at the test server."""
    from ops_platform.defs.resources import OpsSlackResource

    return OpsSlackResource(token=SLACK_TOKEN, base_url=slack_server.api_url, channel="#ops",
                            webhook_url=slack_server.webhook_url, max_retries=2)


def platform_resources(**overrides) -> dict:
    """The code location's resources as the current environment binds them, with test overrides
    (``slack=...``, ``backup_storage=...``)."""
    from ops_platform.defs.resources import build_resources

    resources = build_resources(os.environ)
    resources.pop("restore_lock")  # run-scoped (it holds a lock), only restore_job uses it
    return {**resources, **overrides}


@pytest.fixture
def backup_dir(tmp_path) -> Path:
    path = tmp_path / "backups"
    path.mkdir()
    return path


@pytest.fixture
def instance():
    """A Dagster instance of the test's own, with the environments registered as partitions of
    ``targets`` (as make dev, the CLI and target_discovery_sensor register them)."""
    import dagster as dg

    from ops_platform.defs.environments import ensure_partitions

    with dg.instance_for_test() as test_instance:
        ensure_partitions(test_instance, TEST_DATABASES)
        yield test_instance


@pytest.fixture
def health_server():
    """A stand-in for the app's API and frontend (see fakes/health_server.py)."""
    from ops_platform_testkit.health_server import HealthServer

    server = HealthServer()
    yield server
    server.close()


@pytest.fixture
def silent_listener():
    """A port that accepts TCP connections and never answers."""
    from ops_platform_testkit.health_server import SilentListener

    listener = SilentListener()
    yield listener
    listener.close()


# Health components exist for the environments whose URLs are set when the code location loads;
# tests point these at their own servers at run time (monkeypatch), before each sweep.
os.environ.setdefault("PRODUCTION_API_URL", "http://127.0.0.1:9")
os.environ.setdefault("PRODUCTION_FRONTEND_URL", "http://127.0.0.1:9")
os.environ.setdefault("PRODUCTION_REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("STAGING_API_URL", "http://127.0.0.1:9")


# The longest groups (minutes each, measured in CI) start first, so neither session ends the run
# alone with one of them (make test passes --no-loadscope-reorder to keep this order).
LONGEST_GROUPS_FIRST = ("make_dev", "test_deploy_shape", "test_restore_cli", "test_deploy_remote", "test_backup_faults",
                        "test_production_runs", "test_restore_ui", "test_insight_ui", "test_restore_swap_crash",
                        "test_restore_faithful", "test_ui", "test_celery_workers")


def _group_of(item) -> str:
    return item.get_closest_marker("xdist_group").args[0]


def _start_rank(item) -> int:
    group = _group_of(item).rsplit(".", 1)[-1]
    return LONGEST_GROUPS_FIRST.index(group) if group in LONGEST_GROUPS_FIRST else len(LONGEST_GROUPS_FIRST)


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups
def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n N --dist loadgroup`` (make test) each module runs whole in one session, so
    its module fixtures are set up once; a module that marks an xdist_group of its own shares it."""
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=_start_rank)
