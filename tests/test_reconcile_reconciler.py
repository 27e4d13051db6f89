"""The pure core of issue 5: the reconciler's rules, LWW replication rules, limits, check."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from reconcile_panel.history import History, check
from reconcile_panel.codec import decision_items
from reconcile_panel.reconciler import (
    CANCEL_FILL_RACE,
    DUPLICATE_FILL,
    OVER_LIMIT,
    SUPERSEDED,
    TRADE_CANCEL,
    TRADE_CORRECT,
    Acceptance,
    Fill,
    Ledger,
    pnl_amount,
    reconcile,
)
from reconcile_panel.replication import as_replica, is_replica, lww_decision, writer_of
from trading.domain import derive_trade_id
from trading.limits import parse_limits, within_limit

EAST, WEST = "us-east-1", "eu-west-1"
REF = {"BTC-USD": Decimal("50000")}


def make_copy(**overrides: Any) -> Acceptance:
    values: dict[str, Any] = {
        "order_id": "O1",
        "region": EAST,
        "client": "alice",
        "symbol": "BTC-USD",
        "side": "BUY",
        "qty": Decimal("0.5"),
        "price": Decimal("50010"),
        "seq": 1,
        "accept_ms": 1000,
        "status": "FILLED",
        "filled_qty": Decimal("0.5"),
        "updated_ms": 1100,
    }
    values.update(overrides)
    return Acceptance(**values)


def make_fill(**overrides: Any) -> Fill:
    values: dict[str, Any] = {
        "order_id": "O1",
        "region": EAST,
        "client": "alice",
        "counterparty": "SIM-MM-1",
        "symbol": "BTC-USD",
        "side": "BUY",
        "qty": Decimal("0.5"),
        "price": Decimal("50010"),
        "seq": 1,
        "fill_index": 0,
        "ts_ms": 1100,
    }
    values.update(overrides)
    values.setdefault("trade_id", derive_trade_id("O" + values["order_id"] * 8, values["region"], values["fill_index"]))
    return Fill(**values)


def duplicate_ledger(east_ms: int = 1000, west_ms: int = 2000) -> Ledger:
    return Ledger(
        acceptances=(
            make_copy(region=EAST, accept_ms=east_ms, updated_ms=east_ms + 100),
            make_copy(region=WEST, accept_ms=west_ms, seq=7, updated_ms=west_ms + 100),
        ),
        fills=(
            make_fill(region=EAST, trade_id="T-east-0", ts_ms=east_ms + 100),
            make_fill(region=WEST, trade_id="T-west-0", ts_ms=west_ms + 100),
        ),
        reference_prices=REF,
    )


# --- rule 1: divergent copies of one order ------------------------------------------


def test_it_lets_the_earliest_acceptance_stand_and_cancels_the_other_regions_fill() -> None:
    decisions = reconcile(duplicate_ledger())
    (conflict,) = decisions.conflicts
    assert conflict.kind == DUPLICATE_FILL
    assert conflict.standing_region == EAST
    assert conflict.standing_trade_ids == ("T-east-0",)
    assert conflict.compensated_trade_ids == ("T-west-0",)
    (comp,) = decisions.compensations
    assert (comp.trade_id, comp.exec_type, comp.reversed_qty, comp.corrected_qty) == ("T-west-0", TRADE_CANCEL, Decimal("0.5"), 0)


def test_it_ranks_by_accept_time_before_region_name() -> None:
    decisions = reconcile(duplicate_ledger(east_ms=3000, west_ms=2000))
    assert decisions.conflicts[0].standing_region == WEST
    assert decisions.compensations[0].trade_id == "T-east-0"


def test_it_breaks_a_tie_on_the_same_millisecond_by_sequence_then_region() -> None:
    ledger = duplicate_ledger(east_ms=1000, west_ms=1000)
    assert reconcile(ledger).conflicts[0].standing_region == EAST  # seq 1 before seq 7
    same_seq = Ledger(
        tuple(make_copy(region=r, accept_ms=1000, seq=3) for r in (WEST, EAST)), ledger.fills, REF
    )
    assert reconcile(same_seq).conflicts[0].standing_region == "eu-west-1"  # "eu" sorts before "us"


def test_it_busts_the_fills_when_the_cancelled_copy_was_accepted_first() -> None:
    ledger = Ledger(
        acceptances=(
            make_copy(region=EAST, status="CANCELLED", filled_qty=Decimal("0"), cancel_requested=True),
            make_copy(region=WEST, accept_ms=2000),
        ),
        fills=(make_fill(region=WEST, trade_id="T-west-0"),),
        reference_prices=REF,
    )
    decisions = reconcile(ledger)
    assert [c.kind for c in decisions.conflicts] == [CANCEL_FILL_RACE]
    assert [c.trade_id for c in decisions.compensations] == ["T-west-0"]


def test_it_records_a_late_cancel_without_reversing_anything() -> None:
    ledger = Ledger(
        acceptances=(
            make_copy(region=EAST),
            make_copy(region=WEST, accept_ms=2000, status="CANCELLED", filled_qty=Decimal("0"), cancel_requested=True),
        ),
        fills=(make_fill(region=EAST, trade_id="T-east-0"),),
        reference_prices=REF,
    )
    decisions = reconcile(ledger)
    assert [(c.kind, c.standing_region) for c in decisions.conflicts] == [(CANCEL_FILL_RACE, EAST)]
    assert decisions.compensations == ()


def test_it_waits_until_every_copy_is_final_and_its_fills_are_all_seen() -> None:
    open_copy = Ledger((make_copy(region=EAST), make_copy(region=WEST, status="ACCEPTED", filled_qty=Decimal("0"))), (), REF)
    assert reconcile(open_copy).conflicts == ()
    missing_fill = Ledger((make_copy(region=EAST), make_copy(region=WEST)), (make_fill(region=EAST),), REF)
    assert reconcile(missing_fill).conflicts == ()


def test_it_finds_no_conflict_in_a_single_region_order_or_agreeing_copies() -> None:
    single = Ledger((make_copy(),), (make_fill(),), REF)
    assert reconcile(single).conflicts == ()
    both_cancelled = Ledger(
        tuple(make_copy(region=r, status="CANCELLED", filled_qty=Decimal("0")) for r in (EAST, WEST)), (), REF
    )
    assert reconcile(both_cancelled).conflicts == ()


def test_it_never_lets_a_superseded_copy_stand() -> None:
    ledger = Ledger(
        (make_copy(region=EAST, accept_ms=500, status=SUPERSEDED, filled_qty=Decimal("0")), make_copy(region=WEST, accept_ms=900)),
        (make_fill(region=WEST, trade_id="T-west-0"),),
        REF,
    )
    assert reconcile(ledger).conflicts == ()


# --- rule 2: over-limit exposure ------------------------------------------------------


def limit_ledger() -> Ledger:
    return Ledger(
        acceptances=(
            make_copy(order_id="A", region=EAST, qty=Decimal("0.8"), filled_qty=Decimal("0.8")),
            make_copy(order_id="B", region=WEST, qty=Decimal("0.8"), filled_qty=Decimal("0.8"), accept_ms=2000),
        ),
        fills=(
            make_fill(order_id="A", region=EAST, trade_id="TA", qty=Decimal("0.8")),
            make_fill(order_id="B", region=WEST, trade_id="TB", qty=Decimal("0.8"), ts_ms=2100),
        ),
        reference_prices=REF,
        limits={"BTC-USD": Decimal("1")},
    )


def test_it_corrects_the_later_fill_down_to_the_position_limit() -> None:
    decisions = reconcile(limit_ledger())
    (conflict,) = decisions.conflicts
    assert (conflict.kind, conflict.order_id, conflict.regions) == (OVER_LIMIT, "B", (WEST, EAST))
    (comp,) = decisions.compensations
    assert (comp.trade_id, comp.exec_type, comp.reversed_qty, comp.corrected_qty) == (
        "TB",
        TRADE_CORRECT,
        Decimal("0.6"),
        Decimal("0.2"),
    )


def test_it_ignores_limits_for_markets_without_one_and_positions_that_shrink() -> None:
    no_limit = limit_ledger()
    assert reconcile(Ledger(no_limit.acceptances, no_limit.fills, REF)).conflicts == ()
    sell = Ledger(
        (make_copy(order_id="A", qty=Decimal("0.8"), filled_qty=Decimal("0.8")), make_copy(order_id="B", side="SELL", accept_ms=2000, region=WEST, qty=Decimal("0.8"), filled_qty=Decimal("0.8"))),
        (make_fill(order_id="A", trade_id="TA", qty=Decimal("0.8")), make_fill(order_id="B", side="SELL", region=WEST, trade_id="TB", qty=Decimal("0.8"))),
        REF,
        {"BTC-USD": Decimal("1")},
    )
    assert reconcile(sell).conflicts == ()


def test_it_does_not_count_busted_duplicates_towards_the_position() -> None:
    ledger = duplicate_ledger()
    limited = Ledger(ledger.acceptances, ledger.fills, REF, {"BTC-USD": Decimal("0.5")})
    assert [c.kind for c in reconcile(limited).conflicts] == [DUPLICATE_FILL]


# --- P&L, determinism, speed ------------------------------------------------------------


def test_it_marks_the_adjustment_against_the_reference_price_for_both_accounts() -> None:
    assert pnl_amount("BUY", Decimal("0.5"), Decimal("50010"), Decimal("50000")) == Decimal("5.0")
    assert pnl_amount("SELL", Decimal("0.5"), Decimal("50010"), Decimal("50000")) == Decimal("-5.0")
    decisions = reconcile(duplicate_ledger())
    amounts = {a.account: a.amount for a in decisions.adjustments}
    assert amounts == {"alice": Decimal("5.0"), "SIM-MM-1": Decimal("-5.0")}
    assert all(isinstance(a.amount, Decimal) for a in decisions.adjustments)


def test_it_decides_the_same_records_whatever_the_input_order() -> None:
    ledger = duplicate_ledger()
    shuffled = Ledger(tuple(reversed(ledger.acceptances)), tuple(reversed(ledger.fills)), REF)
    assert decision_items(reconcile(ledger)) == decision_items(reconcile(shuffled))
    assert decision_items(reconcile(ledger)) == decision_items(reconcile(ledger))


def big_ledger(n_orders: int) -> Ledger:
    copies, fills = [], []
    for i in range(n_orders):
        oid = f"O{i:08d}"
        for r, region in enumerate((EAST, WEST)):
            copies.append(make_copy(order_id=oid, region=region, accept_ms=1000 + i * 2 + r, seq=i, client=f"c{i % 50}"))
            fills.append(make_fill(order_id=oid, region=region, trade_id=f"T{oid}-{region}", ts_ms=2000 + i, client=f"c{i % 50}"))
    return Ledger(tuple(copies), tuple(fills), REF, {"BTC-USD": Decimal("1000000")})


def test_it_reconciles_ten_thousand_divergent_trades_one_decision_each() -> None:
    # The speed of this (10k <= 2 s, 20k <= 2.2x of 10k) is measured by `make bench`,
    # not asserted here: a timed test on a shared machine fails for the wrong reasons.
    ten = big_ledger(5000)  # 10k divergent trades
    decisions = reconcile(ten)
    assert len(decisions.compensations) == 5000
    assert len({c.conflict_id for c in decisions.conflicts}) == len(decisions.conflicts)
    assert reconcile(ten) == decisions


# --- replication rules ------------------------------------------------------------------


def order_item(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"pk": "ORDER#O1", "orderId": "O1", "status": "FILLED", "updatedAt": 1000, "region": EAST}
    item.update(overrides)
    return item


def test_it_marks_replicas_so_they_are_never_sent_back() -> None:
    replica = as_replica(order_item(), EAST)
    assert is_replica(replica) and writer_of(replica, WEST) == EAST
    touched = {**replica, "status": "CANCELLED"}  # a local update of a replica is a local write
    assert not is_replica(touched) and writer_of(touched, WEST) == WEST


def test_it_lets_the_last_writer_win_with_the_region_name_breaking_ties() -> None:
    older, newer = order_item(updatedAt=1000), order_item(updatedAt=2000, status="CANCELLED")
    assert lww_decision(None, older, WEST, EAST) == "apply"
    assert lww_decision(as_replica(newer, EAST), older, WEST, EAST) == "skip"
    assert lww_decision(older, newer, WEST, EAST) == "apply"
    local_west = order_item(updatedAt=1000, region=WEST)
    assert lww_decision(local_west, older, WEST, EAST) == "apply"  # us-east-1 > eu-west-1
    assert lww_decision(older, local_west, EAST, WEST) == "skip"


def test_it_treats_the_same_version_and_content_as_a_no_op() -> None:
    item = order_item()
    assert lww_decision(as_replica(item, EAST), item, WEST, EAST) == "skip"


# --- limits ------------------------------------------------------------------------------


def test_it_checks_a_position_limit_locally_and_lets_reducing_orders_through() -> None:
    assert within_limit(Decimal("0"), "BUY", Decimal("0.8"), Decimal("1"))
    assert not within_limit(Decimal("0.8"), "BUY", Decimal("0.8"), Decimal("1"))
    assert within_limit(Decimal("1.5"), "SELL", Decimal("0.2"), Decimal("1"))
    assert within_limit(Decimal("5"), "BUY", Decimal("5"), None)
    assert parse_limits("2", ("BTC-USD", "ETH-USD")) == {"BTC-USD": Decimal("2"), "ETH-USD": Decimal("2")}
    assert parse_limits("ETH-USD=30", ("BTC-USD", "ETH-USD")) == {"ETH-USD": Decimal("30")}
    with pytest.raises(ValueError):
        parse_limits("-1", ("BTC-USD",))


# --- check --------------------------------------------------------------------------------


def test_it_reports_an_undecided_conflict_and_a_missing_order_with_witnesses() -> None:
    orders = {"ORDER#O1": {"pk": "ORDER#O1", "orderId": "O1", "client": "alice", "symbol": "BTC-USD", "side": "BUY", "qty": Decimal("0.5"), "price": Decimal("50000"), "status": "FILLED", "region": WEST, "seq": 1, "createdAt": 1, "updatedAt": 2, "filledQty": Decimal("0.5")}}
    trades = {
        f"TRADE#T-{r}": {"pk": f"TRADE#T-{r}", "tradeId": f"T-{r}", "orderId": "O1", "client": "alice", "counterparty": "SIM-MM-1", "symbol": "BTC-USD", "side": "BUY", "qty": Decimal("0.5"), "price": Decimal("50000"), "region": r, "seq": 1, "fillIndex": 0, "timestamp": 2}
        for r in (EAST, WEST)
    }
    history = History((EAST, WEST), {EAST: {"orders": orders, "trades": trades, "reconcile": {}}, WEST: {"orders": {}, "trades": trades, "reconcile": {}}}, REF)
    result = check(history)
    assert not result["ok"]
    rules = {v["rule"] for v in result["violations"]}
    assert {"order_in_every_region", "regions_identical", "one_decision_per_conflict", "no_overfill"} <= rules
    witness = next(v for v in result["violations"] if v["rule"] == "no_overfill")["witnesses"]
    assert witness["order"]["orderId"] == "O1" and len(witness["trades"]) == 2
    assert witness["trades"][0]["qty"] == "0.5"
