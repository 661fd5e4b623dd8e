"""Targets (lib/targets.py) and ``ops-platform targets list``: ops_platform.yaml's checks, one line
each, and discovery on the real local server (every database made here starts with this pytest
process's prefix and is dropped afterwards)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ops_platform import cli, config
from ops_platform.defs.backups.schedules import BACKUP_CRONS
from ops_platform.lib import targets
from ops_platform.lib.restore import drill
from ops_platform_tests.conftest import DB_PASSWORD, DB_USER

PREFIX = f"ops_tg_{os.getpid()}_"
SERVER_URL = f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:5432/postgres"
UNREACHABLE_URL = f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:1/postgres"
ALPHA, BETA, SCRATCH, UPPER = f"{PREFIX}alpha", f"{PREFIX}beta", f"{PREFIX}c_scratch", f"{PREFIX}Upper"
WORKING = (f"{PREFIX}alpha__restore_20260101T000000Z", f"{PREFIX}beta__drill__restore_20260101T000000Z")
SHOP = f"""
servers:
  shop:
    url_env: TG_SERVER_URL
    databases: ["{PREFIX}*"]
    exclude: ["*_scratch"]
    schedule: "30 1 * * *"
"""


def _admin() -> psycopg.Connection:
    return psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)


def create_databases(*names: str) -> None:
    with _admin() as connection:
        for name in names:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_databases(*names: str) -> None:
    with _admin() as connection:
        for name in names:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def server_databases():
    """On the local server: two databases to discover, a scratch one to exclude, one whose name
    cannot be a target, and two of the platform's working databases."""
    names = (ALPHA, BETA, SCRATCH, UPPER, *WORKING)
    create_databases(*names)
    yield names
    with _admin() as connection:
        left = [row[0] for row in connection.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                                     (PREFIX,))]
    drop_databases(*left)


def environ_with(tmp_path: Path, text: str | None, **variables: str) -> dict[str, str]:
    """The test session's environment, with ops_platform.yaml holding ``text`` and ``variables`` set."""
    environ = {key: value for key, value in os.environ.items() if key != "DAGSTER_POSTGRES_URL"}
    environ.update({"TG_SERVER_URL": SERVER_URL, **variables})
    if text is not None:
        path = tmp_path / "ops_platform.yaml"
        path.write_text(text)
        environ[targets.CONFIG_VARIABLE] = str(path)
    return environ


def names_of(result: targets.TargetsResult) -> set[str]:
    return {target.name for target in result.targets}


# ---------------------------------------------------------------- the file's checks (no server)


