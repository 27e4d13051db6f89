"""Feeds the Django mirror from the Orders and Trades tables' Streams.

Upserts are idempotent and never go backwards: an older image of an order (a
re-read stream batch, a late replica) does not overwrite a newer one. A batch that
fails is retried, its poison records kept in a retry list, and a periodic sweep
reconciles the mirror against the tables. The mirror trails the tables all the same:
the listings that must not (read-your-writes) merge the tables' newest window in.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from django.db import close_old_connections, transaction

from trading import models
from trading.domain import FINAL_STATUSES, Order, Trade
from trading.store import order_from_item, order_to_item, trade_from_item, trade_to_item
from trading.streams import ChangeRecord

if TYPE_CHECKING:
    from trading.actions import Exchange

log = logging.getLogger(__name__)


# A batch's ids are looked up in chunks: SQLite caps the parameters of one statement.
LOOKUP_CHUNK = 500

ORDER_FIELDS = (
    "client", "symbol", "side", "qty", "price", "filled_qty", "status", "region", "accepted_az", "seq",
    "idempotency_key", "request_hash", "simulation_seed", "cancel_requested", "created_ms", "updated_ms",
)
TRADE_FIELDS = (
    "trade_id", "order_id", "symbol", "side", "qty", "price", "buy_order", "sell_order", "client",
    "counterparty", "region", "fill_az", "seq", "fill_index", "ts_ms",
)


def supersedes(current: tuple[int, str] | None, candidate: Order) -> bool:
    """Does `candidate` replace an order the mirror holds as (updated_ms, status)?

    Never backwards: not an older image, and not an open status (ACCEPTED, OPEN) over a final one."""
    if current is None:
        return True
    updated_ms, status = current
    return not (updated_ms > candidate.updated_ms or (status in FINAL_STATUSES and candidate.status not in FINAL_STATUSES))


def newest_orders(images: list[Order], held: dict[str, tuple[int, str]]) -> dict[str, Order]:
    """Fold a batch's order images, in stream order, over what the mirror holds: the
    images that win, one per order. The same result as applying them one by one."""
    state = dict(held)
    winners: dict[str, Order] = {}
    for order in images:
        if supersedes(state.get(order.order_id), order):
            state[order.order_id] = (order.updated_ms, order.status)
            winners[order.order_id] = order
    return winners


def apply_records(records: list[ChangeRecord]) -> None:
    """Apply a batch of stream records in one transaction and a few statements: one
    lookup of the orders it names, then upserts of the orders that win, their status
    history and the new trades (was: four to six statements per record, which made the
    mirror the largest CPU user of `make run` under load; bench section 1, profiled)."""
    images: list[Order] = []
    trades: dict[str, Trade] = {}
    for record in records:
        image = record.new_image
        if image is None:
            continue
        pk = str(image.get("pk", ""))
        if pk.startswith("ORDER#"):
            order = order_from_item(image)
            # A region's table holds its own orders and (with replication) copies of
            # others': the mirror shows each order as its home region has it.
            if order.region == record.region:
                images.append(order)
        elif pk.startswith("TRADE#") and image.get("region") == record.region:
            trade = trade_from_item(image)
            trades.setdefault(trade.trade_id, trade)
    with transaction.atomic():
        if images:
            ids = sorted({order.order_id for order in images})
            held: dict[str, tuple[int, str]] = {}
            for start in range(0, len(ids), LOOKUP_CHUNK):
                rows = models.Order.objects.filter(pk__in=ids[start : start + LOOKUP_CHUNK]).values_list("order_id", "updated_ms", "status")
                held.update((order_id, (updated_ms, status)) for order_id, updated_ms, status in rows)
            winners = list(newest_orders(images, held).values())
            models.Order.objects.bulk_create(
                [models.Order(order_id=o.order_id, **{name: getattr(o, name) for name in ORDER_FIELDS}) for o in winners],
                update_conflicts=True,
                unique_fields=["order_id"],
                update_fields=list(ORDER_FIELDS),
            )
            models.OrderStatusChange.objects.bulk_create(
                [
                    models.OrderStatusChange(
                        order_id=o.order_id, position=position, status=change.status, ts_ms=change.ts_ms, az=change.az, note=change.note[:200]
                    )
                    for o in winners
                    for position, change in enumerate(o.history)
                ],
                update_conflicts=True,
                unique_fields=["order", "position"],
                update_fields=["status", "ts_ms", "az", "note"],
            )
        if trades:
            models.Trade.objects.bulk_create(
                [models.Trade(**{name: getattr(t, name) for name in TRADE_FIELDS}) for t in trades.values()],
                ignore_conflicts=True,
            )


# --- reads that must not trail the tables ----------------------------------------------
#
# The mirror trails the Streams (by the stream readers' poll and its own queue; after a
# heal, by the replication backlog's drain). A listing read from it alone can miss an
# order answered 201 a moment ago, or the fills an order already reports. These merge
# the newest window read from the tables themselves (their indexes: one Query per
# region, bounded by the listing's limit) into what the mirror holds; a region that is
# down or does not answer is left to the mirror. Any process can do this: it needs the
# tables, not the process that feeds the mirror.


def order_row(order: Order) -> models.Order:
    """An order read from its table, as an (unsaved) mirror row: the listing's one shape."""
    return models.Order(order_id=order.order_id, **{name: getattr(order, name) for name in ORDER_FIELDS})


