"""``ops-platform targets list [--json]``: every target, discovered live, without a Dagster run."""

from __future__ import annotations

import json
import sys

from ops_platform.cli.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from ops_platform.lib.targets import FILE_PROBLEM, OPERATIONS_TIMEZONE, SERVER_PROBLEM, load_targets


def targets_list_command(args) -> int:
    """One line per target, name first: where it came from and its schedule. Problems go to
    stderr, one line each; exit 2 when the file is bad, 1 when a server could not be listed."""
    result = load_targets()
    if args.json:
        print(json.dumps([target.to_json() for target in result.targets], indent=2))
    else:
        name_width = max(len(target.name) for target in result.targets) if result.targets else 0
        origin_width = max(len(target.origin) for target in result.targets) if result.targets else 0
        for target in result.targets:
            schedule = f"{target.schedule} ({OPERATIONS_TIMEZONE})" if target.schedule else "not scheduled"
            print(f"{target.name:<{name_width}}  {target.origin:<{origin_width}}  {schedule}")
    for problem in result.problems:
        prefix = {FILE_PROBLEM: "error", SERVER_PROBLEM: "warning"}.get(problem.kind, "note")
        print(f"{prefix}: {problem}", file=sys.stderr)
    if result.file_is_bad:
        return EXIT_BAD_INPUT
    if any(problem.kind == SERVER_PROBLEM for problem in result.problems):
        return EXIT_FAILED
    return EXIT_OK
