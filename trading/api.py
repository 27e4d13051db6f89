"""The JSON API for orders, trades, regions and metrics (django-ninja router).

Parse, call one action, render. The order body is parsed here with Decimal for every
JSON number, so a float never exists; the schema below is for the OpenAPI document.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Router

from exchange_ui.api_input import BodyNotJson, QueryCount, read_json_body
from exchange_ui.runtime import get_exchange, get_runtime
from trading import models
from trading.actions import IdempotencyConflict, RegionUnavailable, cancel_order, locate_order, submit_order
from trading.domain import Order, Trade, ValidationErrors
from trading.events import Viewer, fill_seen_by_owner, order_data, tape_entry_for, trade_data
from trading.config import ExchangeConfig
from trading.limits import PositionLimitExceeded, TokenBuckets
from trading.mirror import with_recent_orders, with_recent_trades
from trading.store import TapePosition

router = Router(tags=["orders"])

ORDER_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["symbol", "side", "qty", "price"],
                    "properties": {
                        "symbol": {"type": "string", "example": "BTC-USD"},
                        "side": {"type": "string", "enum": ["BUY", "SELL"]},
                        "qty": {"type": "string", "description": "decimal, a multiple of the lot", "example": "0.5000"},
                        "price": {"type": "string", "description": "decimal, a multiple of the tick", "example": "50000.00"},
                        "region": {"type": "string", "description": "optional; default: the market's home region"},
                    },
                }
            }
        },
    },
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "maxLength": 128},
            "description": "the same key and body again returns the original order",
        }
    ],
}

MAX_LIST = 500


def error(status: int, code: str, detail: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail, **extra}, status=status)


class OrderRate:
    """The per-user order token bucket, one per process, shared by POST /api/orders and the
    page's order form. Built for the running exchange's config (a new config: new buckets)."""

    def __init__(self) -> None:
        self._held: tuple[ExchangeConfig, TokenBuckets] | None = None

    def wait_s(self, username: str) -> float:
        """0.0 when `username` may submit one more order now, else the seconds to wait."""
        config = get_exchange().config
        held = self._held
        if held is None or held[0] is not config:
            held = self._held = (config, TokenBuckets(float(config.user_order_rate), config.user_order_burst))
        return held[1].take(username, time.monotonic())

    def refusal(self, wait_s: float) -> tuple[str, str]:
        """The Retry-After header (whole seconds, at least 1) and the words for a refusal."""
        config = get_exchange().config
        detail = (
            f"more than {format(config.user_order_rate, 'f')} orders/s (bursts of {config.user_order_burst}) from one user; "
            f"retry in {wait_s:.2f} s"
        )
        return str(max(1, math.ceil(wait_s))), detail


ORDER_RATE = OrderRate()


def rate_limited(wait_s: float) -> JsonResponse:
    retry_after, detail = ORDER_RATE.refusal(wait_s)
    response = error(429, "rate_limited", detail, retry_after_s=round(wait_s, 3))
    response["Retry-After"] = retry_after
    return response


def field_errors(errors: dict[str, list[str]]) -> JsonResponse:
    return JsonResponse({"errors": errors}, status=400)


def parse_json_body(request: HttpRequest) -> Any:
    try:
        # Every JSON number becomes a Decimal; NaN/Infinity are refused by validation.
        return read_json_body(request, decimal_numbers=True)
    except BodyNotJson as not_json:
        errors = ValidationErrors()
        errors.add("__all__", str(not_json))
        raise errors from None


def order_json(order: Order, fills: list[Trade] | None = None) -> dict[str, Any]:
    body = order_data(order)
    body["awaiting_fill"] = order.is_open
    body["history"] = [{"status": h.status, "ts_ms": h.ts_ms, "az": h.az, "note": h.note} for h in order.history]
    if fills is not None:
        body["fills"] = [trade_data(t) for t in fills]
    return body


def grid_text(value: Decimal, step: Decimal | None) -> str:
    """A mirrored decimal shown on its market's grid, as the order was entered."""
    return format(value.quantize(step) if step is not None else value.normalize(), "f")


