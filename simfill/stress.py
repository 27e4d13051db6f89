"""CPU stress on a SimFill task (`aws:ecs:task-cpu-stress`), done locally and for real.

FIS runs stress-ng inside the task, and the fill work gets what the stressor leaves of
the task's CPU. Locally the stressor runs on the task's own thread: before each message
the thread spends the stressed percent of a time slice hashing (real CPU time, seen by
`time.thread_time()` on that thread and in the process's rusage), and the fill work runs
in what is left. A task stressed at 90 % so fills about two orders a second instead of
dozens: its queue backs up, time-to-fill rises, clients that wait too long retry. The
engine (simfill.engine) knows nothing of it.

hashlib releases the GIL while it hashes a buffer above 2 KiB, so the burn loads a core,
not the interpreter: the other threads of the embedded default keep running beside it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

# A stressed task loses `percent` of this much time before each message it applies.
SLICE_S = 0.5
_BLOCK = bytes(64 * 1024)


class CpuStress:
    """The stressor of one task. `percent` (0-100) is set by the fault plane."""

    def __init__(self, slice_s: float = SLICE_S, clock: Callable[[], float] = time.monotonic):
        self.percent = 0
        self.slice_s = slice_s
        self.clock = clock

    def burn(self, stop: threading.Event | None = None) -> float:
        """Hash for the stressed share of one slice, on the calling thread; returns the
        seconds it took (0.0 when unstressed). A set `stop` (the task stopped) cuts it short."""
        percent = max(0, min(100, int(self.percent)))
        if not percent:
            return 0.0
        started = self.clock()
        until = started + self.slice_s * percent / 100
        digest = hashlib.sha256()
        while self.clock() < until:
            digest.update(_BLOCK)
            if stop is not None and stop.is_set():
                break
        return self.clock() - started
