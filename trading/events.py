"""Event types and publish(): the only door to the channel layer.

Django-free: the process that runs the workers registers a sink (the channel layer in
the dashboard process, a logger in a Lambda). publish() is called only after the
durable write that the event describes has succeeded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from trading.domain import Order, Trade

log = logging.getLogger(__name__)

ORDER_ACCEPTED = "order.accepted"
ORDER_STATUS = "order.status"
TRADE_EXECUTED = "trade.executed"
TRADE_CONFLICTED = "trade.conflicted"
TRADE_COMPENSATED = "trade.compensated"
PNL_ADJUSTED = "pnl.adjusted"
REGION_HEALTH = "region.health"
BACKPRESSURE = "backpressure"
METRICS = "metrics"
EXPERIMENT_STATE = "experiment.state"

# Events that concern one client's orders; everything else is market-wide or operational.
PRIVATE_TYPES = {ORDER_ACCEPTED, ORDER_STATUS, PNL_ADJUSTED}

Event = dict[str, Any]
Sink = Callable[[Event], None]

_sinks: list[Sink] = []
_lock = threading.Lock()


class RecentEvents:
    """The last events this process published, for a socket that connects late.

    A page renders from the mirror, which trails the tables by up to a second or two; its
    socket connects a moment later. Events published in between would be lost to it, so a
    socket that says when its page was rendered is first sent what it missed.
    """

    def __init__(self, maxlen: int = 5000):
        self._events: deque[Event] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def append(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def since(self, ts_ms: int) -> list[Event]:
        with self._lock:
            return [e for e in self._events if e["ts"] >= ts_ms]


RECENT = RecentEvents()


def add_sink(sink: Sink) -> None:
    with _lock:
        if sink not in _sinks:
            _sinks.append(sink)


def remove_sink(sink: Sink) -> None:
    with _lock:
        if sink in _sinks:
            _sinks.remove(sink)


def make_event(event_type: str, region: str, data: dict[str, Any], ts_ms: int | None = None) -> Event:
    return {"type": event_type, "region": region, "ts": ts_ms if ts_ms is not None else int(time.time() * 1000), "data": data}


def publish(event_type: str, region: str, data: dict[str, Any], ts_ms: int | None = None) -> Event:
    event = make_event(event_type, region, data, ts_ms)
    RECENT.append(event)
    for sink in list(_sinks):
        try:
            sink(event)
        except Exception:  # a broken sink must not undo a committed write
            log.exception("event sink failed for %s", event_type)
    return event


def visible_to(event: Event, username: str, is_staff: bool) -> bool:
    if is_staff or event["type"] not in PRIVATE_TYPES:
        return True
    return bool(event["data"].get("client") == username)


def _text(value: Decimal) -> str:
    return format(value, "f")


def order_data(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "client": order.client,
        "symbol": order.symbol,
        "side": order.side,
        "qty": _text(order.qty),
        "price": _text(order.price),
        "status": order.status,
        "filled_qty": _text(order.filled_qty),
        "region": order.region,
        "accepted_az": order.accepted_az,
        "seq": order.seq,
        "idempotency_key": order.idempotency_key,
        "created_ms": order.created_ms,
        "updated_ms": order.updated_ms or order.created_ms,
        "note": order.history[-1].note if order.history else "",
        "rerouted": next((c.note for c in order.history if c.note.startswith("rerouted")), ""),
    }


def trade_data(trade: Trade) -> dict[str, Any]:
    return {
        "trade_id": trade.trade_id,
        "order_id": trade.order_id,
        "symbol": trade.symbol,
        "side": trade.side,
        "qty": _text(trade.qty),
        "price": _text(trade.price),
        "buy_order": trade.buy_order,
        "sell_order": trade.sell_order,
        "region": trade.region,
        "fill_az": trade.fill_az,
        "seq": trade.seq,
        "ts_ms": trade.ts_ms,
    }
