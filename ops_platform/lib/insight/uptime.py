"""Availability, outages and latency per component from a stream of health-check results.

Feed ``UptimeAccumulator.add(at, environment, component, ok, latency_seconds)`` in time order (it
streams: memory is O(components × windows), whatever the history's length), then read
``results()`` for the windows ending at ``now`` (24 h, 7 d and 30 d by default).

Definitions:
- **Coverage.** Each result covers the time from its own ``at`` until the next result of the same
  component, but at most ``max_gap_factor`` × ``expected_interval_seconds`` (2 × 5 min): a result
  says nothing about the time after a gap in monitoring. The last result covers until ``now``
  under the same cap. Uncovered time is *no data*: it is neither up nor down.
- **Availability** = up time / covered time, over the window. ``coverage`` = covered time / window
  length is reported next to it, so "100 % of a week that was 40 % observed" cannot pass for a
  good week. A 30-minute outage in a fully observed week is 1 - 1800 / 604800 = 99.70 %.
- ``ok`` is the probe's verdict: ``degraded`` (slow but answering) counts as up.
- **Outage** (incident): a run of consecutive failed results. Its downtime is the time those results
  cover; it ends at the next good result. ``incidents`` counts outages with downtime inside the
  window; ``longest_downtime_seconds`` is the longest such downtime (clipped to the window);
  ``mean_time_to_recover_seconds`` is the mean full downtime of the outages that ended in the
  window; an outage still going at ``now`` is ``open_outage_seconds``.
- **Latency** percentiles cover the good results (a failed probe's latency is its timeout). They
  come from a fixed histogram of log-spaced buckets (``LatencyHistogram``): nearest-rank, within
  ±4.9 % of the true sample, clipped to the observed minimum and maximum.
"""

from __future__ import annotations

import math
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime

from ops_platform.lib.insight import known_fields

DAY = 86400.0
DEFAULT_WINDOWS: tuple[tuple[str, float], ...] = (("24h", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY))


def epoch(moment: float | datetime) -> float:
    """Epoch seconds from a number or an aware datetime."""
    return moment.timestamp() if isinstance(moment, datetime) else float(moment)


class LatencyHistogram:
    """Bounded-memory latency distribution: buckets from 1 ms to 100 s growing by 10 % each
    (122 buckets, plus one below and one above), so any percentile is within ±4.9 % of a real
    sample (the bucket's geometric middle), and exact at the observed minimum and maximum."""

    LOWEST = 0.001
    RATIO = 1.1
    BUCKETS = math.ceil(math.log(100.0 / LOWEST) / math.log(RATIO))

    def __init__(self) -> None:
        self.counts = [0] * (self.BUCKETS + 2)
        self.count = 0
        self.minimum = math.inf
        self.maximum = 0.0

    def add(self, seconds: float) -> None:
        """Record one latency (negative values count as zero)."""
        seconds = max(0.0, float(seconds))
        if seconds < self.LOWEST:
            index = 0
        else:
            index = min(self.BUCKETS + 1, 1 + int(math.log(seconds / self.LOWEST) / math.log(self.RATIO)))
        self.counts[index] += 1
        self.count += 1
        self.minimum = min(self.minimum, seconds)
        self.maximum = max(self.maximum, seconds)

    def percentile(self, fraction: float) -> float | None:
        """The nearest-rank percentile (``fraction`` 0.95 for p95), or None without samples."""
        if not self.count:
            return None
        rank = max(1, math.ceil(fraction * self.count))
        if rank == 1:
            return self.minimum
        if rank >= self.count:
            return self.maximum
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                break
        if index == 0:
            return self.minimum
        if index == self.BUCKETS + 1:
            return self.maximum
        middle = self.LOWEST * self.RATIO ** (index - 0.5)
        return min(self.maximum, max(self.minimum, middle))


@dataclass
class ComponentUptime:
    """One component's figures over one window ending at ``now``. Seconds throughout."""

    environment: str
    component: str
    window: str
    window_seconds: float
    availability: float | None
    coverage: float
    up_seconds: float
    down_seconds: float
    incidents: int
    longest_downtime_seconds: float
    mean_time_to_recover_seconds: float | None
    open_outage_seconds: float | None
    checks: int
    failed_checks: int
    latency_p50: float | None
    latency_p95: float | None

    @property
    def availability_percent(self) -> str:
        """e.g. '99.70 %', or 'no data'."""
        return "no data" if self.availability is None else f"{100 * self.availability:.2f} %"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> ComponentUptime:
        return cls(**known_fields(cls, data))


@dataclass
class _Window:
    label: str
    seconds: float
    start: float
    up: float = 0.0
    down: float = 0.0
    incidents: int = 0
    longest: float = 0.0
    recovered: int = 0
    recovery_total: float = 0.0
    checks: int = 0
    failed: int = 0
    outage_clipped: float = 0.0
    outage_counted: bool = False
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass
class _Component:
    windows: list[_Window]
    last_at: float | None = None
    last_ok: bool = True
    outage_seconds: float | None = None


