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

from reconcile_panel.codec import maker_order_of
from simfill.engine import SIM_COUNTERPARTIES
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


def position_deltas(role: str, item: Mapping[str, Any]) -> list[tuple[str, str, Decimal]]:
    """Every (client, symbol, signed change) the record makes: `position_delta`'s, and for a
    trade between two real orders (the matcher) its maker's account the other way, as the
    matcher moves both; likewise a compensation of such a trade gives both accounts theirs
    back. SimFill's made-up counterparties (`SIM-MM-n`) hold no position."""
    delta = position_delta(role, item)
    if delta is None:
        return []
    other = str(item.get("counterparty", ""))
    if role == "trades":
        two_sided = maker_order_of(item) is not None
    else:
        two_sided = bool(other) and other not in SIM_COUNTERPARTIES and other != delta[0]
    return [delta, (other, delta[1], -delta[2])] if two_sided else [delta]


def local_position(stores: RegionStores, client: str, symbol: str, compensations: list[Mapping[str, Any]] | None = None) -> Decimal:
    """The client's net position in `symbol` summed from this region's trades table, less
    what the given compensation records reverse.

    A scan, for tests and checks: it should equal the region's position counter.
    """
    total = ZERO
    for trade in stores.trades.scan_all():
        if trade.symbol != symbol:
            continue
        if trade.client == client:
            total += signed(trade.side, trade.qty)
        elif trade.counterparty == client:
            maker = trade.sell_order if trade.buy_order == trade.order_id else trade.buy_order
            if maker != trade.counterparty:
                total -= signed(trade.side, trade.qty)  # its resting order was the maker
    for record in compensations or ():
        for delta in position_deltas("reconcile", record):
            if delta[:2] == (client, symbol):
                total += delta[2]
    return total