BAD_FILES = [
    ("target:\n  a:\n    url_env: TG_SERVER_URL\n", ": target: unknown key (did you mean 'targets'?)"),
    ("servers:\n  shop:\n    url_env: TG_SERVER_URL\n    exclud: []\n",
     ": servers.shop.exclud: unknown key (did you mean 'exclude'?)"),
    (f"servers:\n  shop:\n    url: {SERVER_URL}\n", ": servers.shop.url: would keep a value in the file; secrets stay in "
                                                   "the environment: name the variable that holds it with url_env"),
    ("targets:\n  a:\n    url_env: TG_SERVER_URL\n    password: hunter22\n",
     ": targets.a.password: looks like a secret; secrets stay in the environment"),
    (f"targets:\n  a:\n    url_env: {SERVER_URL}\n", ": targets.a.url_env: must be the name of an environment variable"),
    ("destinations:\n  eu:\n    s3_bucket: acme-eu\n    secret_access_key: abc123secret\n",
     ": destinations.eu.secret_access_key: would keep a value in the file"),
    ("targets:\n  a:\n    url_env: TG_NOT_SET_ANYWHERE\n", ": targets.a.url_env: TG_NOT_SET_ANYWHERE is not set"),
    ("targets:\n  a:\n    url_env: TG_NOT_A_URL\n", ": targets.a.url_env: TG_NOT_A_URL is not a valid PostgreSQL"),
    ("targets:\n  staging:\n    url_env: TG_SERVER_URL\n", ": targets.staging: 'staging' is an environment's name"),
    ("servers:\n  production:\n    url_env: TG_SERVER_URL\n", ": servers.production: 'production' is an environment"),
    ("servers:\n  shop:\n    url_env: TG_SERVER_URL\ntargets:\n  shop:\n    url_env: TG_OTHER_URL\n",
     ": targets.shop: 'shop' is also a server"),
    ("targets:\n  a:\n    url_env: DATABASE_URL\n", "DATABASE_URL is the development environment's database"),
    ("targets:\n  a:\n    url_env: TG_PRODUCTION_COPY\n", "which is the target production already"),
    ("targets:\n  a:\n    url_env: TG_OTHER_URL\n  b:\n    url_env: TG_OTHER_URL_AGAIN\n",
     ": targets.b: TG_OTHER_URL_AGAIN reaches database other", ),
    ("destinations:\n  eu:\n    s3_bucket: acme-eu\n  eu:\n    s3_bucket: acme-us\n",
     ": line 4, column 3: 'eu' is given twice (each name and key may appear once)"),
    ("destinations:\n  eu:\n    s3_bucket: acme-eu\n  eu2:\n    s3_bucket: acme-eu\n",
     ": destinations.eu2: writes to s3://acme-eu/backups, where destinations.eu writes"),
    ("destinations:\n  main:\n    s3_bucket: ops-backups-test\n",
     ": destinations.main: writes to s3://ops-backups-test/backups, where the backup's own S3 copy (AWS_S3_BUCKET)"),
    ("destinations:\n  s3:\n    s3_bucket: acme-eu\n", ": destinations.s3: 's3' is the name of the backup's own S3 copy"),
    ("destinations:\n  eu:\n    s3_bucket: acme-eu\n    access_key_id_env: TG_KEY\n",
     ": destinations.eu: access_key_id_env needs secret_access_key_env too"),
    ("destinations:\n  eu:\n    s3_bucket: s3://acme-eu/x\n", ": destinations.eu.s3_bucket: must be an S3 bucket name"),
    ("targets:\n  a:\n    url_env: TG_SERVER_URL\n    schedule: \"0 25 * * *\"\n",
     ": targets.a.schedule: '0 25 * * *' is not a valid cron expression"),
    ("targets:\n  a:\n    url_env: TG_SERVER_URL\n    schedule: \"0 0 2 * * *\"\n",
     ": targets.a.schedule: '0 0 2 * * *' has 6 fields; a schedule has five"),
    ("targets:\n  a:\n    url_env: TG_SERVER_URL\n    schedule: \"0 2 30 2 *\"\n", "never fires: February has no day 30"),
    ("targets:\n  a:\n    url_env: TG_SERVER_URL\n    schedule: */5 * * * *\n", ": line 4, column 16: not valid YAML: expected alphabetic or numeric character, but found '/' (quote a value "
     "that starts with *, e.g. schedule: \"*/30 * * * *\")"),
    ("servers:\n  shop:\n    url_env: TG_SERVER_URL\n    exclude: [\"[abc\"]\n",
     ": servers.shop.exclude: '[abc' is not a valid glob: a '[' is never closed"),
    ("servers:\n  shop:\n    url_env: TG_SERVER_URL\n    exclude: \"*_scratch\"\n",
     ": servers.shop.exclude: must be a list of names or glob patterns"),
    ("servers:\n  shop:\n    url_env: TG_SERVER_URL\n    databases: []\n",
     ": servers.shop.databases: must be all or a non-empty list"),
    ("servers:\n  shop:\n    url_env: TG_SERVER_URL\n    databases: [Orders]\n",
     ": servers.shop.databases: 'Orders' can never be a target: a name must be 1-63 lowercase letters"),
    ("servers:\n  Shop:\n    url_env: TG_SERVER_URL\n", ": servers.Shop: a name must be 1-63 lowercase letters, digits"),
    ("servers:\n  shop:\n    databases: all\n", ": servers.shop: url_env is missing"),
    ("servers: [\n", ": line 2, column 1: not valid YAML"),
    ("- shop\n", ": must be a mapping with servers, targets, destinations at the top, not a list"),
]


@pytest.mark.parametrize("text, expected", BAD_FILES, ids=[str(i) for i in range(len(BAD_FILES))])
def test_a_bad_file_is_one_line_naming_the_file_and_the_entry(tmp_path, text, expected):
    environ = environ_with(tmp_path, text, TG_OTHER_URL="postgresql://u@127.0.0.1:5432/other",
                           TG_OTHER_URL_AGAIN="postgresql://v:pw@127.0.0.1:5432/other", TG_NOT_A_URL="not a url",
                           TG_KEY="AKIAEXAMPLE", TG_PRODUCTION_COPY=os.environ["PRODUCTION_DATABASE_URL"])
    with pytest.raises(config.ConfigError) as raised:
        targets.load_platform_config(environ)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'ops_platform.yaml'}: ") and expected in message, message
    assert "\n" not in message
    for secret in (DB_PASSWORD, "hunter22", "abc123secret"):
        assert secret not in message


