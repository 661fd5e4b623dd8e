"""The first hour: the demo database `make dev` backs up when no database URL is set, what
`make dev` says before it starts anything, and what `make test` says when a tool is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ops_platform.lib import demo
from ops_platform_tests.conftest import psql

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "ops-platform")
PREFIX = f"ops_test_demo_{os.getpid()}_"


def url(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


@pytest.fixture
def demo_name(request):
    name = PREFIX + request.node.name.split("[")[0][-20:].strip("_").lower()
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    yield name
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_created_and_filled_once_then_left_alone(demo_name):
    first = demo.ensure_demo_database(url(demo_name))
    assert (first.created, first.filled, first.tables) == (True, True, 4)
    assert 3000 <= first.rows <= 10_000
    assert "4 tables" in first.describe() and "created and filled now" in first.describe()
    psql("UPDATE customers SET name = 'changed' WHERE id = 1", database=demo_name)
    again = demo.ensure_demo_database(url(demo_name))
    assert (again.created, again.filled, again.rows) == (False, False, first.rows)
    assert psql("SELECT name FROM customers WHERE id = 1", database=demo_name) == "changed"
    assert "already there" in again.describe()


def test_a_database_with_tables_is_never_filled(demo_name):
    psql(f'CREATE DATABASE "{demo_name}"')
    psql("CREATE TABLE mine (x int); INSERT INTO mine VALUES (1)", database=demo_name)
    found = demo.ensure_demo_database(url(demo_name))
    assert (found.created, found.filled, found.tables, found.rows) == (False, False, 1, 1)


def test_two_make_devs_at_once_create_and_fill_it_once(demo_name):
    results, errors = [], []

    def prepare():
        try:
            results.append(demo.ensure_demo_database(url(demo_name)))
        except Exception as error:  # noqa: BLE001 - the assertion below shows it
            errors.append(error)

    threads = [threading.Thread(target=prepare) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sum(result.filled for result in results) == 1
    assert {(result.tables, result.rows) for result in results} == {(4, results[0].rows)}


def test_unreachable_server_is_one_line():
    with pytest.raises(demo.DemoDatabaseError) as error:
        demo.ensure_demo_database("postgresql://postgres@127.0.0.1:1/ops_platform_demo")
    assert str(error.value).startswith("cannot prepare the demo database ops_platform_demo on 127.0.0.1:1: ")
    assert "\n" not in str(error.value)


def test_the_demo_database_backs_up_green(demo_name, tmp_path):
    """What the first backup of a fresh clone meets: the demo passes every blocking check."""
    demo.ensure_demo_database(url(demo_name))
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL") and not k.startswith("AWS_S3")}
    env.update(DATABASE_URL=url(demo_name), DAGSTER_HOME=str(tmp_path / "home"), BACKUP_DIR=str(tmp_path / "b"))
    result = subprocess.run([CLI, "backup", "development"], check=False, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout


def test_make_dev_stops_with_one_line_when_postgresql_is_not_there(monkeypatch, tmp_path, capsys):
    from ops_platform import dev

    for variable in ("PRODUCTION_DATABASE_URL", "STAGING_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(dev, "DEFAULT_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/ops_platform_demo")
    assert dev.prepare() == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "cannot prepare the demo database ops_platform_demo on 127.0.0.1:1" in error
    assert "set DATABASE_URL" in error
    assert (tmp_path / "home" / "dagster.yaml").read_text() == (ROOT / "dagster.yaml").read_text()


def test_make_dev_stops_with_one_line_when_the_instance_storage_cannot_be_created(monkeypatch, tmp_path, capsys):
    """The storage is created under the CLI's setup lock; a home where it cannot be (here its
    ``history`` folder is a file) gives one line, before the demo database or any server."""
    from ops_platform import dev

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "history").write_text("not a folder")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setattr(dev, "ensure_demo_database", lambda url: pytest.fail("the demo was prepared"))
    assert dev.prepare() == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert error.startswith(f"ops_platform dev: error: the Dagster instance's storage in {home} failed")
    assert (home / ".storage-setup.lock").exists()


def test_make_dev_with_a_database_url_leaves_the_demo_alone(monkeypatch, tmp_path, capsys):
    from ops_platform import dev

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(dev, "ensure_demo_database", lambda url: pytest.fail("the demo was prepared"))
    assert dev.prepare() == 0
    assert "environments: production, staging, development" in capsys.readouterr().out


def test_make_test_names_the_missing_debian_packages(tmp_path):
    """`make test` with pg_dump, zstd and systemd-analyze not installed: one line naming the apt packages."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("make", "sh", "test"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    result = subprocess.run(["make", "--no-print-directory", "test-tools"], check=False, cwd=ROOT, capture_output=True,
                            text=True, env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, timeout=60)
    assert result.returncode != 0
    assert result.stdout.strip().splitlines() == [
        "make test needs Debian packages that are missing: sudo apt-get install postgresql-client zstd"
        + ("" if Path("/usr/bin/chromium").exists() else " chromium") + " systemd"]


def test_the_first_backup_of_a_new_instance_tightens_nothing(tmp_path):
    """private_dir creates the missing folders up to the backup root private, so a newcomer's first
    backup logs no "tightened the permissions of a backup folder" warning about folders it just made."""
    import stat

    from ops_platform.lib.files import private_dir

    root = tmp_path / "home" / "backups"
    assert private_dir(root / "development", root) == []
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "development").stat().st_mode) == 0o700
    root.chmod(0o755)
    assert private_dir(root / "development", root) == [f"{root}: 0755 -> 0700"]
