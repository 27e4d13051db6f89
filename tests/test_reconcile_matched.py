"""The pure reconciler over matched trades: a trade between two real orders fills both.

Each region matches its own copies (a divergent order, accepted in both regions, trades in
both books); every trade item names its taker (`orderId`), both orders (`buyOrder`,
`sellOrder`) and the maker's client (`counterparty`), as the matcher writes them. After
reconciliation every order is settled and decided, no order keeps more than its quantity
net of compensations, no trade is reversed beyond its quantity, each compensation's two
P&L legs are the trade's two accounts, and the worker's merged history (the items in any
order, replicas and repeats included) decides exactly what the whole ledger decides.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconcile_panel.codec import acceptance_from_order_item, decision_items, fills_from_trade_item
from reconcile_panel.reconciler import Ledger, reconcile, unsettled_orders
from reconcile_panel.worker import ReconcileWorker
from tests.conftest import make_config
from trading.streams import ChangeRecord

CONFIG = make_config()
EAST, WEST = CONFIG.regions
CLIENTS = ("alice", "bob", "carol")
SYMBOL = "BTC-USD"
LOT = Decimal("0.1000")


def order_item(order_id: str, region: str, client: str, side: str, qty: Decimal, seq: int, ms: int) -> dict[str, Any]:
    return {
        "pk": f"ORDER#{order_id}", "orderId": order_id, "region": region, "client": client, "symbol": SYMBOL,
        "side": side, "qty": qty, "price": Decimal("50000.00"), "seq": seq, "createdAt": ms, "updatedAt": ms,
        "status": "ACCEPTED", "filledQty": Decimal(0), "cancelRequested": False,
    }


@st.composite
def matched_histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(order items, one per copy; trade items) of two regions' books matched apart."""
    count = draw(st.integers(2, 7))
    orders = []
    for i in range(count):
        orders.append({
            "order_id": f"o{i}",
            "client": draw(st.sampled_from(CLIENTS)),
            "side": draw(st.sampled_from(("BUY", "SELL"))),
            "qty": LOT * draw(st.integers(1, 5)),
            # a retry accepted in both regions (a partition) has a copy in each
            "regions": draw(st.sampled_from(((EAST,), (WEST,), (EAST, WEST)))),
        })
    copies: dict[tuple[str, str], dict[str, Any]] = {}
    trades: list[dict[str, Any]] = []
    ms = 1_000
    for region in (EAST, WEST):
        here = [o for o in orders if region in o["regions"]]
        for seq, o in enumerate(here, start=1):
            ms += 3
            copies[(o["order_id"], region)] = order_item(o["order_id"], region, o["client"], o["side"], o["qty"], seq, ms)
        if len(here) < 2:
            continue
        fill_index: dict[str, int] = defaultdict(int)
        for t, m, lots in draw(st.lists(st.tuples(st.integers(0, len(here) - 1), st.integers(0, len(here) - 1), st.integers(1, 5)), max_size=8)):
            taker, maker = here[t], here[m]
            tc, mc = copies[(taker["order_id"], region)], copies[(maker["order_id"], region)]
            if taker["side"] == maker["side"] or taker["client"] == maker["client"]:
                continue  # a book never crosses one side with itself, nor a client with itself
            qty = min(tc["qty"] - tc["filledQty"], mc["qty"] - mc["filledQty"], LOT * lots)
            if qty <= 0:
                continue
            ms += 5
            index = fill_index[taker["order_id"]]
            fill_index[taker["order_id"]] += 1
            trade_id = f"T-{taker['order_id']}-{region}-{index}"
            buy, sell = (taker, maker) if taker["side"] == "BUY" else (maker, taker)
            trades.append({
                "pk": f"TRADE#{trade_id}", "tradeId": trade_id, "orderId": taker["order_id"], "region": region,
                "client": taker["client"], "counterparty": maker["client"], "symbol": SYMBOL, "side": taker["side"],
                "qty": qty, "price": Decimal("50000.00") + draw(st.integers(-3, 3)), "buyOrder": buy["order_id"],
                "sellOrder": sell["order_id"], "seq": tc["seq"], "fillIndex": index, "timestamp": ms,
            })
            for c in (tc, mc):
                c["filledQty"] += qty
                c["updatedAt"] = ms
    for c in copies.values():
        c["status"] = "FILLED" if c["filledQty"] == c["qty"] else "CANCELLED"
        c["cancelRequested"] = c["status"] == "CANCELLED" and draw(st.booleans())
        c["updatedAt"] += 1
    return list(copies.values()), trades


