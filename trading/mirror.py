"""Feeds the Django mirror from the Orders and Trades tables' Streams.

Upserts are idempotent and never go backwards: an older image of an order (a
re-read stream batch, a late replica) does not overwrite a newer one.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError
from django.db import close_old_connections, transaction

from trading import models
from trading.domain import Order, Trade
from trading.store import order_from_item, trade_from_item
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
