"""Seeded synthetic traders: a steady, reproducible order flow that keeps the page alive.

The intents are pure (seed in, orders out); the thread around them submits at a rate.
Under SimFill, `intents` (each order alone); under the matcher, `MatcherFlow`'s makers and
takers, who need each other's orders in the book. The runtime picks one by the engine.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from trading.config import ExchangeConfig, Market
from trading.domain import derive_order_id

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


# --- under the matcher: makers that quote a book, takers that cross it --------------------
#
# SimFill fills each order alone, so the stream above needs no book. The matcher trades
# orders with each other: makers keep a ladder of resting quotes in every (region, market)
# book, deepest in the market's home region, and takers send marketable limit orders that
# cross the best price they see. `MatcherFlow` decides (plain data in, orders out, seeded);
# `MatcherTraders` sends what it decides and tells it what settled.

MAKER = "synth-maker"
TAKERS = ("synth-taker", "synth-momentum", "synth-arb")
HOME_LEVELS = 5  # price levels a side in the market's home region
AWAY_LEVELS = 2  # in every other region: thin, so rerouted and failed-over orders trade there
LEVEL_SPACING_BP = Decimal("2")  # between levels, in basis points of the reference price
MID_WANDER_LEVELS = 20  # how far the makers' mid may wander from the reference, in levels
QUOTE_LIFE_STEPS = 60  # a quote left this long is cancelled and placed again
FAILOVER_SHARE = 0.1  # takers whose answer is lost: they resend the order to another region
MAKER_LOTS = (250, 500, 1000, 2000, 5000)
TAKER_LOTS = (100, 250, 500, 1000, 2500, 5000)


@dataclass(frozen=True)
class Top:
    """The best bid and ask of one (region, market) book as a trader sees it (None: empty)."""

    bid: Decimal | None = None
    ask: Decimal | None = None


def top_of(depth: Mapping[str, Any] | None) -> Top | None:
    """A book's top from its depth (GET /api/book's shape); None when there is no book."""
    if not depth:
        return None
    bids, asks = depth.get("bids") or [], depth.get("asks") or []
    return Top(bid=Decimal(bids[0]["price"]) if bids else None, ask=Decimal(asks[0]["price"]) if asks else None)


@dataclass(frozen=True)
class Quote:
    """A maker's resting order, as the maker tracks it."""

    order_id: str
    region: str
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    placed_step: int


@dataclass(frozen=True)
class Cancel:
    """Cancel this order (a maker's stale quote)."""

    order_id: str


@dataclass(frozen=True)
class FlowOrder:
    """An order to send. `failover`: the region the client resends the same order (same
    key, that region named) to when its answer is lost; '' for none."""

    intent: Intent
    failover: str = ""

    @property
    def order_id(self) -> str:
        return derive_order_id(self.intent.client, self.intent.idempotency_key)


Action = FlowOrder | Cancel


def level_spacing(market: Market) -> Decimal:
    """The distance between two of a maker's price levels: a few basis points, on the tick grid."""
    step = (market.reference_price * LEVEL_SPACING_BP / Decimal(10_000)).quantize(market.tick)
    return max(market.tick, step)


