"""Tape divergence: the trades on one region's tape and not on another's, kept live.

Fed with the trade ids each region's Trades stream shows inserted (its own fills and the
replicas of other regions'), it holds, for every trade not yet on every tape, the regions
whose tape has it, and per ordered pair (a, b) how many trades a's tape has that b's has
not. A trade on every tape is dropped (trades are written once and never deleted), so what
it keeps is what diverges, not the tapes. Plain data and a lock: no AWS, no clock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

# Trades lately seen on every tape: a stream batch read twice (its handler failed and the
# reader went back) must not make them look new. Far more than one batch.
SETTLED_MEMORY = 20_000


class TapeDivergence:
    def __init__(self, regions: Iterable[str], settled_memory: int = SETTLED_MEMORY):
        self.regions = frozenset(regions)
        self.settled_memory = settled_memory
        self._held: dict[str, frozenset[str]] = {}
        self._settled: OrderedDict[str, None] = OrderedDict()
        self._missing: dict[tuple[str, str], int] = {(a, b): 0 for a in self.regions for b in self.regions if a != b}
        self._lock = threading.Lock()

    def on_tape(self, region: str, trade_ids: Iterable[str]) -> None:
        """`region`'s tape now holds these trades."""
        self.apply(region, ((trade_id, True) for trade_id in trade_ids))

    def apply(self, region: str, changes: Iterable[tuple[str, bool]]) -> None:
        """In stream order, (trade id, on the tape): an insert True; a removal False (the
        project's moto takes a part-failed transaction's puts back that way)."""
        if region not in self.regions:
            return
        with self._lock:
            for trade_id, present in changes:
                if trade_id in self._settled:
                    if present:
                        continue
                    del self._settled[trade_id]
                    before = self.regions
                else:
                    before = self._held.get(trade_id, frozenset())
                after = before | {region} if present else before - {region}
                if after == before:
                    continue
                self._move(trade_id, region, before, after)

    def _move(self, trade_id: str, region: str, before: frozenset[str], after: frozenset[str]) -> None:
        gained = region in after
        for other in self.regions - {region}:
            if other not in before and other not in after:
                self._missing[(region, other)] += 1 if gained else -1
            elif other in before and other in after:
                self._missing[(other, region)] += -1 if gained else 1
        if after == self.regions:
            self._held.pop(trade_id, None)
            self._settled[trade_id] = None
            while len(self._settled) > self.settled_memory:
                self._settled.popitem(last=False)
        elif after:
            self._held[trade_id] = after
        else:
            self._held.pop(trade_id, None)

    def missing(self, have: str, lack: str) -> int:
        """Trades on `have`'s tape that are not on `lack`'s."""
        with self._lock:
            return self._missing.get((have, lack), 0)

    def total(self) -> int:
        """Trades on some region's tape and missing from another's, each counted once."""
        with self._lock:
            return len(self._held)
