"""Health probes for one environment's components, and a concurrent sweep that can never hang.

Each probe returns ``ProbeResult``s: ``healthy``, ``degraded`` (answered, but slower than the
latency threshold) or ``unhealthy`` with a one-line reason. Probes carry their own timeouts, and
the sweep adds a hard deadline on top: a probe still running at ``timeout + grace`` is reported
as timed out and left behind on a daemon thread, so a sweep never takes longer than the largest
timeout plus a little. Every reason passes through the redactor.
"""

from __future__ import annotations

import json
import math
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import certifi
import httpx
import psycopg

from ops_platform.lib import postgres
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore.swap import swaps_in_the_way
from ops_platform.lib.s3_encryption import ServerSideEncryption, put_args

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
STATUS_RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_DEGRADED_SECONDS = 2.0
MAX_BODY_BYTES = 1 << 20
SWEEP_GRACE_SECONDS = 0.5
SEED_SERVICES = ("database", "redis", "storage")
FLEET = "(fleet)"
FLEET_CONCURRENCY = 16
FLEET_TIMEOUT_SECONDS = 5.0
MAX_REASON_CHARS = 300


@dataclass
class ProbeResult:
    environment: str
    component: str
    status: str
    reason: str
    latency_seconds: float
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != UNHEALTHY

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProbeSettings:
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    degraded_seconds: float = DEFAULT_DEGRADED_SECONDS
    # False while the platform itself is starting: its own start-up slows every answer it measures.
    judge_latency: bool = True
    max_body_bytes: int = MAX_BODY_BYTES


class ProbeFailure(Exception):
    """A probe failed for a reason worth showing as is."""


def worst_status(statuses: Iterable[str]) -> str:
    return max(statuses, key=STATUS_RANK.__getitem__, default=HEALTHY)


def _by_latency(latency: float, settings: ProbeSettings, reason_ok: str) -> tuple[str, str]:
    if latency > settings.degraded_seconds:
        if not settings.judge_latency:
            return HEALTHY, (f"{reason_ok}, in {latency:.2f}s (latency not judged: the platform was starting)")
        return DEGRADED, f"slow: answered in {latency:.2f}s (threshold {settings.degraded_seconds:g}s)"
    return HEALTHY, reason_ok


def describe_error(error: BaseException, target: str = "") -> str:
    """A one-line reason for a failed connection, naming the usual causes plainly."""
    text = f"{error}".strip() or type(error).__name__
    lowered = text.lower()
    host = urlsplit(target).hostname if "://" in target else target
    if isinstance(error, (httpx.ConnectTimeout, socket.timeout)) and "connect" in lowered:
        return f"connection to {host} timed out"
    if isinstance(error, httpx.ReadTimeout):
        return f"{host} accepted the connection but sent no answer in time"
    if isinstance(error, httpx.TimeoutException):
        return f"{host} did not answer in time"
    if isinstance(error, socket.gaierror) or any(marker in lowered for marker in (
            "name or service not known", "nodename nor servname", "temporary failure in name resolution",
            "no address associated", "could not translate host name", "getaddrinfo failed",
            "name does not resolve")):
        return f"DNS lookup failed for {host}"
    if isinstance(error, ConnectionRefusedError) or "connection refused" in lowered or "errno 111" in lowered:
        return f"connection refused by {host}"
    if "timeout" in lowered or "timed out" in lowered:
        return f"{host} timed out"
    return f"{type(error).__name__}: {text.splitlines()[0]}"


def clean_reason(reason: str, redactor: Redactor) -> str:
    """One line, secrets removed, then shortened: cutting first could split a secret and leave a
    fragment the redactor no longer recognises."""
    if not reason:
        return ""
    line = (redactor(reason).splitlines() or [""])[0]
    return line if len(line) <= MAX_REASON_CHARS else line[:MAX_REASON_CHARS - 1] + "…"


