"""The ``ops-platform`` command. It mirrors the old scripts, and every command that changes
something runs as a Dagster run on the instance in ``$DAGSTER_HOME``, so it shows in the UI.

Exit codes: 0 success, 1 the work failed, 2 bad input or configuration, 130 interrupted.
Errors are one line; ``OPS_PLATFORM_DEBUG=1`` shows the traceback of an unexpected one.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import re
import sys
import threading

from ops_platform.cli.errors import EXIT_BAD_INPUT, EXIT_FAILED, CommandError
from ops_platform.cli.runs import catch_signals, interrupted
from ops_platform.config import ConfigError
from ops_platform.lib.formatting import did_you_mean
from ops_platform.lib.redact import Redactor


INVALID_CHOICE = re.compile(r"invalid choice: '(?P<word>[^']*)' \(choose from (?P<choices>.*)\)")


class _Parser(argparse.ArgumentParser):
    """One line for bad input, exit 2, and a guess at what a mistyped word meant."""

    _arguments: list[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self._arguments = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            _chosen(self, namespace).reject_unknown(extras)
        return namespace

    def reject_unknown(self, words: list[str]):
        options = [word for word in words if word.startswith("-")]
        word = options[0] if options else words[0]
        what = "option" if options else "argument"
        self.error(f"unrecognized {what} '{word}'{did_you_mean(word, self._option_string_actions)}")

    def error(self, message):
        if message.startswith("the following arguments are required"):
            unknown = self._unknown_options()
            if unknown:
                self.reject_unknown(unknown)
            if self._subparsers is not None and self._subparsers._group_actions[0].dest in message:
                action = self._subparsers._group_actions[0]
                message = f"missing {action.dest.replace('_', ' ')}; choose from {', '.join(action.choices)}"
        choice = INVALID_CHOICE.search(message)
        if choice:
            choices = re.findall(r"[\w-]+", choice["choices"])
            message = (f"invalid choice: '{choice['word']}'{did_you_mean(choice['word'], choices)}; "
                       f"choose from {', '.join(choices)}")
        raise CommandError(f"{message} (see '{self.prog} --help')", EXIT_BAD_INPUT)

    def _unknown_options(self) -> list[str]:
        arguments = self._arguments[:self._arguments.index("--")] if "--" in self._arguments else self._arguments
        return [word for word in arguments if word.startswith("-") and word.split("=")[0] not in
                self._option_string_actions and not word.lstrip("-").replace(".", "").isdigit()]


def _chosen(parser: _Parser, namespace: argparse.Namespace) -> _Parser:
    """The (sub)command parser the arguments chose, to suggest from its own options."""
    while parser._subparsers is not None:
        action = parser._subparsers._group_actions[0]
        child = action.choices.get(getattr(namespace, action.dest, None) or "")
        if child is None:
            break
        parser = child
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ops-platform", description="Backups, restores, retention, health and deployment checks.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    backup = commands.add_parser("backup", help="back up an environment's database now")
    backup.add_argument("environment")
    backup.set_defaults(handler="backups:backup_command")

    backups_group = commands.add_parser("backups", help="inspect backups")
    backups_commands = backups_group.add_subparsers(dest="backups_command", required=True, parser_class=_Parser)
    listing = backups_commands.add_parser("list", help="list committed backups, newest first")
    listing.add_argument("environment")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.add_argument("--verify", action="store_true",
                         help="re-hash every local copy and check each S3 copy's size and recorded checksum "
                              "against its manifest; exit 1 if any copy does not match")
    listing.set_defaults(handler="backups:backups_list_command")

    restoring = commands.add_parser("restore", help="restore a backup (a safety backup first, then swap)",
                                    usage="%(prog)s (latest|BACKUP_ID) ENV [options] | %(prog)s --recover ENV")
    restoring.add_argument("backup", metavar="latest|BACKUP_ID", nargs="?")
    restoring.add_argument("environment", nargs="?")
    restoring.add_argument("--recover", action="store_true",
                           help="only finish or undo a swap a stopped restore left half done (ops-platform restore "
                                "--recover ENV); restores and backups do this first on their own")
    restoring.add_argument("--target-database", metavar="NAME",
                           help="restore into this new database on the same server; the environment's is untouched")
    restoring.add_argument("--replace-target", action="store_true", help="replace --target-database if it exists")
    restoring.add_argument("--yes", action="store_true", help="do not ask before replacing the environment's database")
    restoring.add_argument("--allow-other-environment", action="store_true",
                           help="allow another environment's backup (e.g. production's into staging)")
    restoring.add_argument("--skip-migrations", action="store_true", help="do not run <ENV>_MIGRATE_COMMAND")
    restoring.add_argument("--fix-sequences", action="store_true",
                           help="move sequences behind the column they feed forward (restored as the source had them)")
    restoring.add_argument("--create-roles", action="store_true",
                           help="create the roles the backup's grants name that this server lacks (no passwords)")
    restoring.set_defaults(handler="restore:restore_command")

    cleanup = commands.add_parser("retention", help="apply (or plan) the retention policy")
    cleanup.add_argument("environment")
    cleanup.add_argument("--dry-run", action="store_true")
    cleanup.add_argument("--as-of", metavar="ISO8601")
    cleanup.add_argument("--json", action="store_true")
    cleanup.set_defaults(handler="retention:retention_command")

    sweep = commands.add_parser("health", help="run one health sweep now")
    sweep.add_argument("environment", nargs="?")
    sweep.add_argument("--json", action="store_true")
    sweep.set_defaults(handler="health:health_command")

    verify = commands.add_parser("verify-deployment", help="verify a deployment, rolling back on failure")
    verify.add_argument("environment")
    verify.add_argument("--expected-version", required=True)
    verify.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS")
    verify.set_defaults(handler="deployments:verify_deployment_command")

    targets_group = commands.add_parser("targets", help="the databases the platform knows")
    targets_commands = targets_group.add_subparsers(dest="targets_command", required=True, parser_class=_Parser)
    target_listing = targets_commands.add_parser(
        "list", help="every target, discovered live: the environments, ops_platform.yaml's targets and the "
                     "databases on its servers")
    target_listing.add_argument("--json", action="store_true", help="print a JSON array")
    target_listing.set_defaults(handler="targets:targets_list_command")
    return parser


def command(handler: str):
    """``module:function`` of ops_platform.cli, imported only for the command that runs: a command
    that needs no Dagster run (``backups list``, ``targets list``, ``--help``) starts without it."""
    module, function = handler.split(":")
    return getattr(importlib.import_module(f"ops_platform.cli.{module}"), function)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if threading.current_thread() is threading.main_thread():
            catch_signals()
        return command(args.handler)(args)
    except CommandError as error:
        print(f"ops-platform: error: {error}", file=sys.stderr)
        return error.code
    except ConfigError as error:
        print(f"ops-platform: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        error = interrupted()
        print(f"ops-platform: error: {error}", file=sys.stderr)
        return error.code
    except Exception as error:  # noqa: BLE001 - the operator gets one line; OPS_PLATFORM_DEBUG=1 shows more
        if os.environ.get("OPS_PLATFORM_DEBUG"):
            raise
        detail = (str(error).strip().splitlines() or [""])[0]
        print(f"ops-platform: error: {type(error).__name__}: {Redactor.from_environ()(detail)} "
              "(OPS_PLATFORM_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_FAILED


def console_main() -> None:
    """The console script: ``main``, then exit at once even if a worker thread of boto3's transfer
    manager is still stuck on a hung S3 endpoint (the interpreter would wait up to its read
    timeout for it, after the result was already printed)."""
    code = main()
    gc.freeze()  # nothing is left to collect: skip the collector's walk of Dagster's heap at exit (~0.8 s)
    # Pool workers started from a daemon thread are daemon threads too, but the interpreter still
    # joins them at exit (concurrent.futures' atexit hook).
    if any(thread.is_alive() for thread in threading.enumerate() if thread is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