def test_a_missing_named_file_is_one_line(tmp_path):
    environ = {targets.CONFIG_VARIABLE: str(tmp_path / "nowhere.yaml")}
    with pytest.raises(config.ConfigError, match=r"^OPS_PLATFORM_CONFIG names .*nowhere.yaml, which is not a file$"):
        targets.load_platform_config(environ)


def test_a_good_file_with_its_defaults(tmp_path):
    environ = environ_with(tmp_path, """
servers:
  shop:
    url_env: TG_SERVER_URL
targets:
  analytics:
    url_env: TG_OTHER_URL
    schedule: "0  4 * * *"
destinations:
  offsite-eu:
    s3_bucket: acme-backups-eu
    prefix: /team/backups/
    endpoint_url_env: TG_EU_ENDPOINT
    access_key_id_env: TG_EU_KEY_ID
    secret_access_key_env: TG_EU_SECRET
  offsite-us:
    s3_bucket: acme-backups-us
""", TG_OTHER_URL="postgresql://u:pw-analytics@127.0.0.1:5432/analytics", TG_EU_ENDPOINT="https://s3.eu.example.com",
        TG_EU_KEY_ID="AKIAEUEXAMPLE", TG_EU_SECRET="eu-secret-value-123")
    parsed = targets.load_platform_config(environ)
    shop = parsed.servers["shop"]
    assert (shop.databases, shop.exclude, shop.schedule) == (None, (), targets.DEFAULT_SCHEDULE) == \
        (None, (), BACKUP_CRONS["production"])
    assert parsed.targets["analytics"].schedule == "0 4 * * *"
    eu, us = parsed.destinations["offsite-eu"], parsed.destinations["offsite-us"]
    assert (eu.location, eu.endpoint_url, eu.access_key_id, eu.secret_access_key) == (
        "s3://acme-backups-eu/team/backups", "https://s3.eu.example.com", "AKIAEUEXAMPLE", "eu-secret-value-123")
    assert (us.location, us.endpoint_url, us.access_key_id) == ("s3://acme-backups-us/backups", None, None)
    shown = repr(parsed)
    assert "eu-secret-value-123" not in shown and "AKIAEUEXAMPLE" not in shown and "pw-analytics" not in shown
    assert "$TG_EU_SECRET" in shown


def test_the_library_imports_no_dagster():
    check = "import sys, ops_platform.lib.targets; print('dagster' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip() == "False"


def test_the_platform_s_working_names_are_the_restore_s_own():
    from ops_platform.lib.restore import databases

    assert targets.WORKING_DATABASE_GLOBS == (f"*{databases.SCRATCH_INFIX}*", f"*{databases.KEPT_INFIX}*",
                                              f"*{drill.DRILL_SUFFIX}*")


@pytest.mark.parametrize("name, ok", [("production", True), ("shop.orders", True), ("my-app_2", True),
                                      ("Shop.orders", False), ("shop.", False), (".orders", False),
                                      ("a.b.c", False), ("-x", False), ("x" * 64, False)])
def test_target_names_and_backup_ids(name, ok):
    assert bool(targets.TARGET_NAME_PATTERN.match(name)) is ok
    match = targets.BACKUP_ID_PATTERN.match(f"{name}-20260115T070000Z")
    assert bool(match) is ok and (not ok or match["target"] == name)


# ---------------------------------------------------------------- without a file: the environments, as today


def test_without_a_file_the_targets_are_the_environments(tmp_path, monkeypatch):
    monkeypatch.setattr(targets, "PROJECT_ROOT", tmp_path)
    environ = environ_with(tmp_path, None)
    environ.pop(targets.CONFIG_VARIABLE, None)
    result = targets.load_targets(environ)
    assert result.problems == [] and result.config == targets.PlatformConfig()
    assert result.names == list(config.load_environments(environ)) == ["production", "staging", "development"]
    assert {target.name: target.schedule for target in result.targets} == {
        "production": BACKUP_CRONS["production"], "staging": BACKUP_CRONS["staging"], "development": None}
    assert [target.database_url(environ) for target in result.targets] == [
        environment.database_url for environment in config.load_environments(environ).values()]
    assert all(DB_PASSWORD not in repr(target) for target in result.targets)


def test_with_no_setting_at_all_development_is_the_demo_database(tmp_path, monkeypatch):
    monkeypatch.setattr(targets, "PROJECT_ROOT", tmp_path)
    (development,) = targets.load_targets({}).targets
    assert (development.name, development.url_env, development.database_url({})) == (
        "development", None, config.DEFAULT_DATABASE_URL)


