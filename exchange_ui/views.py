"""The dashboard pages: plain function views rendering templates and their partials."""

from __future__ import annotations

import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from exchange_ui.runtime import get_exchange, get_runtime
from trading import models
from trading.actions import IdempotencyConflict, RegionUnavailable, submit_order
from trading.api import ORDER_RATE, grid_text, market_steps, mirror_order_json, mirror_trade_json
from trading.domain import ValidationErrors
from trading.fragments import LADDER_LEVELS, down_regions, ladder_context, with_region_state
from trading.limits import PositionLimitExceeded

ORDERS_SHOWN = 40
TAPE_SHOWN = 40


def visible_orders(request: HttpRequest) -> Any:
    query = models.Order.objects.all()
    if not request.user.is_staff:
        query = query.filter(client=request.user.get_username())
    return query.order_by("-created_ms")[:ORDERS_SHOWN]


def live_context(request: HttpRequest) -> dict[str, Any]:
    runtime = get_runtime()
    orders = [mirror_order_json(o) for o in visible_orders(request)]
    rerouted = dict(
        models.OrderStatusChange.objects.filter(order_id__in=[o["order_id"] for o in orders], note__startswith="rerouted").values_list("order_id", "note")
    )
    regions = runtime.regions()
    down = down_regions(regions)
    for order in orders:
        order["rerouted"] = rerouted.get(order["order_id"], "")
    return {
        **book_context(runtime),
        "orders": [with_region_state(order, down) for order in orders],
        "trades": [mirror_trade_json(t) for t in models.Trade.objects.order_by("-ts_ms", "-trade_id")[:TAPE_SHOWN]],
        "regions": regions,
        "m": runtime.last_metrics or runtime.metrics(),
    }


def book_context(runtime: Any) -> dict[str, Any]:
    """The depth ladders: one per market and region (the page shows one at a time, the first
    market's home region first), read from the snapshots; none under SimFill."""
    config = runtime.config
    first = config.markets[0]
    context: dict[str, Any] = {
        "book_engine": config.engine == "matcher",
        "book_default": {"region": first.home_region, "symbol": first.symbol},
        "books": [],
    }
    if not context["book_engine"]:
        return context
    for market in config.markets:
        for region in config.regions:
            try:
                book = runtime.book(market.symbol, region, LADDER_LEVELS)
            except (BotoCoreError, ClientError, RuntimeError, OSError) as error:
                book = {"symbol": market.symbol, "region": region, "unavailable": True, "stale": True, "stale_reason": str(error)[:120] or "no snapshot readable"}
            context["books"].append(ladder_context(book))
    return context


def form_context(values: dict[str, Any] | None = None, errors: dict[str, list[str]] | None = None, notice: str = "") -> dict[str, Any]:
    config = settings.EXCHANGE
    return {
        "idempotency_key": uuid.uuid4().hex,
        "markets": config.markets,
        "region_names": config.regions,
        "values": values or {"symbol": config.markets[0].symbol, "side": "BUY", "qty": "0.0100", "price": str(config.markets[0].reference_price)},
        "errors": errors or {},
        "notice": notice,
    }


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "trading/dashboard.html", {**live_context(request), **form_context()})


@login_required
@require_GET
def live_snapshot(request: HttpRequest) -> HttpResponse:
    """Everything the live view shows, as out-of-band swaps: the resync after a gap or reconnect."""
    return render(request, "trading/fragments.html#snapshot", live_context(request))


@login_required
@require_POST
def submit_order_form(request: HttpRequest) -> HttpResponse:
    values = {k: request.POST.get(k, "") for k in ("symbol", "side", "qty", "price", "region")}
    key = request.POST.get("idempotency_key", "")
    payload = {k: v for k, v in values.items() if v}
    wait_s = ORDER_RATE.wait_s(request.user.get_username())
    if wait_s:
        retry_after, _ = ORDER_RATE.refusal(wait_s)
        config = get_exchange().config
        limit = f"{format(config.user_order_rate, 'f')} a second, {config.user_order_burst} at once"
        message = f"Too many orders in a row: nothing was submitted; try again in {retry_after} s (the limit is {limit})."
        context = form_context(values, {"__all__": [message]})
        context["idempotency_key"] = key or context["idempotency_key"]  # submitting again stays idempotent
        response = render(request, "trading/fragments.html#order-form", context, status=429)
        response["Retry-After"] = retry_after
        return response
    try:
        order, created = submit_order(get_exchange(), request.user.get_username(), payload, key)
    except ValidationErrors as invalid:
        context = form_context(values, invalid.errors)
        context["idempotency_key"] = key if key else context["idempotency_key"]
        return render(request, "trading/fragments.html#order-form", context, status=400)
    except IdempotencyConflict:
        return render(request, "trading/fragments.html#order-form", form_context(values, {"__all__": ["This form was already used for another order; submit again."]}), status=422)
    except PositionLimitExceeded as refused:
        lot, _ = market_steps(refused.symbol)
        message = (
            f"Refused: your {refused.symbol} position is {grid_text(refused.position, lot)}; "
            f"{grid_text(refused.qty, lot)} more could take it past your limit of {format(refused.limit, 'f')}."
        )
        return render(request, "trading/fragments.html#order-form", form_context(values, {"__all__": [message]}), status=422)
    except RegionUnavailable as down:
        context = form_context(values, {"__all__": [f"Region {down.region} is unavailable; your order was not accepted. Retry in a moment."]})
        context["idempotency_key"] = key  # a retry of the same entry must stay idempotent
        attempt = retry_attempt(request)
        if attempt < FORM_RETRY_ATTEMPTS:
            # The page retries by itself with backoff (the same key, so never a second order).
            context.update(errors={}, retry_region=down.region, retry_attempt=attempt + 1, retry_delay_s=min(2**attempt, 8))
        response = render(request, "trading/fragments.html#order-form", context, status=503)
        response["Retry-After"] = str(down.retry_after_s)
        return response
    notice = (
        f"Order {order.order_id[:10]}… accepted in {order.region} (seq {order.seq})"
        if created
        else f"Already submitted: order {order.order_id[:10]}… is {order.status}"
    )
    context = form_context(values, notice=notice)
    context["new_order"] = mirror_like(order)
    return render(request, "trading/fragments.html#order-form", context)


FORM_RETRY_ATTEMPTS = 6


def retry_attempt(request: HttpRequest) -> int:
    try:
        return max(0, int(request.POST.get("retry_attempt", "0")))
    except ValueError:
        return 0


def mirror_like(order: Any) -> dict[str, Any]:
    from trading.events import order_data

    return order_data(order)
