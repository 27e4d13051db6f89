"""The synthetic traders under the matcher, as pure decisions: makers quote a ladder on
both sides of each book around the reference price, on the market's grid, and quote a
lifted level again; takers cross the best price they are shown; the same seed and the
same inputs give the same stream."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from tests.conftest import make_config
from trading.domain import on_grid, validate_order
from trading.synthetic import (
    AWAY_LEVELS,
    HOME_LEVELS,
    MAKER,
    Cancel,
    FlowOrder,
    MatcherFlow,
    Top,
    level_spacing,
    top_of,
)

CONFIG = make_config()  # BTC-USD and ETH-USD, both at home in us-east-1; eu-west-1 the other region
HOME, AWAY = "us-east-1", "eu-west-1"


def quotes_of(actions: list[object]) -> list[FlowOrder]:
    return [a for a in actions if isinstance(a, FlowOrder) and a.intent.client == MAKER]


def taker_of(actions: list[object]) -> FlowOrder:
    (taker,) = [a for a in actions if isinstance(a, FlowOrder) and a.intent.client != MAKER]
    return taker


def test_it_quotes_both_sides_of_every_book_around_the_reference_on_the_grid() -> None:
    flow = MatcherFlow(CONFIG, seed=7)
    quotes = quotes_of(flow.step())
    per_book = Counter((q.intent.payload["region"], q.intent.payload["symbol"], q.intent.payload["side"]) for q in quotes)
    for market in CONFIG.markets:
        for side in ("BUY", "SELL"):
            assert per_book[(HOME, market.symbol, side)] == HOME_LEVELS
            assert per_book[(AWAY, market.symbol, side)] == AWAY_LEVELS
    for quote in quotes:
        payload = quote.intent.payload
        market = CONFIG.market(payload["symbol"])
        assert market is not None
        price, qty = Decimal(payload["price"]), Decimal(payload["qty"])
        assert on_grid(price, market.tick) and on_grid(qty, market.lot)
        validate_order(payload, CONFIG)  # an order the exchange accepts
        distance = price - market.reference_price
        assert (distance < 0) == (payload["side"] == "BUY"), payload  # bids below, asks above
        assert abs(distance) <= level_spacing(market) * HOME_LEVELS
    assert len({q.intent.idempotency_key for q in quotes}) == len(quotes)


def test_it_quotes_a_lifted_level_again_and_leaves_the_others_resting() -> None:
    flow = MatcherFlow(CONFIG, seed=3)
    flow.step()
    before = dict(flow.quotes)
    lifted = min((q for q in before.values() if q.region == HOME and q.side == "SELL" and q.symbol == "BTC-USD"), key=lambda q: q.price)
    flow.settled(lifted.order_id)
    actions = flow.step()
    assert flow.mids["BTC-USD"] == Decimal("50000")  # seed 3 keeps the mid still for these two steps
    again = [q for q in quotes_of(actions) if q.intent.payload["symbol"] == "BTC-USD" and q.intent.payload["region"] == HOME]
    assert [(q.intent.payload["side"], Decimal(q.intent.payload["price"])) for q in again] == [("SELL", lifted.price)]
    # Whatever the mid did, every book is a full ladder again after the step.
    held = Counter((q.region, q.symbol, q.side) for q in flow.quotes.values())
    assert held[(HOME, "BTC-USD", "SELL")] == HOME_LEVELS and held[(AWAY, "BTC-USD", "BUY")] == AWAY_LEVELS


def test_it_cancels_quotes_that_left_the_ladder_or_grew_old() -> None:
    flow = MatcherFlow(CONFIG, seed=5, quote_life_steps=10)
    first = {q.order_id for q in quotes_of(flow.step())}
    cancelled: set[str] = set()
    for _ in range(12):
        cancelled |= {a.order_id for a in flow.step() if isinstance(a, Cancel)}
    assert first <= cancelled  # every first quote went by the tenth step at the latest
    assert not first & set(flow.quotes)
    # In each book a step's cancels come before its new quotes (the same FIFO group keeps them so).
    for _ in range(50):
        live = dict(flow.quotes)
        books = []
        for action in flow.step():
            if isinstance(action, Cancel):
                books.append(((live[action.order_id].region, live[action.order_id].symbol), 0))
            elif action.intent.client == MAKER:
                books.append(((action.intent.payload["region"], action.intent.payload["symbol"]), 1))
        for book in {b for b, _ in books}:
            kinds = [kind for b, kind in books if b == book]
            assert kinds == sorted(kinds), book


def test_it_has_takers_cross_the_best_price_they_are_shown() -> None:
    flow = MatcherFlow(CONFIG, seed=11)
    sides = Counter()
    regions = Counter()
    for n in range(400):
        shown = {
            (region, market.symbol): Top(bid=market.reference_price - market.tick * (n % 7 + 1), ask=market.reference_price + market.tick * (n % 5 + 1))
            for region in CONFIG.regions
            for market in CONFIG.markets
        }
        taker = taker_of(flow.step(shown))
        payload = taker.intent.payload
        market = CONFIG.market(payload["symbol"])
        assert market is not None
        top = shown[(payload["region"], payload["symbol"])]
        price = Decimal(payload["price"])
        assert on_grid(price, market.tick) and on_grid(Decimal(payload["qty"]), market.lot)
        if payload["side"] == "BUY":
            assert top.ask is not None and price >= top.ask
        else:
            assert top.bid is not None and price <= top.bid
        assert taker.failover in ("", *[r for r in CONFIG.regions if r != payload["region"]])
        sides[payload["side"]] += 1
        regions[payload["region"]] += 1
    assert sides["BUY"] > 100 and sides["SELL"] > 100
    assert regions[HOME] > regions[AWAY] > 40  # mostly the home region, some elsewhere


def test_it_has_takers_cross_the_makers_own_quotes_when_no_book_is_shown() -> None:
    flow = MatcherFlow(CONFIG, seed=2)
    for _ in range(50):
        actions = flow.step()
        taker = taker_of(actions).intent.payload
        top = flow.own_top(taker["region"], taker["symbol"])
        price = Decimal(taker["price"])
        assert price >= top.ask if taker["side"] == "BUY" else price <= top.bid  # type: ignore[operator]


def test_it_sends_some_takers_failover_to_another_region_and_none_with_one_region() -> None:
    flow = MatcherFlow(CONFIG, seed=4)
    failovers = [taker_of(flow.step()).failover for _ in range(300)]
    assert 10 < sum(1 for f in failovers if f) < 60
    alone = MatcherFlow(make_config(regions=("us-east-1",)), seed=4)
    assert not any(taker_of(alone.step()).failover for _ in range(300))


def drive(seed: int, steps: int = 150) -> list[object]:
    """A flow against a stand-in market: each step the taker lifts the best quote it crossed."""
    flow = MatcherFlow(CONFIG, seed=seed)
    stream: list[object] = []
    for _ in range(steps):
        actions = flow.step()
        stream += actions
        taker = taker_of(actions).intent.payload
        side = "SELL" if taker["side"] == "BUY" else "BUY"
        crossed = [
            q for q in flow.quotes.values()
            if q.region == taker["region"] and q.symbol == taker["symbol"] and q.side == side
            and (q.price <= Decimal(taker["price"]) if side == "SELL" else q.price >= Decimal(taker["price"]))
        ]
        if crossed:
            flow.settled(min(crossed, key=lambda q: (q.price if side == "SELL" else -q.price, q.placed_step)).order_id)
    return stream


def test_it_gives_the_same_stream_for_the_same_seed() -> None:
    assert drive(21) == drive(21)
    assert drive(21) != drive(22)


def test_it_reads_a_book_top_from_the_depth_shape() -> None:
    depth = {"bids": [{"price": "49990.00", "qty": "1", "orders": 1}], "asks": []}
    assert top_of(depth) == Top(bid=Decimal("49990.00"), ask=None)
    assert top_of(None) is None


def test_it_suspects_the_quotes_a_book_no_longer_shows() -> None:
    flow = MatcherFlow(CONFIG, seed=3)
    flow.step()
    mine = [q for q in flow.quotes.values() if q.region == HOME and q.symbol == "BTC-USD"]
    asks = sorted((q for q in mine if q.side == "SELL"), key=lambda q: q.price)
    bids = sorted((q for q in mine if q.side == "BUY"), key=lambda q: -q.price)
    # The book shows the second ask and the best bid: the best ask is gone.
    assert flow.lifted_suspects({(HOME, "BTC-USD"): Top(bid=bids[0].price, ask=asks[1].price)}) == [asks[0].order_id]
    # A side seen empty: every quote on it; no book seen: none.
    assert set(flow.lifted_suspects({(HOME, "BTC-USD"): Top(bid=bids[0].price, ask=None)})) == {q.order_id for q in asks}
    assert flow.lifted_suspects({}) == []