class MatcherFlow:
    """Makers and takers over every (region, market) book, one `step` at a time.

    Each step the makers' mid may move a level; each book's makers cancel the quotes that
    left their ladder (and, now and then, their oldest), place a quote at every ladder
    price they hold none at (so a lifted level is quoted again), and one taker sends a
    marketable limit order: a BUY at or above the best ask it sees, a SELL at or below the
    best bid, a few levels through. Most takers trade in the market's home region, some in
    another; a few lose their answer and resend to another region, which a partition turns
    into two copies matched in two regions (the reconciler's duplicate fills).

    Pure and seeded: the same seed and the same inputs (the tops, what settled) give the
    same actions. Prices are on each market's tick grid, quantities on its lot grid,
    Decimal throughout.
    """

    def __init__(self, config: ExchangeConfig, seed: int, quote_life_steps: int = QUOTE_LIFE_STEPS) -> None:
        self.config = config
        self.seed = seed
        self.rng = random.Random(seed)
        self.quote_life_steps = quote_life_steps
        self.mids = {m.symbol: m.reference_price for m in config.markets}
        self.quotes: dict[str, Quote] = {}  # live, by order id; a cancelled one leaves at once
        self.steps = 0
        self._n = 0

    # --- what the flow is told ---------------------------------------------------------

    def settled(self, order_id: str) -> None:
        """The order is final (filled or cancelled): its level is free."""
        self.quotes.pop(order_id, None)

    rejected = settled  # never accepted: the level is free as well

    # --- what the flow decides ---------------------------------------------------------

    def levels(self, region: str, market: Market) -> int:
        return HOME_LEVELS if region == market.home_region else AWAY_LEVELS

    def ladder(self, region: str, market: Market) -> dict[str, list[Decimal]]:
        mid, spacing = self.mids[market.symbol], level_spacing(market)
        count = range(1, self.levels(region, market) + 1)
        return {
            "BUY": [mid - spacing * k for k in count if mid - spacing * k >= market.tick],
            "SELL": [mid + spacing * k for k in count if mid + spacing * k <= market.max_price],
        }

    def through_price(self, symbol: str, side: str) -> Decimal:
        """A limit price through every level of the home ladder on the other side."""
        market = next(m for m in self.config.markets if m.symbol == symbol)
        through = level_spacing(market) * (HOME_LEVELS + 1)
        mid = self.mids[symbol]
        return (mid + through if side == "BUY" else max(market.tick, mid - through)).quantize(market.tick)

    def own_top(self, region: str, symbol: str) -> Top:
        mine = [q for q in self.quotes.values() if q.region == region and q.symbol == symbol]
        bids = [q.price for q in mine if q.side == "BUY"]
        asks = [q.price for q in mine if q.side == "SELL"]
        return Top(bid=max(bids) if bids else None, ask=min(asks) if asks else None)

    def lifted_suspects(self, tops: Mapping[tuple[str, str], Top | None]) -> list[str]:
        """Quotes the books' tops say are not in the book (an ask below the best ask seen, a
        bid above the best bid, or a side seen empty): lifted, with the news not here (their
        events reach another process: `make run-multi`), or not in the snapshot yet. The
        caller asks the store which have finished before it says `settled`."""
        suspects = []
        for quote in self.quotes.values():
            seen = tops.get((quote.region, quote.symbol))
            if seen is None:
                continue
            if quote.side == "SELL" and (seen.ask is None or quote.price < seen.ask):
                suspects.append(quote.order_id)
            elif quote.side == "BUY" and (seen.bid is None or quote.price > seen.bid):
                suspects.append(quote.order_id)
        return suspects

    def step(self, tops: Mapping[tuple[str, str], Top | None] | None = None) -> list[Action]:
        """This step's actions, cancels of a book before its new quotes. `tops`: each
        (region, symbol) book's best prices as last seen; missing, the makers' own quotes."""
        self.steps += 1
        actions: list[Action] = []
        for market in self.config.markets:
            self._wander(market)
            for region in self.config.regions:
                actions += self._make(region, market)
        actions.append(self._take(tops or {}))
        return actions

    def _wander(self, market: Market) -> None:
        if self.rng.random() >= 0.15:
            return
        spacing = level_spacing(market)
        moved = self.mids[market.symbol] + spacing * self.rng.choice((-1, 1))
        bound = spacing * MID_WANDER_LEVELS
        if abs(moved - market.reference_price) <= bound and moved - spacing * HOME_LEVELS >= market.tick:
            self.mids[market.symbol] = moved

    def _make(self, region: str, market: Market) -> list[Action]:
        ladder = self.ladder(region, market)
        book = sorted(
            (q for q in self.quotes.values() if q.region == region and q.symbol == market.symbol),
            key=lambda q: (q.placed_step, q.order_id),
        )
        stale = [q for q in book if q.price not in ladder[q.side] or self.steps - q.placed_step >= self.quote_life_steps]
        if book and not stale and self.rng.random() < 0.05:
            stale = [book[0]]  # now and then the oldest quote is replaced, as makers refresh
        actions: list[Action] = []
        for quote in stale:
            # The cancel travels ahead of the new quotes in the market's FIFO group, so the
            # level is free now, whether the cancel or a fill reaches the quote first.
            del self.quotes[quote.order_id]
            actions.append(Cancel(quote.order_id))
        held = {(q.side, q.price) for q in book if q not in stale}
        for side in ("BUY", "SELL"):
            for price in ladder[side]:
                if (side, price) not in held:
                    actions.append(self._quote(region, market, side, price))
        return actions

    def _quote(self, region: str, market: Market, side: str, price: Decimal) -> FlowOrder:
        self._n += 1
        qty = (market.lot * self.rng.choice(MAKER_LOTS)).quantize(market.lot)
        intent = Intent(
            client=MAKER,
            idempotency_key=f"mm-{self.seed}-{self._n}",
            payload={"symbol": market.symbol, "side": side, "qty": str(qty), "price": str(price.quantize(market.tick)), "region": region},
        )
        order = FlowOrder(intent)
        self.quotes[order.order_id] = Quote(order.order_id, region, market.symbol, side, price.quantize(market.tick), qty, self.steps)
        return order

    def _take(self, tops: Mapping[tuple[str, str], Top | None]) -> FlowOrder:
        market = self.config.markets[self.rng.randrange(len(self.config.markets))]
        others = [r for r in self.config.regions if r != market.home_region]
        region = self.rng.choice(others) if others and self.rng.random() < 0.25 else market.home_region
        side = self.rng.choice(("BUY", "SELL"))
        client = TAKERS[self.rng.randrange(len(TAKERS))]
        through = level_spacing(market) * self.rng.randint(0, 2)
        seen, own = tops.get((region, market.symbol)), self.own_top(region, market.symbol)
        mid = self.mids[market.symbol]
        if side == "BUY":
            best = (seen.ask if seen is not None else None) or own.ask
            price = best + through if best is not None else mid + level_spacing(market)
        else:
            best = (seen.bid if seen is not None else None) or own.bid
            price = best - through if best is not None else mid - level_spacing(market)
        price = min(max(price, market.tick), market.max_price)
        qty = (market.lot * self.rng.choice(TAKER_LOTS)).quantize(market.lot)
        elsewhere = [r for r in self.config.regions if r != region]
        failover = self.rng.choice(elsewhere) if elsewhere and self.rng.random() < FAILOVER_SHARE else ""
        self._n += 1
        intent = Intent(
            client=client,
            idempotency_key=f"tk-{self.seed}-{self._n}",
            payload={"symbol": market.symbol, "side": side, "qty": str(qty), "price": str(price.quantize(market.tick)), "region": region},
        )
        return FlowOrder(intent, failover=failover)


