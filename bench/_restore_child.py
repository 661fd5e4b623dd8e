"""One measured fetch in a fresh process, so its peak RSS is its own.

    python -m bench._restore_child fetch    '<json>'  # ops_platform.lib.restore.fetch.fetch_candidate
    python -m bench._restore_child download '<json>'  # boto3 download_file of the same S3 object

``fetch`` resolves ``latest`` of ``development`` through the project's own resolve (local folder
``backup_dir`` and the bucket) and fetches the copy named by ``source`` ("local" or "s3"): the
stream is hashed, decompressed and written to a raw file in ``work_dir``, then checked against the
manifest. ``download`` is the baseline: the stored object downloaded to a file, nothing else.
Both remove what they wrote. AWS_* variables (the moto endpoint) are set by the parent.
Prints one JSON line: wall time, bytes, peak RSS (VmHWM) and CPU of this process.
"""

import os
import resource
import time
from pathlib import Path

from bench._child import cpu_ticks, run_mode, vm_hwm_kib

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def fetch(args: dict) -> dict:
    from ops_platform.lib.restore.fetch import fetch_candidate, make_work_dir
    from ops_platform.lib.restore.resolve import resolve_backup
    from ops_platform.lib.stores import LocalStore, S3Store, make_s3_client

    s3 = S3Store(make_s3_client(), args["s3_bucket"], args["s3_prefix"]) if args.get("s3_bucket") else None
    resolution = resolve_backup("development", "latest", LocalStore(Path(args["backup_dir"])), s3)
    candidate = next(c for c in resolution.candidates if c.source == args["source"])
    work_dir = make_work_dir(args["work_dir"])
    moto_before = cpu_ticks(args.get("moto_pid"))
    cpu_before = _cpu()
    started = time.monotonic()
    fetched = fetch_candidate(candidate, work_dir, s3)
    wall = time.monotonic() - started
    moto_after = cpu_ticks(args.get("moto_pid"))
    out = {"wall_seconds": wall, "raw_bytes": fetched.raw_bytes, "stored_bytes": fetched.stored_bytes,
           "source": candidate.source, "cpu_seconds": _cpu() - cpu_before, "peak_rss_kib": vm_hwm_kib()}
    if moto_before is not None and moto_after is not None:
        out["moto_cpu_seconds"] = (moto_after - moto_before) / CLOCK_TICKS
    fetched.remove()
    return out


def download(args: dict) -> dict:
    from ops_platform.lib.stores import make_s3_client

    client = make_s3_client()
    target = Path(args["path"])
    moto_before = cpu_ticks(args.get("moto_pid"))
    cpu_before = _cpu()
    started = time.monotonic()
    client.download_file(args["s3_bucket"], args["key"], str(target))
    wall = time.monotonic() - started
    moto_after = cpu_ticks(args.get("moto_pid"))
    out = {"wall_seconds": wall, "stored_bytes": target.stat().st_size, "cpu_seconds": _cpu() - cpu_before,
           "peak_rss_kib": vm_hwm_kib()}
    if moto_before is not None and moto_after is not None:
        out["moto_cpu_seconds"] = (moto_after - moto_before) / CLOCK_TICKS
    target.unlink()
    return out


def main() -> None:
    run_mode({"fetch": fetch, "download": download})


if __name__ == "__main__":
    main()
