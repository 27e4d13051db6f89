"""Turns batches of events into what a browser receives: coalesced, then rendered.

coalesce() is pure: the newest state of each order, region and metric wins, trades are
capped per frame (the rest is recovered by a resync). render_dashboard_frame() renders
the htmx out-of-band fragments for one frame. QueuedOrders follows, per socket, which
regions are down and which open orders the page shows, so an order waiting in a down
region's queue says so, and says so again when the region comes back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from django.template.loader import render_to_string

from trading import events as ev
from trading.domain import OPEN_STATUSES

MAX_TRADES_PER_FRAME = 40
MAX_ORDERS_PER_FRAME = 60
MAX_RECONCILE_PER_FRAME = 120
RECONCILE_TYPES = (ev.TRADE_CONFLICTED, ev.TRADE_COMPENSATED, ev.PNL_ADJUSTED)


def coalesce(batch: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """Reduce a batch to what changes the picture. Returns (events, overflowed)."""
    orders: dict[str, dict[str, Any]] = {}
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    trades: list[dict[str, Any]] = []
    experiments: dict[str, dict[str, Any]] = {}
    reconciled: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    overflowed = False
    for event in batch:
        kind = event["type"]
        if kind in (ev.ORDER_ACCEPTED, ev.ORDER_STATUS):
            order_id = event["data"].get("order_id", "")
            previous = orders.get(order_id)
            if previous is None or event["data"].get("updated_ms", 0) >= previous["data"].get("updated_ms", 0):
                orders[order_id] = event
        elif kind == ev.TRADE_EXECUTED:
            trades.append(event)
        elif kind in (ev.METRICS, ev.REGION_HEALTH, ev.BACKPRESSURE):
            latest[(kind, event["region"])] = event
        elif kind == ev.BOOK_DEPTH:
            latest[(kind, f"{event['region']} {event['data'].get('symbol', '')}")] = event
        elif kind == ev.EXPERIMENT_STATE:
            # The newest state of each experiment wins; the last one carries the newest faults.
            experiments.pop(event["data"].get("id", ""), None)
            experiments[event["data"].get("id", "")] = event
        elif kind in RECONCILE_TYPES:
            # Each record once, in the order the reconciler wrote them (a conflict before its
            # compensations); a burst beyond the cap is recovered by the resync.
            reconciled.append(event)
        else:
            others.append(event)
    if len(trades) > MAX_TRADES_PER_FRAME:
        trades = trades[-MAX_TRADES_PER_FRAME:]
        overflowed = True
    order_events = list(orders.values())
    if len(order_events) > MAX_ORDERS_PER_FRAME:
        order_events = order_events[-MAX_ORDERS_PER_FRAME:]
        overflowed = True
    if len(reconciled) > MAX_RECONCILE_PER_FRAME:
        reconciled = reconciled[:MAX_RECONCILE_PER_FRAME]
        overflowed = True
    return order_events + trades + reconciled + list(latest.values()) + list(experiments.values()) + others, overflowed


def order_context(data: dict[str, Any]) -> dict[str, Any]:
    return {"o": data}


# Open orders a socket remembers, to show again when their region goes down or comes back.
MAX_OPEN_FOLLOWED = 500


def down_regions(regions: Iterable[dict[str, Any]]) -> frozenset[str]:
    """The regions a list of region views (Runtime.regions(), region.health data) calls down."""
    return frozenset(r["region"] for r in regions if r.get("status") == "down")


def with_region_state(order: dict[str, Any], down: Collection[str]) -> dict[str, Any]:
    """The order as a row shows it: an open order accepted in a region that is down waits
    in that region's FIFO queue (`queued_in`) until the region is back and fills it."""
    if order.get("status") in OPEN_STATUSES and order.get("region") in down:
        return {**order, "queued_in": order["region"]}
    return order


