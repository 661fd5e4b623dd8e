"""deploy/ started exactly as it describes itself, with processes on loopback instead of systemd units:
the code server, the operators' webserver, the read-only webserver, the daemon and the deployment
gateway, each with the command line of its unit and the environment its unit gives it (its Environment= lines and
EnvironmentFile= files, nothing of the test's own), on PostgreSQL instance storage
(deploy/dagster.postgres.yaml, a fresh database) with the read-only role of deploy/postgres/viewer-role.sql.
The units' host paths and ports are replaced by the checkout and free ports; nothing else is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from ops_platform_tests.conftest import (
    AWS_SECRET,
    DB_PASSWORD,
    DB_USER,
    PG_HOST,
    PG_PORT,
    SLACK_TOKEN,
    database_url,
    free_port,
    psql,
    reset_database,
)
from ops_platform_tests.deploy_units import (
    DEPLOY,
    ENV_FILES,
    GATEWAY_UNIT,
    ROOT,
    command,
    env_file,
    unit,
    unit_environment,
)
from ops_platform_tests.waiting import wait_for
from ops_platform_tests.webserver import LAUNCH_RUN, graphql

INSTANCE_DB = f"ops_test_instance_{os.getpid()}"
VIEWER = f"ops_test_viewer_{os.getpid()}"
CODE_SERVER, DAEMON = "ops-platform-code-server.service", "ops-platform-daemon.service"
OPERATORS, VIEWERS = "ops-platform-webserver.service", "ops-platform-webserver-readonly.service"
GATEWAY = GATEWAY_UNIT
CI_TOKEN = "ci-development-Tok3n-secret"  # the gateway's env file holds only its SHA-256
# What systemd gives every service before its own settings.
SYSTEMD_BASE = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
SECRET_NAMES = ("DATABASE_URL", "REDIS_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "ROLLBACK_WEBHOOK_URL", "OPS_PLATFORM_TOKEN", "PGPASSWORD")
SELECTOR = {"repositoryLocationName": "ops_platform", "repositoryName": "__repository__"}


class Deployment:
    """The five processes, their environments and logs, the URLs of the webservers and the gateway,
    and the application's /health (a stand-in)."""

    def __init__(self, root: Path, health):
        self.root = root
        self.health = health
        self.processes: dict[str, subprocess.Popen] = {}
        self.envs: dict[str, dict[str, str]] = {}
        self.urls: dict[str, str] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        cwd = unit(name)["WorkingDirectory"][0].replace("/opt/ops_platform", str(ROOT))
        if unit(name).get("MemoryDenyWriteExecute") == ["yes"]:
            argv = [sys.executable, "-c", DENY_WRITE_EXECUTE, *argv]
        with open(self.log(name), "w") as output:
            self.processes[name] = subprocess.Popen(argv, cwd=cwd, env=env, stdout=output,
                                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.envs[name] = env

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name).read_text(errors='replace')[-3000:]}" for name in self.processes)

    def alive(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"{name} exited with {process.returncode}\n{self.logs()}"

    def stop(self) -> dict[str, int | None]:
        """Each process with its unit's KillSignal (SIGTERM unless the unit says otherwise), the gateway,
        webservers and daemon first; its exit code, or None when it was still running 60 s later (then
        SIGKILL)."""
        codes = {}
        for group in ((GATEWAY, OPERATORS, VIEWERS, DAEMON), (CODE_SERVER,)):  # the clients together, then the server
            processes = {name: self.processes[name] for name in group if name in self.processes}
            for name, process in processes.items():
                if process.poll() is None:
                    process.send_signal(getattr(signal, unit(name).get("KillSignal", ["SIGTERM"])[0]))
            deadline = time.monotonic() + 60
            for name, process in processes.items():
                try:
                    codes[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    codes[name] = None
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        return codes


# MemoryDenyWriteExecute=yes: the kernel's own prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN), then exec
# of the unit's command (same pid; the setting survives exec), where the kernel has it (Linux 6.3 and
# later; older ones run the command without).
DENY_WRITE_EXECUTE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(66, 0, 0, 0, 0) >= 0 and libc.prctl(65, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")
os.execv(sys.argv[1], sys.argv[1:])
"""


def platform_settings(root: Path, slack_api_url: str, operators_url: str, api_url: str) -> dict[str, str]:
    """/etc/ops_platform/ops_platform.env for the test: .env.example's variables, with secrets."""
    settings = {"DATABASE_URL": database_url("development"), "API_URL": api_url, "BACKUP_DIR": str(root / "backups"),
                "BACKUP_RETRY_DELAY_SECONDS": "0", "SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_CHANNEL": "#ops",
                "SLACK_API_URL": slack_api_url, "AWS_ACCESS_KEY_ID": "testing-access-key-id",
                "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_DEFAULT_REGION": "us-east-1",
                "DAGSTER_WEBSERVER_URL": operators_url,
                "DAGSTER_HOME": ""}  # empty, as in .env.example: instance.env, read after this file, sets it
    documented = env_file(ENV_FILES["/etc/ops_platform/ops_platform.env"])
    assert set(settings) <= set(documented), set(settings) - set(documented)
    return settings


def example(path: str, **values: str) -> dict[str, str]:
    """A shipped env file with the test's values for variables it already has (and no others)."""
    variables = env_file(ENV_FILES[path])
    assert set(values) <= set(variables), set(values) - set(variables)
    return {**variables, **values}


def credentials(root: Path, name: str) -> str:
    """The unit's credentials directory (%d) with its LoadCredential= files: libpq password files
    (the local server trusts loopback, so their passwords are never asked for)."""
    folder = root / "credentials" / name
    folder.mkdir(parents=True, mode=0o700)
    for line in unit(name).get("LoadCredential", []):
        credential = folder / line.split(":", 1)[0]
        credential.write_text(f"{PG_HOST}:{PG_PORT}:{INSTANCE_DB}:*:unused-here\n")
        credential.chmod(0o600)
    return str(folder)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, slack_server_session):
    from ops_platform.gateway import token_digest
    from ops_platform_testkit.health_server import HealthServer

    root = tmp_path_factory.mktemp("deploy_shape")
    reset_database("development")
    psql(f'DROP DATABASE IF EXISTS "{INSTANCE_DB}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{INSTANCE_DB}" OWNER {DB_USER}')
    ports = {"4266": str(free_port()), "3000": str(free_port()), "3001": str(free_port()), "3100": str(free_port())}
    grpc = yaml.safe_load((DEPLOY / "workspace.grpc.yaml").read_text())
    assert grpc["load_from"][0]["grpc_server"]["port"] == 4266
    grpc["load_from"][0]["grpc_server"]["port"] = int(ports["4266"])
    workspace = root / "workspace.grpc.yaml"
    workspace.write_text(yaml.safe_dump(grpc))
    state = root / "state"
    home = state / "ops_platform" / "dagster_home"
    home.mkdir(parents=True, mode=0o700)
    (home / "dagster.yaml").write_text((DEPLOY / "dagster.postgres.yaml").read_text())
    (state / "ops-platform-viewer").mkdir(mode=0o700)
    owner_url = f"postgresql+psycopg2://{DB_USER}@{PG_HOST}:{PG_PORT}/{INSTANCE_DB}"
    health = HealthServer()  # the application's API, for the verification
    files = {
        "/etc/ops_platform/ops_platform.env": platform_settings(root, slack_server_session.api_url,
                                                                f"http://127.0.0.1:{ports['3000']}", health.url),
        "/etc/ops_platform/instance.env": example("/etc/ops_platform/instance.env", DAGSTER_HOME=str(home),
                                                  DAGSTER_POSTGRES_URL=owner_url),
        "/etc/ops_platform/viewer.env": example("/etc/ops_platform/viewer.env",
                                                DAGSTER_POSTGRES_URL=owner_url.replace(DB_USER, VIEWER, 1)),
        # The shipped file as it is (its public URL for run links too), with the digest of CI's token.
        "/etc/ops_platform/gateway.env": example("/etc/ops_platform/gateway.env",
                                                 DEPLOY_TOKEN_SHA256=token_digest(CI_TOKEN)),
    }
    site = Deployment(root, health)

    def launch(name: str) -> None:
        specifiers = {"S": str(state), "d": credentials(root, name), "i": "", "%": "%"}
        env = unit_environment(name, files, specifiers, {**SYSTEMD_BASE, "HOME": str(state / "ops_platform")})
        replacements = {"/opt/ops_platform/deploy/workspace.grpc.yaml": str(workspace)}
        for line in unit(name).get("ExecStartPre", []):
            subprocess.run(command(line, specifiers, ports, replacements), env=env, check=True, timeout=30)
        site.start(name, command(unit(name)["ExecStart"][0], specifiers, ports, replacements), env)
        timeout = float(unit(name).get("TimeoutStartSec", ["90"])[0])
        for line in unit(name).get("ExecStartPost", []):  # systemd counts the unit started after these
            subprocess.run(command(line, specifiers, ports, replacements), env=env, check=True, timeout=timeout)

    try:
        # The order of README "Instance": the code server and the daemon (which creates the
        # instance's tables), the viewer role, then the webservers.
        launch(CODE_SERVER)
        launch(DAEMON)
        wait_for(lambda: site.alive() or daemon_beats(), 180, "the daemon did not create the instance's storage", interval=1)
        subprocess.run(["psql", "-X", "-q", "-h", PG_HOST, "-p", str(PG_PORT), "-U", "postgres", "-d", INSTANCE_DB,
                        "-v", f"owner={DB_USER}", "-v", f"viewer={VIEWER}", "-f", str(DEPLOY / "postgres" / "viewer-role.sql")],
                       check=True, capture_output=True, text=True, timeout=60)
        launch(OPERATORS)
        launch(VIEWERS)
        site.urls = {OPERATORS: f"http://127.0.0.1:{ports['3000']}", VIEWERS: f"http://127.0.0.1:{ports['3001']}"}
        for url in site.urls.values():
            wait_for(lambda: site.alive() or loaded(url), 180, f"{url} did not load the code location from the code server", interval=1)
        launch(GATEWAY)
        site.urls[GATEWAY] = f"http://127.0.0.1:{ports['3100']}"
        wait_for(lambda: site.alive() or answers(site.urls[GATEWAY]), 30, "the deployment gateway did not start", interval=1)
        yield site
    finally:
        site.stop()
        health.close()
        psql(f'DROP DATABASE IF EXISTS "{INSTANCE_DB}" WITH (FORCE)')
        psql(f'DROP ROLE IF EXISTS "{VIEWER}"')


def daemon_beats() -> bool:
    """The daemon has created the instance's tables and written its first heartbeat."""
    if psql("SELECT to_regclass('daemon_heartbeats') IS NOT NULL", database=INSTANCE_DB) != "t":
        return False
    return psql("SELECT EXISTS (SELECT 1 FROM daemon_heartbeats)", database=INSTANCE_DB) == "t"


def loaded(url: str) -> bool:
    try:
        data = graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }")
    except (httpx.HTTPError, AssertionError):
        return False
    return [(e["name"], e["loadStatus"]) for e in data["workspaceOrError"]["locationEntries"]] == [("ops_platform", "LOADED")]


def answers(gateway: str) -> bool:
    try:
        return httpx.get(f"{gateway}/verifications", timeout=2).status_code == 404
    except httpx.HTTPError:
        return False


def launch_backup(url: str) -> dict:
    params = {"selector": {**SELECTOR, "jobName": "backup_job"},
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "development"}]}}
    return graphql(url, LAUNCH_RUN, {"params": params})["launchRun"]


