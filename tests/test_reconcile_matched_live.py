"""A conflict between matched trades, live: two regions' matchers on a real moto server and
the embedded snapshot Redis. During a partition a client's retry (the same idempotency key)
is accepted in both regions and each copy trades with a resting order of its region's book.
After the heal the reconciler keeps the first copy and reverses the other's trade once,
from the taker's conflict: both accounts get their side back (P&L legs and position
counters, in every region), and check_history finds every order settled, the makers' too."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from exchange_ui.runtime import Runtime, set_runtime
from reconcile_panel.history import check
from reconcile_panel.store import load_history
from tests.conftest import make_config, order_payload, wait_for
from trading.actions import cancel_order, submit_order
from trading.config import ExchangeConfig
from trading.domain import Order

SYMBOL = "BTC-USD"
LIMIT = Decimal("10")


@pytest.fixture
def config(embedded_book_redis: Any, book_redis: Any) -> ExchangeConfig:
    return make_config(engine="matcher", redis_url=embedded_book_redis.url, position_limits={SYMBOL: LIMIT})


@pytest.fixture
def runtime(aws_resources: ExchangeConfig) -> Iterator[Runtime]:
    from reconcile_panel.provision import ensure_reconcile_tables

    ensure_reconcile_tables(aws_resources)
    built = Runtime.build(aws_resources, with_mirror=False)
    set_runtime(built)
    for worker in built.workers.values():
        worker.start()
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


def place(runtime: Runtime, client: str, side: str, qty: str, price: str, key: str, region: str) -> Order:
    order, _ = submit_order(runtime.exchange, client, {**order_payload(side=side, qty=qty, price=price), "region": region}, key)
    return order


def status(runtime: Runtime, region: str, order: Order) -> tuple[str, str]:
    found = runtime.exchange.stores[region].orders.get(order.order_id)
    return (found.status, str(found.filled_qty)) if found is not None else ("", "")


def test_it_reverses_the_second_copys_matched_trade_once_for_both_accounts(runtime: Runtime) -> None:
    east, west = runtime.config.regions
    replicator, reconciler = runtime.replicator, runtime.reconciler
    wait_for(lambda: all(w.ready for w in runtime.workers.values() if not w.standby), message="both regions' matchers ready")
    # A resting ask in each region's book.
    ask_east = place(runtime, "mia", "SELL", "0.5000", "50010.00", "ask-e", east)
    ask_west = place(runtime, "noa", "SELL", "0.5000", "50010.00", "ask-w", west)
    wait_for(lambda: status(runtime, east, ask_east)[0] == status(runtime, west, ask_west)[0] == "OPEN", message="the asks resting")
    replicator.drain()

    with replicator.paused(east, west), replicator.paused(west, east):
        first = place(runtime, "zed", "BUY", "0.3000", "50010.00", "retry-1", east)
        wait_for(lambda: status(runtime, east, first) == ("FILLED", "0.3000"), message="the first copy filled in east")
        second = place(runtime, "zed", "BUY", "0.3000", "50010.00", "retry-1", west)  # the client's retry fails over
        assert second.order_id == first.order_id
        wait_for(lambda: status(runtime, west, second) == ("FILLED", "0.3000"), message="the retry filled in west")
        assert status(runtime, west, ask_west) == ("OPEN", "0.3000")  # noa's rest traded with the retry
    replicator.drain()
    result = reconciler.run_once()
    assert not result.held and result.conflicts == 1
    replicator.drain()

    (west_trade,) = runtime.exchange.stores[west].trades.for_order(first.order_id, west)
    assert (west_trade.buy_order, west_trade.sell_order, west_trade.counterparty) == (first.order_id, ask_west.order_id, "noa")
    records = list(reconciler.store.scan_all())
    comps = [r for r in records if r["recordType"] == "COMPENSATION"]
    assert [(c["tradeId"], c["orderId"], c["execType"]) for c in comps] == [(west_trade.trade_id, first.order_id, "H")]  # once
    legs = {(a["account"], a["side"]) for a in records if a["recordType"] == "ADJUSTMENT"}
    assert legs == {("zed", "BUY"), ("noa", "SELL")}
    # Every region's counters: zed keeps the east fill only; noa's busted sale is given back.
    for region in (east, west):
        sequences = runtime.exchange.stores[region].sequences
        assert sequences.position("zed", SYMBOL) == Decimal("0.3000"), region
        assert sequences.position("mia", SYMBOL) == Decimal("-0.3000"), region
        assert sequences.position("noa", SYMBOL) == Decimal("0"), region

    # The rests finished, the history check passes: each maker's fills are its trades.
    for region, ask in ((east, ask_east), (west, ask_west)):
        assert cancel_order(runtime.exchange, runtime.exchange.stores[region].orders.get(ask.order_id))
        wait_for(lambda region=region, ask=ask: status(runtime, region, ask)[0] == "CANCELLED", message="the rest cancelled")
    replicator.drain()
    assert reconciler.run_once().conflicts == 0
    replicator.drain()
    result = check(load_history(runtime.config))
    assert result["violations"] == []
