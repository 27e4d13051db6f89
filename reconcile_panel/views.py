"""The reconcile panel: staff-only function views over the reconcile records.

Conflicts, compensations and P&L adjustments are read from the home region's
reconcile table (after replication every region holds the same records); new ones
reach an open page as `trade.conflicted` / `trade.compensated` / `pnl.adjusted`
frames on /ws/dashboard/ (trading/fragments.py). The invariant board runs
check_history on demand; the tapes view puts the regions' own trade tables side by side.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from reconcile_panel import panel
from reconcile_panel.api import exchange_config
from reconcile_panel.history import check
from reconcile_panel.codec import RECORD_ADJUSTMENT, RECORD_CONFLICT
from reconcile_panel.reconciler import KINDS
from reconcile_panel.store import ReconcileStore, load_history
from trading.config import ExchangeConfig
from trading.events import trade_data
from trading.auth import staff_page

TAPE_SHOWN = 150
MINE_SHOWN = 8
MARKS_SHOWN = 300
# The panel reads the newest this many records of each kind (the API pages through all).
PANEL_CONFLICTS = 200
PANEL_ADJUSTMENTS = 500
T = TypeVar("T")



staff_required = staff_page("reconcile_panel/forbidden.html")


def read_from_a_region(config: ExchangeConfig, read: Callable[[ReconcileStore], T]) -> T:
    """`read` on the home region's reconcile table, or on a replica when the home region is down."""
    from exchange_ui.runtime import get_exchange

    region_up = get_exchange().region_up
    last_error: Exception | None = None
    # Healthy regions first: a call to a down one only fails after the SDK's retries.
    for region in sorted(config.regions, key=lambda r: not region_up(r)):
        try:
            return read(ReconcileStore.for_region(region, config.table_prefix))
        except (BotoCoreError, ClientError) as error:
            last_error = error
    assert last_error is not None
    raise last_error


def newest_records(store: ReconcileStore, conflicts: int, adjustments: int, filters: panel.Filters | None = None) -> tuple[list[dict[str, Any]], bool]:
    """The newest conflicts (with their compensations) and adjustments under `filters`, a
    bounded read (the by-type index); the flag says whether older ones were left unread."""
    equal_c: dict[str, str] = {}
    equal_a: dict[str, str] = {}
    listing: dict[str, str] = {}
    if filters is not None:
        if filters.kind:
            equal_c["kind"] = filters.kind
        if filters.account:
            equal_c["client"] = equal_a["account"] = filters.account
        if filters.region:
            listing["regions"] = filters.region
    found, more_c = store.newest(RECORD_CONFLICT, conflicts, equal=equal_c, listing=listing) if conflicts else ([], None)
    items = found + store.compensations_of(found)
    if adjustments:
        adjusted, more_a = store.newest(RECORD_ADJUSTMENT, adjustments, equal=equal_a, listing=listing)
        items += adjusted
    else:
        more_a = None
    return items, more_c is not None or more_a is not None


def read_records(config: ExchangeConfig, filters: panel.Filters | None = None) -> tuple[list[dict[str, Any]], bool]:
    """What the panel shows: the newest records, and under filters the newest that match too
    (so the counts and the account list still cover the newest of everything)."""

    def read(store: ReconcileStore) -> tuple[list[dict[str, Any]], bool]:
        items, more = newest_records(store, PANEL_CONFLICTS, PANEL_ADJUSTMENTS)
        if filters is not None and filters.active:
            matching, more_matching = newest_records(store, PANEL_CONFLICTS, PANEL_ADJUSTMENTS, filters)
            items = list({str(i["pk"]): i for i in items + matching}.values())
            more = more or more_matching
        return items, more

    return read_from_a_region(config, read)


def unavailable(error: Exception) -> str:
    return "The reconcile records cannot be read right now: no region answered. They are kept; this view comes back when a region does."


def live_metrics() -> dict[str, Any]:
    from exchange_ui.runtime import get_runtime

    runtime = get_runtime()
    return {"m": runtime.last_metrics or runtime.metrics(), "pairs": runtime.replication_pairs()}


def results_context(request: HttpRequest, config: ExchangeConfig) -> tuple[dict[str, Any], int]:
    filters = panel.Filters.parse(request.GET, config.regions)
    context: dict[str, Any] = {
        "filters": filters, "kinds": KINDS, "region_names": config.regions,
        "shown_conflicts": PANEL_CONFLICTS, "shown_adjustments": PANEL_ADJUSTMENTS,
    }
    try:
        items, truncated = read_records(config, filters)
        data = panel.panel_data(items, filters)
    except (BotoCoreError, ClientError) as error:
        return {**context, "error": unavailable(error), "data": panel.panel_data([], filters)}, 503
    return {**context, "data": data, "truncated": truncated}, 200


@require_GET
@staff_required
def reconcile_panel(request: HttpRequest) -> HttpResponse:
    config = exchange_config()
    context, status = results_context(request, config)
    if request.GET.get("snapshot"):
        # The live view's resync after a gap or a reconnect: the results, out of band.
        return render(request, "reconcile_panel/panel.html#results", {**context, "oob": True}, status=status)
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "reconcile-results":
        response = render(request, "reconcile_panel/panel.html#results", context, status=status)
        if request.headers.get("HX-Trigger") == "reconcile-filters":
            response["HX-Push-Url"] = request.get_full_path()  # the filtered view keeps its address
        return response
    return render(request, "reconcile_panel/panel.html", {**context, **live_metrics()}, status=status)