def run_status(url: str, run_id: str) -> str:
    data = graphql(url, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id})
    return data["runOrError"]["status"]


CI_BEARER = {"Authorization": f"Bearer {CI_TOKEN}"}


@pytest.fixture(scope="module")
def ci_verification(deployment) -> tuple[dict, httpx.Response]:
    """CI's request to the gateway, with its token, to verify a deployment of development: made before
    the backup is launched, so that the two runs overlap (the test's time), as on a deploy day."""
    verification = {"environment": "development", "expected_version": deployment.health.version, "timeout_seconds": 60}
    return verification, httpx.post(f"{deployment.urls[GATEWAY]}/verifications", json=verification, headers=CI_BEARER,
                                     timeout=60)


@pytest.fixture(scope="module")
def backup_run(deployment, ci_verification):
    """A backup launched from the operators' webserver, queued, started by the daemon through the code
    server, and finished. Only the code server has DATABASE_URL, so only a run it executes can succeed."""
    launched = launch_backup(deployment.urls[OPERATORS])
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished():
        deployment.alive()
        status = run_status(deployment.urls[OPERATORS], run_id)
        return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

    try:
        return run_id, wait_for(finished, 300, "the backup run did not finish", interval=2)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{deployment.logs()}") from None


def test_the_read_only_webserver_refuses_launch_run(deployment):
    refused = launch_backup(deployment.urls[VIEWERS])
    assert refused["__typename"] == "UnauthorizedError", refused


