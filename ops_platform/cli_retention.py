"""``ops-platform retention ENV [--dry-run] [--as-of ISO8601] [--json]``.

A dry run reads the stores and prints the plan (a table, or JSON), deleting nothing. Without
``--dry-run`` the plan is applied by ``retention_job`` as a Dagster run on the instance.
"""

from __future__ import annotations

import json
import sys

from ops_platform.cli import EXIT_BAD_INPUT, EXIT_OK, CommandError, failure_message, in_progress_runs, run_job
from ops_platform.config import ConfigError, get_environment
from ops_platform.lib import retention
from ops_platform.lib.formatting import human_bytes
from ops_platform.lib.stores import stores_from_environ


def retention_command(args) -> int:
    environment = args.environment
    get_environment(environment)
    policy = retention.policy_from_environ(environment)
    if args.dry_run:
        as_of = retention.parse_as_of(args.as_of)
        local, s3 = stores_from_environ()
        plan = retention.build_plan(environment, local, s3, policy, as_of)
        print(plan.to_json() if args.json else retention.format_plan(plan))
        return EXIT_OK

    from ops_platform.defs.retention.assets import resolve_as_of

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
    metadata = {key: value.value for key, value in
                result.asset_materializations_for_node("backup_retention")[-1].metadata.items()}
    if args.json:
        keys = ("as_of", "kept", "deleted", "bytes_freed", "oldest_kept", "newest_kept", "deleted_backups",
                "aborted_uploads", "warnings")
        print(json.dumps({key: metadata[key] for key in keys} | {"run_id": result.run_id}, indent=2))
        return EXIT_OK
    print(f"retention for {environment}: kept {metadata['kept']}, deleted {metadata['deleted']}, "
          f"freed {human_bytes(metadata['bytes_freed'])}")
    for entry in metadata["deleted_backups"]:
        print(f"  deleted {entry['id']}: {entry['reason']}")
    if metadata["newest_kept"]:
        print(f"  newest kept {metadata['newest_kept']}, oldest kept {metadata['oldest_kept']}")
    for warning in metadata["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"run {result.run_id}")
    return EXIT_OK