def ledger_of(order_items: list[dict[str, Any]], trade_items: list[dict[str, Any]]) -> Ledger:
    return Ledger(
        tuple(acceptance_from_order_item(i) for i in order_items),
        tuple(f for t in trade_items for f in fills_from_trade_item(t)),
        {SYMBOL: Decimal("50000")},
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(matched_histories(), st.randoms(use_true_random=False))
def test_it_counts_a_matched_trade_for_both_orders_and_reverses_it_once(history: Any, rng: Any) -> None:
    order_items, trade_items = history
    ledger = ledger_of(order_items, trade_items)
    assert unsettled_orders(ledger) == []  # a resting order that traded is settled by its maker fills
    decisions = reconcile(ledger)

    reversed_qty: dict[str, Decimal] = defaultdict(Decimal)
    for comp in decisions.compensations:
        reversed_qty[comp.trade_id] += comp.reversed_qty
    trades = {t["tradeId"]: t for t in trade_items}
    for trade_id, back in reversed_qty.items():
        assert Decimal(0) < back <= trades[trade_id]["qty"]  # each trade reversed at most once
    # No order keeps more than its quantity, as taker and as maker, net of compensations.
    net: dict[str, Decimal] = defaultdict(Decimal)
    for t in trade_items:
        for order_id in (t["buyOrder"], t["sellOrder"]):
            net[order_id] += t["qty"] - reversed_qty.get(t["tradeId"], Decimal(0))
    quantity = {i["orderId"]: i["qty"] for i in order_items}
    for order_id, kept in net.items():
        assert kept <= quantity[order_id], (order_id, kept)
    # Every divergent order that filled in a region that does not stand is decided.
    regions: dict[str, set[str]] = defaultdict(set)
    for i in order_items:
        regions[i["orderId"]].add(i["region"])
    decided = {c.order_id for c in decisions.conflicts}
    for t in trade_items:
        for order_id in (t["buyOrder"], t["sellOrder"]):
            if len(regions[order_id]) > 1:
                assert order_id in decided
    # A compensation's P&L legs: the two accounts of the trade, opposite sides, summing to zero.
    legs: dict[str, list[Any]] = defaultdict(list)
    for adj in decisions.adjustments:
        legs[adj.compensation_id].append(adj)
    for comp in decisions.compensations:
        trade = trades[comp.trade_id]
        pair = legs[comp.compensation_id]
        assert {a.account for a in pair} == {trade["client"], trade["counterparty"]}
        assert {a.side for a in pair} == {"BUY", "SELL"}
        assert sum((a.amount for a in pair), Decimal(0)) == 0

    # Converges: the worker's merged history, fed every item in any order with replicas'
    # repeats, decides the same records; deciding again changes nothing.
    worker = ReconcileWorker(CONFIG, tail=False)
    worker.reference_prices = {SYMBOL: Decimal("50000")}
    records = [("orders", i) for i in order_items] + [("trades", t) for t in trade_items]
    records += rng.sample(records, len(records) // 3)
    rng.shuffle(records)
    for n, (role, item) in enumerate(records):
        worker.ingest(ChangeRecord("MODIFY", {"pk": item["pk"]}, item, None, str(n), item["region"], role))
    assert decision_items(worker.decide()) == decision_items(decisions)
    assert decision_items(reconcile(worker.ledger())) == decision_items(decisions)


def test_it_decides_a_trade_between_two_retried_orders_once_whichever_of_them_changes() -> None:
    """Both orders of a trade are retries accepted in both regions, and the trade is on
    the copies that do not stand: one compensation, and deciding again when only one of
    the two orders changes brings no second one."""
    taker, maker = "o-b", "o-a"
    orders = [
        order_item(taker, EAST, "zed", "BUY", LOT * 3, 1, 1_000),
        order_item(maker, EAST, "noa", "SELL", LOT * 5, 2, 1_001),
        order_item(taker, WEST, "zed", "BUY", LOT * 3, 2, 1_010),
        order_item(maker, WEST, "noa", "SELL", LOT * 5, 1, 1_005),
    ]
    for item in orders:
        item.update(status="CANCELLED", updatedAt=1_100)
    orders[2].update(status="FILLED", filledQty=LOT * 3)
    orders[3].update(filledQty=LOT * 3)
    trade = {
        "pk": "TRADE#T-x", "tradeId": "T-x", "orderId": taker, "region": WEST, "client": "zed", "counterparty": "noa",
        "symbol": SYMBOL, "side": "BUY", "qty": LOT * 3, "price": Decimal("50001.00"), "buyOrder": taker,
        "sellOrder": maker, "seq": 2, "fillIndex": 0, "timestamp": 1_050,
    }
    whole = reconcile(ledger_of(orders, [trade]))
    assert len(whole.conflicts) == 2 and [c.trade_id for c in whole.compensations] == ["T-x"]

    worker = ReconcileWorker(CONFIG, tail=False)
    worker.reference_prices = {SYMBOL: Decimal("50000")}
    for n, (role, item) in enumerate([("orders", i) for i in orders] + [("trades", trade)]):
        worker.ingest(ChangeRecord("MODIFY", {"pk": item["pk"]}, item, None, str(n), item["region"], role))
    assert decision_items(worker.decide()) == decision_items(whole)
    for order_id in (taker, maker):  # later, a record of one of them alone comes in again
        worker._touched.clear()
        worker._touched.add(order_id)
        again = worker.decide()
        assert {c.compensation_id for c in again.compensations} <= {c.compensation_id for c in whole.compensations}