def test_the_operators_webserver_launches_a_backup_the_daemon_runs_through_the_code_server(deployment, backup_run):
    run_id, status = backup_run
    assert status == "SUCCESS", deployment.logs()
    data = graphql(deployment.urls[OPERATORS], "query($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } } } }",
                   {"id": run_id})
    tags = {tag["key"]: tag["value"] for tag in data["runOrError"]["tags"]}
    assert tags["dagster/partition"] == "development"
    assert list((deployment.root / "backups" / "development").glob("development-*.manifest.json"))
    code_server = deployment.log(CODE_SERVER).read_text(errors="replace")
    assert "does not match the name" not in code_server


def test_the_read_only_webserver_shows_the_run_with_its_select_only_role(deployment, backup_run):
    url = deployment.urls[VIEWERS]
    run_id, _ = backup_run
    assert httpx.get(f"{url}/", timeout=60).status_code == 200  # every page reads the instance's id
    runs = graphql(url, "{ runsOrError { ... on Runs { results { runId status } } } }")["runsOrError"]["results"]
    assert {"runId": run_id, "status": "SUCCESS"} in runs
    statuses = graphql(url, """{ assetNodeOrError(assetKey: {path: ["database_backup"]}) { ... on AssetNode {
        assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions } } } } }""")
    assert statuses["assetNodeOrError"]["assetPartitionStatuses"]["materializedPartitions"] == ["development"]


