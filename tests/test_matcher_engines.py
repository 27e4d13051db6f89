"""Both engines behind the one `Engine` protocol: the same calls, the same kinds of answer;
SimFill's answers are exactly Phase 1's decisions."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matcher.engines import MatchingEngine, SimFillEngine
from matcher.protocol import CANCELLED, FINAL_STATUSES, RESTING_STATUSES, Engine, Ticket
from simfill.engine import OrderTerms, decide

TICK, LOT = Decimal("0.01"), Decimal("0.0001")
ENGINES: dict[str, Callable[[], Engine]] = {"simfill": SimFillEngine, "matcher": MatchingEngine}
# The matcher's core (protocol, book, engines, stream) imports no adapter: tests/test_core_imports.py.


def make_ticket(**overrides: object) -> Ticket:
    values: dict[str, object] = {
        "order_id": "O1", "client": "alice", "symbol": "BTC-USD", "side": "BUY", "qty": Decimal("1.0000"),
        "price": Decimal("50000.00"), "seq": 1, "seed": 42, "tick": TICK, "lot": LOT,
    }
    values.update(overrides)
    return Ticket(**values)  # type: ignore[arg-type]


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> Engine:
    return ENGINES[request.param]()


def test_it_answers_an_order_with_its_status_and_conserved_quantity(engine: Engine) -> None:
    done = engine.submit(make_ticket())
    taker = done.update_of("O1")
    assert taker is not None and taker.status in FINAL_STATUSES + RESTING_STATUSES
    assert taker.filled + taker.left == taker.qty == Decimal("1")
    assert sum((f.qty for f in done.fills), Decimal(0)) == taker.filled
    for index, fill in enumerate(done.fills):
        assert (fill.fill_index, fill.taker_order, fill.buy_order) == (index, "O1", "O1")
        assert fill.price <= Decimal("50000.00")


def test_it_cancels_an_order_it_has_not_filled(engine: Engine) -> None:
    done = engine.cancel(make_ticket(seq=5))
    assert [(u.order_id, u.status, u.filled, u.left) for u in done.updates] == [("O1", CANCELLED, Decimal(0), Decimal("1"))]
    assert done.fills == ()


def test_it_round_trips_its_state_through_a_json_snapshot(engine: Engine) -> None:
    engine.submit(make_ticket())
    engine.submit(make_ticket(order_id="O2", client="bob", side="SELL", seq=2, price=Decimal("50001.00")))
    data = json.loads(json.dumps(engine.snapshot()))
    fresh = type(engine)()
    fresh.restore(data)
    assert fresh.snapshot() == engine.snapshot()
    assert fresh.depth("BTC-USD") == engine.depth("BTC-USD")
    assert fresh.last_seq("BTC-USD") == engine.last_seq("BTC-USD")
    with pytest.raises(ValueError):
        fresh.restore({"engine": "something else"})


def test_it_trades_two_real_orders_under_the_matcher() -> None:
    engine = MatchingEngine()
    engine.submit(make_ticket(order_id="S1", client="bob", side="SELL", price=Decimal("49999.00")))
    done = engine.submit(make_ticket(seq=2))
    (fill,) = done.fills
    assert (fill.buy_order, fill.sell_order, fill.price) == ("O1", "S1", Decimal("49999.00"))
    assert engine.depth("BTC-USD").asks == () and engine.last_seq("BTC-USD") == 2
    with pytest.raises(ValueError):  # a market keeps its grid
        engine.submit(make_ticket(seq=3, order_id="O3", tick=Decimal("0.1")))


def test_it_keeps_one_book_per_market_under_the_matcher() -> None:
    engine = MatchingEngine()
    engine.submit(make_ticket(order_id="E1", symbol="ETH-USD", side="SELL", price=Decimal("3000.00")))
    done = engine.submit(make_ticket(seq=1))
    assert done.fills == () and done.updates[-1].status == "OPEN"
    assert engine.last_seq("ETH-USD") == 1 and engine.depth("ETH-USD").asks[0].price == Decimal("3000.00")
    assert engine.depth("SOL-USD").bids == ()


@settings(max_examples=300, deadline=None)
@given(
    side=st.sampled_from(["BUY", "SELL"]),
    lots=st.integers(min_value=1, max_value=1_000_000),
    ticks=st.integers(min_value=1, max_value=10**8),
    seed=st.integers(min_value=0, max_value=2**63),
)
def test_it_gives_simfill_s_own_decision_through_the_protocol(side: str, lots: int, ticks: int, seed: int) -> None:
    ticket = replace(make_ticket(), side=side, qty=lots * LOT, price=ticks * TICK, seed=seed)
    outcome = decide(OrderTerms(side, ticket.qty, ticket.price, TICK, LOT), seed)
    done = SimFillEngine().submit(ticket)
    assert [(f.qty, f.price, f.maker_order, f.maker_client) for f in done.fills] == [
        (f.qty, f.price, f.counterparty, f.counterparty) for f in outcome.fills
    ]
    for fill in done.fills:  # buyOrder / sellOrder as the SimFill worker writes them
        assert (fill.buy_order, fill.sell_order) == (("O1", fill.maker_order) if side == "BUY" else (fill.maker_order, "O1"))
    (update,) = done.updates
    assert (update.status, update.reason, update.filled) == (outcome.final_status, outcome.reason, outcome.filled_qty)
    assert update.filled + update.left == ticket.qty
