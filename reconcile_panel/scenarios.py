"""How regions diverge, made to happen for real: client behaviour during a partition.

Each function acts as a client of the exchange (submit_order, cancel_order) against
the real tables and queues; the caller cuts replication first (the fault plane's
partition, or `Replicator.paused(a, b)`) and heals it after. `settle(region, order_id)`
returns once the region's fill workers have finished the order: in tests it drives
an AzWorker, at runtime `wait_until_final` polls the store while the workers run.

- duplicate_fill: a client's retry with the same idempotency key lands in the other
  region, which cannot see the first acceptance and fills the order again;
- cancel_fill_race: the order is accepted and a cancel accepted in one region, while
  the retry fills in the other;
- over_limit: one account buys up to its position limit in each region; each region's
  ingest check passes (it counts only its own fills while cut off), the merged position
  exceeds the limit; a further order in the same region is refused by that ingest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from simfill.engine import OrderTerms, decide
from trading.actions import Exchange, cancel_order, submit_order
from trading.domain import Order, simulation_seed, validate_order
from trading.limits import PositionLimitExceeded

Settle = Callable[[str, str], Order]


@dataclass(frozen=True)
class Divergence:
    kind: str  # duplicate_fill | cancel_fill_race | over_limit
    client: str
    regions: tuple[str, ...]
    order_ids: tuple[str, ...]
    copies: tuple[Order, ...]  # each region's final copy, as it stood before the heal
    note: str = ""
    happened: bool = True  # False when the race went the ordinary way (e.g. filled before the cancel)
    refused_in: tuple[str, ...] = ()  # over_limit: regions whose ingest refused a further order


def outcome_of(ex: Exchange, client: str, payload: dict[str, Any], key: str) -> str:
    """The final status SimFill will give this order (pure: the seed decides)."""
    request = validate_order(payload, ex.config)
    market = ex.config.market(request.symbol)
    assert market is not None
    terms = OrderTerms(request.side, request.qty, request.price, market.tick, market.lot)
    outcome = decide(terms, simulation_seed(ex.config.seed, client, request.symbol, key))
    return outcome.final_status


def pick_key(ex: Exchange, client: str, payload: dict[str, Any], prefix: str, status: str = "FILLED") -> str:
    """The first idempotency key `prefix-N` whose order SimFill fills completely."""
    for n in range(1000):
        key = f"{prefix}-{n}"
        if outcome_of(ex, client, payload, key) == status:
            return key
    raise ValueError(f"no key under {prefix!r} gives a {status} order")


def wait_until_final(ex: Exchange, timeout_s: float = 30.0, interval_s: float = 0.05, cancel_after_s: float | None = None) -> Settle:
    """A settle() for a running exchange: poll the region's store until the order is final.

    `cancel_after_s`: the client's order is immediate-or-cancel, as under the matcher,
    where an order that finds too little in the book rests: what has not traded that long
    after the wait began is cancelled, and the copy settles as CANCELLED with its fills."""

    def settle(region: str, order_id: str) -> Order:
        started = time.monotonic()
        deadline = started + timeout_s
        cancelled = cancel_after_s is None
        while True:
            order = ex.stores[region].orders.get(order_id)
            if order is not None and not order.is_open:
                return order
            if order is not None and not cancelled and time.monotonic() - started >= cancel_after_s:  # type: ignore[operator]
                cancelled = True
                cancel_order(ex, order)
            if time.monotonic() > deadline:
                raise TimeoutError(f"order {order_id} not final in {region} after {timeout_s}s")
            time.sleep(interval_s)

    return settle


def duplicate_fill(
    ex: Exchange, settle: Settle, client: str, payload: dict[str, Any], key: str, first: str, second: str
) -> Divergence:
    one, _ = submit_order(ex, client, {**payload, "region": first}, key)
    one = settle(first, one.order_id)
    two, created = submit_order(ex, client, {**payload, "region": second}, key)
    two = settle(second, two.order_id)
    return Divergence(
        "duplicate_fill",
        client,
        (first, second),
        (one.order_id,),
        (one, two),
        note=f"retry of {key} filled in {first} and again in {second}",
        happened=created and one.filled_qty > 0 and two.filled_qty > 0,
    )


def cancel_fill_race(
    ex: Exchange, settle: Settle, client: str, payload: dict[str, Any], key: str, cancel_region: str, fill_region: str
) -> Divergence:
    order, _ = submit_order(ex, client, {**payload, "region": cancel_region}, key)
    cancelled = cancel_order(ex, order)
    first = settle(cancel_region, order.order_id)
    retry, created = submit_order(ex, client, {**payload, "region": fill_region}, key)
    second = settle(fill_region, retry.order_id)
    return Divergence(
        "cancel_fill_race",
        client,
        (cancel_region, fill_region),
        (order.order_id,),
        (first, second),
        note=f"cancel accepted in {cancel_region} while the retry filled in {fill_region}",
        happened=cancelled and created and first.status == "CANCELLED" and second.filled_qty > 0,
    )


def over_limit(
    ex: Exchange,
    settle: Settle,
    client: str,
    payload: dict[str, Any],
    limit: Decimal,
    regions: tuple[str, ...],
    key_prefix: str,
) -> Divergence:
    """Buy `payload` in each region; each region's ingest checks it against its own count.

    Where the exchange enforces a limit for the market, a further order in the same region
    follows each fill: that region's ingest has counted its own fill and refuses it,
    while the other region's fills stay out of its view until the heal.
    """
    copies = []
    refused = []
    symbol = validate_order(payload, ex.config).symbol
    enforced = ex.config.position_limit(symbol) is not None
    for region in regions:
        body = {**payload, "region": region}
        key = pick_key(ex, client, body, f"{key_prefix}-{region}")
        order, _ = submit_order(ex, client, body, key)
        copies.append(settle(region, order.order_id))
        if not enforced:
            continue
        try:
            more, _ = submit_order(ex, client, body, f"{key_prefix}-{region}-more")
        except PositionLimitExceeded:
            refused.append(region)
        else:  # the local check let it through: it is part of the position now
            copies.append(settle(region, more.order_id))
    merged = sum((c.filled_qty for c in copies), Decimal("0"))
    note = f"{client} holds {format(merged, 'f')} across the regions against a limit of {format(limit, 'f')}"
    if refused:
        note += f"; a further order was refused in {', '.join(refused)}"
    return Divergence(
        "over_limit",
        client,
        tuple(regions),
        tuple(c.order_id for c in copies),
        tuple(copies),
        note=note,
        happened=merged > limit,
        refused_in=tuple(refused),
    )


@dataclass
class PartitionPlay:
    """The three divergences in one partition: what a game day or a test runs."""

    ex: Exchange
    settle: Settle
    regions: tuple[str, str]
    limit: Decimal = Decimal("1")
    symbol: str = "BTC-USD"
    price: str = "50000.00"
    tag: str = "play"
    results: list[Divergence] = field(default_factory=list)

    def run(self, cut: AbstractContextManager[Any] | None = None) -> list[Divergence]:
        first, second = self.regions
        base = {"symbol": self.symbol, "side": "BUY", "price": self.price}
        with cut if cut is not None else nullcontext():
            # Within any configured limit, so only the over-limit client meets the limit.
            small = min(Decimal("0.5"), self.limit / 2).quantize(Decimal("0.0001"))
            dup_payload = {**base, "qty": format(small, "f"), "region": first}
            key = pick_key(self.ex, f"{self.tag}-dup", dup_payload, f"{self.tag}-dup")
            self.results.append(duplicate_fill(self.ex, self.settle, f"{self.tag}-dup", dup_payload, key, first, second))
            race_payload = {**base, "qty": format((small * Decimal("0.6")).quantize(Decimal("0.0001")), "f"), "region": second}
            key = pick_key(self.ex, f"{self.tag}-race", race_payload, f"{self.tag}-race")
            self.results.append(
                cancel_fill_race(self.ex, self.settle, f"{self.tag}-race", race_payload, key, first, second)
            )
            qty = (self.limit * Decimal("0.8")).quantize(Decimal("0.0001"))
            self.results.append(
                over_limit(
                    self.ex,
                    self.settle,
                    f"{self.tag}-limit",
                    {**base, "qty": format(qty, "f")},
                    self.limit,
                    self.regions,
                    f"{self.tag}-limit",
                )
            )
        return self.results
