"""The fill worker with the matching engine, message by message (real moto, no threads):
seq order kept when the queue reorders, replays that change nothing, the lease fence,
and position counters on both sides of a trade."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from matcher.engines import MatchingEngine
from simfill.worker import REASON_LATE, AzWorker, apply_message
from tests.conftest import make_config, order_payload, wait_for
from trading.actions import Exchange, submit_order
from trading.config import ExchangeConfig
from trading.domain import Order
from trading.queue import Message
from trading.store import OrderStore

REGION = "us-east-1"


@pytest.fixture
def config() -> ExchangeConfig:
    # No snapshots here: the worker runs without them (rebuilds from the store alone).
    return make_config(engine="matcher", position_limits={"ETH-USD": Decimal("100")})


def grid(config: Any) -> Any:
    return lambda symbol: (config.market(symbol).tick, config.market(symbol).lot)


def matcher(exchange: Exchange, az: str = "us-east-1a") -> AzWorker:
    worker = AzWorker(
        exchange.stores[REGION], exchange.queues[REGION], az, grid(exchange.config), wait_s=1,
        engine=MatchingEngine(), symbols=exchange.config.market_symbols,
    )
    worker.prepare()
    return worker


def submit(exchange: Exchange, client: str, side: str, qty: str, price: str, key: str, symbol: str = "BTC-USD") -> Order:
    order, created = submit_order(exchange, client, order_payload(symbol=symbol, side=side, qty=qty, price=price), key)
    assert created
    return order


def stored(exchange: Exchange, order: Order) -> Order:
    found = exchange.stores[REGION].orders.get(order.order_id)
    assert found is not None
    return found


def messages(exchange: Exchange, count: int) -> dict[str, Message]:
    got: dict[str, Message] = {}
    wait_for(lambda: got.update({m.body["order_id"]: m for m in exchange.queues[REGION].receive(max_messages=10, wait_s=1)}) or len(got) >= count)
    return got


def test_it_applies_a_market_in_seq_order_when_the_queue_brings_a_later_order_first(exchange: Exchange) -> None:
    worker = matcher(exchange)
    bid = submit(exchange, "alice", "BUY", "0.5000", "50000.00", "q1")
    ask = submit(exchange, "bob", "SELL", "0.5000", "50000.00", "q2")
    assert (bid.seq, ask.seq) == (1, 2)
    got = messages(exchange, 2)
    # The sell's message first (two sends of one commit race each other): the bid it
    # must meet is read from the store and applied before it.
    assert worker.process([got[ask.order_id]]) == 1
    assert stored(exchange, bid).status == stored(exchange, ask).status == "FILLED"
    (trade,) = exchange.stores[REGION].trades.for_order(ask.order_id, REGION)
    assert (trade.buy_order, trade.sell_order, trade.price) == (bid.order_id, ask.order_id, Decimal("50000.00"))
    # The bid's own message, later, finds it applied.
    assert worker.process([got[bid.order_id]]) == 1
    assert [h.status for h in stored(exchange, bid).history] == ["ACCEPTED", "OPEN", "FILLED"]
    assert exchange.stores[REGION].trades.for_order(bid.order_id, REGION) == []  # the trade is the taker's


def test_a_replayed_execution_changes_no_resting_order_again(exchange: Exchange) -> None:
    worker = matcher(exchange)
    maker = submit(exchange, "alice", "BUY", "1.0000", "50000.00", "r1")
    worker.process(list(messages(exchange, 1).values()))
    taker = submit(exchange, "bob", "SELL", "0.3000", "50000.00", "r2")
    (message,) = messages(exchange, 1).values()
    stale = stored(exchange, taker)  # as a batch read it, before the write
    worker.process([message])
    once = stored(exchange, maker)
    assert (once.status, once.filled_qty, len(once.maker_trades)) == ("OPEN", Decimal("0.3000"), 1)
    # The same message applied again from the stale copy (a redelivery after a crash
    # between the write and the delete): the engine hands back the same fills, and every
    # write is refused by the state it was computed from.
    again = apply_message(exchange.stores[REGION], message.body, "us-east-1a", time.time, grid(exchange.config), loaded=stale, engine=worker.engine, task=worker.task)
    assert again.action == "skipped" and again.touched == ()
    assert stored(exchange, maker) == once
    assert len(exchange.stores[REGION].trades.for_order(taker.order_id, REGION)) == 1


def test_a_task_whose_lease_was_taken_writes_nothing_and_stands_by(exchange: Exchange) -> None:
    first = matcher(exchange, "us-east-1a")
    second = matcher(exchange, "us-east-1b")  # took the lease: the first is fenced off
    order = submit(exchange, "alice", "BUY", "0.5000", "50000.00", "l1")
    first.start()
    wait_for(lambda: first.standby, message="the fenced task standing by")
    first.stop()
    assert stored(exchange, order).status == "ACCEPTED"  # its write was refused whole
    assert "lease" in first.last_error
    wait_for(lambda: second.poll_once() >= 1, 15, message="the lease holder applying the message")
    assert stored(exchange, order).status == "OPEN"


def test_an_order_that_reaches_the_book_after_later_ones_is_cancelled_not_lost(exchange: Exchange, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = matcher(exchange)
    early = submit(exchange, "alice", "BUY", "0.5000", "49000.00", "o1")
    later = submit(exchange, "bob", "BUY", "0.5000", "49000.00", "o2")
    got = messages(exchange, 2)
    # The earlier order's row was not readable when the later one came (a number taken
    # before its write landed): the later one is applied alone.
    monkeypatch.setattr(OrderStore, "in_market", lambda *args, **kwargs: iter(()))
    worker.process([got[later.order_id]])
    worker.process([got[early.order_id]])
    done = stored(exchange, early)
    assert (done.status, done.history[-1].note) == ("CANCELLED", REASON_LATE)
    assert stored(exchange, later).status == "OPEN"


def test_a_trade_moves_both_accounts_positions(exchange: Exchange) -> None:
    worker = matcher(exchange)
    submit(exchange, "alice", "SELL", "2.0000", "3000.00", "p1", symbol="ETH-USD")
    worker.process(list(messages(exchange, 1).values()))
    submit(exchange, "bob", "BUY", "1.5000", "3000.00", "p2", symbol="ETH-USD")
    worker.process(list(messages(exchange, 1).values()))
    sequences = exchange.stores[REGION].sequences
    assert sequences.position("bob", "ETH-USD") == Decimal("1.5000")
    assert sequences.position("alice", "ETH-USD") == Decimal("-1.5000")


def test_it_moves_both_accounts_positions_in_the_other_region_and_back_on_a_compensation(exchange: Exchange) -> None:
    """The replicated trade moves the maker's counter there too, and a compensation of a
    matched trade gives both accounts their side back, in every region."""
    from reconcile_panel.provision import ensure_reconcile_tables
    from reconcile_panel.reconciler import Compensation, Conflict, Decisions, compensation_id
    from reconcile_panel.replicator import Replicator
    from reconcile_panel.worker import ReconcileWorker

    ensure_reconcile_tables(exchange.config)
    worker = matcher(exchange)
    maker = submit(exchange, "alice", "SELL", "2.0000", "3000.00", "q1", symbol="ETH-USD")
    worker.process(list(messages(exchange, 1).values()))
    taker = submit(exchange, "bob", "BUY", "1.5000", "3000.00", "q2", symbol="ETH-USD")
    worker.process(list(messages(exchange, 1).values()))
    replicator = Replicator(exchange.config)
    replicator.drain()
    other = exchange.config.regions[1]
    positions = lambda region: (  # noqa: E731
        exchange.stores[region].sequences.position("bob", "ETH-USD"), exchange.stores[region].sequences.position("alice", "ETH-USD")
    )
    assert positions(REGION) == positions(other) == (Decimal("1.5000"), Decimal("-1.5000"))

    (trade,) = exchange.stores[REGION].trades.for_order(taker.order_id, REGION)
    assert (trade.buy_order, trade.sell_order, trade.counterparty) == (taker.order_id, maker.order_id, "alice")
    conflict = Conflict("CF-t", "duplicate_fill", taker.order_id, "bob", "ETH-USD", (REGION,), REGION, (), (trade.trade_id,), (), "", "", 1)
    comp = Compensation(
        compensation_id(conflict.conflict_id, trade.trade_id), conflict.conflict_id, trade.trade_id, "G", taker.order_id, "bob", "alice",
        "ETH-USD", "BUY", REGION, trade.qty, trade.price, Decimal("0.5000"), Decimal("1.0000"), 1,
    )
    reconciler = ReconcileWorker(exchange.config, tail=False, limits={"ETH-USD": Decimal("100")})
    reconciler._write(Decisions(conflicts=(conflict,), compensations=(comp,)))
    replicator.drain()
    assert positions(REGION) == positions(other) == (Decimal("1.0000"), Decimal("-1.0000"))


def test_a_task_that_died_part_way_through_a_large_execution_fills_nothing_twice(exchange: Exchange, monkeypatch: pytest.MonkeyPatch) -> None:
    from trading import store

    worker = matcher(exchange)
    makers = [submit(exchange, f"maker-{i}", "SELL", "0.1000", f"5000{i}.00", f"big-m{i}") for i in range(3)]
    worker.process(list(messages(exchange, 3).values()))
    taker = submit(exchange, "taker", "BUY", "0.3000", "50002.00", "big-t")
    (message,) = messages(exchange, 1).values()
    # Too large for one transaction: written item by item, and the task dies after the
    # first two resting orders' writes (the trades are all in, the third maker's and the
    # taker's writes are not).
    monkeypatch.setattr(store, "TRANSACTION_ITEMS", 4)
    real = store.RegionStores._transact
    calls: list[int] = []

    def dies_on_the_third(self: Any, items: list[dict[str, Any]], fence: Any) -> bool:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the task died")
        return real(self, items, fence)

    monkeypatch.setattr(store.RegionStores, "_transact", dies_on_the_third)
    with pytest.raises(RuntimeError):
        worker.process([message])
    monkeypatch.setattr(store.RegionStores, "_transact", real)
    assert [stored(exchange, m).status for m in makers] == ["FILLED", "FILLED", "OPEN"]
    assert stored(exchange, taker).status == "ACCEPTED"

    # Its stand-in rebuilds the book as it was before the taker, and the message, back
    # after the visibility timeout, makes the same execution: the done writes stay done.
    stand_in = matcher(exchange, "us-east-1b")
    wait_for(lambda: stand_in.poll_once() >= 1, 15, message="the message redelivered")
    assert (stored(exchange, taker).status, stored(exchange, taker).filled_qty) == ("FILLED", Decimal("0.3000"))
    for maker in makers:
        done = stored(exchange, maker)
        assert (done.status, done.filled_qty, len(done.maker_trades)) == ("FILLED", Decimal("0.1000"), 1)
    fills = exchange.stores[REGION].trades.for_order(taker.order_id, REGION)
    assert [(t.sell_order, t.price) for t in fills] == [(m.order_id, m.price) for m in makers]
