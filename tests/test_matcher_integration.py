"""The matcher behind the worker, on a real moto server and the embedded snapshot Redis:
resting orders in the book, a cross, a cancel, the active task killed and its stand-in
rebuilding the same book, and afterwards nothing lost and nothing filled twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exchange_ui.runtime import Runtime, set_runtime
from reconcile_panel.history import check
from reconcile_panel.store import load_history
from simfill.worker import AzWorker, apply_message, publish_applied
from tests.conftest import make_config, order_payload, wait_for
from trading.actions import cancel_order, submit_order
from trading.config import ExchangeConfig
from trading.domain import Order

ROOT = Path(__file__).resolve().parent.parent
REGION, SYMBOL = "us-east-1", "BTC-USD"
ACTIVE, OTHER = "us-east-1a", "us-east-1b"


@pytest.fixture
def config(embedded_book_redis: Any, book_redis: Any) -> ExchangeConfig:
    return make_config(regions=(REGION,), engine="matcher", redis_url=embedded_book_redis.url)


@pytest.fixture
def runtime(aws_resources: ExchangeConfig) -> Iterator[Runtime]:
    built = Runtime.build(aws_resources, with_mirror=False)
    set_runtime(built)
    for az in aws_resources.azs(REGION):
        built.workers[az].start()
    yield built
    tasks = [*built.workers.values(), *built.stand_ins.values()]
    for task in tasks:
        task.stop()
    for task in tasks:
        if task.thread is not None:
            task.thread.join(10)
    if built.snapshots is not None:
        built.snapshots.close(persist=False)
    set_runtime(None)


def stored(runtime: Runtime, order: Order) -> Order:
    found = runtime.exchange.stores[REGION].orders.get(order.order_id)
    assert found is not None
    return found


def status_of(runtime: Runtime, order: Order) -> tuple[str, str]:
    found = stored(runtime, order)
    return found.status, str(found.filled_qty)


def submit(runtime: Runtime, client: str, side: str, qty: str, price: str, key: str) -> Order:
    order, created = submit_order(runtime.exchange, client, order_payload(side=side, qty=qty, price=price), key)
    assert created
    return order


def depth(runtime: Runtime) -> dict[str, Any]:
    found = runtime.book_snapshots().depth(REGION, SYMBOL, 10)
    assert found is not None
    return {"seq": found["seq"], "bids": found["bids"], "asks": found["asks"]}


def levels(*rows: tuple[str, str, int]) -> list[dict[str, Any]]:
    return [{"price": price, "qty": qty, "orders": orders} for price, qty, orders in rows]


def check_books_and_fills(runtime: Runtime, task: AzWorker) -> None:
    """Every order reached the engine; each one's filled quantity is what its trades (as
    taker or as maker) add up to, never more than its quantity; FILLED exactly when all of
    it traded; and the book holds exactly the OPEN orders, with what is left of each."""
    stores = runtime.exchange.stores[REGION]
    orders = {o.order_id: o for o in stores.orders.scan_all()}
    trades = list(stores.trades.scan_all())
    assert len({t.trade_id for t in trades}) == len(trades)
    traded: dict[str, Decimal] = {}
    for trade in trades:
        assert trade.buy_order in orders and trade.sell_order in orders, trade  # both real orders
        for side in (trade.buy_order, trade.sell_order):
            traded[side] = traded.get(side, Decimal(0)) + trade.qty
    for order in orders.values():
        assert order.status != "ACCEPTED", order
        assert order.filled_qty == traded.get(order.order_id, Decimal(0)) <= order.qty, order
        assert (order.status == "FILLED") == (order.filled_qty == order.qty), order
    state = task.engine.market_state(SYMBOL)
    assert state is not None
    in_book = {entry[0]: Decimal(entry[3]) for side in ("bids", "asks") for _, level in state[side] for entry in level}
    assert in_book == {o.order_id: o.qty - o.filled_qty for o in orders.values() if o.status == "OPEN"}


def test_it_rests_crosses_cancels_and_rebuilds_the_book_in_a_stand_in(runtime: Runtime, published: list[dict[str, Any]]) -> None:
    active, standby = runtime.workers[ACTIVE], runtime.workers[OTHER]
    wait_for(lambda: active.ready, message="the active matcher's books rebuilt")
    assert not standby.ready and standby.alive  # a standby consumes nothing

    # Resting orders: nothing crosses, each rests OPEN at its price.
    alice = submit(runtime, "alice", "BUY", "0.5000", "49990.00", "a1")
    bob = submit(runtime, "bob", "BUY", "0.3000", "49980.00", "b1")
    carol = submit(runtime, "carol", "SELL", "0.4000", "50010.00", "c1")
    dave = submit(runtime, "dave", "SELL", "0.2000", "50020.00", "d1")
    for order in (alice, bob, carol, dave):
        wait_for(lambda order=order: status_of(runtime, order) == ("OPEN", "0.0000"), message=f"{order.client}'s order resting")
    wait_for(lambda: depth(runtime)["seq"] == 4, message="the snapshot at seq 4")
    assert depth(runtime) == {
        "seq": 4,
        "bids": levels(("49990.00", "0.5000", 1), ("49980.00", "0.3000", 1)),
        "asks": levels(("50010.00", "0.4000", 1), ("50020.00", "0.2000", 1)),
    }

    # A cross: erin's SELL takes alice's bid whole and part of bob's, at their prices.
    erin = submit(runtime, "erin", "SELL", "0.6000", "49980.00", "e1")
    wait_for(lambda: status_of(runtime, erin)[0] == "FILLED", message="erin's sell filled")
    assert status_of(runtime, alice) == ("FILLED", "0.5000")
    assert status_of(runtime, bob) == ("OPEN", "0.1000")
    tape = sorted(runtime.exchange.stores[REGION].trades.for_order(erin.order_id, REGION), key=lambda t: t.fill_index)
    assert [(t.buy_order, t.sell_order, str(t.qty), str(t.price), t.client, t.counterparty) for t in tape] == [
        (alice.order_id, erin.order_id, "0.5000", "49990.00", "erin", "alice"),
        (bob.order_id, erin.order_id, "0.1000", "49980.00", "erin", "bob"),
    ]
    assert stored(runtime, bob).maker_trades == (tape[1].trade_id,)
    statuses = {e["data"]["order_id"]: e["data"]["status"] for e in published if e["type"] == "order.status"}
    assert statuses[alice.order_id] == "FILLED" and statuses[bob.order_id] == "OPEN" and statuses[erin.order_id] == "FILLED"
    assert {e["data"]["trade_id"] for e in published if e["type"] == "trade.executed"} == {t.trade_id for t in tape}

    # A cancel of a resting order: the book lets it go, what was left is cancelled.
    assert cancel_order(runtime.exchange, stored(runtime, carol))
    wait_for(lambda: status_of(runtime, carol) == ("CANCELLED", "0.0000"), message="carol's order cancelled")
    wait_for(lambda: depth(runtime)["asks"] == levels(("50020.00", "0.2000", 1)), message="the ask gone from the snapshot")
    before = {"depth": depth(runtime), "state": active.engine.market_state(SYMBOL)}
    assert before["depth"]["bids"] == levels(("49980.00", "0.2000", 1))

    # The active task dies (its AZ is lost): one more order it took and wrote but never
    # deleted comes back to whoever runs the books next; others wait in the queue.
    runtime.exchange.az_up = lambda az: az != ACTIVE
    runtime.stop_az(ACTIVE)
    active.thread.join(10)
    frank = submit(runtime, "frank", "BUY", "0.1000", "50020.00", "f1")
    taken = runtime.exchange.queues[REGION].receive(max_messages=1, wait_s=2, visibility_timeout=2)
    assert [m.body["order_id"] for m in taken] == [frank.order_id]
    applied = apply_message(
        runtime.exchange.stores[REGION], taken[0].body, ACTIVE, time.time, lambda s: (Decimal("0.01"), Decimal("0.0001")),
        engine=active.engine, task=active.task,
    )
    publish_applied(applied, REGION)
    assert applied.action == "filled" and status_of(runtime, frank) == ("FILLED", "0.1000")
    gina = submit(runtime, "gina", "SELL", "0.2000", "49980.00", "g1")

    runtime.place_stand_ins()
    stand_in = runtime.stand_ins[ACTIVE]
    assert stand_in.az == OTHER and stand_in.name == "matcher-us-east-1b-for-us-east-1a" and not stand_in.standby
    wait_for(lambda: status_of(runtime, gina)[0] == "FILLED", 20, message="gina's sell filled by the stand-in")
    # The book it rebuilt (from the last snapshot and the orders after it) was the one
    # the dead task held: gina's sell met bob's rest, and nothing else.
    assert status_of(runtime, bob) == ("FILLED", "0.3000")
    assert status_of(runtime, dave) == ("OPEN", "0.1000")  # frank's fill stands, once
    assert [t.sell_order for t in runtime.exchange.stores[REGION].trades.for_order(gina.order_id, REGION)] == [gina.order_id]
    # frank's message, redelivered to the stand-in, changed nothing.
    wait_for(lambda: runtime.exchange.queues[REGION].depth() == (0, 0), 20, message="the queue drained")
    assert len(runtime.exchange.stores[REGION].trades.for_order(frank.order_id, REGION)) == 1
    check_books_and_fills(runtime, stand_in)
    wait_for(lambda: depth(runtime)["bids"] == [] and depth(runtime)["asks"] == levels(("50020.00", "0.1000", 1)), message="the stand-in's snapshot")

    # Everything final, the project's own history check agrees: nothing lost, no double fill.
    assert cancel_order(runtime.exchange, stored(runtime, dave))
    wait_for(lambda: status_of(runtime, dave)[0] == "CANCELLED", message="dave's rest cancelled")
    assert history_violations(runtime) == []


def history_violations(runtime: Runtime) -> list[dict[str, Any]]:
    return check(load_history(runtime.config))["violations"]


def test_check_history_counts_a_makers_fills(runtime: Runtime) -> None:
    wait_for(lambda: runtime.workers[ACTIVE].ready, message="the active matcher ready")
    maker = submit(runtime, "alice", "BUY", "0.5000", "49990.00", "x1")
    taker = submit(runtime, "bob", "SELL", "0.5000", "49990.00", "x2")
    wait_for(lambda: status_of(runtime, maker)[0] == status_of(runtime, taker)[0] == "FILLED", message="both filled")
    assert history_violations(runtime) == []


def test_it_exits_0_from_check_history_after_a_matcher_run(runtime: Runtime, moto_server: Any) -> None:
    """Rests, crosses through two levels, a part-filled rest cancelled, a rest left whole:
    the project's command, run as an operator runs it, finds every order settled and nothing
    to decide (each resting order's fills are the trades it made as the maker)."""
    wait_for(lambda: runtime.workers[ACTIVE].ready, message="the active matcher ready")
    rests = [
        submit(runtime, "alice", "BUY", "0.3000", "49990.00", "r1"),
        submit(runtime, "bob", "BUY", "0.4000", "49980.00", "r2"),
        submit(runtime, "carol", "SELL", "0.2000", "50020.00", "r3"),
    ]
    for order in rests:
        wait_for(lambda order=order: status_of(runtime, order)[0] == "OPEN", message=f"{order.client}'s order resting")
    taker = submit(runtime, "erin", "SELL", "0.5000", "49980.00", "r4")  # alice whole, part of bob
    buyer = submit(runtime, "frank", "BUY", "0.1000", "50020.00", "r5")  # part of carol
    wait_for(lambda: status_of(runtime, taker)[0] == status_of(runtime, buyer)[0] == "FILLED", message="the crosses filled")
    assert status_of(runtime, rests[1]) == ("OPEN", "0.2000") and status_of(runtime, rests[2]) == ("OPEN", "0.1000")
    assert cancel_order(runtime.exchange, stored(runtime, rests[1]))
    wait_for(lambda: status_of(runtime, rests[1]) == ("CANCELLED", "0.2000"), message="bob's part-filled rest cancelled")
    assert cancel_order(runtime.exchange, stored(runtime, rests[2]))
    wait_for(lambda: status_of(runtime, rests[2]) == ("CANCELLED", "0.1000"), message="carol's part-filled rest cancelled")
    env = {
        **os.environ, "AWS_ENDPOINT_URL": moto_server.url, "EXCHANGE_REGIONS": REGION, "EXCHANGE_ENGINE": "matcher",
        "EXCHANGE_MARKETS": "BTC-USD,ETH-USD", "EXCHANGE_POSITION_LIMIT": "", "DJANGO_SETTINGS_MODULE": "exchange_ui.settings",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check_history", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"ok": true' in done.stdout


def test_a_stand_in_rebuilds_the_book_the_dead_task_held(runtime: Runtime) -> None:
    """Snapshot state and depth compared whole: the book a stand-in rebuilds from the last
    snapshot (older than the store: a cancel and an order came after it) and the orders
    after its seq is the dead task's, resting order for resting order."""
    active = runtime.workers[ACTIVE]
    wait_for(lambda: active.ready, message="the active matcher ready")
    makers = [
        submit(runtime, f"maker-{i}", side, qty, price, f"m{i}")
        for i, (side, qty, price) in enumerate(
            [("BUY", "0.3000", "49990.00"), ("BUY", "0.2000", "49990.00"), ("BUY", "0.1000", "49970.00"),
             ("SELL", "0.4000", "50010.00"), ("SELL", "0.1000", "50010.00"), ("SELL", "0.2500", "50030.00")]
        )
    ]
    taker = submit(runtime, "taker", "SELL", "0.4000", "49990.00", "t1")  # the first bid whole, half the second
    wait_for(lambda: status_of(runtime, taker)[0] == "FILLED" and active.engine.last_seq(SYMBOL) == 7, message="seq 7 applied")
    assert status_of(runtime, makers[1]) == ("OPEN", "0.1000")
    at_7 = (active.engine.depth(SYMBOL, 20), active.engine.market_state(SYMBOL))
    assert cancel_order(runtime.exchange, stored(runtime, makers[5]))
    wait_for(lambda: status_of(runtime, makers[5])[0] == "CANCELLED", message="a rest cancelled after the snapshot")
    later = submit(runtime, "late", "BUY", "0.0500", "49960.00", "l1")
    wait_for(lambda: status_of(runtime, later)[0] == "OPEN", message="an order after the snapshot resting")
    before = (active.engine.depth(SYMBOL, 10), active.engine.market_state(SYMBOL))

    runtime.exchange.az_up = lambda az: az != ACTIVE
    runtime.stop_az(ACTIVE)
    active.thread.join(10)
    # The last snapshot the stand-in finds is the one at seq 7.
    runtime.book_snapshots().publish(REGION, SYMBOL, at_7[0], at_7[1], int(time.time() * 1000))
    assert runtime.book_snapshots().latest_state(REGION, SYMBOL)[1] == 7
    runtime.place_stand_ins()
    stand_in = runtime.stand_ins[ACTIVE]
    wait_for(lambda: stand_in.ready, 20, message="the stand-in's books rebuilt")
    assert stand_in.engine.depth(SYMBOL, 10) == before[0]
    assert stand_in.engine.market_state(SYMBOL) == before[1]
    check_books_and_fills(runtime, stand_in)
    wait_for(lambda: depth(runtime)["seq"] == 8, message="the stand-in republished the book")
