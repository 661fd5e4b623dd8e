"""The backup pipeline: one streaming pass from pg_dump to the local file and S3.

    pg_dump -Fc -Z0  ->  zstd (or gzip)  ->  sha256  ->  local temp file, renamed when whole
                                                  \\->  S3 multipart (boto3 transfer manager)

Memory stays bounded: the stream moves in 1 MiB pieces, zstd works on 2 MiB jobs, and the
S3 leg holds a few 8 MiB parts.
A failed S3 leg never stops the local one; a failed dump leaves no file under the final name
and no S3 object.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from ops_platform.lib.codecs import READ_CHUNK
from ops_platform.lib.files import open_private, private_dir
from ops_platform.lib.postgres import client_connection
from ops_platform.lib.redact import Redactor, tail
from ops_platform.lib.s3_encryption import ServerSideEncryption, put_args
from ops_platform.lib.stores import fsync_dir
from ops_platform.lib.verify import ArchiveVerifier, DecodeResult

S3_PART_SIZE = 8 << 20
ZSTD_JOB_SIZE = 2 << 20
PIPE_SIZE = 1 << 20
# Level 2 costs about a third less CPU than 3 for an archive a few percent larger, still smaller
# than the old gzip (measured on the benchmark's datasets: 0.95x and 1.00x gzip's size): on two
# cores the dump, its compression and its verification share the CPU.
ZSTD_DEFAULT_LEVEL = 2


class BackupStepError(RuntimeError):
    """A backup step failed. ``step`` names it for the alert; the message is already redacted."""

    def __init__(self, step: str, message: str):
        super().__init__(message)
        self.step = step


@dataclass(frozen=True)
class Compression:
    name: str = "zstd"
    level: int = ZSTD_DEFAULT_LEVEL
    threads: int = 2

    def __post_init__(self):
        if self.name not in ("zstd", "gzip"):
            raise ValueError(f"compression must be zstd or gzip, got '{self.name}'")
        limits = (1, 19) if self.name == "zstd" else (1, 9)
        if not limits[0] <= self.level <= limits[1]:
            raise ValueError(f"{self.name} level must be between {limits[0]} and {limits[1]}, got {self.level}")

    def writer(self, sink):
        if self.name == "zstd":
            params = zstandard.ZstdCompressionParameters.from_level(
                self.level, threads=self.threads, job_size=ZSTD_JOB_SIZE if self.threads else 0,
                write_checksum=True)
            compressor = zstandard.ZstdCompressor(compression_params=params)
            return compressor.stream_writer(sink, closefd=False)
        return gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=self.level, mtime=0)


@dataclass
class S3Leg:
    client: object
    bucket: str
    key: str
    encryption: ServerSideEncryption | None = None
    name: str = "s3"  # the copy's name: "s3" (AWS_S3_BUCKET) or a destination of ops_platform.yaml

    def upload_args(self) -> dict:
        """ExtraArgs of the upload: content type, checksum and the server-side encryption (AWS_S3_SSE)."""
        return {**UPLOAD_ARGS, **put_args(self.encryption)}


@dataclass
class S3LegResult:
    location: str
    ok: bool
    error: str | None = None
    retried_from_file: bool = False
    first_error: str | None = None


@dataclass
class DumpResult:
    local_path: Path
    raw_bytes: int
    stored_bytes: int
    sha256: str
    duration_seconds: float
    s3: S3LegResult | None = None
    stderr: str = ""
    decode: DecodeResult | None = None
    destinations: dict[str, S3LegResult] = field(default_factory=dict)


@dataclass
class Progress:
    raw_bytes: int = 0
    stored_bytes: int = 0
    elapsed: float = 0.0
    done: bool = False


class S3Stalled(RuntimeError):
    """S3 accepted no data for longer than the stall limit."""


class _UploadPipe(io.RawIOBase):
    """A readable stream fed by the dump loop, read by boto3's transfer manager in its thread.

    ``finish`` delivers EOF (only once the dump is known good); ``abort`` makes the next read
    raise, so the transfer manager aborts the multipart upload instead of completing it. ``feed``
    never waits longer than ``stall_seconds`` for room: a hung endpoint must not hold back the dump
    (and the locks pg_dump holds on the database)."""

    def __init__(self, max_chunks: int = 16, stall_seconds: float = 30.0):
        self._queue: queue.Queue = queue.Queue(maxsize=max_chunks)
        self._buffer = b""
        self._eof = False
        self._aborted = threading.Event()
        self.reader_gone = threading.Event()
        self.stall_seconds = stall_seconds
        self.last_activity = time.monotonic()

    def readable(self):
        return True

    def feed(self, chunk: bytes) -> None:
        deadline = time.monotonic() + self.stall_seconds
        while not self.reader_gone.is_set():
            try:
                self._queue.put(bytes(chunk), timeout=0.2)
                return
            except queue.Full:
                if time.monotonic() >= deadline:
                    raise S3Stalled(f"S3 accepted no data for {self.stall_seconds:g}s") from None

    def finish(self) -> None:
        self.feed(b"")

    def abort(self) -> None:
        self._aborted.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def _next_item(self) -> bytes:
        while True:
            if self._aborted.is_set():
                raise BackupStepError("s3-upload", "upload aborted")
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                raise BackupStepError("s3-upload", "upload aborted")
            self.last_activity = time.monotonic()
            return item

    def read(self, size: int = -1) -> bytes:
        """Exactly ``size`` bytes unless at EOF: the transfer manager sizes parts by it."""
        pieces = [self._buffer] if self._buffer else []
        have = len(self._buffer)
        self._buffer = b""
        while not self._eof and (size is None or size < 0 or have < size):
            item = self._next_item()
            if item == b"":
                self._eof = True
                break
            if size is not None and size >= 0 and have + len(item) > size:
                cut = size - have
                item, self._buffer = item[:cut], item[cut:]
            pieces.append(item)
            have += len(item)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def readinto(self, target) -> int:
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)


# S3 keeps a SHA-256 checksum of each object (composite for multipart uploads); it is recorded in
# the manifest so retention can check a copy with one HEAD instead of a download.
UPLOAD_ARGS = {"ContentType": "application/octet-stream", "ChecksumAlgorithm": "SHA256"}


def transfer_config():
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=S3_PART_SIZE, multipart_chunksize=S3_PART_SIZE, max_concurrency=2,
                            use_threads=True, preferred_transfer_client="classic")
    config.max_in_memory_upload_chunks = 2
    return config


def wait_while_progressing(thread: threading.Thread, last_activity: Callable[[], float], stall_seconds: float,
                           timeout: float) -> bool:
    """Wait for ``thread`` to end while it makes progress: give up after ``stall_seconds`` without
    activity, or ``timeout`` in all. Returns whether it ended."""
    started = time.monotonic()
    while thread.is_alive():
        now = time.monotonic()
        if now - max(last_activity(), started) > stall_seconds or now - started > timeout:
            return False
        thread.join(0.5)
    return True


def abort_multipart(leg: S3Leg, wait_seconds: float = 5.0) -> None:
    """Abort what a failed upload left under its key, waiting at most ``wait_seconds``."""
    from ops_platform.lib.stores import S3Store

    S3Store(leg.client, leg.bucket, "").abort_incomplete_uploads_within(leg.key, wait_seconds)


class _S3Upload:
    """The S3 leg of the dump: a multipart upload fed from the same stream. Any trouble (an error,
    a stall) abandons it without slowing the dump; the caller then uploads the finished file."""

    def __init__(self, leg: S3Leg, redactor: Redactor, stall_seconds: float = 30.0):
        self.leg = leg
        self.redactor = redactor
        self.pipe = _UploadPipe(stall_seconds=stall_seconds)
        self.error: str | None = None
        self._eof_sent = False
        self._thread = threading.Thread(target=self._run, name=f"s3-upload-{leg.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.leg.client.upload_fileobj(self.pipe, self.leg.bucket, self.leg.key,
                                           ExtraArgs=self.leg.upload_args(), Config=transfer_config())
        except BaseException as error:  # noqa: BLE001 - reported, never raised into the dump
            self.error = self.error or self.redactor(f"{type(error).__name__}: {error}")
        finally:
            self.pipe.reader_gone.set()

    @property
    def abandoned(self) -> bool:
        return self.error is not None

    def feed(self, chunk: bytes) -> None:
        if self.abandoned or self.pipe.reader_gone.is_set():
            return
        try:
            self.pipe.feed(chunk)
        except S3Stalled as stalled:
            self._abandon(str(stalled))

    def send_eof(self) -> None:
        """Deliver EOF once (the dump is known good), so the upload can complete."""
        if not self._eof_sent:
            self._eof_sent = True
            self.feed(b"")

    def _abandon(self, reason: str) -> None:
        self.error = self.error or reason
        self.pipe.abort()

    def complete(self, timeout: float) -> S3LegResult:
        """Deliver EOF and wait for the upload to finish while S3 keeps taking data (a stall of
        ``stall_seconds`` gives up), and at most ``timeout`` seconds in all."""
        location = f"s3://{self.leg.bucket}/{self.leg.key}"
        if not self.abandoned:
            self.send_eof()
            if not wait_while_progressing(self._thread, lambda: self.pipe.last_activity, self.pipe.stall_seconds,
                                          timeout):
                self._abandon(f"the upload did not finish: S3 took no data for {self.pipe.stall_seconds:g}s "
                              f"or the upload ran past {timeout:g}s")
        if self.abandoned:  # its multipart upload is aborted by the caller, once, after any retry
            return S3LegResult(location, ok=False, error=self.error)
        return S3LegResult(location, ok=True)

    def abort(self) -> None:
        """The dump failed or was interrupted: stop the upload, waiting only seconds on S3."""
        self._abandon(self.error or "the dump failed")
        self._thread.join(2)
        abort_multipart(self.leg, wait_seconds=5)


def _abort_all(uploads: list[_S3Upload]) -> None:
    """Stop every leg at once, so legs hung on their S3 add no wait to each other's."""
    threads = [threading.Thread(target=upload.abort, name=f"s3-abort-{upload.leg.name}", daemon=True)
               for upload in uploads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class _FanOut(io.RawIOBase):
    """The compressor's output: hashed, written to the local file, fed to every S3 leg and to the verifier."""

    def __init__(self, handle, uploads: list[_S3Upload], verifier: ArchiveVerifier | None = None):
        self.handle = handle
        self.uploads = uploads
        self.verifier = verifier
        self.digest = hashlib.sha256()
        self.bytes = 0

    def writable(self):
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        self.handle.write(data)
        if self.uploads or self.verifier is not None:
            data = bytes(data)
            for upload in self.uploads:
                upload.feed(data)
            if self.verifier is not None:
                self.verifier.write(data)
        size = len(data)
        self.bytes += size
        return size


# pg_dump's --lock-wait-timeout ends with "Query was: LOCK TABLE <name> IN ACCESS SHARE MODE" (or,
# in older versions, "could not obtain lock on relation <name>").
_LOCK_TIMEOUT = re.compile(r'Query was: LOCK TABLE (\S+) IN ACCESS SHARE MODE|could not obtain lock on relation "?([^"\n]+)"?')


_PERMISSION_DENIED = re.compile(r"permission denied for (\w+) (\S+)")


def _pg_dump_failure(returncode: int, errors: str, lock_wait_timeout: float | None, redactor: Redactor) -> BackupStepError:
    denied = _PERMISSION_DENIED.search(errors)
    if denied:  # pg_dump reports it on its LOCK TABLE query too: it is no lock wait, and no retry helps
        return BackupStepError("pg_dump", redactor(
            f"pg_dump may not read {denied.group(1)} {denied.group(2)}: permission denied; the role in the database "
            "URL needs SELECT on everything it backs up (e.g. GRANT pg_read_all_data TO it)"))
    locked = _LOCK_TIMEOUT.search(errors)
    if locked and lock_wait_timeout:
        return BackupStepError("lock-wait", redactor(
            f"pg_dump could not lock table {locked.group(1) or locked.group(2)} within {lock_wait_timeout:g}s "
            "(BACKUP_LOCK_WAIT_TIMEOUT_SECONDS): another session holds it, e.g. a migration"))
    return BackupStepError("pg_dump", redactor(f"pg_dump exited with code {returncode}: {tail(errors) or 'no output'}"))


def run_dump(
    database_url: str,
    destination: Path,
    *,
    compression: Compression = Compression(),
    s3: S3Leg | None = None,
    destinations: tuple[S3Leg, ...] | list[S3Leg] = (),
    redactor: Redactor | None = None,
    progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 2.0,
    extra_args: tuple[str, ...] = (),
    lock_wait_timeout: float | None = None,
    timeout: float | None = None,
    s3_stall_seconds: float = 30.0,
    s3_finish_seconds: float = 3600.0,
    verify: bool = True,
) -> DumpResult:
    """Dump ``database_url`` to ``destination`` (and S3, and each off-site leg of ``destinations``)
    in one pass. Raises BackupStepError. Each leg uploads in its own thread: one that fails or
    stalls is given up alone (``DumpResult.s3`` / ``DumpResult.destinations`` say why).

    Every wait is bounded: pg_dump's table locks (``lock_wait_timeout``), the whole dump
    (``timeout``: pg_dump is killed), S3 accepting data (``s3_stall_seconds``: the S3 leg is given
    up and the dump goes on locally) and the end of the upload (``s3_finish_seconds``).

    With ``verify``, the stored bytes are decompressed and read by ``pg_restore`` in the same pass
    (``DumpResult.decode``), so the backup is checked without reading the archive again."""
    redactor = redactor or Redactor()
    destination = Path(destination)
    private_dir(destination.parent)
    if destination.exists():
        raise BackupStepError("prepare", f"{destination.name} already exists")
    temporary = destination.with_name(f".{destination.name}.partial")
    started = time.monotonic()
    uploads = [_S3Upload(leg, redactor, s3_stall_seconds) for leg in ([s3] if s3 else []) + list(destinations)]
    verifier = None
    decode = None
    process = None
    timed_out = threading.Event()
    watchdog = None
    with client_connection(database_url) as connection, tempfile.TemporaryFile() as stderr:
        try:
            command = ["pg_dump", "--format=custom", "--compress=0", "--no-password", *extra_args]
            if lock_wait_timeout:
                command.append(f"--lock-wait-timeout={int(lock_wait_timeout * 1000)}")
            command.append(f"--dbname={connection.conninfo}")
            try:
                process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr,
                                           env=connection.env, bufsize=READ_CHUNK)
            except FileNotFoundError:
                raise BackupStepError("pg_dump", "pg_dump not found on PATH (install the PostgreSQL client)") from None
            if timeout:
                def expire(process=process):
                    timed_out.set()
                    with contextlib.suppress(OSError):
                        process.kill()
                watchdog = threading.Timer(timeout, expire)
                watchdog.daemon = True
                watchdog.start()
            with contextlib.suppress(OSError):
                fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            verifier = ArchiveVerifier(compression.name) if verify else None
            with open_private(temporary) as handle:
                sink = _FanOut(handle, uploads, verifier)
                raw_bytes = 0
                last_report = started
                with compression.writer(sink) as compressor:
                    while chunk := process.stdout.read(READ_CHUNK):
                        raw_bytes += len(chunk)
                        compressor.write(chunk)
                        now = time.monotonic()
                        if progress and now - last_report >= progress_interval:
                            last_report = now
                            progress(Progress(raw_bytes, sink.bytes, now - started))
                returncode = process.wait()
                stderr.seek(0)
                errors = stderr.read().decode(errors="replace")
                if timed_out.is_set():
                    raise BackupStepError("timeout", f"the dump did not finish within {timeout:g}s "
                                                     "(BACKUP_TIMEOUT_MINUTES) and was stopped")
                if returncode != 0:
                    raise _pg_dump_failure(returncode, errors, lock_wait_timeout, redactor)
                if raw_bytes == 0:
                    raise BackupStepError("pg_dump", "pg_dump produced no output")
                handle.flush()
                os.fsync(handle.fileno())
            if verifier is not None:
                remaining = timeout - (time.monotonic() - started) if timeout else None
                decode = verifier.finish(max(60.0, remaining) if remaining is not None else None)
                verifier = None
            os.replace(temporary, destination)
            fsync_dir(destination.parent)
        except BaseException as error:
            if process and process.poll() is None:
                process.kill()
                process.wait()
            _abort_all(uploads)
            if verifier is not None:
                verifier.abort()
            temporary.unlink(missing_ok=True)
            if isinstance(error, BackupStepError):
                raise
            if isinstance(error, OSError):
                raise BackupStepError("write-local", redactor(f"{type(error).__name__}: {error}")) from None
            raise
        finally:
            if watchdog:
                watchdog.cancel()
    for upload in uploads:
        upload.send_eof()
    finish_by = time.monotonic() + s3_finish_seconds
    results = [upload.complete(max(1.0, finish_by - time.monotonic())) for upload in uploads]
    s3_result = results[0] if s3 else None
    destination_results = {upload.leg.name: result for upload, result in zip(uploads, results)
                           if upload.leg is not s3}
    duration = time.monotonic() - started
    if progress:
        progress(Progress(raw_bytes, sink.bytes, duration, done=True))
    return DumpResult(
        local_path=destination,
        raw_bytes=raw_bytes,
        stored_bytes=sink.bytes,
        sha256=sink.digest.hexdigest(),
        duration_seconds=duration,
        s3=s3_result,
        stderr=redactor(errors),
        decode=decode,
        destinations=destination_results,
    )
