"""Decompressing a backup as a stream, in bounded pieces: zstd (the default) or gzip. Used where
a backup is read back: the backup's own check, and a restore's fetch."""

from __future__ import annotations

import io
import zlib

import zstandard

READ_CHUNK = 1 << 20  # the unit of every streamed read and write (dump, verify, fetch, S3)


class StreamDecoder:
    """Decompresses what is written to it into ``sink`` (anything with ``write``), counting the
    raw bytes. ``finish`` raises ValueError for a gzip stream cut short (zstd frames carry their
    own checksums; a cut zstd stream shows in the byte count)."""

    def __init__(self, compression: str, sink):
        self.sink = sink
        self.raw_bytes = 0
        self.compression = compression
        if compression == "zstd":
            self._zstd = zstandard.ZstdDecompressor().stream_writer(_Emitter(self), closefd=False)
        elif compression == "gzip":
            self._gzip = zlib.decompressobj(wbits=31)
        else:
            raise ValueError(f"unknown compression '{compression}'")

    def _emit(self, data) -> None:
        self.sink.write(data)
        self.raw_bytes += len(data)

    def write(self, chunk: bytes) -> None:
        if self.compression == "zstd":
            self._zstd.write(chunk)
            return
        data = chunk
        while data:
            if self._gzip.eof:  # a further gzip member follows
                data = self._gzip.unused_data + data
                self._gzip = zlib.decompressobj(wbits=31)
            self._emit(self._gzip.decompress(data, READ_CHUNK))
            data = self._gzip.unconsumed_tail
            if self._gzip.eof and self._gzip.unused_data:
                data = self._gzip.unused_data + data
                self._gzip = zlib.decompressobj(wbits=31)

    def finish(self) -> None:
        if self.compression == "zstd":
            self._zstd.flush()
            return
        while True:
            out = self._gzip.flush(READ_CHUNK) if not self._gzip.eof else b""
            if not out:
                break
            self._emit(out)
        if not self._gzip.eof:
            raise ValueError("the gzip stream ends before its last block (truncated)")


class _Emitter(io.RawIOBase):
    def __init__(self, decoder: StreamDecoder):
        self.decoder = decoder

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.decoder._emit(data)
        return len(data)
