"""The markets and the exchange's configuration, as plain data.

Pure (no environment, no boto3): the domain, the engines and the experiment model take an
`ExchangeConfig` as an argument. `trading.config` reads one from the environment
(`ExchangeConfig.from_env()`) and is where everyone else imports both names from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class Market:
    """A tradable symbol and the limits its orders are validated against."""

    symbol: str
    home_region: str
    tick: Decimal = Decimal("0.01")
    lot: Decimal = Decimal("0.0001")
    min_qty: Decimal = Decimal("0.0001")
    max_qty: Decimal = Decimal("1000")
    max_price: Decimal = Decimal("10000000")
    reference_price: Decimal = Decimal("50000")


@dataclass(frozen=True)
class ExchangeConfig:
    regions: tuple[str, ...]
    markets: tuple[Market, ...]
    engine: str
    seed: int
    synthetic_rate: Decimal
    azs_per_region: int
    endpoint_url: str | None
    redis_url: str | None
    table_prefix: str
    visibility_timeout_s: int
    reroute: bool = True
    idempotency: bool = True
    # Per-account position limit per market (EXCHANGE_POSITION_LIMIT); absent: no limit.
    position_limits: Mapping[str, Decimal] = field(default_factory=dict)
    # Experiments not yet final (pending, running, stopping) at once (EXCHANGE_MAX_EXPERIMENTS).
    max_experiments: int = 4
    # Orders one user may submit over HTTP: `user_order_rate` a second sustained, up to
    # `user_order_burst` at once (EXCHANGE_USER_ORDER_RATE, EXCHANGE_USER_ORDER_BURST); a rate of 0: no limit.
    user_order_rate: Decimal = Decimal("50")
    user_order_burst: int = 200
    # Open sockets per user and in all, per server process (EXCHANGE_USER_SOCKETS, EXCHANGE_MAX_SOCKETS).
    user_sockets: int = 32
    max_sockets: int = 5000
    # How long, in the streams' own time, the reconcile worker keeps a settled order that
    # every region holds before it retires it (EXCHANGE_RECONCILE_HORIZON_S).
    reconcile_horizon_s: int = 300
    # The matcher persists each book's snapshot to DynamoDB every this many seconds or
    # seqs, whichever comes first (EXCHANGE_SNAPSHOT_EVERY_S, EXCHANGE_SNAPSHOT_EVERY_SEQ);
    # Redis has it after every batch.
    snapshot_every_s: int = 5
    snapshot_every_seq: int = 500

    @property
    def market_symbols(self) -> tuple[str, ...]:
        return tuple(m.symbol for m in self.markets)

    def position_limit(self, symbol: str) -> Decimal | None:
        return self.position_limits.get(symbol)

    def market(self, symbol: str) -> Market | None:
        for market in self.markets:
            if market.symbol == symbol:
                return market
        return None

    def azs(self, region: str) -> tuple[str, ...]:
        letters = "abcdefghij"
        return tuple(f"{region}{letters[i]}" for i in range(self.azs_per_region))
