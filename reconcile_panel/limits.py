"""Per-account position limits as the reconcile side uses them.

The rules themselves (parse_limits, signed, within_limit, PositionLimitExceeded) live in
`trading.limits`, and the limits in `ExchangeConfig.position_limits`: each region's
ingest checks a new order against its own position counter (`SequenceStore.position`).
During a partition a region cannot see the other's fills, so both can accept up to the
limit and the merged position exceeds it: the reconciler cuts the excess back, and
each compensation moves the counters back by what it reverses.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from trading.config import ExchangeConfig
from trading.limits import ZERO, signed
from trading.store import RegionStores

RECORD_COMPENSATION = "COMPENSATION"


def position_limits(config: ExchangeConfig) -> dict[str, Decimal]:
    return dict(config.position_limits)


def position_delta(role: str, item: Mapping[str, Any]) -> tuple[str, str, Decimal] | None:
    """(client, symbol, signed change) that a record new to a region makes to the client's
    position there: a trade adds its fill, a compensation takes back what it reverses."""
    if role == "trades":
        return str(item["client"]), str(item["symbol"]), signed(str(item["side"]), Decimal(item["qty"]))
    if role == "reconcile" and item.get("recordType") == RECORD_COMPENSATION:
        return str(item["client"]), str(item["symbol"]), -signed(str(item["side"]), Decimal(item["reversedQty"]))
    return None


def local_position(stores: RegionStores, client: str, symbol: str, compensations: list[Mapping[str, Any]] | None = None) -> Decimal:
    """The client's net position in `symbol` summed from this region's trades table, less
    what the given compensation records reverse.

    A scan, for tests and checks: it should equal the region's position counter.
    """
    total = ZERO
    for trade in stores.trades.scan_all():
        if trade.client == client and trade.symbol == symbol:
            total += signed(trade.side, trade.qty)
    for record in compensations or ():
        delta = position_delta("reconcile", record)
        if delta is not None and delta[:2] == (client, symbol):
            total += delta[2]
    return total
