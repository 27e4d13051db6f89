"""Per-account position limits: the pure rule and the small adapter that applies it.

Each region checks an order against the position its own tables show. During a
partition a region cannot see the other's fills, so both can accept up to the limit
and the merged position exceeds it: the reconciler cuts the excess back.

The limit is per market, in the market's base quantity, from EXCHANGE_POSITION_LIMIT
("10" for every market, or "BTC-USD=2,ETH-USD=30"); unset means no limit.
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation

from trading.config import ConfigError, ExchangeConfig
from trading.store import RegionStores

ZERO = Decimal("0")


class PositionLimitExceeded(Exception):
    def __init__(self, client: str, symbol: str, position: Decimal, qty: Decimal, limit: Decimal):
        super().__init__(
            f"{client} {symbol}: position {format(position, 'f')} and {format(qty, 'f')} more exceeds the limit {format(limit, 'f')}"
        )
        self.client, self.symbol, self.position, self.qty, self.limit = client, symbol, position, qty, limit


def parse_limits(raw: str, symbols: tuple[str, ...]) -> dict[str, Decimal]:
    raw = raw.strip()
    if not raw:
        return {}
    limits: dict[str, Decimal] = {}
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        symbol, sep, value = part.partition("=")
        names = [symbol.strip().upper()] if sep else list(symbols)
        text = value if sep else symbol
        try:
            limit = Decimal(text.strip())
        except InvalidOperation:
            raise ConfigError(f"EXCHANGE_POSITION_LIMIT has a bad limit {part!r}") from None
        if not limit.is_finite() or limit <= 0:
            raise ConfigError(f"EXCHANGE_POSITION_LIMIT must be positive, not {part!r}")
        for name in names:
            limits[name] = limit
    return limits


def position_limits(config: ExchangeConfig) -> dict[str, Decimal]:
    return parse_limits(os.environ.get("EXCHANGE_POSITION_LIMIT", ""), config.market_symbols)


def signed(side: str, qty: Decimal) -> Decimal:
    return qty if side == "BUY" else -qty


def within_limit(position: Decimal, side: str, qty: Decimal, limit: Decimal | None) -> bool:
    """May an order of `qty` on `side` fill completely without |position| passing `limit`?

    An order that reduces the exposure is always allowed.
    """
    if limit is None:
        return True
    after = position + signed(side, qty)
    return abs(after) <= limit or abs(after) <= abs(position)


def local_position(stores: RegionStores, client: str, symbol: str) -> Decimal:
    """The client's net position in `symbol` as this region's trades table shows it.

    A scan: fine for scenarios and tests; the ingest path wants a per-account counter.
    """
    total = ZERO
    for trade in stores.trades.scan_all():
        if trade.client == client and trade.symbol == symbol:
            total += signed(trade.side, trade.qty)
    return total


def check_position_limit(stores: RegionStores, client: str, symbol: str, side: str, qty: Decimal, limit: Decimal | None) -> None:
    """Raise PositionLimitExceeded if the order could take the local position past the limit."""
    if limit is None:
        return
    position = local_position(stores, client, symbol)
    if not within_limit(position, side, qty, limit):
        raise PositionLimitExceeded(client, symbol, position, qty, limit)
