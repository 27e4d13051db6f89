"""The pure fill decision: deterministic, never over-fills, prices never through the limit."""

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from simfill.engine import OrderTerms, decide

TICK, LOT = Decimal("0.01"), Decimal("0.0001")

terms_strategy = st.builds(
    OrderTerms,
    side=st.sampled_from(["BUY", "SELL"]),
    qty=st.integers(min_value=1, max_value=10_000_000).map(lambda lots: lots * LOT),
    price=st.integers(min_value=1, max_value=10**9).map(lambda ticks: ticks * TICK),
    tick=st.just(TICK),
    lot=st.just(LOT),
)


@settings(max_examples=300, deadline=None)
@given(terms=terms_strategy, seed=st.integers(min_value=0, max_value=2**63))
def test_it_decides_the_same_outcome_for_the_same_seed(terms: OrderTerms, seed: int) -> None:
    assert decide(terms, seed) == decide(terms, seed)


@settings(max_examples=300, deadline=None)
@given(terms=terms_strategy, seed=st.integers(min_value=0, max_value=2**63))
def test_it_never_fills_beyond_the_order_quantity(terms: OrderTerms, seed: int) -> None:
    outcome = decide(terms, seed)
    assert outcome.filled_qty <= terms.qty
    if outcome.final_status == "FILLED":
        assert outcome.filled_qty == terms.qty
    for fill in outcome.fills:
        assert fill.qty > 0
        assert (fill.qty / LOT) == (fill.qty / LOT).to_integral_value()


@settings(max_examples=300, deadline=None)
@given(terms=terms_strategy, seed=st.integers(min_value=0, max_value=2**63))
def test_it_never_fills_through_the_limit_price(terms: OrderTerms, seed: int) -> None:
    for fill in decide(terms, seed).fills:
        assert fill.price > 0
        if terms.side == "BUY":
            assert fill.price <= terms.price
        else:
            assert fill.price >= terms.price


def test_it_produces_every_kind_of_outcome_across_seeds() -> None:
    terms = OrderTerms("BUY", Decimal("1.0000"), Decimal("50000.00"), TICK, LOT)
    outcomes = [decide(terms, seed) for seed in range(400)]
    kinds = {(o.final_status, len(o.fills) > 1, o.filled_qty == terms.qty) for o in outcomes}
    assert ("FILLED", False, True) in kinds  # one trade
    assert ("FILLED", True, True) in kinds  # split fill
    assert ("CANCELLED", False, False) in kinds or ("CANCELLED", True, False) in kinds  # partial then cancel
    assert any(o.final_status == "CANCELLED" and not o.fills for o in outcomes)


def test_it_uses_only_its_own_random_state() -> None:
    import random

    terms = OrderTerms("SELL", Decimal("0.5000"), Decimal("3000.00"), TICK, LOT)
    random.seed(1)
    first = decide(terms, 42)
    random.seed(999)
    assert decide(terms, 42) == first
