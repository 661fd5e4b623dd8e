"""Health sweep benchmark: 100 loopback /health targets, 10 of them accepting connections and never
answering, against the configured timeout; then 100 healthy targets.

Targets: the sweep with hanging targets takes at most timeout + 1 s; the healthy sweep at most 1 s.
Run alone with ``python -m bench.bench_health``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from ops_platform.lib import probes
from ops_platform_testkit.health_server import SilentListener

TARGETS = 100
HANGING = 10
TIMEOUT_SECONDS = 2.0


def _sweep(urls: list[str], timeout: float) -> tuple[float, probes.SweepResult]:
    settings = probes.ProbeSettings(timeout_seconds=timeout, degraded_seconds=timeout)
    sweep = [probes.Probe(f"target{i}", "api", lambda i=i, url=url: probes.probe_api(f"target{i}", url, settings),
                          timeout) for i, url in enumerate(urls)]
    started = time.monotonic()
    result = probes.run_sweep(sweep)
    return time.monotonic() - started, result


def _start_app() -> tuple[subprocess.Popen, str]:
    """The test app in its own process, as a real app would be (so it does not share our GIL)."""
    process = subprocess.Popen([sys.executable, "-m", "ops_platform_testkit.health_server"],
                               cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    port = int(process.stdout.readline())
    return process, f"http://127.0.0.1:{port}"


def run() -> bool:
    app, app_url = _start_app()
    listener = SilentListener()
    try:
        healthy_urls = [f"{app_url}/t{i}" for i in range(TARGETS)]
        _sweep(healthy_urls[:5], TIMEOUT_SECONDS)
        mixed = [listener.url if i % (TARGETS // HANGING) == 0 else url for i, url in enumerate(healthy_urls)]
        mixed_seconds, mixed_result = _sweep(mixed, TIMEOUT_SECONDS)
        healthy_seconds, healthy_result = _sweep(healthy_urls, TIMEOUT_SECONDS)
    finally:
        app.stdin.close()
        app.wait(timeout=10)
        listener.close()
    hanging_found = sum(1 for r in mixed_result.results if r.component == "api" and r.status == probes.UNHEALTHY)
    healthy_found = sum(1 for r in healthy_result.results if r.component == "api" and r.status == probes.HEALTHY)
    mixed_ok = mixed_seconds <= TIMEOUT_SECONDS + 1 and hanging_found == HANGING
    healthy_ok = healthy_seconds <= 1.0 and healthy_found == TARGETS
    print("health sweep benchmark (loopback /health targets)")
    print(f"  {TARGETS} targets, {HANGING} hanging, timeout {TIMEOUT_SECONDS:g}s: {mixed_seconds:.2f}s wall "
          f"({hanging_found} reported unhealthy); target <= {TIMEOUT_SECONDS + 1:g}s: "
          f"{'PASS' if mixed_ok else 'FAIL'}")
    print(f"  {TARGETS} healthy targets: {healthy_seconds:.2f}s wall ({healthy_found} healthy); target <= 1s: "
          f"{'PASS' if healthy_ok else 'FAIL'}")
    return mixed_ok and healthy_ok


if __name__ == "__main__":
    raise SystemExit(0 if run() else 1)