class QueuedOrders:
    """One socket's view of the regions that are down and of the open orders it has shown.

    A region's outage changes no order, so no order event would re-render the rows already
    on the page: when a region goes down or comes back, follow() hands back the open orders
    of that region this socket has shown, to render again with the region's new state.
    """

    def __init__(self, max_open: int = MAX_OPEN_FOLLOWED):
        self.down: frozenset[str] = frozenset()
        self.max_open = max_open
        self._open: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def follow(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take in a (coalesced) batch; return the order events to render again."""
        shown: set[str] = set()
        health: list[dict[str, Any]] = []
        for event in batch:
            if event["type"] in (ev.ORDER_ACCEPTED, ev.ORDER_STATUS):
                data = event["data"]
                order_id = data.get("order_id", "")
                shown.add(order_id)
                self._open.pop(order_id, None)
                if data.get("status") in OPEN_STATUSES:
                    self._open[order_id] = data
                    while len(self._open) > self.max_open:
                        self._open.popitem(last=False)
            elif event["type"] == ev.REGION_HEALTH:
                health.append(event["data"])
        if not health:
            return []
        reported = {h["region"] for h in health}
        was, self.down = self.down, (self.down - reported) | down_regions(health)
        changed = was ^ self.down
        return [
            {"type": ev.ORDER_STATUS, "region": data["region"], "data": data}
            for order_id, data in self._open.items()
            if data.get("region") in changed and order_id not in shown
        ]


# The ladder's fixed shape: this many asks over this many bids, whatever the book holds, so
# nothing on the page moves when a level appears or empties.
LADDER_LEVELS = 8


def ladder_id(region: str, symbol: str) -> str:
    return f"book-{region}-{symbol}"


def _decimal(text: Any) -> Decimal | None:
    try:
        return Decimal(str(text))
    except (InvalidOperation, ValueError):
        return None


def ladder_context(book: dict[str, Any], frozen: bool | None = None, levels: int = LADDER_LEVELS) -> dict[str, Any]:
    """A book (GET /api/book's shape, or a book.depth event's data) as the ladder draws it:
    `levels` ask rows over `levels` bid rows (blank rows where the book has no level), the
    best prices meeting at the spread, each row with its running total from the spread and a
    bar for that total's share of the deeper side shown.
    `frozen` overrides the book's own flag (the socket knows which regions are down)."""
    asks = list(book.get("asks") or [])[:levels]
    bids = list(book.get("bids") or [])[:levels]

    def rows(side: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each level with the running total from the spread outwards."""
        made, running = [], Decimal(0)
        for row in side:
            running += _decimal(row.get("qty")) or Decimal(0)
            made.append({**row, "total": running})
        return made

    ask_rows, bid_rows = rows(asks), rows(bids)
    deepest = max([r["total"] for r in ask_rows + bid_rows], default=Decimal(0))
    for row in ask_rows + bid_rows:
        # The bar: the running total's share of the deepest side shown (a depth chart on its side).
        share = int(row["total"] * 100 / deepest) if deepest > 0 else 0
        row["bar"] = max(share, 1) if row["total"] > 0 else 0
        row["total"] = format(row["total"], "f")

    def total(side: list[dict[str, Any]]) -> str:
        return str(side[-1]["total"]) if side else "0"

    best_ask = _decimal(asks[0]["price"]) if asks else None
    best_bid = _decimal(bids[0]["price"]) if bids else None
    spread = format(best_ask - best_bid, "f") if best_ask is not None and best_bid is not None else None
    return {
        "id": ladder_id(str(book.get("region", "")), str(book.get("symbol", ""))),
        "symbol": book.get("symbol", ""),
        "region": book.get("region", ""),
        "seq": book.get("seq") or 0,
        "ts": book.get("ts") or 0,
        "stale": bool(book.get("stale")),
        "stale_reason": book.get("stale_reason", ""),
        "frozen": bool(book.get("frozen")) if frozen is None else frozen,
        "unavailable": bool(book.get("unavailable")),
        "source": book.get("source", ""),
        # Asks drawn highest first, so the best ask sits on the spread; blank rows above them.
        "asks": [None] * (levels - len(asks)) + list(reversed(ask_rows)),
        "bids": bid_rows + [None] * (levels - len(bids)),
        "spread": spread,
        "bid_total": total(bid_rows),
        "ask_total": total(ask_rows),
        "empty": not asks and not bids,
    }


class BookLadders:
    """One socket's view of the books it has drawn and of the regions that are down.

    A region going down publishes no book.depth (its matcher is stopped), so nothing would
    dim its ladders: when a region goes down or comes back, follow() hands back the last
    book.depth this socket drew for each of that region's books, to draw again."""

    def __init__(self) -> None:
        self.down: frozenset[str] = frozenset()
        self._drawn: dict[tuple[str, str], dict[str, Any]] = {}

    def follow(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        drawn: set[tuple[str, str]] = set()
        health: list[dict[str, Any]] = []
        for event in batch:
            if event["type"] == ev.BOOK_DEPTH:
                key = (event["region"], str(event["data"].get("symbol", "")))
                self._drawn[key] = event
                drawn.add(key)
            elif event["type"] == ev.REGION_HEALTH:
                health.append(event["data"])
        if not health:
            return []
        reported = {h["region"] for h in health}
        was, self.down = self.down, (self.down - reported) | down_regions(health)
        changed = was ^ self.down
        return [event for key, event in self._drawn.items() if key[0] in changed and key not in drawn]


def render_dashboard_frame(
    batch: list[dict[str, Any]], seq: int, resync: bool, staff: bool = False, down: Collection[str] = ()
) -> str:
    """One socket frame. `staff`: the reconcile panel's rows (they name accounts) are included.
    `down`: the regions that are down, whose open orders wait in their queues."""
    parts = [render_to_string("trading/fragments.html#live-seq", {"seq": seq, "resync": resync})]
    for event in batch:
        kind = event["type"]
        if kind in (ev.ORDER_ACCEPTED, ev.ORDER_STATUS):
            parts.append(render_to_string("trading/fragments.html#order-row", {"o": with_region_state(event["data"], down), "oob": True}))
        elif kind == ev.TRADE_EXECUTED:
            parts.append(render_to_string("trading/fragments.html#trade-row", {"t": event["data"], "oob": True}))
        elif kind == ev.REGION_HEALTH:
            parts.append(render_to_string("trading/fragments.html#region-card", {"r": event["data"], "oob": True}))
        elif kind == ev.METRICS:
            parts.append(render_to_string("trading/fragments.html#metrics", {"m": event["data"], "oob": True}))
        elif kind == ev.BOOK_DEPTH:
            book = ladder_context(event["data"], frozen=event["region"] in down)
            parts.append(render_to_string("trading/fragments.html#book-ladder", {"b": book, "oob": True}))
        elif kind in RECONCILE_TYPES:
            parts.append(render_reconcile_event(event, staff))
    # Counts and totals are sums over the records: the pages re-fetch them (at most once per
    # frame) under their own filters rather than patching numbers here.
    if staff and any(event["type"] in RECONCILE_TYPES for event in batch):
        parts.append(render_to_string("reconcile_panel/fragments.html#panel-refresh"))
    if any(event["type"] == ev.PNL_ADJUSTED for event in batch):
        parts.append(render_to_string("reconcile_panel/fragments.html#mine-refresh"))
    experiments = [event for event in batch if event["type"] == ev.EXPERIMENT_STATE]
    if experiments:
        parts.append(render_experiments(experiments, staff))
    return "".join(parts)


def render_reconcile_event(event: dict[str, Any], staff: bool) -> str:
    """trade.conflicted / trade.compensated: the tape's reorg marks (trade ids only, for everyone)
    and, for staff, the panel's rows; pnl.adjusted (its owner or staff): the ledger row."""
    from reconcile_panel.panel import decorate_adjustments

    kind, data = event["type"], event["data"]
    parts = []
    if kind == ev.TRADE_CONFLICTED:
        mark = {"mark_id": data["conflict_id"], "step": "conflicted", "trade_ids": data["trade_ids"], "standing": data["standing_trade_ids"], "detail": f"{data['kind']}: {data['standing_region']} stands"}
        parts.append(render_to_string("reconcile_panel/fragments.html#reorg-mark", mark))
        if staff:
            parts.append(render_to_string("reconcile_panel/fragments.html#conflict-row", {"c": {**data, "compensations": []}, "oob": True}))
    elif kind == ev.TRADE_COMPENSATED:
        mark = {"mark_id": data["compensation_id"], "step": "compensated", "trade_ids": [data["trade_id"]], "exec_type": data["exec_type"]}
        parts.append(render_to_string("reconcile_panel/fragments.html#reorg-mark", mark))
        if staff:
            parts.append(render_to_string("reconcile_panel/fragments.html#compensation-item", {"comp": data, "oob": True}))
    elif kind == ev.PNL_ADJUSTED and staff:
        parts.append(render_to_string("reconcile_panel/fragments.html#adjustment-row", {"a": decorate_adjustments([dict(data)])[0], "oob": True}))
    return "".join(parts)


def render_experiments(experiments: list[dict[str, Any]], staff: bool = False) -> str:
    """experiment.state: each run's fault window and, for staff, its card; once per frame the
    faults banner and, for staff, the lever. A trader's copy of the event holds no plan
    (trading.events.visible_to): it shades the charts and fills the banner."""
    import time

    from faults import panel
    from faults.runner import get_runner

    now_ms = int(time.time() * 1000)
    parts = []
    for event in experiments:
        snapshot = event["data"]
        if staff:
            parts.append(render_to_string("faults/fragments.html#experiment", {**panel.experiment_context(snapshot, now_ms), "oob": True}))
        window = snapshot["fault_window"] if "fault_window" in snapshot else panel.fault_window(snapshot)
        parts.append(render_to_string("faults/fragments.html#fault-window", {"w": window}))
    words = panel.fault_summary(experiments[-1]["data"].get("faults"))
    parts.append(render_to_string("faults/fragments.html#banner-faults", {"fault_words": words, "oob": True}))
    if staff:
        runner = get_runner()
        running = sum(1 for x in runner.running()) if runner is not None else 0
        parts.append(render_to_string("faults/fragments.html#lever", {"running_count": running, "oob": True}))
    return "".join(parts)