def test_the_project_folder_s_file_is_read_when_no_variable_names_one(tmp_path, monkeypatch):
    monkeypatch.setattr(targets, "PROJECT_ROOT", tmp_path)
    (tmp_path / "ops_platform.yaml").write_text("targets:\n  analytics:\n    url_env: TG_SERVER_URL\n")
    environ = environ_with(tmp_path, None)
    environ.pop(targets.CONFIG_VARIABLE, None)
    assert targets.config_path(environ) == tmp_path / "ops_platform.yaml"
    assert "analytics" in targets.load_targets(environ, discover=False).names


def test_a_bad_file_is_a_problem_beside_the_environments(tmp_path):
    result = targets.load_targets(environ_with(tmp_path, "targets:\n  a:\n    url_env: TG_NOT_SET_ANYWHERE\n"))
    assert result.names == ["production", "staging", "development"]
    assert result.file_is_bad and [problem.kind for problem in result.problems] == [targets.FILE_PROBLEM]


# ---------------------------------------------------------------- discovery on the real server


def test_discovery_with_a_selection_and_exclusions(tmp_path, server_databases):
    environ = environ_with(tmp_path, SHOP)
    result = targets.load_targets(environ)
    discovered = [target for target in result.targets if target.kind == targets.DISCOVERED]
    assert {target.name for target in discovered} == {f"shop.{ALPHA}", f"shop.{BETA}"}
    assert all((target.source, target.server, target.schedule) == ("discovered:shop", "shop", "30 1 * * *")
               for target in discovered)
    (skipped,) = result.problems
    assert skipped.kind == targets.NOTICE and skipped.message.startswith(
        f"server shop: database '{UPPER}' is skipped: a target name must be 1-63 lowercase letters")
    alpha = result.get(f"shop.{ALPHA}")
    assert DB_PASSWORD not in repr(alpha) and DB_PASSWORD not in json.dumps(alpha.to_json(environ))
    with psycopg.connect(alpha.database_url(environ)) as connection:
        assert connection.execute("SELECT current_database()").fetchone()[0] == ALPHA


def test_all_leaves_out_the_platform_s_own_databases_the_instance_and_postgres(tmp_path, server_databases):
    text = "servers:\n  shop:\n    url_env: TG_SERVER_URL\n    databases: all\n    exclude: [\"*_scratch\"]\n"
    environ = environ_with(tmp_path, text, DAGSTER_POSTGRES_URL=f"postgresql+psycopg2://postgres@127.0.0.1:5432/{BETA}")
    names = names_of(targets.load_targets(environ))
    assert f"shop.{ALPHA}" in names
    assert not names & {f"shop.{name}" for name in (BETA, SCRATCH, UPPER, *WORKING, "postgres", "template1")}


def test_a_list_of_names_and_a_name_that_is_not_there(tmp_path, server_databases):
    text = (f"servers:\n  shop:\n    url_env: TG_SERVER_URL\n    databases: [{ALPHA}, {PREFIX}gone, postgres]\n")
    result = targets.load_targets(environ_with(tmp_path, text))
    assert {name for name in result.names if name.startswith("shop.")} == {f"shop.{ALPHA}", "shop.postgres"}
    assert [problem.message for problem in result.problems] == [
        f"server shop: database {PREFIX}gone, listed in databases, is not on the server (or does not accept connections)"]


def test_a_database_that_is_already_a_target_is_listed_once(tmp_path, server_databases):
    text = SHOP + "targets:\n  alpha:\n    url_env: TG_ALPHA_URL\n"
    alpha_url = SERVER_URL.rsplit("/", 1)[0] + f"/{ALPHA}"
    result = targets.load_targets(environ_with(tmp_path, text, TG_ALPHA_URL=alpha_url))
    assert "alpha" in result.names and f"shop.{ALPHA}" not in result.names and f"shop.{BETA}" in result.names
    assert f"server shop: database {ALPHA} is already the target alpha; it is listed once, as that" in \
        [problem.message for problem in result.problems]
    assert not result.file_is_bad


def test_two_servers_reaching_one_database_are_the_file_s_mistake(tmp_path, server_databases):
    text = SHOP + f"  shop2:\n    url_env: TG_SERVER_URL\n    databases: [{BETA}]\n"
    result = targets.load_targets(environ_with(tmp_path, text))
    assert [name for name in result.names if name.endswith(BETA)] == [f"shop.{BETA}"]
    assert result.file_is_bad
    assert f"servers shop and shop2 both include database {BETA} (as shop.{BETA}); exclude it from one of them" in \
        " ".join(problem.message for problem in result.problems)


