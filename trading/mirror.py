"""Feeds the Django mirror from the Orders and Trades tables' Streams.

Upserts are idempotent and never go backwards: an older image of an order (a
re-read stream batch, a late replica) does not overwrite a newer one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import logging
import queue
import threading

from django.db import close_old_connections, transaction

from trading import models
from trading.store import order_from_item, trade_from_item
from trading.streams import ChangeRecord

log = logging.getLogger(__name__)


def apply_order_item(item: dict[str, Any], region: str) -> None:
    order = order_from_item(item)
    # A region's table holds its own orders and (with replication) copies of others':
    # the mirror shows each order as its home region has it.
    if order.region != region:
        return
    existing = models.Order.objects.filter(pk=order.order_id).only("updated_ms", "status").first()
    if existing is not None and (
        existing.updated_ms > order.updated_ms or (existing.status != "ACCEPTED" and order.status == "ACCEPTED")
    ):
        return
    models.Order.objects.update_or_create(
        order_id=order.order_id,
        defaults={
            "client": order.client,
            "symbol": order.symbol,
            "side": order.side,
            "qty": order.qty,
            "price": order.price,
            "filled_qty": order.filled_qty,
            "status": order.status,
            "region": order.region,
            "accepted_az": order.accepted_az,
            "seq": order.seq,
            "idempotency_key": order.idempotency_key,
            "request_hash": order.request_hash,
            "simulation_seed": order.simulation_seed,
            "cancel_requested": order.cancel_requested,
            "created_ms": order.created_ms,
            "updated_ms": order.updated_ms,
        },
    )
    for position, change in enumerate(order.history):
        models.OrderStatusChange.objects.update_or_create(
            order_id=order.order_id,
            position=position,
            defaults={"status": change.status, "ts_ms": change.ts_ms, "az": change.az, "note": change.note[:200]},
        )


def apply_trade_item(item: dict[str, Any]) -> None:
    trade = trade_from_item(item)
    models.Trade.objects.get_or_create(
        trade_id=trade.trade_id,
        defaults={
            "order_id": trade.order_id,
            "symbol": trade.symbol,
            "side": trade.side,
            "qty": Decimal(trade.qty),
            "price": Decimal(trade.price),
            "buy_order": trade.buy_order,
            "sell_order": trade.sell_order,
            "client": trade.client,
            "counterparty": trade.counterparty,
            "region": trade.region,
            "fill_az": trade.fill_az,
            "seq": trade.seq,
            "fill_index": trade.fill_index,
            "ts_ms": trade.ts_ms,
        },
    )


def apply_records(records: list[ChangeRecord]) -> None:
    with transaction.atomic():
        for record in records:
            image = record.new_image
            if image is None:
                continue
            pk = str(image.get("pk", ""))
            if pk.startswith("ORDER#"):
                apply_order_item(image, record.region)
            elif pk.startswith("TRADE#") and image.get("region") == record.region:
                apply_trade_item(image)


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
