"""Probes against real servers: the test /health server, local PostgreSQL and Redis, moto S3."""

from __future__ import annotations

import time

import pytest

from ops_platform.config import EnvironmentConfig
from ops_platform.lib import probes
from ops_platform.lib.probes import (
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    Probe,
    ProbeSettings,
    run_sweep,
)
from ops_platform.lib.redact import Redactor
from ops_platform_tests.conftest import DB_PASSWORD, database_url, free_port

FAST = ProbeSettings(timeout_seconds=1.0, degraded_seconds=0.8)


def by_component(results):
    return {result.component: result for result in results}


def test_healthy_api_reports_each_service_and_the_version(health_server):
    results = by_component(probes.probe_api("production", health_server.url, FAST))
    assert results["api"].status == HEALTHY
    assert results["api"].details["version"] == "1.2.3"
    assert {results[f"api_{name}"].status for name in ("database", "redis", "storage")} == {HEALTHY}
    assert results["api"].latency_seconds < FAST.degraded_seconds


def test_slow_answer_is_degraded_not_healthy(health_server):
    health_server.delay_seconds = 0.4
    settings = ProbeSettings(timeout_seconds=2.0, degraded_seconds=0.3)
    api = by_component(probes.probe_api("production", health_server.url, settings))["api"]
    assert api.status == DEGRADED
    assert "slow" in api.reason and "threshold 0.3s" in api.reason


def test_disconnected_service_is_named(health_server):
    health_server.mode = "degraded"
    results = by_component(probes.probe_api("production", health_server.url, FAST))
    assert results["api"].status == UNHEALTHY
    assert "redis: disconnected" in results["api"].reason
    assert results["api_redis"].status == UNHEALTHY
    assert results["api_redis"].reason == "the app reports redis: disconnected"
    assert results["api_database"].status == HEALTHY


@pytest.mark.parametrize("mode, reason", [
    ("error", "/health answered HTTP 503 (status 'unhealthy')"),
    ("malformed", "/health returned malformed JSON: '<html>Bad gateway</html>'"),
    ("huge", f"response body too large: {100 * 1024 * 1024} bytes declared (limit {1 << 20})"),
    ("huge_stream", f"response body too large: over {1 << 20} bytes (limit {1 << 20})"),
])
def test_bad_answers_are_unhealthy_with_a_clear_reason(health_server, mode, reason):
    health_server.mode = mode
    started = time.monotonic()
    [api] = probes.probe_api("production", health_server.url, FAST)
    assert (api.status, api.reason) == (UNHEALTHY, reason)
    assert time.monotonic() - started < 2.0


def test_socket_that_never_answers_times_out(silent_listener):
    started = time.monotonic()
    [api] = probes.probe_api("production", silent_listener.url, ProbeSettings(timeout_seconds=0.3))
    assert api.status == UNHEALTHY
    assert api.reason == "127.0.0.1 accepted the connection but sent no answer in time"
    assert 0.25 < time.monotonic() - started < 1.5


def test_connection_refused():
    [api] = probes.probe_api("production", f"http://127.0.0.1:{free_port()}", FAST)
    assert (api.status, api.reason) == (UNHEALTHY, "connection refused by 127.0.0.1")


def test_dns_failure():
    [api] = probes.probe_api("production", "http://no-such-host.invalid", FAST)
    assert (api.status, api.reason) == (UNHEALTHY, "DNS lookup failed for no-such-host.invalid")


def test_frontend_needs_2xx(health_server):
    assert probes.probe_frontend("staging", health_server.url + "/shop", FAST)[0].status == HEALTHY
    health_server.frontend_status = 502
    [frontend] = probes.probe_frontend("staging", health_server.url + "/shop", FAST)
    assert (frontend.status, frontend.reason) == (UNHEALTHY, "frontend answered HTTP 502")


def test_postgres_select_one_missing_database_and_refused():
    [good] = probes.probe_postgres("staging", "postgresql://postgres@127.0.0.1:5432/postgres", FAST)
    assert good.status in (HEALTHY, DEGRADED), good.reason
    missing_url = "postgresql://postgres@127.0.0.1:5432/no_such_database"
    [bad] = probes.probe_postgres("staging", missing_url, FAST)
    assert bad.status == UNHEALTHY
    assert 'database "no_such_database" does not exist' in bad.reason
    [refused] = probes.probe_postgres("staging", f"postgresql://u:p@127.0.0.1:{free_port()}/x", FAST)
    assert refused.reason == "connection refused by 127.0.0.1"


def test_redis_ping_and_refused():
    assert probes.probe_redis("development", "redis://127.0.0.1:6379/0", FAST)[0].status == HEALTHY
    [refused] = probes.probe_redis("development", f"redis://:s3cretRedisPw@127.0.0.1:{free_port()}/0", FAST)
    assert refused.status == UNHEALTHY
    assert "connection refused" in refused.reason or "Connection refused" in refused.reason
    assert "s3cretRedisPw" not in refused.reason


def test_bucket_head_and_canary(s3_bucket):
    [bucket] = probes.probe_bucket("production", s3_bucket, "ops-backups-test", "backups", FAST)
    assert bucket.status in (HEALTHY, DEGRADED), bucket.reason
    assert s3_bucket.list_objects_v2(Bucket="ops-backups-test").get("KeyCount", 0) == 0
    [missing] = probes.probe_bucket("production", s3_bucket, "no-such-bucket", "backups", FAST)
    assert missing.status == UNHEALTHY
    assert missing.reason.startswith("HeadBucket on s3://no-such-bucket failed")