def test_a_server_that_cannot_be_reached_is_one_problem_and_the_others_are_listed(tmp_path, server_databases):
    text = SHOP + "  down:\n    url_env: TG_DOWN_URL\n"
    result = targets.load_targets(environ_with(tmp_path, text, TG_DOWN_URL=UNREACHABLE_URL))
    assert {f"shop.{ALPHA}", f"shop.{BETA}"} <= names_of(result)
    assert not any(name.startswith("down.") for name in result.names)
    (down,) = [problem for problem in result.problems if problem.kind == targets.SERVER_PROBLEM]
    assert down.server == "down" and down.message.startswith("server down: cannot list its databases: ")
    assert "\n" not in down.message and DB_PASSWORD not in down.message
    assert result.unreachable_servers == ["down"]


# ---------------------------------------------------------------- ops-platform targets list


@pytest.fixture
def cli_environment(tmp_path, monkeypatch, server_databases):
    def configure(text: str, **variables: str) -> None:
        for key, value in environ_with(tmp_path, text, **variables).items():
            if os.environ.get(key) != value:
                monkeypatch.setenv(key, value)
        monkeypatch.delenv("DAGSTER_POSTGRES_URL", raising=False)

    return configure


def test_targets_list_shows_a_database_created_a_moment_ago(cli_environment, capsys):
    cli_environment(SHOP)
    fresh = f"{PREFIX}fresh"
    create_databases(fresh)
    try:
        assert cli.main(["targets", "list"]) == 0
    finally:
        drop_databases(fresh)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["production", "staging", "development", f"shop.{ALPHA}",
                                                   f"shop.{BETA}", f"shop.{fresh}"]
    assert lines[0].split() == ["production", "environment", "0", "2", "*", "*", "*", "(America/New_York)"]
    assert lines[2].split() == ["development", "environment", "not", "scheduled"]
    assert lines[-1].split() == [f"shop.{fresh}", "server", "shop", "30", "1", "*", "*", "*", "(America/New_York)"]
    assert err == f"note: server shop: database '{UPPER}' is skipped: a target name must be 1-63 lowercase letters, " \
                  "digits, '_' or '-', starting with a letter or digit (it becomes a folder name, a backup id, a " \
                  "Dagster partition key and a CLI argument); rename it or add it to exclude\n"


def test_targets_list_json(cli_environment, capsys):
    cli_environment(SHOP + "targets:\n  analytics:\n    url_env: TG_ANALYTICS_URL\n    schedule: \"0 4 * * *\"\n",
                    TG_ANALYTICS_URL="postgresql://u:pw-analytics@127.0.0.1:5432/analytics")
    assert cli.main(["targets", "list", "--json"]) == 0
    out = capsys.readouterr().out
    listed = {entry["name"]: entry for entry in json.loads(out)}
    assert listed["analytics"] == {"name": "analytics", "source": "file", "server": None, "database": "analytics",
                                   "schedule": "0 4 * * *", "timezone": "America/New_York",
                                   "url_env": "TG_ANALYTICS_URL"}
    assert listed[f"shop.{ALPHA}"] == {"name": f"shop.{ALPHA}", "source": "discovered", "server": "shop",
                                       "database": ALPHA, "schedule": "30 1 * * *", "timezone": "America/New_York",
                                       "url_env": "TG_SERVER_URL"}
    assert listed["development"]["schedule"] is None
    assert "pw-analytics" not in out and DB_PASSWORD not in out


def test_targets_list_exit_1_for_a_server_that_cannot_be_reached(cli_environment, capsys):
    cli_environment(SHOP + "  down:\n    url_env: TG_DOWN_URL\n", TG_DOWN_URL=UNREACHABLE_URL)
    assert cli.main(["targets", "list"]) == 1
    out, err = capsys.readouterr()
    assert f"shop.{ALPHA}" in out
    (line,) = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert line.startswith("warning: server down: cannot list its databases: ") and DB_PASSWORD not in err


def test_targets_list_exit_2_for_a_bad_file(cli_environment, capsys):
    cli_environment("servers:\n  shop:\n    url_env: TG_SERVER_URL\n    shedule: \"0 2 * * *\"\n")
    assert cli.main(["targets", "list"]) == 2
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()] == ["production", "staging", "development"]
    assert err.count("\n") == 1 and err.startswith("error: ") and \
        err.rstrip().endswith("servers.shop.shedule: unknown key (did you mean 'schedule'?); known: url_env, "
                              "databases, exclude, schedule")