def _read_capped(response: httpx.Response, limit: int, deadline: float) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProbeFailure(f"response body too large: {int(declared)} bytes declared (limit {limit})")
    body = bytearray()
    for chunk in response.iter_bytes():
        body.extend(chunk)
        if len(body) > limit:
            raise ProbeFailure(f"response body too large: over {limit} bytes (limit {limit})")
        if time.monotonic() > deadline:
            raise ProbeFailure("response body still arriving when the timeout ran out")
    return bytes(body)


_ssl_context: ssl.SSLContext | None = None


def _shared_ssl_context() -> ssl.SSLContext:
    """One TLS context for every probe: building one per request costs more than a loopback check."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context(cafile=certifi.where())
    return _ssl_context


def _http_get(url: str, settings: ProbeSettings, limit: int) -> tuple[int, bytes, float]:
    started = time.monotonic()
    deadline = started + settings.timeout_seconds
    timeout = httpx.Timeout(settings.timeout_seconds)
    with httpx.Client(timeout=timeout, follow_redirects=True, trust_env=False,
                      verify=_shared_ssl_context()) as client:
        with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
            body = _read_capped(response, limit, deadline)
            return response.status_code, body, time.monotonic() - started


def health_url(api_url: str) -> str:
    """``$API_URL/health``, keeping any query string (some gateways take a token there)."""
    parts = urlsplit(api_url)
    return parts._replace(path=parts.path.rstrip("/") + "/health").geturl()


def probe_api(environment: str, api_url: str, settings: ProbeSettings) -> list[ProbeResult]:
    """``GET $API_URL/health``: HTTP 200 and ``status == "healthy"``; each ``services`` entry
    becomes its own component (``api_<service>``), and the reported ``version`` is kept."""
    started = time.monotonic()
    try:
        url = health_url(api_url)
        status_code, body, latency = _http_get(url, settings, settings.max_body_bytes)
    except ProbeFailure as error:
        return [ProbeResult(environment, "api", UNHEALTHY, str(error), time.monotonic() - started)]
    except (httpx.InvalidURL, ValueError) as error:
        return [ProbeResult(environment, "api", UNHEALTHY, f"invalid API URL: {error}", time.monotonic() - started)]
    except (httpx.HTTPError, OSError) as error:
        return [ProbeResult(environment, "api", UNHEALTHY, describe_error(error, url), time.monotonic() - started)]
    try:
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError):
        payload = None
    if status_code != 200:
        detail = f" (status {payload.get('status')!r})" if payload and "status" in payload else ""
        return [ProbeResult(environment, "api", UNHEALTHY, f"/health answered HTTP {status_code}{detail}", latency)]
    if payload is None:
        snippet = body[:60].decode("utf-8", "replace").replace("\n", " ")
        return [ProbeResult(environment, "api", UNHEALTHY, f"/health returned malformed JSON: {snippet!r}", latency)]
    version = payload.get("version")
    details = {"version": str(version) if version is not None else None, "reported_status": payload.get("status")}
    results = []
    services = payload.get("services") if isinstance(payload.get("services"), dict) else {}
    for service, state in services.items():
        connected = str(state).lower() in ("connected", "healthy", "ok", "up")
        results.append(ProbeResult(
            environment, f"api_{service}", HEALTHY if connected else UNHEALTHY,
            f"the app reports {service}: {state}", latency, {"reported": str(state)}))
    if payload.get("status") != "healthy":
        down = [f"{service}: {state}" for service, state in services.items()
                if str(state).lower() not in ("connected", "healthy", "ok", "up")]
        why = f"; {', '.join(down)}" if down else ""
        api = ProbeResult(environment, "api", UNHEALTHY,
                          f"/health reports status {payload.get('status')!r}{why}", latency, details)
    else:
        status, reason = _by_latency(latency, settings, f"healthy (version {version})")
        api = ProbeResult(environment, "api", status, reason, latency, details)
    return [api, *results]


def probe_frontend(environment: str, frontend_url: str, settings: ProbeSettings) -> list[ProbeResult]:
    """``GET $FRONTEND_URL``: any 2xx."""
    started = time.monotonic()
    try:
        status_code, _, latency = _http_get(frontend_url, settings, settings.max_body_bytes * 8)
    except ProbeFailure as error:
        return [ProbeResult(environment, "frontend", UNHEALTHY, str(error), time.monotonic() - started)]
    except (httpx.InvalidURL, ValueError) as error:
        return [ProbeResult(environment, "frontend", UNHEALTHY, f"invalid frontend URL: {error}",
                            time.monotonic() - started)]
    except (httpx.HTTPError, OSError) as error:
        return [ProbeResult(environment, "frontend", UNHEALTHY, describe_error(error, frontend_url),
                            time.monotonic() - started)]
    if not 200 <= status_code < 300:
        return [ProbeResult(environment, "frontend", UNHEALTHY, f"frontend answered HTTP {status_code}", latency)]
    status, reason = _by_latency(latency, settings, f"HTTP {status_code}")
    return [ProbeResult(environment, "frontend", status, reason, latency)]


def probe_postgres(environment: str, database_url: str, settings: ProbeSettings,
                   swap_root: Path | None = None) -> list[ProbeResult]:
    """Connect and ``SELECT 1`` with connect and statement timeouts. A restore's swap of the
    environment left half done (journals under ``swap_root``) is said first, whatever the answer."""
    started = time.monotonic()
    if swap_root is not None:
        for running, text in swaps_in_the_way(database_url, swap_root, environment):
            return [ProbeResult(environment, "postgres", DEGRADED if running else UNHEALTHY, text,
                                time.monotonic() - started)]
    statement_ms = max(1, int(settings.timeout_seconds * 1000))
    try:
        with postgres.connect(database_url, connect_timeout=max(1, math.ceil(settings.timeout_seconds)),
                              options=f"-c statement_timeout={statement_ms}", autocommit=True) as connection:
            connection.execute("SELECT 1").fetchone()
    except psycopg.Error as error:
        host = urlsplit(database_url).hostname or "the database"
        return [ProbeResult(environment, "postgres", UNHEALTHY, describe_error(error, host),
                            time.monotonic() - started)]
    latency = time.monotonic() - started
    status, reason = _by_latency(latency, settings, "SELECT 1 succeeded")
    return [ProbeResult(environment, "postgres", status, reason, latency)]


def probe_redis(environment: str, redis_url: str, settings: ProbeSettings) -> list[ProbeResult]:
    """``PING``, once: redis-py retries by default, which would hide the cause behind the timeout."""
    import redis  # only where a REDIS_URL is probed: the import costs commands that never probe it
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    started = time.monotonic()
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=settings.timeout_seconds,
                                  socket_timeout=settings.timeout_seconds, retry_on_timeout=False,
                                  retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        host = urlsplit(redis_url).hostname or "redis"
        reason = describe_error(error.__context__ or error, host) if isinstance(error, redis.ConnectionError) \
            else describe_error(error, host)
        return [ProbeResult(environment, "redis", UNHEALTHY, reason, time.monotonic() - started)]
    finally:
        client.close()
    latency = time.monotonic() - started
    status, reason = _by_latency(latency, settings, "PING answered PONG")
    return [ProbeResult(environment, "redis", status, reason, latency)]


def probe_bucket(environment: str, client, bucket: str, prefix: str, settings: ProbeSettings,
                 encryption: ServerSideEncryption | None = None) -> list[ProbeResult]:
    """``HeadBucket``, then write, read back and delete a small canary object under the prefix. The
    canary is written with the backups' server-side encryption (AWS_S3_SSE), and a bucket that does
    not report it on the write is unhealthy: backups written there would not be encrypted either."""
    started = time.monotonic()
    key = f"{prefix.strip('/')}/.health/{environment}-{uuid.uuid4().hex}" if prefix.strip("/") \
        else f".health/{environment}-{uuid.uuid4().hex}"
    payload = f"ops-platform health canary {datetime.now(timezone.utc).isoformat()}".encode()
    step = "HeadBucket"
    try:
        client.head_bucket(Bucket=bucket)
        step = "canary write"
        written = client.put_object(Bucket=bucket, Key=key, Body=payload, **put_args(encryption))
        step = "canary read"
        read_back = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        step = "canary delete"
        client.delete_object(Bucket=bucket, Key=key)
    except Exception as error:  # noqa: BLE001 - botocore raises many unrelated types
        code = getattr(error, "response", {}).get("Error", {}).get("Code") if hasattr(error, "response") else None
        reason = f"{step} on s3://{bucket} failed: " + (f"{code}" if code else describe_error(error, bucket))
        return [ProbeResult(environment, "bucket", UNHEALTHY, reason, time.monotonic() - started)]
    latency = time.monotonic() - started
    if read_back != payload:
        return [ProbeResult(environment, "bucket", UNHEALTHY, "canary read back different bytes", latency)]
    unencrypted = encryption.problem(written) if encryption else None
    if unencrypted:
        return [ProbeResult(environment, "bucket", UNHEALTHY, f"canary write on s3://{bucket}: {unencrypted}", latency)]
    status, reason = _by_latency(latency, settings, f"s3://{bucket} HeadBucket and canary write/read/delete succeeded")
    return [ProbeResult(environment, "bucket", status, reason, latency)]


@dataclass
class Probe:
    """One scheduled check: the component it is reported as when it times out, and the call."""

    environment: str
    component: str
    run: Callable[[], list[ProbeResult]]
    timeout_seconds: float


@dataclass
class SweepResult:
    results: list[ProbeResult]
    started_at: datetime
    duration_seconds: float
    sweep_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def for_environment(self, environment: str) -> list[ProbeResult]:
        return [result for result in self.results if result.environment == environment]


def run_sweep(probes: list[Probe], redactor: Redactor | None = None,
              grace_seconds: float = SWEEP_GRACE_SECONDS) -> SweepResult:
    """Run every probe at once on daemon threads and wait at most the largest timeout plus grace."""
    redactor = redactor or Redactor.from_environ()
    started_at = datetime.now(timezone.utc)
    started = time.monotonic()
    outcomes: dict[int, list[ProbeResult]] = {}
    threads = []
    for index, probe in enumerate(probes):
        def work(index=index, probe=probe):
            try:
                outcomes[index] = probe.run()
            except Exception as error:  # noqa: BLE001 - a broken probe is a failed check, not a crash
                outcomes[index] = [ProbeResult(probe.environment, probe.component, UNHEALTHY,
                                               f"check crashed: {type(error).__name__}: {error}",
                                               time.monotonic() - started)]
        thread = threading.Thread(target=work, name=f"probe-{probe.environment}-{probe.component}", daemon=True)
        thread.start()
        threads.append((index, probe, thread))
    for index, probe, thread in threads:
        deadline = started + probe.timeout_seconds + grace_seconds
        thread.join(max(0.0, deadline - time.monotonic()))
    results: list[ProbeResult] = []
    for index, probe, thread in threads:
        found = outcomes.get(index)
        if found is None:
            found = [ProbeResult(probe.environment, probe.component, UNHEALTHY,
                                 f"no answer within the {probe.timeout_seconds:g}s timeout",
                                 time.monotonic() - started)]
        for result in found:
            result.reason = clean_reason(result.reason, redactor)
            result.details = json.loads(redactor(json.dumps(result.details)))
            result.latency_seconds = round(result.latency_seconds, 4)
            results.append(result)
    return SweepResult(results, started_at, time.monotonic() - started)


def failed_probe(environment: str, component: str, reason: str) -> Probe:
    """A check that cannot even start (a bad setting): reported as unhealthy with the reason."""
    return Probe(environment, component, lambda: [ProbeResult(environment, component, UNHEALTHY, reason, 0.0)], 1.0)


def environment_probes(environment, settings: ProbeSettings, *, s3_client=None, bucket: str | None = None,
                       prefix: str = "backups", encryption: ServerSideEncryption | None = None,
                       swap_root: Path | None = None) -> list[Probe]:
    """The probes for one configured environment (an ``EnvironmentConfig``); ``swap_root`` is the
    backup root, where a restore's swap keeps its journal."""
    name = environment.name
    probes = [Probe(name, "postgres", lambda: probe_postgres(name, environment.database_url, settings, swap_root),
                    settings.timeout_seconds)]
    if environment.api_url:
        probes.append(Probe(name, "api", lambda: probe_api(name, environment.api_url, settings),
                            settings.timeout_seconds))
    if environment.frontend_url:
        probes.append(Probe(name, "frontend", lambda: probe_frontend(name, environment.frontend_url, settings),
                            settings.timeout_seconds))
    if environment.redis_url:
        probes.append(Probe(name, "redis", lambda: probe_redis(name, environment.redis_url, settings),
                            settings.timeout_seconds))
    if s3_client is not None and bucket:
        probes.append(Probe(name, "bucket", lambda: probe_bucket(name, s3_client, bucket, prefix, settings, encryption),
                            settings.timeout_seconds))
    return probes