def trade_row(trade: Trade) -> models.Trade:
    return models.Trade(**{name: getattr(trade, name) for name in TRADE_FIELDS})


def _answering(ex: Exchange, regions: list[str]) -> list[str]:
    return [region for region in regions if ex.region_up(region)]


def with_recent_orders(
    ex: Exchange, rows: list[models.Order], client: str, limit: int, symbol: str | None = None, status: str | None = None
) -> list[models.Order]:
    """`rows` (the mirror's listing, newest first) with `client`'s newest orders as the
    tables hold them: orders the mirror lacks are added, stale ones replaced (never
    backwards). Filters apply to the fresh versions. Newest first, at most `limit`."""
    merged = {row.order_id: row for row in rows}
    for region in _answering(ex, list(ex.config.regions)):
        try:
            fresh = ex.stores[region].orders.newest_of_client(client, limit)
        except (BotoCoreError, ClientError) as error:
            log.debug("recent orders of %s in %s: %s", client, region, error)
            continue
        for order in fresh:
            held = merged.get(order.order_id)
            if held is None or supersedes((held.updated_ms, held.status), order):
                merged[order.order_id] = order_row(order)
    kept = [row for row in merged.values() if (not symbol or row.symbol == symbol) and (not status or row.status == status)]
    kept.sort(key=lambda row: row.created_ms, reverse=True)
    return kept[:limit]


def with_recent_trades(
    ex: Exchange, rows: list[models.Trade], regions: list[str], limit: int, symbol: str | None = None
) -> list[models.Trade]:
    """`rows` (the mirror's tape, newest first) with the newest fills each of `regions`
    executed, read from its own table: a fill an order reports is on the tape at once."""
    merged = {row.trade_id: row for row in rows}
    for region in _answering(ex, regions):
        try:
            fresh = ex.stores[region].trades.newest_executed_here(limit, symbol)
        except (BotoCoreError, ClientError) as error:
            log.debug("recent fills of %s: %s", region, error)
            continue
        for trade in fresh:
            merged.setdefault(trade.trade_id, trade_row(trade))
    tape = sorted(merged.values(), key=lambda row: (row.ts_ms, row.trade_id), reverse=True)
    return tape[:limit]


# Retries: a batch that fails is tried again, with a growing pause, before the mirror
# goes on to the next; after MIRROR_TRIES it is split to find the records that fail,
# the rest is applied, and those few wait in the retry list (tried again every
# RETRY_LIST_EVERY_S): a poison record never holds up the mirror, and never vanishes.
MIRROR_TRIES = 5
MIRROR_BACKOFF_S = 0.05
MIRROR_BACKOFF_MAX_S = 2.0
RETRY_LIST_EVERY_S = 15.0
RETRY_LIST_MAX = 10_000  # beyond it the oldest go (counted); the sweep restores them
# The sweep: SWEEP_EVERY_S after the last pass, each region's Orders and Trades tables
# are read a Scan page at a time (projected to ids and versions) on a thread of its own;
# what the mirror lacks or holds stale (and is older than SWEEP_SETTLE_S: younger items
# are the streams' to bring) is fetched and handed to the mirror's thread like a stream
# batch, so the never-backwards rule decides it there. After each page it rests
# SWEEP_PACE times as long as the page took: moto's Scan costs about 0.35 ms an item,
# and the sweep is a safety net, not a second mirror.
SWEEP_EVERY_S = 60.0
SWEEP_PAGE = 500
SWEEP_PACE = 20
SWEEP_PAGE_GAP_S = 0.1
SWEEP_SETTLE_S = 30.0
SWEEP = "SWEEP"  # the event name of the records a sweep hands over
LAG_MEMORY_S = 5.0

