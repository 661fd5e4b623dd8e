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
    settings.check(settings.BACKUP + settings.RETENTION + settings.S3_ENCRYPTION)
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
    listing = list_backups(args.environment, verify=args.verify)
    for warning in listing.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    entries = listing.entries
    if args.json:
        print(json.dumps(entries, indent=2))
    elif not entries:
        print(f"no backups for {args.environment}")
    else:
        print(f"{'ID':<30} {'CREATED (UTC)':<21} {'KIND':<12} {'VERIFIED':<9} {'DRILL':<17} "
              f"SIZE OF THE ARTIFACT IN EACH LOCATION (manifest not included)")
        for entry in entries:
            print(f"{entry['id']:<30} {entry['created_at']:<21} {entry['kind']:<12} {_verified(entry):<9} "
                  f"{_drill(entry['drill']):<17} {', '.join(_copy(copy) for copy in entry['copies'])}")
    bad = listing.bad_copies()
    if args.verify and bad:
        failed = [copy for copy in bad if copy.ok is False]
        unchecked = [copy for copy in bad if copy.ok is None]
        parts = [f"{len(items)} cop{'y' if len(items) == 1 else 'ies'} {said(len(items) == 1)}: "
                 + ", ".join(f"{copy.manifest.id} ({copy.store})" for copy in items)
                 for items, said in ((failed, lambda one: "did not pass the check against "
                                                          + ("its manifest" if one else "their manifest")),
                                     (unchecked, lambda one: "could not be checked")) if items]
        raise CommandError("; ".join(parts))
    return EXIT_OK


def _verified(entry: dict) -> str:
    """The manifest's word, unless a copy is known not to match it."""
    if entry["intact"] is False:
        return "BAD COPY"
    return "yes" if entry["verified"] else "NO"


def _copy(copy: dict) -> str:
    """``local 1.2 MB``, with ``ok``/``CORRUPT`` after --verify and the manifest's size on a mismatch;
    ``s3 MISSING`` or ``s3 NOT CHECKED`` when S3 lacks a copy the manifest records or cannot be asked."""
    if copy["size_bytes"] is None:
        return f"{copy['store']} {'MISSING' if copy['check'] == 'corrupt' else 'NOT CHECKED'}"
    text = f"{copy['store']} {human_bytes(copy['size_bytes'])}"
    if not copy["size_matches"]:
        text += f" SIZE MISMATCH (manifest: {human_bytes(copy['manifest_size_bytes'])})"
    if copy["check"] == "ok":
        text += " ok" if copy["check_method"] != "size" else " ok (size only: no checksum recorded)"
    elif copy["check"] == "corrupt" and copy["size_matches"]:
        text += " CORRUPT"
    elif copy["check"] == "error":
        text += " NOT CHECKED"
    return text


def _drill(drill: dict | None) -> str:
    """Whether a restore drill proved this backup restorable, and when."""
    if not drill:
        return "-"
    return f"{'restored' if drill.get('passed') else 'FAILED'} {str(drill.get('at', ''))[:10]}"
