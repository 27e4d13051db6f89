"""SimFill, the Phase 1 fill decision: plain data in, plain data out.

The outcome depends on the order's terms and its simulationSeed alone, so every
region and every replay reaches the same decision. No clock, no global random.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

# Outcome mix, in percent: the rest is a full fill in one trade.
SPLIT_FILL_PCT = 30  # a full fill in 2-4 trades
PARTIAL_PCT = 12  # some trades, then the remainder cancelled
CANCEL_PCT = 8  # no liquidity: cancelled without a trade
MAX_TRADES = 4
SIM_COUNTERPARTIES = tuple(f"SIM-MM-{n}" for n in range(1, 7))


@dataclass(frozen=True)
class OrderTerms:
    side: str
    qty: Decimal
    price: Decimal
    tick: Decimal
    lot: Decimal


@dataclass(frozen=True)
class Fill:
    qty: Decimal
    price: Decimal
    counterparty: str


@dataclass(frozen=True)
class Outcome:
    fills: tuple[Fill, ...]
    final_status: str  # FILLED or CANCELLED
    reason: str

    @property
    def filled_qty(self) -> Decimal:
        return sum((f.qty for f in self.fills), Decimal("0"))


def _split(qty: Decimal, lot: Decimal, parts: int, rng: random.Random) -> list[Decimal]:
    lots = int(qty / lot)
    parts = max(1, min(parts, lots))
    if parts == 1:
        return [qty]
    cuts = sorted(rng.sample(range(1, lots), parts - 1))
    bounds = [0, *cuts, lots]
    return [(bounds[i + 1] - bounds[i]) * lot for i in range(parts)]


def _fill_price(terms: OrderTerms, rng: random.Random) -> Decimal:
    # Price improvement of 0-3 ticks, never through the limit, never below one tick.
    improvement = terms.tick * rng.randint(0, 3)
    if terms.side == "BUY":
        return max(terms.price - improvement, terms.tick)
    return terms.price + improvement


def decide(terms: OrderTerms, seed: int) -> Outcome:
    rng = random.Random(seed)
    roll = rng.randrange(100)
    lots = int(terms.qty / terms.lot)
    if roll < CANCEL_PCT:
        return Outcome(fills=(), final_status="CANCELLED", reason="no simulated liquidity")
    if roll < CANCEL_PCT + PARTIAL_PCT and lots >= 2:
        filled_lots = rng.randint(1, lots - 1)
        filled = filled_lots * terms.lot
        parts = _split(filled, terms.lot, rng.randint(1, MAX_TRADES - 1), rng)
        fills = tuple(Fill(q, _fill_price(terms, rng), rng.choice(SIM_COUNTERPARTIES)) for q in parts)
        return Outcome(fills=fills, final_status="CANCELLED", reason="partially filled, remainder cancelled")
    n_trades = rng.randint(2, MAX_TRADES) if roll < CANCEL_PCT + PARTIAL_PCT + SPLIT_FILL_PCT else 1
    parts = _split(terms.qty, terms.lot, n_trades, rng)
    fills = tuple(Fill(q, _fill_price(terms, rng), rng.choice(SIM_COUNTERPARTIES)) for q in parts)
    return Outcome(fills=fills, final_status="FILLED", reason="filled" if len(fills) == 1 else f"filled in {len(fills)} trades")
