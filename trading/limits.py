"""Per-account limits: the pure rules (no Django, no boto3).

A position limit is per market, in the market's base quantity, from EXCHANGE_POSITION_LIMIT
("10" for every market, or "BTC-USD=2,ETH-USD=30"); unset means no limit. Each region
checks a new order at ingest against its own position counter (the net filled quantity
its trades table holds for the account). During a partition a region cannot see the
other's fills, so both can accept up to the limit and the merged position exceeds it:
the reconciler cuts the excess back.

The per-user request limits (an order token bucket, a socket cap) are at the end; the HTTP
and WebSocket edges each hold one instance per process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
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


# --- per-user request limits: the order rate and the socket cap -----------------------------


class TokenBuckets:
    """One token bucket per user: `rate` orders a second sustained, `burst` at once.

    The clock comes in as an argument (`now_s`, monotonic seconds). A rate of 0 grants
    everything. Memory is bounded: past `max_users` buckets the least recently used goes
    (its user starts again from a full bucket)."""

    def __init__(self, rate: float, burst: int, max_users: int = 100_000):
        self.rate = float(rate)
        self.burst = float(max(1, burst))
        self.max_users = max_users
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # user -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, user: str, now_s: float) -> float:
        """Take one token for `user`: 0.0 when granted, else the seconds until one is due."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            tokens, at = self._buckets.pop(user, (self.burst, now_s))
            tokens = min(self.burst, tokens + max(0.0, now_s - at) * self.rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate
            self._buckets[user] = (tokens, now_s)
            while len(self._buckets) > self.max_users:
                self._buckets.popitem(last=False)
            return wait


class SocketSlots:
    """Open sockets counted per user and in all: at most `per_user` each, `total` together."""

    def __init__(self, per_user: int, total: int):
        self.per_user = per_user
        self.total = total
        self._open: dict[str, int] = {}
        self._count = 0
        self._lock = threading.Lock()

    def acquire(self, user: str) -> str:
        """Take a slot for `user`: '' when taken, else why not ('user' or 'total')."""
        with self._lock:
            if self._count >= self.total:
                return "total"
            if self._open.get(user, 0) >= self.per_user:
                return "user"
            self._open[user] = self._open.get(user, 0) + 1
            self._count += 1
            return ""

    def release(self, user: str) -> None:
        with self._lock:
            held = self._open.get(user, 0)
            if held <= 0:
                return
            if held == 1:
                del self._open[user]
            else:
                self._open[user] = held - 1
            self._count -= 1

    def held(self, user: str) -> int:
        with self._lock:
            return self._open.get(user, 0)
