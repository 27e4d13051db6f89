"""Feeds the Django mirror from the Orders and Trades tables' Streams.

Upserts are idempotent and never go backwards: an older image of an order (a
re-read stream batch, a late replica) does not overwrite a newer one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction

from trading import models
from trading.store import order_from_item, trade_from_item
from trading.streams import ChangeRecord


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


def reset_mirror() -> None:
    """The embedded default starts a fresh exchange: the mirror is rebuilt from it."""
    with transaction.atomic():
        models.Trade.objects.all().delete()
        models.OrderStatusChange.objects.all().delete()
        models.Order.objects.all().delete()
