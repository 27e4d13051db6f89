"""The reconcile table's records and the Orders and Trades items, as the reconciler's plain data.

The adapter side of `reconcile_panel.reconciler`: the worker reads stream images into
`Acceptance` and `Fill` records here, and writes the decisions as items built here; the
panel, the API and the history check read the same items back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from reconcile_panel.reconciler import (
    EXEC_TYPE_NAMES,
    Acceptance,
    Adjustment,
    Compensation,
    Conflict,
    Decisions,
    Fill,
    maker_fill,
)

RECORD_CONFLICT = "CONFLICT"
RECORD_COMPENSATION = "COMPENSATION"
RECORD_ADJUSTMENT = "ADJUSTMENT"


def _text(value: Decimal) -> str:
    return format(value, "f")


def _decimal(value: Any) -> Decimal:
    """A Decimal item value as it is (Decimals are immutable); anything else converted."""
    return value if type(value) is Decimal else Decimal(value)


def acceptance_to_item(acc: Acceptance) -> dict[str, Any]:
    return {
        "orderId": acc.order_id,
        "region": acc.region,
        "client": acc.client,
        "symbol": acc.symbol,
        "side": acc.side,
        "qty": acc.qty,
        "price": acc.price,
        "seq": acc.seq,
        "acceptedAt": acc.accept_ms,
        "status": acc.status,
        "filledQty": acc.filled_qty,
        "cancelRequested": acc.cancel_requested,
        "updatedAt": acc.updated_ms,
    }


def acceptance_from_item(item: Mapping[str, Any]) -> Acceptance:
    return Acceptance(
        order_id=str(item["orderId"]),
        region=str(item["region"]),
        client=str(item["client"]),
        symbol=str(item["symbol"]),
        side=str(item["side"]),
        qty=Decimal(item["qty"]),
        price=Decimal(item["price"]),
        seq=int(item["seq"]),
        accept_ms=int(item["acceptedAt"]),
        status=str(item["status"]),
        filled_qty=Decimal(item.get("filledQty", 0)),
        cancel_requested=bool(item.get("cancelRequested", False)),
        updated_ms=int(item.get("updatedAt", item["acceptedAt"])),
    )


def acceptance_from_order_item(item: Mapping[str, Any], region: str | None = None) -> Acceptance:
    """An Orders table item as the copy of `region` (default: the item's own region)."""
    return Acceptance(
        order_id=str(item["orderId"]),
        region=region or str(item["region"]),
        client=str(item["client"]),
        symbol=str(item["symbol"]),
        side=str(item["side"]),
        qty=_decimal(item["qty"]),
        price=_decimal(item["price"]),
        seq=int(item["seq"]),
        accept_ms=int(item["createdAt"]),
        status=str(item["status"]),
        filled_qty=_decimal(item.get("filledQty", 0)),
        cancel_requested=bool(item.get("cancelRequested", False)),
        updated_ms=int(item.get("updatedAt", item["createdAt"])),
    )


def fill_from_trade_item(item: Mapping[str, Any]) -> Fill:
    return Fill(
        trade_id=str(item["tradeId"]),
        order_id=str(item["orderId"]),
        region=str(item["region"]),
        client=str(item["client"]),
        counterparty=str(item.get("counterparty", "")),
        symbol=str(item["symbol"]),
        side=str(item["side"]),
        qty=_decimal(item["qty"]),
        price=_decimal(item["price"]),
        seq=int(item["seq"]),
        fill_index=int(item["fillIndex"]),
        ts_ms=int(item["timestamp"]),
    )


def maker_order_of(item: Mapping[str, Any]) -> str | None:
    """The resting order a trade item also fills: the side that is not its `orderId`, when
    that is a real order (the matcher), not the made-up counterparty (SimFill's `SIM-MM-n`)."""
    buy, sell = str(item.get("buyOrder", "")), str(item.get("sellOrder", ""))
    taker = str(item["orderId"])
    other = sell if buy == taker else buy
    if not other or other == taker or other == str(item.get("counterparty", "")):
        return None
    return other


def fills_from_trade_item(item: Mapping[str, Any]) -> tuple[Fill, ...]:
    """A Trades table item as the fills it makes: its taker's, and its maker's when the
    other side is a real order (a SimFill trade fills one order only)."""
    taker = fill_from_trade_item(item)
    maker = maker_order_of(item)
    return (taker,) if maker is None else (taker, maker_fill(taker, maker))


def conflict_to_item(c: Conflict) -> dict[str, Any]:
    return {
        "pk": f"{RECORD_CONFLICT}#{c.conflict_id}",
        "recordType": RECORD_CONFLICT,
        "conflictId": c.conflict_id,
        "kind": c.kind,
        "orderId": c.order_id,
        "client": c.client,
        "symbol": c.symbol,
        "regions": list(c.regions),
        "standingRegion": c.standing_region,
        "standingTradeIds": list(c.standing_trade_ids),
        "compensatedTradeIds": list(c.compensated_trade_ids),
        "acceptances": [acceptance_to_item(a) for a in c.acceptances],
        "rule": c.rule,
        "detail": c.detail,
        "decidedAt": c.decided_ms,
    }


def compensation_to_item(c: Compensation) -> dict[str, Any]:
    return {
        "pk": f"{RECORD_COMPENSATION}#{c.compensation_id}",
        "recordType": RECORD_COMPENSATION,
        "compensationId": c.compensation_id,
        "conflictId": c.conflict_id,
        "tradeId": c.trade_id,
        "execType": c.exec_type,
        "execTypeName": EXEC_TYPE_NAMES[c.exec_type],
        "orderId": c.order_id,
        "client": c.client,
        "counterparty": c.counterparty,
        "symbol": c.symbol,
        "side": c.side,
        "region": c.region,
        "qty": c.qty,
        "price": c.price,
        "reversedQty": c.reversed_qty,
        "correctedQty": c.corrected_qty,
        "decidedAt": c.decided_ms,
    }


def adjustment_to_item(a: Adjustment) -> dict[str, Any]:
    return {
        "pk": f"{RECORD_ADJUSTMENT}#{a.adjustment_id}",
        "recordType": RECORD_ADJUSTMENT,
        "adjustmentId": a.adjustment_id,
        "conflictId": a.conflict_id,
        "compensationId": a.compensation_id,
        "account": a.account,
        "orderId": a.order_id,
        "tradeId": a.trade_id,
        "symbol": a.symbol,
        "side": a.side,
        "regions": list(a.regions),
        "qty": a.qty,
        "price": a.price,
        "referencePrice": a.reference_price,
        "amount": a.amount,
        "decidedAt": a.decided_ms,
    }


def decision_items(decisions: Decisions) -> list[dict[str, Any]]:
    """Records in write order: each conflict, then its compensations and their adjustments."""
    comps: dict[str, list[Compensation]] = defaultdict(list)
    for comp in decisions.compensations:
        comps[comp.conflict_id].append(comp)
    adjs: dict[str, list[Adjustment]] = defaultdict(list)
    for adj in decisions.adjustments:
        adjs[adj.compensation_id].append(adj)
    items = []
    for conflict in decisions.conflicts:
        items.append(conflict_to_item(conflict))
        for comp in comps.get(conflict.conflict_id, []):
            items.append(compensation_to_item(comp))
            items.extend(adjustment_to_item(a) for a in adjs.get(comp.compensation_id, []))
    return items


def record_json(item: Mapping[str, Any]) -> dict[str, Any]:
    """A reconcile record as JSON-safe data: Decimals become strings."""

    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            return _text(value)
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return {k: plain(v) for k, v in item.items() if k not in {"writerRegion", "replicaStamp"}}


def conflict_acceptances(items: Iterable[Mapping[str, Any]]) -> list[Acceptance]:
    """Every region copy that conflict records witnessed (the copies LWW overwrote)."""
    out: list[Acceptance] = []
    for item in items:
        if item.get("recordType") == RECORD_CONFLICT:
            out.extend(acceptance_from_item(a) for a in item.get("acceptances", []))
    return out
