"""Checks that a stored backup is usable: it decodes completely and holds the tables' rows."""

from __future__ import annotations

import contextlib
import gzip
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

from ops_platform.lib.redact import tail

READ_CHUNK = 1 << 20
_COPY_LINE = re.compile(rb"^COPY (?P<table>.+?) \(.*\) FROM stdin;$")


@dataclass
class DecodeResult:
    ok: bool
    table_row_counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    script_bytes: int = 0


@contextlib.contextmanager
def open_decompressed(path: Path, compression: str) -> Iterator[BinaryIO]:
    with open(path, "rb") as raw:
        if compression == "zstd":
            with zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as reader:
                yield reader
        elif compression == "gzip":
            with gzip.GzipFile(fileobj=raw, mode="rb") as reader:
                yield reader
        else:
            raise ValueError(f"unknown compression '{compression}'")


def _unquote_table(name: bytes) -> str:
    return name.decode(errors="replace").replace('"', "")


def count_copy_rows(lines) -> dict[str, int]:
    """Rows per table in a pg_restore SQL script: the lines between COPY ... FROM stdin; and \\."""
    counts: dict[str, int] = {}
    table = None
    rows = 0
    for line in lines:
        if table is None:
            if line.startswith(b"COPY "):
                match = _COPY_LINE.match(line.rstrip(b"\n"))
                if match:
                    table, rows = _unquote_table(match["table"]), 0
        elif line == b"\\.\n":
            counts[table] = rows
            table = None
        else:
            rows += 1
    return counts


def decode_artifact(path: Path, compression: str, timeout: float | None = None) -> DecodeResult:
    """Decompress the stored file and run it through ``pg_restore -f -`` in full (not just
    ``--list``), counting each table's rows in the script it produces. pg_restore is stopped after
    ``timeout`` seconds."""
    feeder_error: list[str] = []
    expired = threading.Event()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            ["pg_restore", "--file=-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )

        def feed() -> None:
            try:
                with open_decompressed(path, compression) as reader:
                    while chunk := reader.read(READ_CHUNK):
                        process.stdin.write(chunk)
            except BrokenPipeError:
                pass
            except Exception as error:  # noqa: BLE001 - reported as the check's reason
                feeder_error.append(f"{type(error).__name__}: {error}")
            finally:
                with contextlib.suppress(OSError):
                    process.stdin.close()

        feeder = threading.Thread(target=feed, name="decode-feed", daemon=True)
        feeder.start()
        watchdog = None
        if timeout:
            def expire():
                expired.set()
                with contextlib.suppress(OSError):
                    process.kill()
            watchdog = threading.Timer(timeout, expire)
            watchdog.daemon = True
            watchdog.start()
        try:
            counts = count_copy_rows(iter(process.stdout.readline, b""))
            returncode = process.wait()
        finally:
            if watchdog:
                watchdog.cancel()
        feeder.join()
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace")
    if expired.is_set():
        return DecodeResult(False, counts, f"verification did not finish within {timeout:g}s (BACKUP_TIMEOUT_MINUTES)")
    if feeder_error:
        return DecodeResult(False, counts, f"decompression failed: {feeder_error[0]}")
    if returncode != 0:
        return DecodeResult(False, counts, f"pg_restore exited with code {returncode}: {tail(errors, 5)}")
    return DecodeResult(True, counts)
