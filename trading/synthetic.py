"""Seeded synthetic traders: a steady, reproducible order flow that keeps the page alive.

The intents are pure (seed in, orders out); the thread around them submits at a rate.
"""

from __future__ import annotations

import logging
import random
import threading
import time
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


# A synthetic client that has not seen its order settle within this long assumes the
# request was lost and sends it again, with the same idempotency key, once.
FILL_TIMEOUT_S = 3.0


class SyntheticTraders:
    def __init__(self, exchange: object, rate: Decimal, seed: int, fill_timeout_s: float = FILL_TIMEOUT_S):
        self.exchange = exchange
        self.rate = rate
        self.seed = seed
        self.fill_timeout_s = fill_timeout_s
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.submitted = 0
        self.failed = 0
        self.retried = 0
        self.duplicates = 0  # retries that became a second order (idempotency off)
        self.limited = 0  # refused by the position limit (EXCHANGE_POSITION_LIMIT)
        # order id -> (deadline, intent, is a retry); settled orders leave on their event.
        self.waiting: dict[str, tuple[float, Intent, bool]] = {}
        self._lock = threading.Lock()

    def on_event(self, event: dict[str, object]) -> None:
        if event.get("type") == "order.status":
            data = event.get("data")
            if isinstance(data, dict):
                with self._lock:
                    self.waiting.pop(str(data.get("order_id", "")), None)

    def start(self) -> None:
        if self.rate <= 0:
            return
        from trading import events

        events.add_sink(self.on_event)
        self.thread = threading.Thread(target=self.run, name="synthetic-traders", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        from trading import events

        events.remove_sink(self.on_event)
        self.stop_event.set()

    def submit(self, intent: Intent, retry: bool = False) -> None:
        from trading.actions import RegionUnavailable, submit_order
        from trading.limits import PositionLimitExceeded

        try:
            order, created = submit_order(self.exchange, intent.client, intent.payload, intent.idempotency_key)  # type: ignore[arg-type]
        except RegionUnavailable:
            self.failed += 1
            return
        except PositionLimitExceeded:
            self.limited += 1  # the pre-trade check at work, not a failure
            return
        except Exception:
            self.failed += 1
            log.exception("synthetic order failed")
            return
        self.submitted += 1
        if retry:
            self.retried += 1
            if created:
                self.duplicates += 1
        if order.is_open:
            with self._lock:
                self.waiting[order.order_id] = (time.monotonic() + self.fill_timeout_s, intent, retry)

    def retry_timed_out(self) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [(order_id, entry) for order_id, entry in self.waiting.items() if entry[0] < now]
            for order_id, _ in expired:
                del self.waiting[order_id]
        for _, (_, intent, was_retry) in expired:
            if not was_retry:
                metrics = getattr(self.exchange, "metrics", None)
                if metrics is not None:
                    metrics.record_retry(time.time())  # a client timeout: the flash warning's signal
                self.submit(intent, retry=True)

    def run(self) -> None:
        interval = float(1 / self.rate)
        for intent in intents(self.exchange.config, self.seed):  # type: ignore[attr-defined]
            if self.stop_event.wait(interval):
                return
            self.retry_timed_out()
            self.submit(intent)
