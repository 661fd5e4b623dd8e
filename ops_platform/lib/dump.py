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
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from ops_platform.lib.postgres import client_connection
from ops_platform.lib.redact import Redactor, tail
from ops_platform.lib.stores import fsync_dir

READ_CHUNK = 1 << 20
S3_PART_SIZE = 8 << 20
ZSTD_JOB_SIZE = 2 << 20
PIPE_SIZE = 1 << 20


class BackupStepError(RuntimeError):
    """A backup step failed. ``step`` names it for the alert; the message is already redacted."""

    def __init__(self, step: str, message: str):
        super().__init__(message)
        self.step = step


@dataclass(frozen=True)
class Compression:
    name: str = "zstd"
    level: int = 3
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


@dataclass
class S3LegResult:
    location: str
    ok: bool
    error: str | None = None


@dataclass
class DumpResult:
    local_path: Path
    raw_bytes: int
    stored_bytes: int
    sha256: str
    duration_seconds: float
    s3: S3LegResult | None = None
    stderr: str = ""


@dataclass
class Progress:
    raw_bytes: int = 0
    stored_bytes: int = 0
    elapsed: float = 0.0
    done: bool = False


class _UploadPipe(io.RawIOBase):
    """A readable stream fed by the dump loop, read by boto3's transfer manager in its thread.

    ``finish`` delivers EOF (only once the dump is known good); ``abort`` makes the next read
    raise, so the transfer manager aborts the multipart upload instead of completing it."""

    def __init__(self, max_chunks: int = 16):
        self._queue: queue.Queue = queue.Queue(maxsize=max_chunks)
        self._buffer = b""
        self._eof = False
        self._aborted = threading.Event()
        self.reader_gone = threading.Event()

    def readable(self):
        return True

    def feed(self, chunk: bytes) -> None:
        while not self.reader_gone.is_set():
            try:
                self._queue.put(bytes(chunk), timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self.feed(b"")

    def abort(self) -> None:
        self._aborted.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def _next_item(self) -> bytes:
        while True:
            if self._aborted.is_set():
                raise BackupStepError("s3-upload", "upload aborted because the dump failed")
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                raise BackupStepError("s3-upload", "upload aborted because the dump failed")
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


class _S3Upload:
    def __init__(self, leg: S3Leg, redactor: Redactor):
        from boto3.s3.transfer import TransferConfig

        self.leg = leg
        self.redactor = redactor
        self.pipe = _UploadPipe()
        self.error: str | None = None
        config = TransferConfig(
            multipart_threshold=S3_PART_SIZE,
            multipart_chunksize=S3_PART_SIZE,
            max_concurrency=2,
            use_threads=True,
            preferred_transfer_client="classic",
        )
        config.max_in_memory_upload_chunks = 2
        self._config = config
        self._thread = threading.Thread(target=self._run, name="s3-upload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.leg.client.upload_fileobj(
                self.pipe,
                self.leg.bucket,
                self.leg.key,
                ExtraArgs={"ContentType": "application/octet-stream", "ChecksumAlgorithm": "SHA256"},
                Config=self._config,
            )
        except BaseException as error:  # noqa: BLE001 - reported, never raised into the dump
            self.error = self.redactor(f"{type(error).__name__}: {error}")
        finally:
            self.pipe.reader_gone.set()

    def feed(self, chunk: bytes) -> None:
        if not self.pipe.reader_gone.is_set():
            self.pipe.feed(chunk)

    def complete(self, timeout: float | None = None) -> S3LegResult:
        self.pipe.finish()
        self._thread.join(timeout)
        location = f"s3://{self.leg.bucket}/{self.leg.key}"
        if self._thread.is_alive():
            self.pipe.abort()
            self.error = self.error or "upload did not finish in time"
        if self.error:
            self._clean_up_partial_upload()
            return S3LegResult(location, ok=False, error=self.error)
        return S3LegResult(location, ok=True)

    def abort(self) -> None:
        self.pipe.abort()
        self._thread.join(60)
        self._clean_up_partial_upload()

    def _clean_up_partial_upload(self) -> None:
        """The transfer manager aborts its own multipart upload; this catches one it could not."""
        from ops_platform.lib.stores import S3Store

        with contextlib.suppress(Exception):
            S3Store(self.leg.client, self.leg.bucket, "").abort_incomplete_uploads(self.leg.key)


class _FanOut(io.RawIOBase):
    """The compressor's output: hashed, written to the local file, and fed to S3."""

    def __init__(self, handle, upload: _S3Upload | None):
        self.handle = handle
        self.upload = upload
        self.digest = hashlib.sha256()
        self.bytes = 0

    def writable(self):
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        self.handle.write(data)
        if self.upload is not None:
            self.upload.feed(bytes(data))
        size = len(data)
        self.bytes += size
        return size


def run_dump(
    database_url: str,
    destination: Path,
    *,
    compression: Compression = Compression(),
    s3: S3Leg | None = None,
    redactor: Redactor | None = None,
    progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 2.0,
    extra_args: tuple[str, ...] = (),
) -> DumpResult:
    """Dump ``database_url`` to ``destination`` (and S3) in one pass. Raises BackupStepError."""
    if shutil.which("pg_dump") is None:
        raise BackupStepError("pg_dump", "pg_dump not found on PATH")
    redactor = redactor or Redactor()
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        raise BackupStepError("prepare", f"{destination.name} already exists")
    temporary = destination.with_name(f".{destination.name}.partial")
    started = time.monotonic()
    upload = _S3Upload(s3, redactor) if s3 else None
    process = None
    with client_connection(database_url) as connection, tempfile.TemporaryFile() as stderr:
        try:
            command = ["pg_dump", "--format=custom", "--compress=0", "--no-password",
                       *extra_args, f"--dbname={connection.conninfo}"]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr,
                                       env=connection.env, bufsize=READ_CHUNK)
            with contextlib.suppress(OSError):
                fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            with open(temporary, "wb") as handle:
                sink = _FanOut(handle, upload)
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
                if returncode != 0:
                    raise BackupStepError(
                        "pg_dump", redactor(f"pg_dump exited with code {returncode}: {tail(errors) or 'no output'}")
                    )
                if raw_bytes == 0:
                    raise BackupStepError("pg_dump", "pg_dump produced no output")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, destination)
            fsync_dir(destination.parent)
        except BaseException as error:
            if process and process.poll() is None:
                process.kill()
                process.wait()
            if upload:
                upload.abort()
            temporary.unlink(missing_ok=True)
            if isinstance(error, BackupStepError):
                raise
            if isinstance(error, OSError):
                raise BackupStepError("write-local", redactor(f"{type(error).__name__}: {error}")) from None
            raise
    s3_result = upload.complete() if upload else None
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
    )