class MatcherTraders:
    """Sends what a `MatcherFlow` decides, a step every 1/rate seconds (the rate is the
    takers' orders a second; the makers' quotes follow what the takers lift), and tells
    it which quotes settled (from the order.status events, or a cancel that found the
    order final). A taker with a failover resends its order, the same key with the other
    region named, `fill_timeout_s` later: outside a partition that region already holds
    the order and refuses the changed body (422, counted in `refused`); inside one it
    accepts a second copy (`copies`), matched there, which the reconciler decides."""

    def __init__(
        self,
        exchange: object,
        rate: Decimal,
        seed: int,
        book_top: Callable[[str, str], Top | None] | None = None,
        fill_timeout_s: float = FILL_TIMEOUT_S,
    ):
        self.exchange = exchange
        self.rate = rate
        self.seed = seed
        self.book_top = book_top
        self.fill_timeout_s = fill_timeout_s
        self.flow = MatcherFlow(exchange.config, seed)  # type: ignore[attr-defined]
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.submitted = 0
        self.failed = 0
        self.limited = 0
        self.cancels = 0
        self.failovers = 0
        self.copies = 0  # failovers that became a second copy (a partition, or replication behind)
        self.refused = 0  # failovers the other region refused: it already had the order
        self.orders: dict[str, Any] = {}  # the makers' live quotes as accepted (cancel needs them)
        self._finished: set[str] = set()
        self._resends: list[tuple[float, FlowOrder]] = []
        self._lock = threading.Lock()

    def on_event(self, event: dict[str, object]) -> None:
        data = event.get("data")
        if event.get("type") == "order.status" and isinstance(data, dict) and data.get("status") in ("FILLED", "CANCELLED"):
            order_id = str(data.get("order_id", ""))
            with self._lock:
                if order_id in self.flow.quotes:
                    self._finished.add(order_id)

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

    def tops(self) -> dict[tuple[str, str], Top | None]:
        if self.book_top is None:
            return {}
        found: dict[tuple[str, str], Top | None] = {}
        for region in self.flow.config.regions:
            for symbol in self.flow.config.market_symbols:
                try:
                    found[(region, symbol)] = self.book_top(region, symbol)
                except Exception:  # no snapshot to read: the makers' own quotes stand in
                    found[(region, symbol)] = None
        return found

    def run_step(self) -> list[Action]:
        """One step: what settled goes to the flow, then its actions are sent, in order."""
        with self._lock:
            finished, self._finished = self._finished, set()
        tops = self.tops()
        for order_id in self.flow.lifted_suspects(tops):
            if order_id not in finished and self.has_finished(order_id):
                finished.add(order_id)
        for order_id in finished:
            self.orders.pop(order_id, None)
            self.flow.settled(order_id)
        actions = self.flow.step(tops)
        for action in actions:
            if isinstance(action, Cancel):
                self.cancel(action.order_id)
            else:
                self.send(action)
        self.resend_due(time.monotonic())
        return actions

    def has_finished(self, order_id: str) -> bool:
        """Is this quote final in the store (filled, or cancelled)?"""
        order = self.orders.get(order_id)
        if order is None:
            return False
        try:
            stored = self.exchange.stores[order.region].orders.get(order_id)  # type: ignore[attr-defined]
        except Exception:  # its region is unreachable: ask again next step
            return False
        return stored is not None and not stored.is_open

    def cancel(self, order_id: str) -> None:
        from trading.actions import RegionUnavailable, cancel_order

        order = self.orders.pop(order_id, None)
        if order is None:
            return
        try:
            self.cancels += int(cancel_order(self.exchange, order))  # type: ignore[arg-type] # False: it had finished
        except RegionUnavailable:
            pass  # its region is down, its book frozen with the quote in it
        except Exception:
            log.exception("synthetic cancel failed")

    def send(self, order: FlowOrder, resend: bool = False) -> None:
        from trading.actions import IdempotencyConflict, RegionUnavailable, submit_order
        from trading.limits import PositionLimitExceeded

        intent = order.intent
        payload = {**intent.payload, "region": order.failover} if resend else intent.payload
        try:
            accepted, created = submit_order(self.exchange, intent.client, payload, intent.idempotency_key)  # type: ignore[arg-type]
        except IdempotencyConflict:
            self.refused += 1
            return
        except (RegionUnavailable, PositionLimitExceeded) as refusal:
            if isinstance(refusal, PositionLimitExceeded):
                self.limited += 1
            else:
                self.failed += 1
            self.flow.rejected(order.order_id)
            return
        except Exception:
            self.failed += 1
            log.exception("synthetic order failed")
            self.flow.rejected(order.order_id)
            return
        self.submitted += 1
        if resend:
            self.copies += int(created)
            return
        if order.order_id in self.flow.quotes:
            if accepted.is_open:
                self.orders[order.order_id] = accepted
            else:
                self.flow.settled(order.order_id)  # a replay of an order that had finished
        if order.failover:
            self._resends.append((time.monotonic() + self.fill_timeout_s, order))

    def resend_due(self, now: float) -> None:
        due = [order for at, order in self._resends if at <= now]
        self._resends = [(at, order) for at, order in self._resends if at > now]
        for order in due:
            self.failovers += 1
            self.send(order, resend=True)

    def run(self) -> None:
        interval = float(1 / self.rate)
        while not self.stop_event.wait(interval):
            try:
                self.run_step()
            except Exception:  # the traders never take the process down
                log.exception("synthetic step failed")