def market_steps(symbol: str) -> tuple[Decimal | None, Decimal | None]:
    market = get_exchange().config.market(symbol)
    return (market.lot, market.tick) if market else (None, None)


def mirror_order_json(order: models.Order) -> dict[str, Any]:
    lot, tick = market_steps(order.symbol)
    return {
        "order_id": order.order_id,
        "client": order.client,
        "symbol": order.symbol,
        "side": order.side,
        "qty": grid_text(order.qty, lot),
        "price": grid_text(order.price, tick),
        "status": order.status,
        "filled_qty": grid_text(order.filled_qty, lot),
        "region": order.region,
        "accepted_az": order.accepted_az,
        "seq": order.seq,
        "idempotency_key": order.idempotency_key,
        "created_ms": order.created_ms,
        "updated_ms": order.updated_ms,
        "awaiting_fill": order.awaiting_fill,
    }


def mirror_trade_json(trade: models.Trade) -> dict[str, Any]:
    lot, tick = market_steps(trade.symbol)
    return {
        "trade_id": trade.trade_id,
        "order_id": trade.order_id,
        "symbol": trade.symbol,
        "side": trade.side,
        "qty": grid_text(trade.qty, lot),
        "price": grid_text(trade.price, tick),
        "buy_order": trade.buy_order,
        "sell_order": trade.sell_order,
        "client": trade.client,
        "region": trade.region,
        "fill_az": trade.fill_az,
        "seq": trade.seq,
        "ts_ms": trade.ts_ms,
    }


def can_see(request: HttpRequest, client: str) -> bool:
    return bool(request.user.is_staff or request.user.get_username() == client)


