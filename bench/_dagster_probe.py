"""Small Dagster-side probes, each in its own process, printing one JSON line.

    python -m bench._dagster_probe runlog DAGSTER_HOME RUN_ID
        the run's first and last event, each step's STEP_START..STEP_SUCCESS (or FAILURE), and the
        metadata of its materializations, observations and check evaluations
    python -m bench._dagster_probe startup JOB
        what the CLI pays before a run starts, one cost after the other in this fresh process:
        importing the CLI, dagster, the definitions module, loading the definitions, resolving the
        job, opening the instance ($DAGSTER_HOME) and asking it for runs in progress; the parent
        adds the interpreter's start (until this module runs) and its exit (after the last line)
"""

from __future__ import annotations

import time

BEGIN_UNIX = time.time()  # before anything else is imported

import json
import os
import sys

RUN_START = ("RUN_START", "PIPELINE_START")
RUN_END = ("RUN_SUCCESS", "PIPELINE_SUCCESS", "RUN_FAILURE", "PIPELINE_FAILURE", "RUN_CANCELED", "PIPELINE_CANCELED")


def _plain(metadata) -> dict:
    out = {}
    for key, value in metadata.items():
        value = getattr(value, "value", value)
        try:
            json.dumps(value)
        except TypeError:
            value = str(value)
        out[key] = value
    return out


def runlog(home: str, run_id: str) -> dict:
    os.environ["DAGSTER_HOME"] = home
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        record = instance.get_run_record_by_id(run_id)
        events = instance.all_logs(run_id)
    run_start = run_end = None
    steps: dict[str, dict] = {}
    materializations, observations, checks = [], [], []
    for entry in events:
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        if kind in RUN_START and run_start is None:
            run_start = entry.timestamp
        elif kind in RUN_END:
            run_end = entry.timestamp
        elif kind == "STEP_START":
            steps[entry.step_key] = {"start": entry.timestamp}
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and entry.step_key in steps:
            steps[entry.step_key]["end"] = entry.timestamp
            steps[entry.step_key]["seconds"] = entry.timestamp - steps[entry.step_key]["start"]
            steps[entry.step_key]["ok"] = kind == "STEP_SUCCESS"
        elif kind == "ASSET_MATERIALIZATION":
            materialization = event.event_specific_data.materialization
            materializations.append({"asset": materialization.asset_key.to_user_string(), "step": entry.step_key,
                                     "metadata": _plain(materialization.metadata)})
        elif kind == "ASSET_OBSERVATION":
            observation = event.event_specific_data.asset_observation
            observations.append({"asset": observation.asset_key.to_user_string(), "step": entry.step_key,
                                 "metadata": _plain(observation.metadata)})
        elif kind == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            checks.append({"check": data.check_name, "passed": data.passed})
    return {
        "run_id": run_id,
        "status": str(record.dagster_run.status.value) if record else None,
        "run_start": run_start if run_start is not None else (record.start_time if record else None),
        "run_end": run_end if run_end is not None else (record.end_time if record else None),
        "steps": {key: value for key, value in steps.items() if "seconds" in value},
        "materializations": materializations,
        "observations": observations,
        "checks": checks,
    }


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def startup(job: str) -> dict:
    stages: list[tuple[str, float, int]] = []
    last = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        stages.append((name, now - last, _rss_kib()))
        last = now

    import ops_platform.cli.main

    mark("import ops_platform.cli")
    import dagster as dg

    mark("import dagster")
    import ops_platform.definitions  # noqa: F401

    mark("import ops_platform.definitions")
    from ops_platform.cli.runs import (
        ensure_dagster_home,
        in_progress_runs,
        load_definitions,
    )

    definitions = load_definitions()
    mark("load the definitions (defs folder)")
    definitions.resolve_job_def(job)
    mark(f"resolve {job}")
    ensure_dagster_home()
    with dg.DagsterInstance.get():
        pass
    mark("open the instance")
    in_progress_runs("development", (job,))
    mark("in_progress_runs query")
    return {"job": job, "begin_unix": BEGIN_UNIX, "stages": [{"name": name, "seconds": round(seconds, 4), "rss_kib": rss}
                                   for name, seconds, rss in stages],
            "total_seconds": round(sum(seconds for _, seconds, _ in stages), 4)}


def main() -> None:
    mode = sys.argv[1]
    if mode == "runlog":
        result = runlog(sys.argv[2], sys.argv[3])
    elif mode == "startup":
        result = startup(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {mode}")
    if mode == "startup":
        result["end_unix"] = time.time()  # what follows until the process is gone is the interpreter's exit
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
