"""The replicator: DynamoDB Global Tables behaviour between the configured regions.

Each region's Orders, Trades and Reconcile Streams are applied to every other
region's tables, asynchronously, one ordered backlog per (source, destination) pair:
- last writer wins on the item (reconcile_panel.replication decides);
- a replica write is marked (`writerRegion`, `replicaStamp`) and its own stream record
  is never sent on, so nothing is replicated back and forth forever;
- applying an item already present with the same version is a no-op;
- a pair is paused while `partitioned(src, dst)` (the fault plane) or `pause()` says
  so: its backlog keeps growing, in stream order, and drains in that order on heal;
- `lag_ms(src, dst)`: while a backlog waits, the age of its oldest record; otherwise
  the lag of the last record applied (AWS's ReplicationLatency);
- `tapes`: the trades on one region's tape and not on another's, from the Trades
  streams' inserts (replicas included), beside the backlogs, which count records waiting.

The backlog lives in memory: a restarted replicator re-reads the streams from their
start and re-applies them, which is a no-op for everything already there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from reconcile_panel.divergence import TapeDivergence
from reconcile_panel.limits import position_deltas
from reconcile_panel.replication import as_replica, is_replica, lww_decision, version_ms
from reconcile_panel.store import ItemTable, replicated_tables
from trading.config import ExchangeConfig
from trading.store import SequenceStore, table_names
from trading.streams import ChangeRecord, StreamTailer

log = logging.getLogger(__name__)

IDLE_POLL_MAX_S = 1.6
DELIVER_BUDGET_S = 0.5
# Items read from a destination in one batch before they are applied.
PREFETCH = 100
BATCH_WRITE = 25  # DynamoDB's BatchWriteItem limit
UNREAD = object()  # apply(): dst's copy was not read in advance

Partitioned = Callable[[str, str], bool]
Listener = Callable[[list[ChangeRecord]], None]  # a batch of stream records


def never_partitioned(a: str, b: str) -> bool:
    return False


def tape_changes(records: list[ChangeRecord]) -> Iterator[tuple[str, bool]]:
    """(trade pk, on the tape) for each insert or removal of a trade, in stream order."""
    for record in records:
        image = record.new_image if record.event_name == "INSERT" else record.old_image if record.event_name == "REMOVE" else None
        if image is not None and str(image.get("pk", "")).startswith("TRADE#"):
            yield str(image["pk"]), record.event_name == "INSERT"


@dataclass(frozen=True)
class Pending:
    role: str
    item: dict[str, Any]
    writer: str
    written_ms: int


@dataclass
class PairStats:
    applied: int = 0
    skipped: int = 0
    # Older versions of an item passed over because a newer one of the same item was
    # already waiting behind them (last writer wins: only the newest can change dst).
    coalesced: int = 0
    last_lag_ms: float = 0.0
    last_applied_s: float = 0.0
    errors: int = 0
    last_error: str = ""


LAG_MEMORY_S = 5.0


@dataclass
class Replicator:
    config: ExchangeConfig
    partitioned: Partitioned = never_partitioned
    # Is the region reachable (the fault plane's region_up)? A down region's streams are not read.
    reachable: Callable[[str], bool] = lambda region: True
    clock: Callable[[], float] = time.time
    poll_interval_s: float = 0.2
    listeners: list[Listener] = field(default_factory=list)
    # The time one round spends applying backlogs before it reads the streams again.
    deliver_budget_s: float = DELIVER_BUDGET_S

    def __post_init__(self) -> None:
        self.tables = replicated_tables(self.config.table_prefix)
        # The regional (never replicated) tables that hold each region's position counters.
        sequences = table_names(self.config.table_prefix)["sequences"]
        self.sequences = {region: SequenceStore(region, sequences) for region in self.config.regions}
        self.regions = tuple(self.config.regions)
        self.pairs = tuple((a, b) for a in self.regions for b in self.regions if a != b)
        self.backlog: dict[tuple[str, str], deque[Pending]] = {pair: deque() for pair in self.pairs}
        # The newest waiting version per (source, destination, role, pk).
        self._newest: dict[tuple[str, str, str, str], Pending] = {}
        self.stats: dict[tuple[str, str], PairStats] = {pair: PairStats() for pair in self.pairs}
        self._paused: set[tuple[str, str]] = set()
        self._lock = threading.RLock()  # the backlogs and stats
        self._pump_lock = threading.Lock()  # one round at a time (the thread or a drain())
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.replica_records_skipped = 0
        self.tapes = TapeDivergence(self.regions)
        self.tailers = [
            StreamTailer(region, name, self._handler(region, role))
            for region in self.regions
            for role, name in self.tables.items()
        ]

    # --- partitions ---------------------------------------------------------------

    def pause(self, a: str, b: str) -> None:
        """Stop replication between a and b, both ways (the local partition flag)."""
        with self._lock:
            self._paused.update({(a, b), (b, a)})

    def resume(self, a: str, b: str) -> None:
        with self._lock:
            self._paused.difference_update({(a, b), (b, a)})

    @contextlib.contextmanager
    def paused(self, a: str, b: str) -> Iterator[None]:
        self.pause(a, b)
        try:
            yield
        finally:
            self.resume(a, b)

    def is_cut(self, src: str, dst: str) -> bool:
        if (src, dst) in self._paused:
            return True
        try:
            return bool(self.partitioned(src, dst))
        except Exception:  # a broken predicate must not stop replication for good
            log.exception("partition predicate failed for %s -> %s", src, dst)
            return False

    def any_cut(self) -> bool:
        return any(self.is_cut(a, b) for a, b in self.pairs)

    # --- metrics ------------------------------------------------------------------

    def lag_ms(self, src: str, dst: str) -> float:
        """Replication lag of the pair in milliseconds (0.0 for an unknown pair)."""
        with self._lock:
            queue = self.backlog.get((src, dst))
            if queue is None:
                return 0.0
            if queue:
                return max(0.0, self.clock() * 1000 - queue[0].written_ms)
            stats = self.stats[(src, dst)]
            # Caught up: the last record's lag while it is recent (CloudWatch's
            # ReplicationLatency), then 0 rather than a stale figure after a heal.
            return stats.last_lag_ms if self.clock() - stats.last_applied_s <= LAG_MEMORY_S else 0.0

    def backlog_size(self, src: str, dst: str) -> int:
        return len(self.backlog.get((src, dst), ()))

    def snapshot(self) -> list[dict[str, Any]]:
        """Per pair: lag, backlog, paused, applied and skipped counts (for /api/regions, metrics)."""
        out = []
        for src, dst in self.pairs:
            stats = self.stats[(src, dst)]
            out.append(
                {
                    "source": src,
                    "destination": dst,
                    "lag_ms": round(self.lag_ms(src, dst), 1),
                    "backlog": self.backlog_size(src, dst),
                    # Trades on the source's tape that the destination's does not have.
                    "divergence": self.tapes.missing(src, dst),
                    "paused": self.is_cut(src, dst),
                    "applied": stats.applied,
                    "skipped": stats.skipped,
                    "coalesced": stats.coalesced,
                    "errors": stats.errors,
                }
            )
        return out

    # --- reading the streams --------------------------------------------------------

    def _handler(self, region: str, role: str) -> Callable[[list[ChangeRecord]], None]:
        def handle(records: list[ChangeRecord]) -> None:
            self._on_records(region, role, records)

        return handle

    def _on_records(self, region: str, role: str, records: list[ChangeRecord]) -> None:
        now_ms = int(self.clock() * 1000)
        if role == "trades":
            # Trades are written once: an insert is the trade reaching this region's tape.
            self.tapes.apply(region, tape_changes(records))
        with self._lock:
            for record in records:
                image = record.new_image
                if image is None or "pk" not in image:
                    continue  # nothing in the exchange deletes; a REMOVE is not replicated
                if is_replica(image):
                    self.replica_records_skipped += 1
                    continue
                written = version_ms(image) if role in {"orders", "trades"} else 0
                written = min(written, now_ms) if written else now_ms
                for dst in self.regions:
                    if dst != region:
                        pending = Pending(role, image, region, written)
                        self.backlog[(region, dst)].append(pending)
                        self._newest[(region, dst, role, str(image["pk"]))] = pending
        # Listeners (the mirror, the reconciler) see every record, replicas included: one
        # reader per stream serves them all, so moto is not polled once per consumer.
        for listener in list(self.listeners):
            listener(records)

    # --- applying -----------------------------------------------------------------

    def apply(self, dst: str, pending: Pending, known: Any = UNREAD) -> str:
        """Apply one source record to `dst`: "applied" or "skipped". Raises on AWS errors.

        `known`: dst's item as a batch read found it (None: absent), so the first try needs
        no read of its own; the conditional put still refuses it if dst changed since.
        """
        table = ItemTable(dst, self.tables[pending.role])
        pk = str(pending.item["pk"])
        for _ in range(8):
            existing = table.get(pk) if known is UNREAD else known
            known = UNREAD
            if lww_decision(existing, pending.item, dst, pending.writer) == "skip":
                return "skipped"
            count = self.position_change(dst, pending) if existing is None else None
            if table.put_over(as_replica(pending.item, pending.writer), existing, count):
                return "applied"
        raise RuntimeError(f"replica write of {pk} to {dst} kept losing to local writes")

    def position_change(self, dst: str, pending: Pending) -> list[dict[str, Any]] | None:
        """For another region's trade (or compensation) new to `dst`, in a market with a
        limit: the update that moves dst's position counter by it, so after a heal and
        reconciliation each counter holds the merged, compensated position."""
        deltas = position_deltas(pending.role, pending.item)  # a matched trade: both accounts
        if not deltas or self.config.position_limit(deltas[0][1]) is None:
            return None
        return [self.sequences[dst].position_change(*delta) for delta in deltas]

    def _prefetch(self, pair: tuple[str, str], known: dict[tuple[str, str], Any]) -> None:
        """Read dst's copies of the next PREFETCH waiting items in one BatchGetItem per
        table, instead of one GetItem each: a drained backlog costs a read per hundred."""
        src, dst = pair
        wanted: dict[str, list[str]] = {}
        with self._lock:
            for pending in self.backlog[pair]:
                pk = str(pending.item["pk"])
                if self._newest.get((src, dst, pending.role, pk)) is pending and (pending.role, pk) not in known:
                    wanted.setdefault(pending.role, []).append(pk)
                    if sum(len(pks) for pks in wanted.values()) >= PREFETCH:
                        break
        for role, pks in wanted.items():
            found = {str(item["pk"]): item for item in ItemTable(dst, self.tables[role]).get_many(pks)}
            for pk in pks:
                known[(role, pk)] = found.get(pk)

    def _new_trades_run(self, pair: tuple[str, str], known: dict[tuple[str, str], Any]) -> list[Pending]:
        """The run of waiting records at the head of the backlog that are trades absent
        from dst (as the prefetch read it), each the newest version of its item and moving
        no position counter: at most BATCH_WRITE of them, written in one batch.

        A trade's id carries the region and the fill that wrote it, so in dst only this
        replicator writes it: absent when read, it is still absent when written, and
        last writer wins has nothing to decide."""
        src, dst = pair
        run: list[Pending] = []
        with self._lock:
            for pending in self.backlog[pair]:
                pk = str(pending.item["pk"])
                if (
                    pending.role != "trades"
                    or self._newest.get((src, dst, pending.role, pk)) is not pending
                    or (pending.role, pk) not in known
                    or known[(pending.role, pk)] is not None
                    or self.position_change(dst, pending) is not None
                ):
                    break
                run.append(pending)
                if len(run) >= BATCH_WRITE:
                    break
        return run if len(run) > 1 else []

    def _applied_run(self, pair: tuple[str, str], run: list[Pending], known: dict[tuple[str, str], Any]) -> int:
        src, dst = pair
        with self._lock:
            queue = self.backlog[pair]
            stats = self.stats[pair]
            for pending in run:
                key = (src, dst, pending.role, str(pending.item["pk"]))
                known.pop((pending.role, key[3]), None)
                if queue and queue[0] is pending:
                    queue.popleft()
                if self._newest.get(key) is pending:
                    del self._newest[key]
                stats.applied += 1
                stats.last_lag_ms = max(0.0, self.clock() * 1000 - pending.written_ms)
            stats.last_applied_s = self.clock()
        return len(run)

    def deliver(self) -> int:
        """Apply what every open pair has waiting, in order, for at most its share of
        `deliver_budget_s`. Returns how many records.

        The budget keeps the streams read while a backlog drains: a heal's backlog took a
        minute or more, and until it was empty no stream was read, so the mirror (and the
        tape it serves) showed none of the fills made meanwhile."""
        done = 0
        share_s = self.deliver_budget_s / max(1, len(self.pairs))
        for pair in self.pairs:
            src, dst = pair
            known: dict[tuple[str, str], Any] = {}
            until = time.monotonic() + share_s
            while True:
                with self._lock:
                    queue = self.backlog[pair]
                    if not queue or self.is_cut(src, dst) or time.monotonic() > until:
                        break
                    pending = queue[0]
                    key = (src, dst, pending.role, str(pending.item["pk"]))
                    if self._newest.get(key) is not pending:
                        # A newer version of the item waits further back: it alone decides
                        # what dst ends with, in its own place in the order.
                        queue.popleft()
                        self.stats[pair].coalesced += 1
                        done += 1
                        continue
                try:
                    item_key = (pending.role, key[3])
                    if item_key not in known and len(queue) > 1:
                        self._prefetch(pair, known)
                    run = self._new_trades_run(pair, known)
                    if run:
                        ItemTable(dst, self.tables["trades"]).put_absent_many([as_replica(p.item, p.writer) for p in run])
                        done += self._applied_run(pair, run, known)
                        continue
                    outcome = self.apply(dst, pending, known.pop(item_key, UNREAD))
                except (BotoCoreError, ClientError, RuntimeError) as error:
                    stats = self.stats[pair]
                    stats.errors += 1
                    stats.last_error = str(error)[:200]
                    log.warning("replication %s -> %s: %s", src, dst, stats.last_error)
                    break  # keep the order: retry this record on the next round
                with self._lock:
                    if queue and queue[0] is pending:
                        queue.popleft()
                    if self._newest.get(key) is pending:
                        del self._newest[key]
                    stats = self.stats[pair]
                    if outcome == "applied":
                        stats.applied += 1
                    else:
                        stats.skipped += 1
                    stats.last_lag_ms = max(0.0, self.clock() * 1000 - pending.written_ms)
                    stats.last_applied_s = self.clock()
                done += 1
        return done

    def pump(self) -> int:
        """One round: read every stream, then deliver. Returns records read plus applied.

        A stream that cannot be read now (its region is down, or the read failed) is read
        again next round, from where it stopped; the other regions' records still reach
        their replicas and the listeners (the mirror) meanwhile."""
        with self._pump_lock:
            read = 0
            for tailer in self.tailers:
                if not self.reachable(tailer.region):
                    continue
                try:
                    read += tailer.poll_once()
                except (BotoCoreError, ClientError) as error:
                    log.debug("replicator: %s/%s not read this round: %s", tailer.region, tailer.table, error)
            return read + self.deliver()

    def deliverable(self) -> int:
        return sum(len(q) for (src, dst), q in self.backlog.items() if not self.is_cut(src, dst))

    def drain(self, timeout_s: float = 60.0) -> int:
        """Pump until the streams are read and every open pair's backlog is empty.

        Paused pairs keep their backlog. Returns how many records were handled.
        """
        deadline = time.monotonic() + timeout_s
        total = 0
        while True:
            n = self.pump()
            total += n
            if n == 0 and self.deliverable() == 0:
                return total
            if time.monotonic() > deadline:
                raise TimeoutError(f"replication did not drain within {timeout_s}s")

    # --- running ------------------------------------------------------------------

    def start(self) -> None:
        self.stop_event.clear()
        self.thread = threading.Thread(target=self.run, name="replicator", daemon=True)
        self.thread.start()

    def stop(self, join_timeout_s: float = 5.0) -> None:
        self.stop_event.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(join_timeout_s)

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and not self.stop_event.is_set()

    def run(self) -> None:
        # Idle rounds back off to IDLE_POLL_MAX_S: six stream readers polling every 0.2 s
        # cost moto ~30 requests/s with nothing to carry (a third of what it serves on a
        # 2-core machine, measured by make bench). Any record resets the pace.
        idle_wait = self.poll_interval_s
        while not self.stop_event.is_set():
            try:
                n = self.pump()
            except (BotoCoreError, ClientError) as error:
                log.debug("replicator: %s", error)
                n = 0
                self.stop_event.wait(0.5)
            except Exception:
                log.exception("replicator round failed; retrying")
                n = 0
                self.stop_event.wait(0.5)
            if n == 0:
                self.stop_event.wait(idle_wait)
                idle_wait = min(idle_wait * 2, max(self.poll_interval_s, IDLE_POLL_MAX_S))
            else:
                idle_wait = self.poll_interval_s
