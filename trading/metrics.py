"""Rolling measurements kept in the process: time-to-accept and friends.

Plain data and a lock; the clock is passed in so tests drive it.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


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


@dataclass
class Metrics:
    """Per-region rolling time-to-accept (ms)."""

    time_to_accept: dict[str, RollingWindow] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record_accept(self, region: str, now_s: float, ms: float) -> None:
        with self._lock:
            window = self.time_to_accept.setdefault(region, RollingWindow())
        window.add(now_s, ms)

    def accept_percentiles(
        self, now_s: float, region: str | None = None, within_s: float | None = None
    ) -> tuple[float | None, float | None]:
        with self._lock:
            windows = [w for r, w in self.time_to_accept.items() if region is None or r == region]
        values: list[float] = []
        for window in windows:
            values.extend(window.values(now_s, within_s))
        p50, p99 = percentile(values, 50), percentile(values, 99)
        return (round(p50, 1) if p50 is not None else None, round(p99, 1) if p99 is not None else None)


METRICS = Metrics()
