"""Feeds the Django mirror from the Orders and Trades tables' Streams.

Upserts are idempotent and never go backwards: an older image of an order (a
re-read stream batch, a late replica) does not overwrite a newer one.
"""

from __future__ import annotations


import logging
import queue
import threading

from django.db import close_old_connections, transaction

from trading import models
from trading.domain import Order, Trade
from trading.store import order_from_item, trade_from_item
from trading.streams import ChangeRecord

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

    Never backwards: not an older image, and not ACCEPTED over a final status."""
    if current is None:
        return True
    updated_ms, status = current
    return not (updated_ms > candidate.updated_ms or (status != "ACCEPTED" and candidate.status == "ACCEPTED"))


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


class MirrorFeed:
    """Applies stream batches handed over by another reader, on its own thread.

    The replicator reads every stream anyway; it hands each batch here, so the
    mirror's SQLite writes never hold up replication.
    """

    def __init__(self) -> None:
        self.batches: queue.Queue[list[ChangeRecord] | None] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.applied = 0

    def __call__(self, records: list[ChangeRecord]) -> None:
        self.batches.put(records)

    def apply_pending(self) -> int:
        """Apply what is queued, on the calling thread (tests, one-shot commands)."""
        done = 0
        while True:
            try:
                batch = self.batches.get_nowait()
            except queue.Empty:
                return done
            if batch is None:
                continue
            apply_records(batch)
            done += len(batch)

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="mirror", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.batches.put(None)

    def run(self) -> None:
        while True:
            batch = self.batches.get()
            if batch is None:
                return
            # Take whatever else is waiting too: one transaction for a burst.
            while True:
                try:
                    more = self.batches.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.batches.put(None)
                    break
                batch = batch + more
            try:
                apply_records(batch)
                self.applied += len(batch)
            except Exception:
                log.exception("mirror failed to apply %d records", len(batch))
            finally:
                close_old_connections()


def reset_mirror() -> None:
    """The embedded default starts a fresh exchange: the mirror is rebuilt from it."""
    with transaction.atomic():
        models.Trade.objects.all().delete()
        models.OrderStatusChange.objects.all().delete()
        models.Order.objects.all().delete()