ItemKey = tuple[str, str, str]  # (region, table, pk)


def mirrored(record: ChangeRecord) -> bool:
    """Does the mirror take this record? Its region's own orders and fills (not replicas)."""
    image = record.new_image
    if image is None:
        return False
    pk = str(image.get("pk", ""))
    return pk.startswith(("ORDER#", "TRADE#")) and image.get("region") == record.region


def written_ms(record: ChangeRecord) -> int:
    """When the record's item was written (its own clock): an order's updatedAt, a fill's timestamp."""
    image = record.new_image or {}
    value = image.get("updatedAt", image.get("timestamp", image.get("createdAt", 0)))
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def item_key(record: ChangeRecord) -> ItemKey:
    return (record.region, record.table, str((record.new_image or {}).get("pk", "")))


def is_stale(held: tuple[int, str] | None, updated_ms: int, status: str) -> bool:
    """Does the table's (updated_ms, status) of an order say the mirror's copy is missing or behind?"""
    if held is None:
        return True
    return held != (updated_ms, status) and not (held[0] > updated_ms or (held[1] in FINAL_STATUSES and status not in FINAL_STATUSES))


class MirrorFeed:
    """Applies stream batches handed over by another reader, on its own thread.

    The replicator reads every stream anyway; it hands each batch here, so the
    mirror's SQLite writes never hold up replication. A batch that fails is retried
    before the next one (MIRROR_TRIES, bounded backoff), then split: what still fails
    waits in `retry_list`. With an exchange to read, a periodic sweep reconciles the
    mirror against the tables, so nothing accepted stays missing from the pages.
    """

    def __init__(self, exchange: Exchange | None = None, clock: Callable[[], float] = time.time) -> None:
        # (ticket, records) per handed-over batch (a sweep's have no ticket); None: stop.
        self.batches: queue.Queue[tuple[int | None, list[ChangeRecord]] | None] = queue.Queue()
        self.exchange = exchange
        self.clock = clock
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.applied = 0
        self.failed_tries = 0  # applications of a batch (or a part of one) that raised
        self.retry_list: OrderedDict[ItemKey, ChangeRecord] = OrderedDict()
        self.retry_list_dropped = 0
        self.sweeps = 0
        self.repaired = 0  # rows the sweep found missing or stale, and upserted
        self.sweep_every_s = SWEEP_EVERY_S
        self.sweep_settle_s = SWEEP_SETTLE_S
        self.sweep_thread: threading.Thread | None = None
        self.retry_every_s = RETRY_LIST_EVERY_S
        self._lock = threading.Lock()
        # Written times of the batches handed over and not yet applied, by ticket.
        self._waiting: dict[int, int] = {}
        self._tickets = itertools.count()
        self._last_lag_ms = 0.0
        self._last_applied_s = 0.0
        # When the retry list was last tried (monotonic s): the next try is due a period
        # later, the period read each time (it may be retuned).
        self._retried_s = 0.0

    # --- handing over ---------------------------------------------------------------

    def __call__(self, records: list[ChangeRecord]) -> None:
        kept = [record for record in records if mirrored(record)]
        if not kept:
            return
        oldest = min(written_ms(record) for record in kept)
        with self._lock:
            ticket = next(self._tickets)
            self._waiting[ticket] = oldest
        self.batches.put((ticket, kept))

    def lag_ms(self) -> float:
        """How far the mirror trails the tables: while batches wait, the age of the oldest
        waiting record (from its write); caught up, the last batch's, for a few seconds."""
        now_ms = self.clock() * 1000
        with self._lock:
            if self._waiting:
                return round(max(0.0, now_ms - min(self._waiting.values())), 1)
            recent = self.clock() - self._last_applied_s <= LAG_MEMORY_S
            return round(self._last_lag_ms, 1) if recent else 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "lag_ms": self.lag_ms(),
            "waiting_batches": len(self._waiting),
            "applied": self.applied,
            "failed_tries": self.failed_tries,
            "retry_list": len(self.retry_list),
            "retry_list_dropped": self.retry_list_dropped,
            "sweeps": self.sweeps,
            "repaired": self.repaired,
        }

    # --- applying -------------------------------------------------------------------

    def apply_pending(self) -> int:
        """Apply what is queued, on the calling thread (tests, one-shot commands)."""
        done = 0
        while True:
            try:
                handed = self.batches.get_nowait()
            except queue.Empty:
                return done
            if handed is None:
                continue
            ticket, batch = handed
            self.apply(batch, set() if ticket is None else {ticket})
            done += len(batch)

    def apply(self, batch: list[ChangeRecord], tickets: set[int] | frozenset[int] = frozenset()) -> bool:
        """Apply a batch, trying again with a growing pause; then split it and keep what
        still fails in the retry list. True if all of it was applied. `tickets`: the
        handed-over batches it holds, no longer waiting once it is done."""
        try:
            for attempt in range(MIRROR_TRIES):
                if self._try(batch):
                    return True
                if attempt + 1 < MIRROR_TRIES and self.stopping.wait(min(MIRROR_BACKOFF_S * 2**attempt, MIRROR_BACKOFF_MAX_S)):
                    return False  # shutting down: the next start re-reads the streams
            log.error("mirror: a batch of %d records failed %d times; applying it in parts", len(batch), MIRROR_TRIES)
            self._isolate(batch)
            return False
        finally:
            self._applied(tickets, batch)

    def _try(self, records: list[ChangeRecord]) -> bool:
        try:
            apply_records(records)
        except Exception:
            self.failed_tries += 1
            log.warning("mirror failed to apply %d records", len(records), exc_info=True)
            close_old_connections()  # a broken connection is replaced on the next try
            return False
        self.applied += len(records)
        self.repaired += sum(1 for record in records if record.event_name == SWEEP)
        if self.retry_list:
            with self._lock:
                for record in records:
                    self.retry_list.pop(item_key(record), None)  # a newer image of it landed
        return True

    def _isolate(self, records: list[ChangeRecord]) -> None:
        """Halve what fails until the records that fail alone are found; those wait."""
        if len(records) == 1:
            self._keep_for_retry(records[0])
            return
        middle = len(records) // 2
        for part in (records[:middle], records[middle:]):
            if not self._try(part):
                self._isolate(part)

    def _keep_for_retry(self, record: ChangeRecord) -> None:
        with self._lock:
            key = item_key(record)
            if not self.retry_list:
                self._retried_s = time.monotonic()
            self.retry_list.pop(key, None)
            self.retry_list[key] = record  # the newest image of an item is the one that matters
            while len(self.retry_list) > RETRY_LIST_MAX:
                self.retry_list.popitem(last=False)
                self.retry_list_dropped += 1
        log.error("mirror: %s %s kept in the retry list (%d waiting)", record.region, key[2], len(self.retry_list))

    def _applied(self, tickets: set[int] | frozenset[int], batch: list[ChangeRecord]) -> None:
        now = self.clock()
        with self._lock:
            oldest = [self._waiting.pop(t) for t in tickets if t in self._waiting]
            if oldest:
                self._last_lag_ms = max(0.0, now * 1000 - min(oldest))
                self._last_applied_s = now

    def retry_waiting(self) -> int:
        """Try the retry list again (each record alone if the whole fails). Returns how many landed."""
        with self._lock:
            records = list(self.retry_list.values())
        if not records:
            return 0
        before = len(self.retry_list)
        if self._try(records):
            with self._lock:
                for record in records:
                    self.retry_list.pop(item_key(record), None)
        else:
            for record in records:
                if self._try([record]):
                    with self._lock:
                        self.retry_list.pop(item_key(record), None)
        return before - len(self.retry_list)

    # --- the sweep ------------------------------------------------------------------

    def sweep(self) -> int:
        """One whole pass now, on the calling thread, applied at once (tests, commands).
        Returns the rows it repaired."""
        before = self.repaired
        self._sweep_pass(self.apply, paced=False)
        self.sweeps += 1
        return self.repaired - before

    def _sweep_loop(self) -> None:
        while not self.stopping.wait(self.sweep_every_s):
            try:
                self._sweep_pass(lambda records: self.batches.put((None, records)), paced=True)
                self.sweeps += 1
            except Exception:
                log.exception("mirror sweep failed")
            finally:
                close_old_connections()

    def _sweep_pass(self, hand_over: Callable[[list[ChangeRecord]], Any], paced: bool) -> None:
        ex = self.exchange
        if ex is None:
            return
        for region in ex.config.regions:
            if not ex.region_up(region):
                continue  # its rows wait for the next pass
            stores = ex.stores[region]
            settled_ms = int(self.clock() * 1000 - self.sweep_settle_s * 1000)
            try:
                started = time.monotonic()
                for versions in stores.orders.version_pages(SWEEP_PAGE):
                    records = self._stale_orders(stores.orders, versions, settled_ms)
                    if records:
                        hand_over(records)
                    if self._rest(paced, started):
                        return
                    started = time.monotonic()
                for found in stores.trades.id_pages(SWEEP_PAGE):
                    records = self._missing_trades(stores.trades, found, settled_ms)
                    if records:
                        hand_over(records)
                    if self._rest(paced, started):
                        return
                    started = time.monotonic()
            except (BotoCoreError, ClientError) as error:
                log.warning("mirror sweep of %s stopped: %s", region, str(error)[:200])

    def _rest(self, paced: bool, started: float) -> bool:
        """After a page: rest in proportion to what it cost. True if the feed is stopping."""
        if not paced:
            return False
        return self.stopping.wait(max(SWEEP_PAGE_GAP_S, SWEEP_PACE * (time.monotonic() - started)))

    def _stale_orders(self, orders: Any, versions: list[tuple[str, int, str]], settled_ms: int) -> list[ChangeRecord]:
        versions = [v for v in versions if v[1] <= settled_ms]
        held: dict[str, tuple[int, str]] = {}
        ids = [order_id for order_id, _, _ in versions]
        for start in range(0, len(ids), LOOKUP_CHUNK):
            rows = models.Order.objects.filter(pk__in=ids[start : start + LOOKUP_CHUNK]).values_list("order_id", "updated_ms", "status")
            held.update((order_id, (updated_ms, status)) for order_id, updated_ms, status in rows)
        stale = [order_id for order_id, updated_ms, status in versions if is_stale(held.get(order_id), updated_ms, status)]
        if not stale:
            return []
        log.warning("mirror sweep: %d order(s) of %s missing or stale in the mirror", len(stale), orders.region)
        return [ChangeRecord(SWEEP, {}, order_to_item(o), None, "", orders.region, orders.table) for o in orders.get_many(stale)]

    def _missing_trades(self, trades: Any, found: list[tuple[str, int]], settled_ms: int) -> list[ChangeRecord]:
        ids = [trade_id for trade_id, ts_ms in found if ts_ms <= settled_ms]
        have: set[str] = set()
        for start in range(0, len(ids), LOOKUP_CHUNK):
            have.update(models.Trade.objects.filter(pk__in=ids[start : start + LOOKUP_CHUNK]).values_list("trade_id", flat=True))
        missing = [trade_id for trade_id in ids if trade_id not in have]
        if not missing:
            return []
        log.warning("mirror sweep: %d fill(s) of %s missing from the mirror", len(missing), trades.region)
        return [ChangeRecord(SWEEP, {}, trade_to_item(t), None, "", trades.region, trades.table) for t in trades.get_many(missing)]

    def _chores(self) -> None:
        """Between batches: the retry list, when it is due."""
        if self.retry_list and time.monotonic() >= self._retried_s + self.retry_every_s:
            self.retry_waiting()
            self._retried_s = time.monotonic()

    # --- the thread -----------------------------------------------------------------

    def start(self) -> None:
        self._retried_s = time.monotonic()
        self.thread = threading.Thread(target=self.run, name="mirror", daemon=True)
        self.thread.start()
        if self.exchange is not None:
            # The streams rebuild the mirror at start; the first sweep checks it a period later.
            self.sweep_thread = threading.Thread(target=self._sweep_loop, name="mirror-sweep", daemon=True)
            self.sweep_thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.batches.put(None)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                handed = self.batches.get(timeout=1.0)
            except queue.Empty:
                handed = (None, [])
            if handed is None:
                return
            tickets, batch = ({handed[0]} if handed[0] is not None else set()), handed[1]
            # Take whatever else is waiting too: one transaction for a burst.
            while True:
                try:
                    more = self.batches.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.batches.put(None)
                    break
                if more[0] is not None:
                    tickets.add(more[0])
                batch = batch + more[1]
            try:
                if batch:
                    self.apply(batch, tickets)
                self._chores()
            except Exception:
                log.exception("mirror round failed")
            finally:
                close_old_connections()


def reset_mirror() -> None:
    """The embedded default starts a fresh exchange: the mirror is rebuilt from it."""
    with transaction.atomic():
        models.Trade.objects.all().delete()
        models.OrderStatusChange.objects.all().delete()
        models.Order.objects.all().delete()
