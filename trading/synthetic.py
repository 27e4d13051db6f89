"""Seeded synthetic traders: a steady, reproducible order flow that keeps the page alive.

The intents are pure (seed in, orders out); the thread around them submits at a rate.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from trading.config import ExchangeConfig

log = logging.getLogger(__name__)

PERSONAS = ("synth-maker", "synth-taker", "synth-momentum", "synth-arb")


@dataclass(frozen=True)
class Intent:
    client: str
    idempotency_key: str
    payload: dict[str, str]


def intents(config: ExchangeConfig, seed: int) -> Iterator[Intent]:
    """An endless, reproducible stream of order entries."""
    rng = random.Random(seed)
    mids = {m.symbol: m.reference_price for m in config.markets}
    n = 0
    while True:
        market = config.markets[rng.randrange(len(config.markets))]
        mid = mids[market.symbol]
        mid = max(market.tick, mid + market.tick * rng.randint(-20, 20))
        mids[market.symbol] = mid
        side = rng.choice(("BUY", "SELL"))
        offset = market.tick * rng.randint(0, 15)
        price = mid + offset if side == "BUY" else max(market.tick, mid - offset)
        lots = rng.choice((1, 5, 10, 25, 50, 100, 250, 1000, 2500))
        qty = (market.lot * lots).quantize(market.lot)
        client = PERSONAS[rng.randrange(len(PERSONAS))]
        region = rng.choice(config.regions) if rng.random() < 0.35 else market.home_region
        n += 1
        yield Intent(
            client=client,
            idempotency_key=f"synth-{seed}-{n}",
            payload={"symbol": market.symbol, "side": side, "qty": str(qty), "price": str(price.quantize(market.tick)), "region": region},
        )


class SyntheticTraders:
    def __init__(self, exchange: object, rate: Decimal, seed: int):
        self.exchange = exchange
        self.rate = rate
        self.seed = seed
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.submitted = 0
        self.failed = 0

    def start(self) -> None:
        if self.rate <= 0:
            return
        self.thread = threading.Thread(target=self.run, name="synthetic-traders", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        from trading.actions import RegionUnavailable, submit_order

        interval = float(1 / self.rate)
        for intent in intents(self.exchange.config, self.seed):  # type: ignore[attr-defined]
            if self.stop_event.wait(interval):
                return
            try:
                submit_order(self.exchange, intent.client, intent.payload, intent.idempotency_key)  # type: ignore[arg-type]
                self.submitted += 1
            except RegionUnavailable:
                self.failed += 1
            except Exception:
                self.failed += 1
                log.exception("synthetic order failed")
