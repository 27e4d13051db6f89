"""The reconcile worker: the adapter around the pure reconciler.

It consumes every region's Orders and Trades Streams (the original writes only, never
a replica), so it holds each region's own copy of every order even where last-writer-
wins later overwrote it, and every region's fills. After a partition heals (no pair
cut), it asks `reconciler.reconcile` about the orders that changed and writes each
decision it has not written yet to the reconcile table of its home region with a
conditional put on the record's deterministic id (the replicator carries the table to
the other regions). Events are published after each successful put; a replay writes
and publishes nothing.

Memory is bounded by age, not by the history's length: an order that can no longer
change a decision (settled, decided, held by every region, its newest fact older than
the horizon in the streams' own time: `reconciler.retire`) leaves the working state and
is kept as a tombstone (its copies and fills, without the indexes) until its newest fact
is two horizons old. So what the worker holds beyond the orders still in flight (not
settled, or not yet in every region) is what was written in the last two horizons. A
record of a retired order that says nothing new (a repeated write, the outbox flag's
removal) is dropped there instead of starting a half-known order again; one that does
say something new (which the retirement rule says cannot happen) brings the order back
from its tombstone and is decided with everything it knew.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from reconcile_panel import events as reconcile_events
from reconcile_panel.codec import acceptance_from_order_item, decision_items, fills_from_trade_item
from reconcile_panel.limits import position_deltas, position_limits
from reconcile_panel.reconciler import (
    FINAL,
    SUPERSEDED,
    ZERO,
    Acceptance,
    Decisions,
    Fill,
    Ledger,
    Opening,
    reconcile,
    retire,
    unsettled_orders,
)
from reconcile_panel.replication import is_replica, version_ms
from reconcile_panel.store import ReconcileStore
from trading.config import ExchangeConfig
from trading.store import SequenceStore, table_names
from trading.streams import ChangeRecord, StreamTailer

log = logging.getLogger(__name__)


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic collector off while building many acyclic records.

    It would rescan everything alive (the whole ledger too) on every full collection
    the allocations trigger, which makes a large run superlinear. Counted, so that
    overlapping pauses in several threads re-enable it only when the last one ends.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


Partitioned = Callable[[str, str], bool]


def never_partitioned(a: str, b: str) -> bool:
    return False


@dataclass(frozen=True)
class RunResult:
    held: bool  # a partition is active: decisions wait for the heal
    conflicts: int = 0
    compensations: int = 0
    adjustments: int = 0

    @property
    def written(self) -> int:
        return self.conflicts + self.compensations + self.adjustments


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A retired order, kept one more horizon: what it knew, to judge a late record by."""

    newest_ms: int  # its newest fact: it goes once that is two horizons old
    copies: tuple[Acceptance, ...]
    fills: tuple[Fill, ...]
    share: Decimal  # what it added to its account's opening (markets with a limit)


