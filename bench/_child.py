"""One measured backup in a fresh process, so its peak RSS is its own.

    python -m bench._child pipeline '<json>'   # ops_platform.lib.dump.run_dump (+ verification)
    python -m bench._child dagster  '<json>'   # a full materialization of database_backup

Prints one JSON line: timings, sizes, and this process's peak RSS (VmHWM) and CPU.

Peak RSS is read from /proc/self/status (VmHWM), not from the parent's wait4: on Linux a child's
ru_maxrss also counts the memory of the process that forked it (the pre-exec image), so rusage
from wait4 or RUSAGE_CHILDREN overstates small programs started from a big Python process.
Environment variables (AWS_*, DATABASE_URL, BACKUP_DIR) are set by the parent.
"""

import json
import os
import resource
import sys
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def vm_hwm_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)


def usage(who) -> dict:
    used = resource.getrusage(who)
    return {"maxrss_kib": used.ru_maxrss, "cpu_seconds": used.ru_utime + used.ru_stime}


def pipeline(args: dict) -> dict:
    from pathlib import Path

    from ops_platform.lib.dump import Compression, S3Leg, run_dump

    s3 = None
    if args.get("s3_bucket"):
        from ops_platform.lib.stores import make_s3_client

        s3 = S3Leg(make_s3_client(), args["s3_bucket"], args["s3_key"])
    destination = Path(args["destination"])
    moto_before = cpu_ticks(args.get("moto_pid"))
    started = time.monotonic()
    result = run_dump(args["database_url"], destination, compression=Compression(), s3=s3)
    wall = time.monotonic() - started
    moto_after = cpu_ticks(args.get("moto_pid"))
    out = {
        "wall_seconds": wall,
        "raw_bytes": result.raw_bytes,
        "stored_bytes": result.stored_bytes,
        "s3_ok": None if result.s3 is None else result.s3.ok,
        "s3_error": None if result.s3 is None else result.s3.error,
        "dump_peak_rss_kib": vm_hwm_kib(),
        "dump_self": usage(resource.RUSAGE_SELF),
        "pg_dump": usage(resource.RUSAGE_CHILDREN),
    }
    if moto_before is not None and moto_after is not None:
        out["moto_cpu_seconds"] = (moto_after - moto_before) / CLOCK_TICKS
    if args.get("verify"):
        from ops_platform.lib.verify import decode_artifact

        started = time.monotonic()
        decoded = decode_artifact(destination, "zstd")
        out["verify_seconds"] = time.monotonic() - started
        out["verify_ok"] = decoded.ok
        out["verify_tables"] = len(decoded.table_row_counts)
        out["verify_error"] = decoded.error
    out["peak_rss_kib"] = vm_hwm_kib()
    return out


def dagster(args: dict) -> dict:
    import dagster as dg

    from ops_platform.defs.backups.assets import database_backup
    from ops_platform.defs.resources import BackupBucketResource, BackupStorageResource, OpsSlackResource, build_resources

    resources = {**build_resources(), "slack": OpsSlackResource(),
                 "backup_storage": BackupStorageResource(backup_dir=args["backup_dir"]),
                 "backup_bucket": BackupBucketResource(bucket=args.get("s3_bucket"), prefix="backups")}
    imported_rss = vm_hwm_kib()
    with dg.instance_for_test() as instance:
        started = time.monotonic()
        result = dg.materialize(
            [database_backup],
            partition_key="development",
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        wall = time.monotonic() - started
        metadata = {}
        for event in result.get_asset_materialization_events():
            for key, value in event.materialization.metadata.items():
                metadata[key] = getattr(value, "value", value)
        checks = [(check.check_name, check.passed) for check in result.get_asset_check_evaluations()]
    return {
        "success": result.success,
        "wall_seconds": wall,
        "stored_bytes": metadata.get("stored_bytes"),
        "raw_bytes": metadata.get("raw_bytes"),
        "dump_seconds": metadata.get("dump_seconds"),
        "verified": metadata.get("verified"),
        "checks": checks,
        "rss_after_import_kib": imported_rss,
        "peak_rss_kib": vm_hwm_kib(),
        "self": usage(resource.RUSAGE_SELF),
        "children": usage(resource.RUSAGE_CHILDREN),
    }


def run_mode(modes: dict) -> None:
    """``python -m <child> MODE '<json>'``: run ``modes[MODE]`` on the arguments, print its result as one JSON line."""
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    sys.stdout.write(json.dumps(modes[mode](args)) + "\n")
    sys.stdout.flush()


def main() -> None:
    run_mode({"pipeline": pipeline, "dagster": dagster})


if __name__ == "__main__":
    main()
