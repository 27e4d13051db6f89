"""The reconcile JSON API: conflicts, P&L adjustments, and check_history. Staff only.

Mounted by exchange_ui/api.py at /api/ (auth=trading.auth.API_AUTH). Records are read
from a region's reconcile table (the home region unless `?region=` names another;
after replication every region holds the same records), a page at a time from the
table's by-type index: a request reads a bounded number of records however many there are.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import defaultdict
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Status

from exchange_ui.api_input import parse_whole_number
from reconcile_panel.history import check
from reconcile_panel.codec import RECORD_ADJUSTMENT, RECORD_CONFLICT, record_json
from reconcile_panel.reconciler import KINDS
from reconcile_panel.store import RecordPosition, ReconcileStore, load_history
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


def _cursor(raw: str | None, record_type: str) -> RecordPosition | None | Reply:
    """The position a `next_cursor` of this listing named (None: the newest)."""
    if not raw:
        return None
    bad = _error(400, "bad_cursor", "cursor must be a next_cursor this listing gave out, passed as it came")
    if len(raw) > 1024:
        return bad
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, UnicodeDecodeError, binascii.Error, RecursionError):
        return bad
    if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], str) and data[0].startswith(f"{record_type}#")
            and type(data[1]) is int and data[1] >= 0):
        return bad
    return data[0], data[1]


def _cursor_text(position: RecordPosition | None) -> str | None:
    if position is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(list(position), separators=(",", ":")).encode()).decode().rstrip("=")


@router.get("/reconcile/conflicts", response={200: dict, 400: dict, 503: dict})
def list_conflicts(
    request: HttpRequest,
    region: str | None = None,
    kind: str | None = None,
    order_id: str | None = None,
    limit: str | None = None,
    cursor: str | None = None,
) -> Reply:
    """Conflicts, newest first, each with its decision and its compensating trades: a page
    of `limit` (`count` of them), and `next_cursor` to go on (null at the end)."""
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
    after = _cursor(cursor, RECORD_CONFLICT)
    if isinstance(after, Status):
        return after
    try:
        if order_id:
            # An order's conflicts have ids derived from it: read by key, whatever the table holds.
            found = [i for i in store.of_orders([order_id[:128]]) if not kind or i.get("kind") == kind]
            conflicts, following = _newest_first(found)[:count], None
        else:
            conflicts, following = store.newest(RECORD_CONFLICT, count, after, equal={"kind": kind} if kind else None)
        compensations: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for item in store.compensations_of(conflicts):
            compensations[str(item["conflictId"])].append(record_json(item))
    except (BotoCoreError, ClientError) as error:
        return _error(503, "aws_unavailable", f"the reconcile table in {store.region} cannot be read: {str(error)[:200]}")
    out = []
    for item in conflicts:
        data = record_json(item)
        data["compensations"] = sorted(compensations.get(str(item["conflictId"]), []), key=lambda c: c["tradeId"])
        out.append(data)
    return Status(200, {"region": store.region, "count": len(out), "conflicts": out, "next_cursor": _cursor_text(following)})


@router.get("/reconcile/adjustments", response={200: dict, 400: dict, 503: dict})
def list_adjustments(
    request: HttpRequest, region: str | None = None, account: str | None = None, limit: str | None = None, cursor: str | None = None
) -> Reply:
    """P&L adjustments, newest first (a page, as for conflicts), and each account's total per
    market (over at most the newest TOTALS_READ adjustments: `totals_complete` says if all)."""
    require_staff(request)
    config = exchange_config()
    store = _store(config, region)
    if isinstance(store, Status):
        return store
    count = _limit(limit)
    if isinstance(count, Status):
        return count
    after = _cursor(cursor, RECORD_ADJUSTMENT)
    if isinstance(after, Status):
        return after
    account = (account or "")[:150]
    try:
        items, following = store.newest(RECORD_ADJUSTMENT, count, after, equal={"account": account} if account else None)
        totals, complete = store.adjustment_totals(account or None)
    except (BotoCoreError, ClientError) as error:
        return _error(503, "aws_unavailable", f"the reconcile table in {store.region} cannot be read: {str(error)[:200]}")
    return Status(200, {
        "region": store.region,
        "count": len(items),
        "adjustments": [record_json(i) for i in items],
        "totals": [
            {"account": a, "symbol": s, "amount": format(amount, "f")} for (a, s), amount in sorted(totals.items())
        ],
        "totals_complete": complete,
        "next_cursor": _cursor_text(following),
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