def tape_as_seen(request: HttpRequest, trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tape for the caller: their own fills whole, everyone else's anonymous (staff: all whole)."""
    viewer = Viewer(request.user.get_username(), bool(request.user.is_staff))
    return [tape_entry_for(trade, viewer) for trade in trades]


@router.post("/orders", openapi_extra=ORDER_BODY_SCHEMA, summary="Submit an order (idempotent by Idempotency-Key)")
def post_order(request: HttpRequest) -> HttpResponse:
    wait_s = ORDER_RATE.wait_s(request.user.get_username())
    if wait_s:
        return rate_limited(wait_s)
    try:
        payload = parse_json_body(request)
        order, created = submit_order(
            get_exchange(), request.user.get_username(), payload, request.headers.get("Idempotency-Key")
        )
    except ValidationErrors as invalid:
        return field_errors(invalid.errors)
    except IdempotencyConflict as conflict:
        return error(422, "idempotency_key_reused", str(conflict), order_id=conflict.order.order_id)
    except PositionLimitExceeded as refused:
        return error(422, "position_limit", str(refused))
    except RegionUnavailable as down:
        return unavailable(down)
    return JsonResponse(order_json(order), status=201 if created else 200)


@router.get("/orders", summary="The caller's orders (staff: all), newest first")
def list_orders(request: HttpRequest, limit: QueryCount = 100, symbol: str | None = None, status: str | None = None) -> HttpResponse:
    query = models.Order.objects.all()
    if not request.user.is_staff:
        query = query.filter(client=request.user.get_username())
    if symbol:
        query = query.filter(symbol=symbol[:20])
    if status:
        query = query.filter(status=status[:12])
    limit = max(1, min(limit, MAX_LIST))
    # The mirror trails the tables: the caller's own newest orders come from the tables
    # too, so an order answered 201 is in the very next listing (with its latest status).
    rows = with_recent_orders(
        get_exchange(), list(query.order_by("-created_ms")[:limit]), request.user.get_username(), limit,
        symbol=symbol[:20] if symbol else None, status=status[:12] if status else None,
    )
    return JsonResponse({"orders": [mirror_order_json(o) for o in rows]})


def visible_order(request: HttpRequest, order_id: str) -> Order | None:
    """The order as its home region holds it, if the caller may see it."""
    if len(order_id) > 64:
        return None
    hint = models.Order.objects.filter(pk=order_id).values_list("region", flat=True).first()
    order = locate_order(get_exchange(), order_id, hint)
    return order if order is not None and can_see(request, order.client) else None


def unavailable(down: RegionUnavailable) -> JsonResponse:
    response = error(503, "region_unavailable", str(down), region=down.region)
    response["Retry-After"] = str(down.retry_after_s)
    return response


@router.get("/orders/{order_id}", summary="An order with its status history and fills")
def get_order(request: HttpRequest, order_id: str) -> HttpResponse:
    order = visible_order(request, order_id)
    if order is None:
        return error(404, "not_found", "no such order")
    ex = get_exchange()
    try:
        trades = ex.stores[order.region].trades
        fills = trades.for_order(order.order_id, order.region)
        if order.maker_trades:  # its fills as the resting side of the matcher's book
            fills += sorted(trades.get_many(list(order.maker_trades)), key=lambda t: (t.ts_ms, t.trade_id))
        body = order_json(order, fills)
        if not request.user.is_staff:  # the fills on this order's side, the other order withheld
            body["fills"] = [fill_seen_by_owner(f, order.order_id, order.side, order.client) for f in body["fills"]]
        if len(ex.config.regions) > 1:
            from reconcile_panel.orders import order_reconciliation

            # Conflicts and compensations decided about this order, null when none.
            body["reconciliation"] = order_reconciliation(ex.config, order.region, order.order_id)
    except (BotoCoreError, ClientError):
        return unavailable(RegionUnavailable(order.region))
    return JsonResponse(body)


@router.delete("/orders/{order_id}", summary="Request a cancel (applied in order with the fill)")
def delete_order(request: HttpRequest, order_id: str) -> HttpResponse:
    order = visible_order(request, order_id)
    if order is None:
        return error(404, "not_found", "no such order")
    try:
        requested = cancel_order(get_exchange(), order)
    except RegionUnavailable as down:
        return unavailable(down)
    return JsonResponse(
        {
            "order_id": order.order_id,
            "cancel": "requested" if requested else "too_late",
            "status": order.status,
            "detail": "cancel requested" if requested else f"the order is already {order.status}",
        },
        status=202,
    )


MAX_SYMBOL = 20
MAX_CURSOR = 4096


def tape_cursor(position: TapePosition | None) -> str | None:
    """A tape page's position as an opaque token (URL-safe), None at the end."""
    if position is None:
        return None
    data = {region: list(at) if at is not None else None for region, at in sorted(position.items())}
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def parse_tape_cursor(text: str, regions: tuple[str, ...]) -> TapePosition:
    """The position a token from tape_cursor names; ValueError for anything else."""
    if len(text) > MAX_CURSOR:
        raise ValueError("cursor too long")
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, UnicodeDecodeError, binascii.Error, RecursionError) as bad:
        raise ValueError("not a cursor") from bad
    if not isinstance(data, dict) or not data or not set(data) <= set(regions):
        raise ValueError("not a cursor")
    position: TapePosition = {}
    for region, at in data.items():
        if at is None:
            position[region] = None
        elif (
            isinstance(at, list) and len(at) == 2 and isinstance(at[0], str) and at[0].startswith("TRADE#")
            and type(at[1]) is int and at[1] >= 0
        ):
            position[region] = (at[0], at[1])
        else:
            raise ValueError("not a cursor")
    return position