def fleet_probe(databases: dict[str, str], settings: ProbeSettings, concurrency: int = FLEET_CONCURRENCY,
                timeout_seconds: float = FLEET_TIMEOUT_SECONDS) -> Probe:
    """One probe for many databases (name -> URL): each a connect and ``SELECT 1`` (``probe_postgres``)
    with the sweep's timeout capped at ``timeout_seconds``, at most ``concurrency`` at a time. It
    answers within the rounds that takes plus one timeout; a database still connecting then is
    unhealthy ("no answer"). Each result is reported under the database's name, component ``postgres``."""
    capped = ProbeSettings(**{**asdict(settings), "timeout_seconds": min(settings.timeout_seconds, timeout_seconds)})
    rounds = max(1, math.ceil(len(databases) / max(1, concurrency)))
    budget = (rounds + 1) * capped.timeout_seconds

    def run() -> list[ProbeResult]:
        started = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(databases))), thread_name_prefix="fleet-probe")
        futures = {name: pool.submit(probe_postgres, name, url, capped) for name, url in databases.items()}
        pool.shutdown(wait=False, cancel_futures=False)
        done, _ = futures_wait(futures.values(), timeout=budget - SWEEP_GRACE_SECONDS / 2)
        results = []
        for name, future in futures.items():
            if future in done and future.exception() is None:
                results += future.result()
            elif future in done:
                results.append(ProbeResult(name, "postgres", UNHEALTHY, f"check crashed: {future.exception()}",
                                           time.monotonic() - started))
            else:
                future.cancel()
                results.append(ProbeResult(name, "postgres", UNHEALTHY,
                                           f"no answer within the sweep's {budget:g}s for {len(databases)} databases",
                                           time.monotonic() - started))
        return results

    return Probe(FLEET, "postgres", run, budget)


def environment_summary(results: list[ProbeResult], checked_at: datetime) -> dict:
    """The seed's ``/health`` shape for one environment, plus each check's detail."""
    version = next((r.details.get("version") for r in results if r.component == "api" and r.details.get("version")),
                   None)
    words = {HEALTHY: "connected", DEGRADED: "degraded", UNHEALTHY: "disconnected"}
    return {
        "status": worst_status(r.status for r in results),
        "timestamp": checked_at.isoformat(),
        "services": {r.component: words[r.status] for r in results},
        "version": version,
        "checks": [{"component": r.component, "status": r.status, "reason": r.reason,
                    "latency_ms": round(r.latency_seconds * 1000, 1)} for r in results],
    }


def checked_at_seconds(value) -> float:
    """A recorded ``checked_at`` as epoch seconds: a timestamp (what sweeps record, shown as a
    date in the UI), a datetime, or an ISO-8601 string; plain floats from older sweeps still read."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
    return float(value)