class ReconcileWorker:
    def __init__(
        self,
        config: ExchangeConfig,
        partitioned: Partitioned = never_partitioned,
        home_region: str | None = None,
        limits: dict[str, Decimal] | None = None,
        tail: bool = True,
        poll_interval_s: float = 0.25,
        horizon_s: float | None = None,
    ):
        self.config = config
        self.partitioned = partitioned
        self.home_region = home_region or config.regions[0]
        self.limits = position_limits(config) if limits is None else dict(limits)
        self.reference_prices = {m.symbol: m.reference_price for m in config.markets}
        self.store = ReconcileStore.for_region(self.home_region, config.table_prefix)
        self.sequences = SequenceStore(self.home_region, table_names(config.table_prefix)["sequences"])
        self.poll_interval_s = poll_interval_s
        self.copies: dict[tuple[str, str], Acceptance] = {}
        # (trade id, order id) -> the fill: a matched trade fills its taker and its maker.
        self.fills: dict[tuple[str, str], Fill] = {}
        self._fills_by_order: dict[str, set[str]] = defaultdict(set)
        # order id -> the other real orders its matched trades filled (decided together).
        self._paired: dict[str, set[str]] = defaultdict(set)
        self._regions_by_order: dict[str, set[str]] = defaultdict(set)
        self._orders_by_account: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._touched: set[str] = set()
        self._written: set[str] = set()
        self._written_by_order: dict[str, list[str]] = defaultdict(list)
        # Retirement (see the module note): the streams' clock, the regions each order's
        # replica was seen in, what retired accounts left for rule 2, the tombstones.
        self.horizon_ms = int(1000 * (config.reconcile_horizon_s if horizon_s is None else horizon_s))
        self.retire_every_ms = max(1000, self.horizon_ms // 10)
        self.stream_ms = 0
        self._last_retired_ms = 0
        self._held_in: dict[str, set[str]] = defaultdict(set)
        self.openings: dict[tuple[str, str], Opening] = {}
        self._tombstones: dict[str, Tombstone] = {}
        self.retired_total = 0
        self.held_back: dict[str, int] = {}  # the last retirement's reasons for what stayed
        self.late_records_dropped = 0
        self.restored_total = 0
        self._loaded_written = False
        self._lock = threading.RLock()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.last_error = ""
        names = table_names(config.table_prefix)
        self.tailers = (
            [StreamTailer(region, names[role], self.ingest_batch) for region in config.regions for role in ("orders", "trades")]
            if tail
            else []
        )

    # --- history ------------------------------------------------------------------

    def ingest_batch(self, records: list[ChangeRecord]) -> None:
        # One lock and one collector pause for the batch, not one per record.
        with self._lock, gc_paused():
            for record in records:
                self._ingest(record)

    def ingest(self, record: ChangeRecord) -> None:
        """Take one stream record into the merged history (replicas are ignored)."""
        with self._lock:
            self._ingest(record)

    def _ingest(self, record: ChangeRecord) -> None:
        image = record.new_image
        if image is None:
            return
        pk = image.get("pk", "")
        if type(pk) is not str:
            pk = str(pk)
        if pk.startswith("ORDER#"):
            written = version_ms(image)
            if written > self.stream_ms:
                self.stream_ms = written
            if is_replica(image):
                order_id = str(image.get("orderId"))
                if order_id in self._regions_by_order or order_id in self._fills_by_order:
                    self._held_in[order_id].add(record.region)  # that region now refuses a new copy
                self._superseded_by(image, record.region)
                return
            # The writer's region names the copy: that is where its fills happen.
            acc = acceptance_from_order_item(image, region=record.region)
            if acc.order_id in self._tombstones:
                if self._nothing_new(self._tombstones[acc.order_id], acc):
                    self.late_records_dropped += 1
                    return
                self._restore(acc.order_id)
            key = (acc.order_id, acc.region)
            known = self.copies.get(key)
            if known is not None:
                if known.updated_ms > acc.updated_ms:
                    return
                # When and where in the sequence it was accepted is the copy's first write.
                acc = replace(acc, accept_ms=known.accept_ms, seq=known.seq)
            self.copies[key] = acc
            self._regions_by_order[acc.order_id].add(acc.region)
            self._orders_by_account[(acc.client, acc.symbol)].add(acc.order_id)
            self._touched.add(acc.order_id)
        elif pk.startswith("TRADE#"):
            written = version_ms(image)
            if written > self.stream_ms:
                self.stream_ms = written
            if is_replica(image):
                return
            fills = fills_from_trade_item(image)
            for fill in fills:
                self._ingest_fill(fill)
            if len(fills) == 2:
                taker, maker = fills[0].order_id, fills[1].order_id
                self._paired[taker].add(maker)
                self._paired[maker].add(taker)

    def _ingest_fill(self, fill: Fill) -> None:
        tomb = self._tombstones.get(fill.order_id)
        if tomb is not None:
            if any(f.trade_id == fill.trade_id for f in tomb.fills):
                self.late_records_dropped += 1
                return
            self._restore(fill.order_id)
        self.fills[(fill.trade_id, fill.order_id)] = fill
        self._fills_by_order[fill.order_id].add(fill.trade_id)
        self._orders_by_account[(fill.client, fill.symbol)].add(fill.order_id)
        self._touched.add(fill.order_id)

    def _superseded_by(self, image: dict, region: str) -> None:
        """Another region's final copy overwrote this region's open one: it will never fill."""
        if str(image.get("status")) not in FINAL:
            return
        key = (str(image["orderId"]), region)
        known = self.copies.get(key)
        if known is not None and not known.is_final:
            self.copies[key] = replace(known, status=SUPERSEDED, updated_ms=max(known.updated_ms, int(image.get("updatedAt", 0))))
            self._touched.add(known.order_id)

    @staticmethod
    def _nothing_new(tomb: Tombstone, acc: Acceptance) -> bool:
        """A retired order's copy written again with the same facts (or an older write)."""
        for known in tomb.copies:
            if known.region == acc.region:
                return known.updated_ms > acc.updated_ms or (
                    (known.status, known.filled_qty, known.cancel_requested) == (acc.status, acc.filled_qty, acc.cancel_requested)
                )
        return False

    def _restore(self, order_id: str) -> None:
        """Bring a retired order back from its tombstone: a late record says something new."""
        tomb = self._tombstones.pop(order_id)
        for copy in tomb.copies:
            self.copies[(order_id, copy.region)] = copy
            self._regions_by_order[order_id].add(copy.region)
            self._orders_by_account[(copy.client, copy.symbol)].add(order_id)
        for fill in tomb.fills:
            self.fills[(fill.trade_id, order_id)] = fill
            self._fills_by_order[order_id].add(fill.trade_id)
            self._orders_by_account[(fill.client, fill.symbol)].add(order_id)
        self._held_in[order_id].update(self.config.regions)  # it retired held everywhere
        if tomb.share and tomb.copies:
            # Rule 2 replays it again: its fills leave the account's opening.
            first = tomb.copies[0]
            account = (first.client, first.symbol)
            opening = self.openings.get(account)
            if opening is not None:
                self.openings[account] = replace(opening, position=opening.position - tomb.share)
        self._touched.add(order_id)
        self.restored_total += 1
        log.warning("reconcile: a late record of retired order %s says something new; deciding it again", order_id)

    def ledger(self, order_ids: set[str] | None = None) -> Ledger:
        """The merged history (of `order_ids` only, if given)."""
        with self._lock:
            if order_ids is None:
                copies = list(self.copies.values())
                fills = list(self.fills.values())
            else:
                copies = [self.copies[(o, r)] for o in order_ids for r in self._regions_by_order.get(o, ())]
                fills = [self.fills[(t, o)] for o in order_ids for t in self._fills_by_order.get(o, ())]
            openings = dict(self.openings)
        return Ledger(tuple(copies), tuple(fills), self.reference_prices, self.limits, openings)

    def _scope(self, touched: set[str]) -> set[str]:
        """The touched orders, the orders their matched trades filled on the other side (a
        trade is reversed once, by whichever of its orders' conflicts ranks first), and,
        where limits apply, every order of their accounts."""
        scope = set(touched)
        for order_id in touched:
            scope.update(self._paired.get(order_id, ()))
        if self.limits:
            # Each account once: its orders are many, its touched orders often most of them.
            accounts = set()
            for order_id in touched:
                for region in self._regions_by_order.get(order_id, ()):
                    acc = self.copies[(order_id, region)]
                    accounts.add((acc.client, acc.symbol))
            for account in accounts:
                scope.update(self._orders_by_account.get(account, ()))
        return scope

    def held(self) -> bool:
        regions = self.config.regions
        return any(self.partitioned(a, b) for a in regions for b in regions if a != b)

    # --- deciding -----------------------------------------------------------------

    def poll(self) -> int:
        return sum(tailer.drain() for tailer in self.tailers)

    def decide(self) -> Decisions:
        """The decisions for what changed since the last run (pure; writes nothing)."""
        with self._lock:
            scope = self._scope(self._touched)
        with gc_paused():
            return reconcile(self.ledger(scope))

    def run_once(self) -> RunResult:
        """Read the streams; unless a partition is active, write and publish new decisions."""
        self.poll()
        if self.held():
            return RunResult(held=True)
        if not self._loaded_written:
            for item in self.store.scan_all():
                self._mark_written(item)
            self._loaded_written = True
        with self._lock:
            touched = set(self._touched)
            scope = self._scope(touched)
        with gc_paused():
            decisions = reconcile(self.ledger(scope))
        counts = self._write(decisions)
        settled = self._settled(touched)
        with self._lock:
            self._touched -= settled
        self.retire_due()
        return RunResult(False, counts["CONFLICT"], counts["COMPENSATION"], counts["ADJUSTMENT"])

    def _mark_written(self, item: dict[str, Any]) -> None:
        pk = str(item["pk"])
        if pk not in self._written:
            self._written.add(pk)
            self._written_by_order[str(item.get("orderId", ""))].append(pk)

    def _write(self, decisions: Decisions) -> dict[str, int]:
        """Put each record not written yet (conditional on its id), publishing those that were new."""
        counts = {"CONFLICT": 0, "COMPENSATION": 0, "ADJUSTMENT": 0}
        conflict_regions = {c.conflict_id: list(c.regions) for c in decisions.conflicts}
        for item in decision_items(decisions):
            if str(item["pk"]) in self._written:
                continue
            if self.store.put_once(item, self._position_change(item)):
                counts[item["recordType"]] += 1
                reconcile_events.publish_record(item, self.home_region, conflict_regions.get(str(item.get("conflictId"))))
            with self._lock:
                self._mark_written(item)
        return counts

    # --- retiring -----------------------------------------------------------------

    def retire_due(self, force: bool = False) -> int:
        """Retire what `reconciler.retire` says can no longer change a decision, at most once
        per tenth of the horizon of stream time. Its decisions not written yet go first.
        Returns how many orders retired."""
        with self._lock:
            now = self.stream_ms
            if not force and now - self._last_retired_ms < self.retire_every_ms:
                return 0
            self._last_retired_ms = now
            pending = set(self._touched)
            with gc_paused():
                retirement = retire(self.ledger(), now, self.horizon_ms, self.config.regions, self._held_in, pending)
            self.held_back = dict(retirement.held_back)
        if not retirement.order_ids:
            self._expire_tombstones(now)
            return 0
        self._write(retirement.decisions)
        with self._lock:
            if not self._touched.isdisjoint(retirement.order_ids):
                return 0  # a record of one of them came in meanwhile: judge again next time
            for order_id in retirement.order_ids:
                self._retire_one(order_id, retirement.shares.get(order_id, ZERO))
            self.openings.update(retirement.openings)
            self.retired_total += len(retirement.order_ids)
        self._expire_tombstones(now)
        return len(retirement.order_ids)

    def _retire_one(self, order_id: str, share: Decimal) -> None:
        regions = self._regions_by_order.pop(order_id, ())
        copies = tuple(self.copies.pop((order_id, region)) for region in sorted(regions))
        trade_ids = self._fills_by_order.pop(order_id, ())
        fills = tuple(self.fills.pop((trade_id, order_id)) for trade_id in sorted(trade_ids))
        for other in self._paired.pop(order_id, ()):
            partners = self._paired.get(other)
            if partners is not None:
                partners.discard(order_id)
                if not partners:
                    del self._paired[other]
        self._held_in.pop(order_id, None)
        for pk in self._written_by_order.pop(order_id, ()):
            self._written.discard(pk)
        for account in {(c.client, c.symbol) for c in copies} | {(f.client, f.symbol) for f in fills}:
            orders = self._orders_by_account.get(account)
            if orders is not None:
                orders.discard(order_id)
                if not orders:
                    del self._orders_by_account[account]
        newest = max([c.updated_ms for c in copies] + [c.accept_ms for c in copies] + [f.ts_ms for f in fills], default=0)
        self._tombstones[order_id] = Tombstone(newest, copies, fills, share)

    def _expire_tombstones(self, now_ms: int) -> None:
        """A tombstone goes once its order's newest fact is two horizons old (one more
        horizon than retiring took; an order held back by a partition retires later and
        keeps its tombstone for less, but by then every region holds it)."""
        cutoff = now_ms - 2 * self.horizon_ms
        with self._lock:
            expired = [order_id for order_id, tomb in self._tombstones.items() if tomb.newest_ms <= cutoff]
            for order_id in expired:
                del self._tombstones[order_id]

    def measured(self, size: Callable[[tuple[Any, ...]], int]) -> int:
        """`size` of the containers that hold the worker's state, walked under its lock."""
        with self._lock:
            return size((
                self.copies, self.fills, self._fills_by_order, self._paired, self._regions_by_order, self._orders_by_account,
                self._touched, self._written, self._written_by_order, self._held_in, self.openings, self._tombstones,
            ))

    def held_orders(self) -> dict[str, int]:
        """The orders held, by why (as of the last retirement): `unsettled` and `pending` ones
        are the exchange's work in flight; the rest (`recent`, `not_everywhere`,
        `ranked_behind`, `tombstones`) is reconciled state that retirement bounds."""
        with self._lock:
            return {**self.held_back, "tombstones": len(self._tombstones)}

    def retained(self) -> dict[str, int]:
        """How much the worker holds: entries per structure (what the soak watches stay flat)."""
        with self._lock:
            return {
                "orders": len(self._regions_by_order.keys() | self._fills_by_order.keys()),
                "copies": len(self.copies),
                "fills": len(self.fills),
                "tombstones": len(self._tombstones),
                "held_in": len(self._held_in),
                "written": len(self._written),
                "accounts": len(self._orders_by_account),
                "openings": len(self.openings),
                "pending": len(self._touched),
            }

    def _position_change(self, item: dict[str, Any]) -> list[dict[str, Any]] | None:
        """A compensation in a market with a limit moves the home region's position counters
        back in the same write: its account's, and under the matcher its counterparty's
        (the replicator does the same in the other regions)."""
        deltas = position_deltas("reconcile", item)
        if not deltas or self.config.position_limit(deltas[0][1]) is None:
            return None
        return [self.sequences.position_change(*delta) for delta in deltas]

    def _settled(self, order_ids: set[str]) -> set[str]:
        still = set(unsettled_orders(self.ledger(order_ids)))
        return order_ids - still

    # --- running ------------------------------------------------------------------

    def start(self) -> None:
        self.stop_event.clear()
        self.thread = threading.Thread(target=self.run, name="reconcile-worker", daemon=True)
        self.thread.start()

    def stop(self, join_timeout_s: float = 5.0) -> None:
        self.stop_event.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(join_timeout_s)

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and not self.stop_event.is_set()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.run_once()
            except (BotoCoreError, ClientError) as error:
                self.last_error = str(error)[:200]
                log.warning("reconcile worker: %s", self.last_error)
            except Exception:
                log.exception("reconcile worker round failed; retrying")
            self.stop_event.wait(self.poll_interval_s)
