"""The reconciler's events: payloads built from the records just written.

Published through trading.events.publish (the only door to the channel layer), and
only after the record's conditional put succeeded. Decimals travel as strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconcile_panel.codec import RECORD_ADJUSTMENT, RECORD_COMPENSATION, RECORD_CONFLICT, record_json
from trading import events


def conflict_data(item: Mapping[str, Any]) -> dict[str, Any]:
    r = record_json(item)
    accepted = r.get("acceptances", [])
    standing = next((a for a in accepted if a.get("region") == r["standingRegion"]), accepted[0] if accepted else {})
    return {
        "conflict_id": r["conflictId"],
        "kind": r["kind"],
        "order_id": r["orderId"],
        "client": r["client"],
        "symbol": r["symbol"],
        "regions": r["regions"],
        "standing_region": r["standingRegion"],
        "trade_ids": sorted(r["standingTradeIds"] + r["compensatedTradeIds"]),
        "standing_trade_ids": r["standingTradeIds"],
        "compensated_trade_ids": r["compensatedTradeIds"],
        "qty": standing.get("qty", ""),
        "price": standing.get("price", ""),
        "rule": r["rule"],
        "detail": r["detail"],
        "decided_ms": r["decidedAt"],
    }


def compensation_data(item: Mapping[str, Any], regions: list[str] | None = None) -> dict[str, Any]:
    r = record_json(item)
    return {
        "compensation_id": r["compensationId"],
        "conflict_id": r["conflictId"],
        "trade_id": r["tradeId"],
        "trade_ids": [r["tradeId"]],
        "exec_type": r["execType"],
        "exec_type_name": r["execTypeName"],
        "order_id": r["orderId"],
        "client": r["client"],
        "counterparty": r["counterparty"],
        "symbol": r["symbol"],
        "side": r["side"],
        "region": r["region"],
        "regions": regions or [r["region"]],
        "qty": r["qty"],
        "price": r["price"],
        "reversed_qty": r["reversedQty"],
        "corrected_qty": r["correctedQty"],
        "decided_ms": r["decidedAt"],
    }


def adjustment_data(item: Mapping[str, Any]) -> dict[str, Any]:
    r = record_json(item)
    return {
        "adjustment_id": r["adjustmentId"],
        "conflict_id": r["conflictId"],
        "compensation_id": r["compensationId"],
        "client": r["account"],
        "account": r["account"],
        "order_id": r["orderId"],
        "trade_ids": [r["tradeId"]],
        "symbol": r["symbol"],
        "side": r["side"],
        "regions": r["regions"],
        "qty": r["qty"],
        "price": r["price"],
        "reference_price": r["referencePrice"],
        "amount": r["amount"],
        "decided_ms": r["decidedAt"],
    }


def publish_record(item: Mapping[str, Any], region: str, regions: list[str] | None = None) -> dict[str, Any] | None:
    """Publish the event for one newly written reconcile record."""
    kind = item.get("recordType")
    if kind == RECORD_CONFLICT:
        return events.publish(events.TRADE_CONFLICTED, region, conflict_data(item))
    if kind == RECORD_COMPENSATION:
        return events.publish(events.TRADE_COMPENSATED, region, compensation_data(item, regions))
    if kind == RECORD_ADJUSTMENT:
        return events.publish(events.PNL_ADJUSTED, region, adjustment_data(item))
    return None
