"""Per-account position limits as the reconcile side uses them.

The rules themselves (parse_limits, signed, within_limit, PositionLimitExceeded) live in
`trading.limits`, and the limits in `ExchangeConfig.position_limits`: each region's
ingest checks a new order against its own position counter (`SequenceStore.position`).
During a partition a region cannot see the other's fills, so both can accept up to the
limit and the merged position exceeds it: the reconciler cuts the excess back.
"""

from __future__ import annotations

from decimal import Decimal

from trading.config import ExchangeConfig
from trading.limits import ZERO, signed
from trading.store import RegionStores


def position_limits(config: ExchangeConfig) -> dict[str, Decimal]:
    return dict(config.position_limits)


def local_position(stores: RegionStores, client: str, symbol: str) -> Decimal:
    """The client's net position in `symbol` summed from this region's trades table.

    A scan, for tests and checks: it should equal the region's position counter.
    """
    total = ZERO
    for trade in stores.trades.scan_all():
        if trade.client == client and trade.symbol == symbol:
            total += signed(trade.side, trade.qty)
    return total