@require_GET
@staff_required
def ledger(request: HttpRequest) -> HttpResponse:
    """The adjustments ledger and its totals under the current filters: re-fetched when adjustments arrive."""
    context, status = results_context(request, exchange_config())
    return render(request, "reconcile_panel/panel.html#ledger", context, status=status)


def csv_response(body: str, name: str) -> HttpResponse:
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    return response


@require_GET
@staff_required
def conflicts_csv(request: HttpRequest) -> HttpResponse:
    context, status = results_context(request, exchange_config())
    if status != 200:
        return HttpResponse(context["error"], status=status, content_type="text/plain; charset=utf-8")
    return csv_response(panel.conflicts_csv(context["data"].conflicts), "conflicts")


@require_GET
@staff_required
def adjustments_csv(request: HttpRequest) -> HttpResponse:
    context, status = results_context(request, exchange_config())
    if status != 200:
        return HttpResponse(context["error"], status=status, content_type="text/plain; charset=utf-8")
    return csv_response(panel.adjustments_csv(context["data"].adjustments), "pnl-adjustments")


@require_POST
@staff_required
def run_check(request: HttpRequest) -> HttpResponse:
    """check_history over every region's tables, as the green/red invariant board."""
    started = time.monotonic()
    try:
        result = check(load_history(exchange_config()))
    except (BotoCoreError, ClientError) as error:
        return render(request, "reconcile_panel/panel.html#board", {"error": unavailable(error)}, status=503)
    context = {
        "result": result,
        "board": panel.invariant_board(result),
        "took_ms": round((time.monotonic() - started) * 1000),
        "checked_at": int(time.time() * 1000),
    }
    return render(request, "reconcile_panel/panel.html#board", context)


@require_GET
@staff_required
def tapes(request: HttpRequest) -> HttpResponse:
    """Each region's own trade table, side by side, with the divergence gutter."""
    from exchange_ui.runtime import get_exchange

    config = exchange_config()
    exchange = get_exchange()
    context: dict[str, Any] = {"region_names": config.regions, "cap": TAPE_SHOWN}
    regions = list(config.regions)
    try:
        # Each region's newest trades (a bounded page of its by-region index), then, for the
        # newest lines, whether the other regions hold them: asked by id, not by scanning.
        by_region = {region: [trade_data(t) for t in exchange.stores[region].trades.tape_page(regions, TAPE_SHOWN)[0]] for region in regions}
        shown = panel.side_by_side(by_region, {}, TAPE_SHOWN)
        for region in regions:
            lacking = [line["t"]["trade_id"] for line in shown if region in line["missing"]]
            by_region[region] += [trade_data(t) for t in exchange.stores[region].trades.get_many(lacking)]
        counts = {region: exchange.stores[region].trades.item_count() for region in regions}
        order_ids = [str(line["t"]["order_id"]) for line in shown]

        def decided(store: ReconcileStore) -> list[dict[str, Any]]:
            conflicts = store.of_orders(order_ids)
            return conflicts + store.compensations_of(conflicts)

        conflicts, _ = panel.split_records(read_from_a_region(config, decided))
    except (BotoCoreError, ClientError) as error:
        return render(request, "reconcile_panel/tapes.html", {**context, "error": unavailable(error)}, status=503)
    lines = panel.side_by_side(by_region, panel.trade_marks(conflicts), TAPE_SHOWN)
    context.update(lines=lines, counts=counts, diverged=sum(1 for line in lines if line["diverged"]), **live_metrics())
    return render(request, "reconcile_panel/tapes.html", context)


@require_GET
@login_required
def my_adjustments(request: HttpRequest) -> HttpResponse:
    """The dashboard's Adjustments card: a trader's own P&L adjustments (staff: everyone's)."""
    config = exchange_config()
    account = "" if request.user.is_staff else request.user.get_username()
    filters = panel.Filters(account=account)
    try:
        items, _ = read_from_a_region(config, lambda store: newest_records(store, 0, PANEL_ADJUSTMENTS, filters))
        data = panel.panel_data(items, filters)
    except (BotoCoreError, ClientError) as error:
        return render(request, "reconcile_panel/fragments.html#adjustments-card", {"error": unavailable(error)}, status=503)
    return render(request, "reconcile_panel/fragments.html#adjustments-card", adjustments_card_context(data, bool(account)))


@require_GET
@login_required
def reorg_marks(request: HttpRequest) -> HttpResponse:
    """The reorg marks of recent conflicts (trade ids only), applied at once to a freshly loaded
    tape by static/js/reorg.js, so a reload shows the corrected tape rather than the raw one."""
    try:
        items, _ = read_from_a_region(exchange_config(), lambda store: newest_records(store, MARKS_SHOWN, 0))
        conflicts, _ = panel.split_records(items)
    except (BotoCoreError, ClientError):
        return HttpResponse("", status=503)
    return render(request, "reconcile_panel/fragments.html#instant-marks", {"conflicts": conflicts[:MARKS_SHOWN]})


def adjustments_card_context(data: panel.PanelData, own: bool) -> dict[str, Any]:
    return {"adjustments": data.adjustments[:MINE_SHOWN], "totals": data.totals, "own": own, "more": max(0, len(data.adjustments) - MINE_SHOWN)}