@router.get("/trades", summary="The tape, newest first (with region=: a page, and next_cursor to go on)")
def list_trades(
    request: HttpRequest,
    symbol: str | None = None,
    region: str | None = None,
    executed_in: str | None = None,
    limit: QueryCount = 100,
    cursor: str | None = None,
) -> HttpResponse:
    ex = get_exchange()
    limit = max(1, min(limit, MAX_LIST))
    for name, value in (("region", region), ("executed_in", executed_in)):
        if value and value not in ex.config.regions:
            return JsonResponse({"errors": {name: [f"Unknown region. Known: {', '.join(ex.config.regions)}."]}}, status=400)
    if region:
        # The tape as region R's own tables hold it (after replication), read from DynamoDB a
        # page at a time (the by-region index): `next_cursor` goes on where this page ended.
        try:
            after = parse_tape_cursor(cursor, ex.config.regions) if cursor else None
        except ValueError:
            return JsonResponse({"errors": {"cursor": ["Not a cursor this tape gave out: pass next_cursor as it came."]}}, status=400)
        if symbol and len(symbol) > MAX_SYMBOL:
            return JsonResponse({"trades": [], "next_cursor": None})
        try:
            trades, following = ex.stores[region].trades.tape_page(
                [executed_in] if executed_in else list(ex.config.regions), limit, after, symbol or None
            )
        except Exception:
            return error(503, "region_unavailable", f"region {region} did not answer", region=region)
        return JsonResponse({"trades": tape_as_seen(request, [trade_data(t) for t in trades]), "next_cursor": tape_cursor(following)})
    query = models.Trade.objects.all()
    if symbol:
        query = query.filter(symbol=symbol[:20])
    if executed_in:
        query = query.filter(region=executed_in)
    # Each region's newest fills from its own table too: a fill an order reports is on
    # the tape even while the mirror trails (after a heal, say).
    rows = with_recent_trades(
        ex, list(query.order_by("-ts_ms", "-trade_id")[:limit]), [executed_in] if executed_in else list(ex.config.regions), limit,
        symbol=symbol[:20] if symbol else None,
    )
    return JsonResponse({"trades": tape_as_seen(request, [mirror_trade_json(t) for t in rows])})


BOOK_LEVELS = 10
MAX_BOOK_LEVELS = 50


@router.get("/book", summary="A market's order book in a region: the best prices a side, from the book snapshot")
def get_book(request: HttpRequest, symbol: str | None = None, depth: QueryCount = BOOK_LEVELS, region: str | None = None) -> HttpResponse:
    """Bids high to low and asks low to high, Decimal strings, read from the snapshot (Redis,
    else the DynamoDB copy: `"stale": true`); `"frozen": true` while the region is down."""
    ex = get_exchange()
    config = ex.config
    known = ", ".join(m.symbol for m in config.markets)
    market = config.market(symbol) if symbol else config.markets[0]
    if market is None:
        return JsonResponse({"errors": {"symbol": [f"Unknown market. Known: {known}."]}}, status=400)
    if not 1 <= depth <= MAX_BOOK_LEVELS:
        return JsonResponse({"errors": {"depth": [f"Must be between 1 and {MAX_BOOK_LEVELS}."]}}, status=400)
    if region and region not in config.regions:
        return JsonResponse({"errors": {"region": [f"Unknown region. Known: {', '.join(config.regions)}."]}}, status=400)
    where = region or market.home_region
    try:
        book = get_runtime().book(market.symbol, where, depth)
    except (BotoCoreError, ClientError):  # neither the snapshot Redis nor the region's table answered
        response = error(503, "region_unavailable", f"the {market.symbol} book in {where} cannot be read now", region=where)
        response["Retry-After"] = "2"
        return response
    return JsonResponse(book)


@router.get("/regions", summary="Each region: status, AZs and workers, queue depth, replication lag")
def list_regions(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"regions": get_runtime().regions()})


@router.get("/metrics", summary="Time-to-accept, time-to-fill, queued events, awaiting fill, tape divergence, replication backlog and lag, backpressure, flash warning")
def get_metrics(request: HttpRequest) -> HttpResponse:
    runtime = get_runtime()
    return JsonResponse(runtime.last_metrics or runtime.metrics())