class UptimeAccumulator:
    """Streaming uptime figures for every (environment, component) seen; see the module docstring."""

    def __init__(self, now: float | datetime, *, expected_interval_seconds: float = 300.0,
                 max_gap_factor: float = 2.0, windows: Iterable[tuple[str, float]] = DEFAULT_WINDOWS):
        self.now = epoch(now)
        self.cap = expected_interval_seconds * max_gap_factor
        self.windows = tuple(windows)
        self.components: dict[tuple[str, str], _Component] = {}
        self.skipped = 0

    def add(self, at: float | datetime, environment: str, component: str, ok: bool,
            latency_seconds: float | None = None) -> None:
        """One result. Results after ``now`` or older than the component's previous one are skipped
        (and counted in ``skipped``)."""
        at = epoch(at)
        state = self.components.get((environment, component))
        if state is None:
            state = self.components[(environment, component)] = _Component(
                [_Window(label, seconds, self.now - seconds) for label, seconds in self.windows])
        if at > self.now or (state.last_at is not None and at < state.last_at):
            self.skipped += 1
            return
        if state.last_at is not None:
            self._cover(state, state.last_at, min(at, state.last_at + self.cap))
        if ok and state.outage_seconds is not None:
            self._end_outage(state, at)
        if not ok and state.outage_seconds is None:
            state.outage_seconds = 0.0
        state.last_at, state.last_ok = at, ok
        for window in state.windows:
            if at >= window.start:
                window.checks += 1
                window.failed += not ok
                if ok and latency_seconds is not None:
                    window.latency.add(latency_seconds)

    def extend(self, results: Iterable[tuple]) -> UptimeAccumulator:
        """``add`` for each ``(at, environment, component, ok, latency_seconds)``; returns self."""
        for result in results:
            self.add(*result)
        return self

    def _cover(self, state: _Component, start: float, end: float) -> None:
        if end <= start:
            return
        if not state.last_ok:
            state.outage_seconds += end - start
        for window in state.windows:
            overlap = min(end, self.now) - max(start, window.start)
            if overlap <= 0:
                continue
            if state.last_ok:
                window.up += overlap
                continue
            window.down += overlap
            window.outage_clipped += overlap
            if not window.outage_counted:
                window.outage_counted = True
                window.incidents += 1

    def _end_outage(self, state: _Component, at: float) -> None:
        for window in state.windows:
            window.longest = max(window.longest, window.outage_clipped)
            if at >= window.start and window.outage_counted:
                window.recovered += 1
                window.recovery_total += state.outage_seconds
            window.outage_clipped, window.outage_counted = 0.0, False
        state.outage_seconds = None

    def results(self) -> list[ComponentUptime]:
        """The figures per environment, component and window (sorted), without changing the state."""
        found = []
        for (environment, component), state in sorted(self.components.items()):
            tail_end = min(self.now, state.last_at + self.cap) if state.last_at is not None else None
            for window in state.windows:
                up, down, longest = window.up, window.down, window.longest
                incidents, open_outage = window.incidents, None
                if tail_end is not None:
                    overlap = max(0.0, tail_end - max(state.last_at, window.start))
                    if state.last_ok:
                        up += overlap
                    else:
                        down += overlap
                        longest = max(longest, window.outage_clipped + overlap)
                        incidents += overlap > 0 and not window.outage_counted
                if state.outage_seconds is not None and tail_end is not None:
                    open_outage = state.outage_seconds + max(0.0, tail_end - state.last_at)
                covered = up + down
                found.append(ComponentUptime(
                    environment, component, window.label, window.seconds,
                    availability=up / covered if covered > 0 else None,
                    coverage=min(1.0, covered / window.seconds),
                    up_seconds=up, down_seconds=down, incidents=int(incidents), longest_downtime_seconds=longest,
                    mean_time_to_recover_seconds=(window.recovery_total / window.recovered
                                                  if window.recovered else None),
                    open_outage_seconds=open_outage, checks=window.checks, failed_checks=window.failed,
                    latency_p50=window.latency.percentile(0.50), latency_p95=window.latency.percentile(0.95)))
        return found


def uptime_from_results(results: Iterable[tuple], now: float | datetime, **options) -> list[ComponentUptime]:
    """Convenience: one pass of an iterator of ``(at, environment, component, ok, latency)``."""
    return UptimeAccumulator(now, **options).extend(results).results()


class NewestFirstSpool:
    """Results as the event log pages them (newest first), replayed oldest first for
    ``UptimeAccumulator`` with memory that does not grow with the history: each result is packed
    into a temporary file (21 bytes) and read back from the end in blocks. ``key`` tells apart the
    databases of one fleet result (an index the caller keeps).

    ``add(at, ok, latency_seconds, key)`` while reading; ``oldest_first()`` once done; ``close()``."""

    _RECORD = struct.Struct("<d?dI")
    BLOCK = 4096

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()
        self.count = 0

    def add(self, at: float, ok: bool, latency_seconds: float | None, key: int = 0) -> None:
        self._file.write(self._RECORD.pack(float(at), bool(ok),
                                           math.nan if latency_seconds is None else float(latency_seconds), key))
        self.count += 1

    def oldest_first(self) -> Iterator[tuple[float, bool, float | None, int]]:
        """``(at, ok, latency_seconds, key)``, oldest first."""
        size = self._RECORD.size
        self._file.flush()
        end = self.count
        while end > 0:
            start = max(0, end - self.BLOCK)
            self._file.seek(start * size)
            block = self._file.read((end - start) * size)
            for index in range(end - start - 1, -1, -1):
                at, ok, latency, key = self._RECORD.unpack_from(block, index * size)
                yield at, ok, None if math.isnan(latency) else latency, key
            end = start
        self._file.seek(0, 2)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> NewestFirstSpool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