def test_the_viewer_role_reads_and_writes_only_the_partition_cache(deployment):
    tables = psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database=INSTANCE_DB).split()
    assert {"runs", "event_logs", "asset_keys", "instance_info", "jobs", "kvs"} <= set(tables)
    writable = psql(f"""SELECT t FROM unnest(ARRAY{tables!r}) t WHERE NOT has_table_privilege('{VIEWER}', t, 'SELECT')
        OR has_table_privilege('{VIEWER}', t, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')""",
                    database=INSTANCE_DB)
    assert writable == ""
    columns = psql(f"""SELECT table_name || '.' || column_name FROM information_schema.columns WHERE table_schema = 'public'
        AND has_column_privilege('{VIEWER}', table_name, column_name, 'INSERT, UPDATE')""", database=INSTANCE_DB)
    assert columns.split() == ["asset_keys.cached_status_data"]
    assert psql(f"SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = '{VIEWER}'") == "f"


def test_a_ci_token_verifies_a_deployment_through_the_gateway_and_does_nothing_else(deployment, ci_verification):
    """The gateway as its unit runs it (its environment file holds only the token's digest and the
    public URL) launches the verification through the operators' webserver; the daemon runs it
    through the code server, which alone knows API_URL. With the same token the gateway answers
    nothing else: no GraphQL, no other job, no UI (the operators' proxy admits no bearer token at all:
    test_deploy_examples)."""
    gateway, bearer = deployment.urls[GATEWAY], CI_BEARER
    verification, started = ci_verification
    assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    assert started.json()["run_url"] == f"https://ops.example.com/runs/{run_id}"

    def finished():
        deployment.alive()
        page = httpx.get(f"{gateway}/verifications/{run_id}", headers=bearer, timeout=60).json()
        return page if page["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

    try:
        page = wait_for(finished, 300, "the verification did not finish", interval=1)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{deployment.logs()}") from None
    assert page["status"] == "SUCCESS", (page, deployment.logs())
    data = graphql(deployment.urls[OPERATORS], """query($id: ID!) { runOrError(runId: $id) { ... on Run {
        jobName tags { key value } } } }""", {"id": run_id})["runOrError"]
    tags = {tag["key"]: tag["value"] for tag in data["tags"]}
    assert data["jobName"] == "verify_deployment_job" and tags["ops_platform/launched_by"] == "deploy-gateway"

    launch = {"query": LAUNCH_RUN, "variables": {"params": {"selector": {**SELECTOR, "jobName": "backup_job"}}}}
    refused = [httpx.post(f"{gateway}/graphql", json=launch, headers=bearer, timeout=30),
               httpx.get(f"{gateway}/", headers=bearer, timeout=30),
               httpx.get(f"{gateway}/runs/{run_id}", headers=bearer, timeout=30),
               httpx.post(f"{gateway}/verifications", json={**verification, "job": "backup_job"}, headers=bearer, timeout=30),
               httpx.post(f"{gateway}/verifications", json=verification, timeout=30)]
    assert [answer.status_code for answer in refused] == [404, 404, 404, 400, 401]


def test_no_webserver_process_holds_a_secret(deployment):
    secrets = [DB_PASSWORD, SLACK_TOKEN, AWS_SECRET, database_url("development")]
    code_server = environ(deployment.processes[CODE_SERVER].pid)
    assert all(secret in code_server for secret in (DB_PASSWORD, SLACK_TOKEN, AWS_SECRET)), "the code server has them"
    assert deployment.envs[CODE_SERVER]["DAGSTER_HOME"] == deployment.envs[OPERATORS]["DAGSTER_HOME"] != ""
    for name in (OPERATORS, VIEWERS, DAEMON):
        text = environ(deployment.processes[name].pid)
        variables = dict(line.split("=", 1) for line in text.split("\0") if "=" in line)
        assert [key for key in variables if key.endswith(SECRET_NAMES)] == [], name
        assert [secret for secret in secrets if secret in text] == [], name
        assert urlsplit(variables["DAGSTER_POSTGRES_URL"]).password is None, name
        assert set(variables) <= {*SYSTEMD_BASE, "HOME", "DAGSTER_HOME", "DAGSTER_POSTGRES_URL", "PGPASSFILE"}, name
    assert VIEWER in environ(deployment.processes[VIEWERS].pid)
    text = environ(deployment.processes[GATEWAY].pid)  # not even the instance, nor CI's token itself
    variables = dict(line.split("=", 1) for line in text.split("\0") if "=" in line)
    assert set(variables) <= {*SYSTEMD_BASE, "HOME", "DAGSTER_WEBSERVER_URL", "PRODUCTION_DEPLOY_TOKEN_SHA256",
                              "STAGING_DEPLOY_TOKEN_SHA256", "DEPLOY_TOKEN_SHA256"}, variables
    assert [secret for secret in (*secrets, CI_TOKEN, INSTANCE_DB) if secret in text] == []


def environ(pid: int) -> str:
    return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")


def test_every_process_stops_on_its_units_kill_signal(deployment):
    """Last: stops them all. Each unit's KillSignal ends its process within the minute (the code
    server's proxy does not act on SIGTERM: its unit says SIGINT)."""
    codes = deployment.stop()
    assert None not in codes.values(), codes
