"""What reconciliation decided about one order, for the order's own view.

Read by the records' deterministic ids (a conflict's id derives from its kind and the
order, a compensation's from its conflict and the trade it reverses), so one order costs
two BatchGetItem calls on the region's reconcile table and never a scan.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from reconcile_panel.provision import reconcile_table_name
from reconcile_panel.codec import RECORD_COMPENSATION, RECORD_CONFLICT
from reconcile_panel.reconciler import CANCEL_FILL_RACE, DUPLICATE_FILL, OVER_LIMIT, compensation_id, conflict_id
from reconcile_panel.store import ItemTable
from trading.config import ExchangeConfig

KINDS = (DUPLICATE_FILL, CANCEL_FILL_RACE, OVER_LIMIT)


def _text(value: Any) -> str:
    return format(Decimal(value), "f")


def order_reconciliation(config: ExchangeConfig, region: str, order_id: str) -> dict[str, Any] | None:
    """The order's conflicts and the compensations of its trades as `region` holds them;
    None when reconciliation has decided nothing about it."""
    table = ItemTable(region, reconcile_table_name(config.table_prefix))
    conflicts = table.get_many([f"{RECORD_CONFLICT}#{conflict_id(kind, order_id)}" for kind in KINDS])
    if not conflicts:
        return None
    wanted = [
        f"{RECORD_COMPENSATION}#{compensation_id(str(c['conflictId']), str(trade_id))}"
        for c in conflicts
        for trade_id in c.get("compensatedTradeIds", [])
    ]
    compensations = table.get_many(wanted) if wanted else []
    return {
        "conflicts": [
            {
                "conflict_id": c["conflictId"],
                "kind": c["kind"],
                "rule": c.get("rule", ""),
                "detail": c.get("detail", ""),
                "regions": list(c.get("regions", [])),
                "standing_region": c.get("standingRegion", ""),
                "standing_trade_ids": list(c.get("standingTradeIds", [])),
                "compensated_trade_ids": list(c.get("compensatedTradeIds", [])),
            }
            for c in conflicts
        ],
        "compensations": [
            {
                "compensation_id": comp["compensationId"],
                "trade_id": comp["tradeId"],
                "exec_type": comp["execType"],
                "exec_type_name": comp.get("execTypeName", ""),
                "region": comp["region"],
                "qty": _text(comp["qty"]),
                "reversed_qty": _text(comp["reversedQty"]),
                "corrected_qty": _text(comp["correctedQty"]),
            }
            for comp in compensations
        ],
        "reversed_qty": _text(sum((Decimal(comp["reversedQty"]) for comp in compensations), Decimal("0"))),
        # Conflicts are written before their compensations: until those arrive, say so.
        "complete": len(compensations) == len(wanted),
    }
