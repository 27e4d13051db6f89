"""Event types and publish(): the only door to the channel layer.

Django-free: the process that runs the workers registers a sink (the channel layer in
the dashboard process, a logger in a Lambda). publish() is called only after the
durable write that the event describes has succeeded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from trading.domain import Order, Trade, is_order_id

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
BOOK_DEPTH = "book.depth"

# Who sees what (visible_to). Staff see every event whole. A trader sees:
# - their own orders and adjustments, and nobody else's;
PRIVATE_TYPES = frozenset({ORDER_ACCEPTED, ORDER_STATUS, PNL_ADJUSTED})
# - market-wide figures as published, and the books' depth (prices, quantities and order
#   counts per level: anonymous market data, no client or order id in it);
PUBLIC_TYPES = frozenset({REGION_HEALTH, BACKPRESSURE, METRICS, BOOK_DEPTH})
# - fills and reconcile decisions whole when they are about their own order, and otherwise
#   only the anonymous part: what the tape and its reorg marks show, never a client, an
#   order id or a counterparty;
ANONYMOUS_FIELDS: dict[str, frozenset[str]] = {
    TRADE_EXECUTED: frozenset({"trade_id", "symbol", "side", "qty", "price", "region", "fill_az", "seq", "ts_ms"}),
    TRADE_CONFLICTED: frozenset(
        {"conflict_id", "kind", "symbol", "regions", "standing_region", "trade_ids", "standing_trade_ids", "compensated_trade_ids", "decided_ms"}
    ),
    TRADE_COMPENSATED: frozenset(
        {"compensation_id", "conflict_id", "trade_id", "trade_ids", "exec_type", "exec_type_name", "symbol", "region", "regions", "decided_ms"}
    ),
    # - of an experiment, that it runs, its public name, when its faults held and what the
    #   banner says; never its targets, actions, parameters, stop conditions or tags.
    EXPERIMENT_STATE: frozenset(
        {"id", "template_id", "description", "region", "state", "creation_time", "start_time", "end_time", "fault_window", "faults"}
    ),
}
# The fault plane's part the banner words are made of (faults.panel.fault_summary).
BANNER_FAULT_FIELDS = frozenset({"regions_down", "azs_down", "partitions", "throttles", "latencies", "cpu_stress", "workers_stopped"})
# A type with no rule above is shown to staff only.

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

    def clear(self) -> None:
        with self._lock:
            self._events.clear()


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


# book.depth goes out at most this often per (region, market): the newest depth wins, and
# the last one of a burst is always sent (at the end of its interval).
DEPTH_INTERVAL_S = 0.25


class DepthCoalescer:
    """At most one book.depth event per (region, symbol) per interval, the newest depth."""

    def __init__(self, interval_s: float = DEPTH_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._sent_at: dict[tuple[str, str], float] = {}
        self._pending: dict[tuple[str, str], dict[str, Any]] = {}
        self._timers: dict[tuple[str, str], threading.Timer] = {}

    def offer(self, region: str, data: dict[str, Any]) -> None:
        key = (region, str(data.get("symbol", "")))
        with self._lock:
            now = self.clock()
            wait = self._sent_at.get(key, -self.interval_s) + self.interval_s - now
            if wait > 0:
                self._pending[key] = data
                if key not in self._timers:
                    timer = self._timers[key] = threading.Timer(wait, self._flush, args=(key,))
                    timer.daemon = True
                    timer.start()
                return
            self._sent_at[key] = now
            self._pending.pop(key, None)
        publish(BOOK_DEPTH, region, data)

    def _flush(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._timers.pop(key, None)
            data = self._pending.pop(key, None)
            if data is None:
                return
            self._sent_at[key] = self.clock()
        publish(BOOK_DEPTH, key[0], data)


DEPTH = DepthCoalescer()


def publish_depth(region: str, depth_data: dict[str, Any]) -> None:
    """A book's depth after a batch: `{"symbol","region","seq","ts","bids","asks",...}`
    (Decimal strings), coalesced per (region, symbol) to at most four events a second."""
    DEPTH.offer(region, depth_data)


@dataclass(frozen=True)
class Viewer:
    """Who a socket delivers to."""

    username: str
    is_staff: bool = False


def visible_to(event: Event, viewer: Viewer, shared: bool = True) -> Event | None:
    """What `viewer` may receive of `event`: the event itself, its anonymous copy, or None.

    The one visibility policy: every delivery path (both sockets, their `?since=` replay,
    the API Gateway pusher) and the JSON tape ask it. With `shared`, the anonymous copy of
    a published event is built once for every socket that receives it."""
    if viewer.is_staff:
        return event
    kind = event["type"]
    if kind in PUBLIC_TYPES:
        return event
    data = event.get("data") or {}
    own = bool(viewer.username) and data.get("client") == viewer.username
    if kind in PRIVATE_TYPES:
        return event if own else None
    if kind in ANONYMOUS_FIELDS:
        if own and kind == TRADE_EXECUTED:
            seen = fill_seen_by_owner(data, str(data.get("order_id", "")))
            return event if seen is data else {**event, "data": seen}
        if own and kind != EXPERIMENT_STATE:
            return event
        return ANONYMOUS.copy_of(event) if shared else anonymous_copy(event)
    return None


def fill_seen_by_owner(trade: dict[str, Any], order_id: str, side: str = "", client: str = "") -> dict[str, Any]:
    """A fill (trade_data's shape) as the owner of `order_id`, one of its two sides, sees it:
    named by that order (its `side` and `client` when it is the resting side), and the other
    side's order id withheld when that is another client's order (the matcher's trades are
    between two real orders; SimFill's simulated counterparty keeps its name). Unchanged
    (the same dict) when there is nothing to withhold."""
    buy, sell = str(trade.get("buy_order", "")), str(trade.get("sell_order", ""))
    other = sell if buy == order_id else buy
    if not is_order_id(other) and trade.get("order_id") == order_id:
        return trade
    seen = {**trade, "buy_order": buy if buy == order_id else "", "sell_order": sell if sell == order_id else ""}
    if trade.get("order_id") != order_id:  # the resting side's view of the taker's trade
        seen.update(order_id=order_id, side=side or seen.get("side"), client=client or seen.get("client"))
    return seen


def tape_entry_for(trade: dict[str, Any], viewer: Viewer) -> dict[str, Any]:
    """One entry of the JSON tape (trade_data's shape) as `viewer` may see it: the
    trade.executed rule, so the tape read over HTTP shows what the socket shows."""
    shown = visible_to(make_event(TRADE_EXECUTED, str(trade.get("region", "")), trade, 0), viewer, shared=False)
    return shown["data"] if shown is not None else {}


def anonymous_copy(event: Event) -> Event:
    """The event with only the fields its type shows to everyone (ANONYMOUS_FIELDS)."""
    kind = event["type"]
    fields = ANONYMOUS_FIELDS.get(kind, frozenset())
    data = {key: value for key, value in (event.get("data") or {}).items() if key in fields}
    if kind == EXPERIMENT_STATE:
        state = data.get("state")
        if isinstance(state, dict):
            data["state"] = {"status": state.get("status")}
        faults = data.get("faults")
        if isinstance(faults, dict):
            data["faults"] = {key: value for key, value in faults.items() if key in BANNER_FAULT_FIELDS}
    return {**event, "data": data}


class AnonymousCopies:
    """Each event's anonymous copy, made once for all the sockets that receive it (so the
    sockets' shared JSON cache encodes it once too). Entries hold their event, so an id
    is never reused while cached; events are not changed after they are published."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._copies: OrderedDict[int, tuple[Event, Event]] = OrderedDict()
        self._lock = threading.Lock()

    def copy_of(self, event: Event) -> Event:
        with self._lock:
            hit = self._copies.get(id(event))
            if hit is not None and hit[0] is event:
                return hit[1]
        copy = anonymous_copy(event)
        with self._lock:
            self._copies[id(event)] = (event, copy)
            if len(self._copies) > self.size:
                self._copies.popitem(last=False)
        return copy


ANONYMOUS = AnonymousCopies()


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
        "client": trade.client,
        "region": trade.region,
        "fill_az": trade.fill_az,
        "seq": trade.seq,
        "ts_ms": trade.ts_ms,
    }
