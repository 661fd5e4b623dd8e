"""`make bench`: every benchmark, or the parts named on the command line.

    python -m bench                      # backup, cli-backup, restore, health, insight, targets, fleet, ui, ui-run (in order)
    python -m bench restore              # only the restore benchmark
    python -m bench cli-backup backup    # several parts, in the order given
    BENCH_QUICK=1 python -m bench ...    # one round of each, smaller wide dataset (a few minutes)
    BENCH_REPEAT=N python -m bench ...   # N interleaved rounds (default 4)

Each part writes its JSON to bench_results/ (backup.json, cli_backup.json, restore.json, targets.json, fleet.json,
ui.json, ui_run.json).
"""

import os
import sys


def _backup() -> None:
    if os.environ.get("BENCH_QUICK", "") not in ("", "0"):
        os.environ.setdefault("BENCH_REPEAT", "1")  # backup_bench reads BENCH_REPEAT when imported
    from bench import backup_bench

    backup_bench.main()


def _cli_backup() -> None:
    from bench import cli_bench

    cli_bench.main()


def _restore() -> None:
    from bench import restore_bench

    restore_bench.main()


def _health() -> None:
    try:
        from bench import bench_health
    except ImportError:
        return
    bench_health.run()


def _insight() -> None:
    from bench import bench_insight

    bench_insight.run()


def _targets() -> None:
    from bench import bench_targets

    bench_targets.run()


def _fleet() -> None:
    from bench import bench_fleet

    bench_fleet.run()


def _ui_run() -> None:
    from bench import bench_ui_run

    bench_ui_run.run()


def _ui() -> None:
    from bench import bench_ui

    bench_ui.run()


PARTS = {
    "backup": _backup,
    "cli-backup": _cli_backup,
    "restore": _restore,
    "health": _health,
    "insight": _insight,
    "targets": _targets,
    "fleet": _fleet,
    "ui": _ui,
    "ui-run": _ui_run,
}


def main(argv: list[str] | None = None) -> int:
    chosen = list(sys.argv[1:] if argv is None else argv) or list(PARTS)
    if any(name in ("-h", "--help") for name in chosen):
        print(__doc__.strip())
        print(f"\nparts: {', '.join(PARTS)}")
        return 0
    unknown = [name for name in chosen if name not in PARTS]
    if unknown:
        print(f"unknown part(s): {', '.join(unknown)}; parts: {', '.join(PARTS)}", file=sys.stderr)
        return 2
    failed = []
    for index, name in enumerate(chosen):
        if index:
            print("\n")
        try:
            PARTS[name]()  # a missed target is reported in the part's output and JSON, not as a failure
        except Exception as error:  # noqa: BLE001 - the other parts still run; the exit code says it
            print(f"\n{name} benchmark failed: {type(error).__name__}: {error}", file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"\nfailed to run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
