"""The reconcile JSON API: conflicts, P&L adjustments, and check_history. Staff only.

Mounted by exchange_ui/api.py at /api/ (auth=trading.auth.API_AUTH). Records are read
from a region's reconcile table (the home region unless `?region=` names another;
after replication every region holds the same records).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Status

from exchange_ui.api_input import parse_whole_number
from reconcile_panel.history import check
from reconcile_panel.reconciler import KINDS, RECORD_ADJUSTMENT, RECORD_COMPENSATION, RECORD_CONFLICT, record_json
from reconcile_panel.store import ReconcileStore, load_history
from trading.auth import require_staff
from trading.config import ExchangeConfig

router = Router(tags=["reconcile"])

MAX_LIMIT = 1000
Reply = Status[dict[str, Any]]


def exchange_config() -> ExchangeConfig:
    found = getattr(settings, "EXCHANGE", None)
    return found if isinstance(found, ExchangeConfig) else ExchangeConfig.from_env()


def _error(status: int, code: str, detail: str) -> Reply:
    return Status(status, {"error": code, "detail": detail})


def _store(config: ExchangeConfig, region: str | None) -> ReconcileStore | Reply:
    region = (region or "").strip() or config.regions[0]
    if region not in config.regions:
        return _error(400, "unknown_region", f"region must be one of {', '.join(config.regions)}")
    return ReconcileStore.for_region(region, config.table_prefix)


def _limit(raw: str | None) -> int | Reply:
    if raw is None or raw == "":
        return 200
    count = parse_whole_number(raw)
    if count is None or not 1 <= count <= MAX_LIMIT:
        return _error(400, "bad_limit", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return count


def _newest_first(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda i: (-int(i.get("decidedAt", 0)), str(i.get("pk", ""))))


@router.get("/reconcile/conflicts", response={200: dict, 400: dict, 503: dict})
def list_conflicts(
    request: HttpRequest, region: str | None = None, kind: str | None = None, order_id: str | None = None, limit: str | None = None
) -> Reply:
    """Conflicts, newest first, each with its decision and its compensating trades."""
    require_staff(request)
    config = exchange_config()
    store = _store(config, region)
    if isinstance(store, Status):
        return store
    count = _limit(limit)
    if isinstance(count, Status):
        return count
    if kind and kind not in KINDS:
        return _error(400, "unknown_kind", f"kind must be one of {', '.join(KINDS)}")
    try:
        items = list(store.scan_all())
    except (BotoCoreError, ClientError) as error:
        return _error(503, "aws_unavailable", f"the reconcile table in {store.region} cannot be read: {str(error)[:200]}")
    compensations: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        if item.get("recordType") == RECORD_COMPENSATION:
            compensations[str(item["conflictId"])].append(record_json(item))
    conflicts = [
        i
        for i in items
        if i.get("recordType") == RECORD_CONFLICT and (not kind or i.get("kind") == kind) and (not order_id or i.get("orderId") == order_id)
    ]
    out = []
    for item in _newest_first(conflicts)[:count]:
        data = record_json(item)
        data["compensations"] = sorted(compensations.get(str(item["conflictId"]), []), key=lambda c: c["tradeId"])
        out.append(data)
    return Status(200, {"region": store.region, "count": len(conflicts), "conflicts": out})


@router.get("/reconcile/adjustments", response={200: dict, 400: dict, 503: dict})
def list_adjustments(request: HttpRequest, region: str | None = None, account: str | None = None, limit: str | None = None) -> Reply:
    """P&L adjustments, newest first, and each account's total per market."""
    require_staff(request)
    config = exchange_config()
    store = _store(config, region)
    if isinstance(store, Status):
        return store
    count = _limit(limit)
    if isinstance(count, Status):
        return count
    try:
        items = [i for i in store.scan_all(RECORD_ADJUSTMENT) if not account or i.get("account") == account]
    except (BotoCoreError, ClientError) as error:
        return _error(503, "aws_unavailable", f"the reconcile table in {store.region} cannot be read: {str(error)[:200]}")
    totals: dict[tuple[str, str], Decimal] = defaultdict(lambda: Decimal("0"))
    for item in items:
        totals[(str(item["account"]), str(item["symbol"]))] += Decimal(item["amount"])
    return Status(200, {
        "region": store.region,
        "count": len(items),
        "adjustments": [record_json(i) for i in _newest_first(items)[:count]],
        "totals": [
            {"account": a, "symbol": s, "amount": format(amount, "f")} for (a, s), amount in sorted(totals.items())
        ],
    })


@router.post("/history/check", response={200: dict, 503: dict})
def history_check(request: HttpRequest) -> Reply:
    """check_history over every region's tables: {"ok", "violations": [...]}."""
    require_staff(request)
    config = exchange_config()
    try:
        history = load_history(config)
    except (BotoCoreError, ClientError) as error:
        return _error(503, "aws_unavailable", f"the regions' tables cannot be read: {str(error)[:200]}")
    return Status(200, check(history))
