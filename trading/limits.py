"""Per-account position limits: the pure rules (no Django, no boto3).

The limit is per market, in the market's base quantity, from EXCHANGE_POSITION_LIMIT
("10" for every market, or "BTC-USD=2,ETH-USD=30"); unset means no limit. Each region
checks a new order at ingest against its own position counter (the net filled quantity
its trades table holds for the account). During a partition a region cannot see the
other's fills, so both can accept up to the limit and the merged position exceeds it:
the reconciler cuts the excess back.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

ZERO = Decimal("0")


class PositionLimitExceeded(Exception):
    """A new order that could take the account's position in its market past the limit."""

    def __init__(self, client: str, symbol: str, position: Decimal, qty: Decimal, limit: Decimal):
        super().__init__(
            f"{client} {symbol}: position {format(position, 'f')} and {format(qty, 'f')} more exceeds the limit {format(limit, 'f')}"
        )
        self.client, self.symbol, self.position, self.qty, self.limit = client, symbol, position, qty, limit


def parse_limits(raw: str, symbols: tuple[str, ...]) -> dict[str, Decimal]:
    """{symbol: limit} from "10" (every market) or "BTC-USD=2,ETH-USD=30".

    Raises ValueError on a bad number, a limit that is not positive, or a market
    that is not in `symbols`.
    """
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
            raise ValueError(f"bad position limit {part!r}") from None
        if not limit.is_finite() or limit <= 0:
            raise ValueError(f"a position limit must be positive, not {part!r}")
        for name in names:
            if name not in symbols:
                raise ValueError(f"position limit {part!r} names a market that is not configured ({', '.join(symbols)})")
            limits[name] = limit
    return limits


def signed(side: str, qty: Decimal) -> Decimal:
    """A fill's effect on the position: BUY adds, SELL subtracts."""
    return qty if side == "BUY" else -qty


def within_limit(position: Decimal, side: str, qty: Decimal, limit: Decimal | None) -> bool:
    """May an order of `qty` on `side` fill completely without |position| passing `limit`?

    An order that reduces the exposure is always allowed.
    """
    if limit is None:
        return True
    after = position + signed(side, qty)
    return abs(after) <= limit or abs(after) <= abs(position)
