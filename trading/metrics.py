"""Rolling measurements kept in the process: time-to-accept, time-to-fill and friends.

Plain data and a lock; the clock is passed in so tests drive it.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from trading.domain import ACCEPTED, STATUSES



def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1)))))
    return ordered[rank]


@dataclass
class RollingWindow:
    """Samples of the last `window_s` seconds."""

    window_s: float = 30.0
    max_samples: int = 5000
    _samples: deque[tuple[float, float]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, now_s: float, value: float) -> None:
        with self._lock:
            self._samples.append((now_s, value))
            while len(self._samples) > self.max_samples:
                self._samples.popleft()

    def values(self, now_s: float, within_s: float | None = None) -> list[float]:
        with self._lock:
            while self._samples and self._samples[0][0] < now_s - self.window_s:
                self._samples.popleft()
            since = now_s - within_s if within_s is not None else float("-inf")
            return [v for t, v in self._samples if t >= since]


class StreamRecord(Protocol):
    """What fill_samples reads of a trading.streams.ChangeRecord."""

    region: str
    new_image: dict[str, Any] | None
    old_image: dict[str, Any] | None


def fill_samples(records: Iterable[StreamRecord]) -> list[tuple[str, int, float]]:
    """(region, decision ms, time-to-fill ms) for each order that a batch of Orders stream
    records shows leaving ACCEPTED in its own region's table: from its accept (createdAt) to
    the engine's first decision on it. Under SimFill that is its final status; under the
    matcher it is the final status or the moment it rests in the book (OPEN), so the time an
    order waits there for a counterparty, which is the market's and not the system's, does
    not count. A replica's record (another region's copy) and a later change of an order
    already decided count nothing."""
    samples = []
    for record in records:
        new, old = record.new_image, record.old_image
        if not new or not str(new.get("pk", "")).startswith("ORDER#") or new.get("region") != record.region:
            continue
        status = new.get("status")
        if status == ACCEPTED or status not in STATUSES or (old is not None and old.get("status") != ACCEPTED):
            continue
        try:
            created_ms, final_ms = int(new["createdAt"]), int(new.get("updatedAt", new["createdAt"]))
        except (KeyError, TypeError, ValueError):
            continue
        samples.append((str(record.region), final_ms, float(max(0, final_ms - created_ms))))
    return samples


def _percentiles(windows: list[RollingWindow], now_s: float, within_s: float | None) -> tuple[float | None, float | None]:
    values: list[float] = []
    for window in windows:
        values.extend(window.values(now_s, within_s))
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return (round(p50, 1) if p50 is not None else None, round(p99, 1) if p99 is not None else None)


@dataclass
class Metrics:
    """Per-region rolling time-to-accept and time-to-fill (ms); client retries."""

    time_to_accept: dict[str, RollingWindow] = field(default_factory=dict)
    # Accept to final status, per order, in the region that accepted it.
    time_to_fill: dict[str, RollingWindow] = field(default_factory=dict)
    # Clients that resent an order they saw no settlement of (a timeout), one sample each.
    client_retries: RollingWindow = field(default_factory=RollingWindow)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record_accept(self, region: str, now_s: float, ms: float) -> None:
        with self._lock:
            window = self.time_to_accept.setdefault(region, RollingWindow())
        window.add(now_s, ms)

    def record_fill(self, region: str, now_s: float, ms: float) -> None:
        with self._lock:
            window = self.time_to_fill.setdefault(region, RollingWindow())
        window.add(now_s, ms)

    def record_fills(self, records: Iterable[StreamRecord], now_s: float) -> int:
        """Time-to-fill of the orders a batch of stream records finishes. An order whose
        final status is older than the window (a stream re-read from its start) is left out."""
        taken = 0
        for region, final_ms, ms in fill_samples(records):
            window = self.time_to_fill.get(region)
            if final_ms / 1000 < now_s - (window.window_s if window is not None else RollingWindow.window_s):
                continue
            self.record_fill(region, now_s, ms)
            taken += 1
        return taken

    def record_retry(self, now_s: float) -> None:
        self.client_retries.add(now_s, 1.0)

    def retries_within(self, now_s: float, within_s: float) -> int:
        return len(self.client_retries.values(now_s, within_s))

    def accept_percentiles(
        self, now_s: float, region: str | None = None, within_s: float | None = None
    ) -> tuple[float | None, float | None]:
        with self._lock:
            windows = [w for r, w in self.time_to_accept.items() if region is None or r == region]
        return _percentiles(windows, now_s, within_s)

    def fill_percentiles(
        self, now_s: float, region: str | None = None, within_s: float | None = None
    ) -> tuple[float | None, float | None]:
        with self._lock:
            windows = [w for r, w in self.time_to_fill.items() if region is None or r == region]
        return _percentiles(windows, now_s, within_s)


METRICS = Metrics()


# --- round trips: each browser's socket, each region's API --------------------------------

MAX_ROUND_TRIP_MS = 60_000.0
MAX_PING_CHARS = 200


def parse_ping(text: str | None) -> tuple[Any, float | None] | None:
    """A dashboard page's ping, `{"type": "ping", "t": <its clock, ms>, "rtt": <its last
    round trip, ms, or null>}`: (the `t` to echo, the reported round trip), or None when the
    text is no ping. A round trip that is not a plausible number is dropped, not trusted."""
    if not text or len(text) > MAX_PING_CHARS:
        return None
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("type") != "ping":
        return None
    stamp = message.get("t")
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool) or not math.isfinite(stamp):
        stamp = None
    rtt = message.get("rtt")
    if isinstance(rtt, bool) or not isinstance(rtt, (int, float)) or not 0 <= rtt <= MAX_ROUND_TRIP_MS:
        rtt = None
    return stamp, float(rtt) if rtt is not None else None


@dataclass
class ApiProbe:
    """A region's last health probe: its round trip (None when it failed) and when."""

    ms: float | None
    at_ms: int
    error: str = ""


@dataclass
class RoundTrips:
    """The dashboard sockets' round trips as their pages report them (a page times its own
    ping and pong and sends the figure with its next ping), and each region's API probe."""

    socket: RollingWindow = field(default_factory=RollingWindow)
    api: dict[str, ApiProbe] = field(default_factory=dict)
    _reporters: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record_socket(self, socket_id: str, now_s: float, ms: float) -> None:
        self.socket.add(now_s, ms)
        with self._lock:
            self._reporters[socket_id] = now_s

    def socket_figures(self, now_s: float) -> dict[str, Any]:
        """p50/p99 over every browser's reports of the last 30 s, and how many browsers reported."""
        p50, p99 = _percentiles([self.socket], now_s, None)
        with self._lock:
            for socket_id in [s for s, t in self._reporters.items() if t < now_s - self.socket.window_s]:
                del self._reporters[socket_id]
            browsers = len(self._reporters)
        return {"socket_rtt_p50_ms": p50, "socket_rtt_p99_ms": p99, "socket_rtt_browsers": browsers}

    def record_api(self, region: str, probe: ApiProbe) -> None:
        with self._lock:
            self.api[region] = probe

    def api_figures(self, region: str) -> dict[str, Any]:
        with self._lock:
            probe = self.api.get(region)
        if probe is None:
            return {"api_rtt_ms": None, "api_rtt_at_ms": None, "api_rtt_error": ""}
        return {"api_rtt_ms": probe.ms, "api_rtt_at_ms": probe.at_ms, "api_rtt_error": probe.error}


ROUND_TRIPS = RoundTrips()
