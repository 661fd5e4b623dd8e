"""``ops-platform retention ENV [--dry-run] [--as-of ISO8601] [--json]``.

A dry run reads the stores and prints the plan (a table, or JSON), deleting nothing. Without
``--dry-run`` the plan is applied by ``retention_job`` as a Dagster run on the instance.
"""

from __future__ import annotations

import json
import sys

from ops_platform.cli.errors import EXIT_BAD_INPUT, EXIT_OK, CommandError
from ops_platform.cli.runs import (
    failure_message,
    in_progress_runs,
    materialization_metadata,
    run_job,
)
from ops_platform.config import ConfigError, get_environment
from ops_platform.lib import settings
from ops_platform.lib.artifacts import utc_iso
from ops_platform.lib.formatting import human_bytes
from ops_platform.lib.restore import databases
from ops_platform.lib.restore.errors import RestoreStepError
from ops_platform.lib.retention.policy import (
    RetentionPlan,
    parse_as_of,
    policy_from_environ,
    resolve_as_of,
)
from ops_platform.lib.retention.stores import build_destination_plan, build_plan
from ops_platform.lib.stores import destination_stores, stores_from_environ

APPLIED_JSON_KEYS = ("as_of", "kept", "deleted", "bytes_freed", "oldest_kept", "newest_kept", "deleted_backups",
                     "corrupt_backups", "rechecked", "aborted_uploads", "dropped_databases", "dropped_leftovers",
                     "warnings")


def format_plan(plan: RetentionPlan) -> str:
    """The dry-run table (its warnings go to stderr)."""
    lines = [f"retention plan for {plan.environment} as of {utc_iso(plan.as_of)}: {plan.policy.describe()}"]
    if not plan.items:
        lines.append("no backups found")
    else:
        lines.append("SIZE is every file of the backup in every location (artifacts and manifests), what deleting "
                     "it frees; `backups list` shows each artifact alone")
        lines.append(f"{'ACTION':<7} {'ID':<30} {'CREATED (UTC)':<21} {'STATUS':<11} {'SIZE':>10} WHERE  REASON")
        for item in plan.items:
            where = ",".join(sorted({f.location for f in item.files}))
            lines.append(f"{item.action.upper():<7} {item.id:<30} {item.created_at:<21} {item.status:<11} "
                         f"{human_bytes(item.bytes):>10} {where:<6} {item.reason}")
    summary = plan.summary()
    lines.append(f"{summary['kept']} kept ({summary['verified_kept']} verified), {summary['deleted']} to delete, "
                 f"{human_bytes(summary['bytes_freed'])} to free")
    by_id: dict[str, list[str]] = {}
    for check in plan.rechecks:
        by_id.setdefault(check["id"], []).append(f"{check['location']} {check['status']}")
    if by_id:
        lines.append("re-checked against their manifests before deleting: "
                     + "; ".join(f"{backup_id} ({', '.join(found)})" for backup_id, found in by_id.items()))
    return "\n".join(lines)


def _expired_kept_databases(environment: str, keep_days: int, as_of, warnings: list[str]) -> list[str]:
    url = get_environment(environment).database_url
    try:
        return databases.expired_pre_restore(url, databases.database_name(url), keep_days, as_of)
    except RestoreStepError as error:
        warnings.append(f"databases kept by earlier restores were not checked: {error}")
        return []


def retention_command(args) -> int:
    environment = args.environment
    get_environment(environment)
    settings.check(settings.RETENTION + settings.S3)
    policy = policy_from_environ(environment)
    if args.dry_run:
        as_of = parse_as_of(args.as_of)
        local, s3 = stores_from_environ()
        plan = build_plan(environment, local, s3, policy, as_of)
        expired = _expired_kept_databases(environment, policy.pre_restore_days, as_of, plan.warnings)
        try:
            off_site = {store.name: build_destination_plan(environment, store, policy, as_of)
                        for store in destination_stores(max_attempts=2, read_timeout=20)}
        except ConfigError as error:
            off_site = {}
            plan.warnings.append(f"the off-site destinations are left out: {error}")
        if args.json:
            record = plan.as_record() | {"expired_databases": expired}
            if off_site:
                record["destinations"] = {name: each.as_record() for name, each in off_site.items()}
            print(json.dumps(record, indent=2))
        else:
            print(format_plan(plan))
            for name in expired:
                print(f"DROP    database {name}: kept by a restore more than {policy.pre_restore_days} days ago")
            for name, each in off_site.items():
                print(f"\ndestination {name} (planned on its own):")
                print(format_plan(each))
            warnings = plan.warnings + plan.corrupt_warnings() + [
                f"destination {name}: {warning}" for name, each in off_site.items()
                for warning in each.warnings + each.corrupt_warnings()]
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr)
        return EXIT_OK

    try:
        resolve_as_of(args.as_of)
    except ConfigError as error:
        raise CommandError(str(error), EXIT_BAD_INPUT) from None
    busy = in_progress_runs(environment, ("backup_job", "restore_job", "retention_job"))
    if busy:
        raise CommandError(f"a backup, restore or retention run of {environment} is in progress (run {busy[0].run_id})")
    config = {"as_of": args.as_of} if args.as_of else {}
    result = run_job("retention_job", partition_key=environment,
                     run_config={"ops": {"backup_retention": {"config": config}}})
    if not result.success:
        raise CommandError(f"{failure_message(result)} (run {result.run_id})")
    metadata = materialization_metadata(result, "backup_retention")
    if not metadata["verified_kept"]:
        metadata["oldest_kept"] = metadata["newest_kept"] = None
    if args.json:
        off_site = {"destinations": metadata["destinations"]} if "destinations" in metadata else {}
        print(json.dumps({key: metadata[key] for key in APPLIED_JSON_KEYS} | off_site | {"run_id": result.run_id},
                         indent=2))
        return EXIT_OK
    print(f"retention for {environment}: kept {metadata['kept']}, deleted {metadata['deleted']}, "
          f"freed {human_bytes(metadata['bytes_freed'])}"
          + (f", {len(metadata['corrupt_backups'])} corrupt backup cop"
             f"{'y' if len(metadata['corrupt_backups']) == 1 else 'ies'} kept for a person"
             if metadata["corrupt_backups"] else ""))
    for entry in metadata["deleted_backups"]:
        print(f"  deleted {entry['id']}: {entry['reason']}")
    if metadata["newest_kept"]:
        print(f"  newest kept {metadata['newest_kept']}, oldest kept {metadata['oldest_kept']}")
    for name, each in (metadata.get("destinations") or {}).items():
        print(f"  destination {name}: kept {each['kept']}, deleted {len(each['deleted'])}"
              + (f" ({', '.join(each['deleted'])})" if each["deleted"] else ""))
    for warning in metadata["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"run {result.run_id}")
    return EXIT_OK
