"""``ops-platform backup ENV`` and ``ops-platform backups list ENV [--json]``."""

from __future__ import annotations

import json
import sys

from ops_platform.cli.errors import EXIT_OK, CommandError
from ops_platform.cli.runs import (
    failure_message,
    in_progress_runs,
    materialization_metadata,
    progress_on_terminal,
    run_job,
)
from ops_platform.config import get_environment
from ops_platform.lib import settings
from ops_platform.lib.catalog import list_backups
from ops_platform.lib.formatting import human_bytes, human_duration
from ops_platform.lib.tags import BACKUP_KIND


def backup_command(args) -> int:
    get_environment(args.environment)
    settings.check(settings.BACKUP + settings.RETENTION)
    busy = in_progress_runs(args.environment, ("backup_job", "restore_job"))
    if busy:
        raise CommandError(f"a backup or restore of {args.environment} is already running (run {busy[0].run_id})")
    with progress_on_terminal(sys.stderr):
        result = run_job("backup_job", partition_key=args.environment, tags={BACKUP_KIND: "manual"})
    if not result.success:
        raise CommandError(f"{failure_message(result)} (run {result.run_id})")
    metadata = materialization_metadata(result, "database_backup")
    print(f"backup {metadata['backup_id']} verified: {human_bytes(metadata['stored_bytes'])} stored "
          f"({human_bytes(metadata['raw_bytes'])} raw) in {human_duration(metadata['duration_seconds'])}")
    for location in metadata["destinations"]:
        print(f"  {location}")
    for warning in metadata.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"run {result.run_id}")
    return EXIT_OK


def backups_list_command(args) -> int:
    get_environment(args.environment)
    listing = list_backups(args.environment)
    for warning in listing.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    entries = listing.entries
    if args.json:
        print(json.dumps(entries, indent=2))
        return EXIT_OK
    if not entries:
        print(f"no backups for {args.environment}")
        return EXIT_OK
    print(f"{'ID':<30} {'CREATED (UTC)':<21} {'KIND':<12} {'SIZE':>10} {'VERIFIED':<9} {'DRILL':<17} LOCATIONS")
    for entry in entries:
        where = ", ".join("s3" if loc.startswith("s3://") else "local" for loc in entry["locations"])
        print(f"{entry['id']:<30} {entry['created_at']:<21} {entry['kind']:<12} {human_bytes(entry['size_bytes']):>10} "
              f"{'yes' if entry['verified'] else 'NO':<9} {_drill(entry['drill']):<17} {where}")
    return EXIT_OK


def _drill(drill: dict | None) -> str:
    """Whether a restore drill proved this backup restorable, and when."""
    if not drill:
        return "-"
    return f"{'restored' if drill.get('passed') else 'FAILED'} {str(drill.get('at', ''))[:10]}"