def test_sweep_never_waits_past_the_timeout(health_server, silent_listener):
    def stuck():
        time.sleep(30)
        return []

    sweep = run_sweep([
        Probe("production", "api", lambda: probes.probe_api("production", silent_listener.url,
                                                            ProbeSettings(timeout_seconds=5)), 0.3),
        Probe("production", "frontend", stuck, 0.3),
        Probe("staging", "api", lambda: probes.probe_api("staging", health_server.url, FAST), 1.0),
    ], grace_seconds=0.2)
    assert sweep.duration_seconds < 1.2 + 0.3
    results = {(r.environment, r.component): r for r in sweep.results}
    assert results[("production", "frontend")].reason == "no answer within the 0.3s timeout"
    assert results[("production", "api")].status == UNHEALTHY
    assert results[("staging", "api")].status == HEALTHY


def test_crashing_probe_is_a_failed_check():
    def broken():
        raise RuntimeError("boom")

    [result] = run_sweep([Probe("production", "redis", broken, 1)]).results
    assert (result.status, result.reason) == (UNHEALTHY, "check crashed: RuntimeError: boom")


def test_secrets_in_urls_never_reach_reasons():
    redis_url = f"redis://:R3disS3cretPw@127.0.0.1:{free_port()}/0"
    api_url = f"http://127.0.0.1:{free_port()}/?token=ApiT0kenSecret"
    missing_db = database_url("production", password="wrong-pass-Secret9").rsplit("/", 1)[0] + "/no_such_db"
    environment = EnvironmentConfig("production", missing_db,
                                    redis_url=redis_url, api_url=api_url, frontend_url=api_url)
    redactor = Redactor.from_environ({"PRODUCTION_REDIS_URL": redis_url, "PRODUCTION_API_URL": api_url,
                                      "PRODUCTION_DATABASE_URL": environment.database_url})
    sweep = run_sweep(probes.environment_probes(environment, FAST), redactor)
    text = repr([result.to_dict() for result in sweep.results])
    for secret in ("R3disS3cretPw", "ApiT0kenSecret", "wrong-pass-Secret9", DB_PASSWORD):
        assert secret not in text
    assert {r.component for r in sweep.results} == {"postgres", "redis", "api", "frontend"}
    assert all(r.status == UNHEALTHY for r in sweep.results)


def test_redis_that_never_answers_fails_once_without_retries(silent_listener):
    port = silent_listener.url.rsplit(":", 1)[1].strip("/")
    started = time.monotonic()
    [result] = probes.probe_redis("development", f"redis://127.0.0.1:{port}/0", ProbeSettings(timeout_seconds=0.4))
    elapsed = time.monotonic() - started
    assert result.status == UNHEALTHY and "timed out" in result.reason
    assert elapsed < 0.75, f"PING was retried: {elapsed:.2f}s for a 0.4s timeout"


def test_a_secret_at_the_cut_point_is_redacted_before_the_reason_is_shortened():
    secret = "eyJhbGciOiJIUzI1NiJ9." + "Zq7Kp2Lm9Xw4" * 12  # a long token across every plausible cut
    message = "connecting to cache failed: " + "x" * 160 + f" {secret} and more"

    def failing():
        return [probes.ProbeResult("production", "redis", UNHEALTHY,
                                   probes.describe_error(OSError(message), "cache"), 0.01)]

    [result] = run_sweep([Probe("production", "redis", failing, 1)], Redactor([secret])).results
    assert secret[:8] not in result.reason and "Zq7Kp" not in result.reason and "***" in result.reason
    assert len(result.reason) <= probes.MAX_REASON_CHARS


@pytest.mark.parametrize("url", ["http://[::1/health", "http://app\x00host/"])
def test_an_invalid_url_is_an_unhealthy_result_not_an_exception(url):
    [api] = probes.probe_api("production", url, FAST)
    assert api.status == UNHEALTHY and api.reason.startswith("invalid API URL: ")
    [frontend] = probes.probe_frontend("production", url, FAST)
    assert frontend.status == UNHEALTHY and frontend.reason.startswith("invalid frontend URL: ")


def test_a_fleet_probe_checks_many_databases_a_few_at_a_time_within_its_budget(silent_listener):
    server = f"postgresql://ops_test:{DB_PASSWORD}@127.0.0.1:5432"
    databases = {f"up{i:02d}": f"{server}/postgres" for i in range(12)}
    databases.update({f"silent{i}": f"postgresql://ops_test@127.0.0.1:{silent_listener.port}/app" for i in range(6)})
    databases["gone"] = f"{server}/ops_fleet_probe_never_created"
    probe = probes.fleet_probe(databases, ProbeSettings(timeout_seconds=10.0), concurrency=4, timeout_seconds=2.0)
    assert probe.environment == probes.FLEET and probe.timeout_seconds == (5 + 1) * 2.0

    started = time.monotonic()
    sweep = run_sweep([probe], Redactor.from_environ())

    assert time.monotonic() - started < probe.timeout_seconds + 1.0
    by_name = {result.environment: result for result in sweep.results}
    assert set(by_name) == set(databases)
    assert all(by_name[f"up{i:02d}"].status == HEALTHY for i in range(12))
    assert all(by_name[f"silent{i}"].status == UNHEALTHY for i in range(6))
    assert all(by_name[f"silent{i}"].latency_seconds < 4.0 for i in range(6))  # capped at 2 s, not the sweep's 10
    assert by_name["gone"].status == UNHEALTHY and "does not exist" in by_name["gone"].reason
    assert DB_PASSWORD not in str(sweep.results)
