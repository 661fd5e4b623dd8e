"""Every command of the installed ``ops-platform`` script imports and explains itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ops_platform.cli import build_parser

NEEDS_SERVICES = False
SCRIPT = Path(sys.executable).parent / "ops-platform"


def _commands(parser, prefix=()):
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, child in action.choices.items():
            yield prefix + (name,)
            yield from _commands(child, prefix + (name,))


COMMANDS = sorted(set(_commands(build_parser())))


def test_every_contract_command_is_there():
    assert {("backup",), ("backups", "list"), ("restore",), ("retention",), ("health",),
            ("verify-deployment",), ("targets", "list")} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_for_every_subcommand(command):
    result = subprocess.run([str(SCRIPT), *command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: ops-platform {' '.join(command)}")
    assert result.stderr == ""


def test_unknown_command_is_one_line_with_exit_2():
    result = subprocess.run([str(SCRIPT), "bakup", "production"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid choice: 'bakup'" in result.stderr


@pytest.mark.parametrize("argv, expected", [
    (["--hlep"], "unrecognized option '--hlep' (did you mean '--help'?) (see 'ops-platform --help')"),
    (["bakup", "production"], "invalid choice: 'bakup' (did you mean 'backup'?); choose from backup, backups, "
                              "restore, retention, health, verify-deployment, targets (see 'ops-platform --help')"),
    ([], "missing command; choose from backup, backups, restore, retention, health, verify-deployment, targets "
         "(see 'ops-platform --help')"),
    (["backup", "--hlep"], "unrecognized option '--hlep' (did you mean '--help'?) (see 'ops-platform backup --help')"),
    (["backups", "lst", "production"], "invalid choice: 'lst' (did you mean 'list'?); choose from list"),
    (["backups", "list", "production", "--vrify"], "unrecognized option '--vrify' (did you mean '--verify'?)"),
    (["retention", "production", "--dry-rn"], "unrecognized option '--dry-rn' (did you mean '--dry-run'?)"),
    (["backup", "devlopment"], "unknown environment 'devlopment' (did you mean 'development'?); configured: "),
    (["restore", "latset", "production", "--yes"], "(did you mean 'latest'?)"),
    (["targts", "list"], "invalid choice: 'targts' (did you mean 'targets'?)"),
    (["targets", "lst"], "invalid choice: 'lst' (did you mean 'list'?); choose from list"),
    (["targets", "list", "--jsn"], "unrecognized option '--jsn' (did you mean '--json'?)"),
])
def test_a_mistyped_word_gets_a_suggestion_in_one_line_with_exit_2(argv, expected, capsys):
    from ops_platform.cli import main

    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("ops-platform: error: ")
    assert expected in err
    assert "the following arguments are required" not in err


def test_no_suggestion_when_nothing_is_close(capsys):
    from ops_platform.cli import main

    assert main(["backup", "nowhere"]) == 2
    assert "did you mean" not in capsys.readouterr().err
