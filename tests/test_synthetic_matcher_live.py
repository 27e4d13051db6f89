"""The synthetic traders under the matcher, live: on a real moto server and the embedded
snapshot Redis, the runtime's makers fill every book with resting quotes on both sides
and its takers trade with them, each trade between two real orders."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from exchange_ui.runtime import Runtime, set_runtime
from tests.conftest import wait_for
from trading.config import ExchangeConfig
from trading.synthetic import MAKER, TAKERS, MatcherTraders


@pytest.fixture
def traded(aws_resources: ExchangeConfig) -> Iterator[Runtime]:
    built = Runtime.build(replace(aws_resources, synthetic_rate=Decimal("8")), with_mirror=False)
    set_runtime(built)
    for worker in built.workers.values():  # each region's matcher tasks (active and standby)
        worker.start()
    assert built.synthetic is not None
    built.synthetic.start()
    yield built
    built.synthetic.stop()
    if built.synthetic.thread is not None:
        built.synthetic.thread.join(10)
    tasks = [*built.workers.values(), *built.stand_ins.values()]
    for task in tasks:
        task.stop()
    for task in tasks:
        if task.thread is not None:
            task.thread.join(10)
    if built.snapshots is not None:
        built.snapshots.close(persist=False)
    set_runtime(None)


def both_sides(runtime: Runtime, region: str, symbol: str) -> dict[str, Any] | None:
    book = runtime.book(symbol, region, 10)
    return book if book["bids"] and book["asks"] else None


@pytest.mark.parametrize("config", ["matcher"], indirect=True)
def test_it_keeps_both_sides_of_every_book_resting_and_trades_real_orders_with_each_other(traded: Runtime) -> None:
    assert isinstance(traded.synthetic, MatcherTraders)  # the engine picked the mix
    for region in traded.config.regions:
        for symbol in traded.config.market_symbols:
            book = wait_for(lambda: both_sides(traded, region, symbol), timeout_s=30, message=f"both sides of {symbol} in {region}")
            assert Decimal(book["bids"][0]["price"]) < Decimal(book["asks"][0]["price"])  # not crossed at rest
    home = traded.config.markets[0].home_region
    stores = traded.exchange.stores[home]

    def real_trades() -> list[Any]:
        found = []
        for trade in stores.trades.scan_all():
            buy, sell = stores.orders.get(trade.buy_order), stores.orders.get(trade.sell_order)
            if buy is not None and sell is not None:
                found.append((trade, buy, sell))
        return found if len(found) >= 5 else []

    trades = wait_for(real_trades, timeout_s=60, message="five trades between real orders")
    for trade, buy, sell in trades:
        assert buy.side == "BUY" and sell.side == "SELL" and buy.client != sell.client
        assert {buy.client, sell.client} & {MAKER} and {buy.client, sell.client} & set(TAKERS)
        resting = sell if trade.order_id == buy.order_id else buy  # the trade's order is the incoming one
        assert trade.price == resting.price  # the trade at the resting order's price
        assert not trade.buy_order.startswith("SIM-") and not trade.sell_order.startswith("SIM-")
    assert traded.synthetic.failed == 0


@pytest.fixture
def partitionable(aws_resources: ExchangeConfig) -> Iterator[Runtime]:
    """Both regions' matcher tasks running, replication and reconciliation driven by the test,
    the traders stepped by it with a short client timeout (no thread: each step is seen)."""
    from reconcile_panel.provision import ensure_reconcile_tables

    ensure_reconcile_tables(aws_resources)
    built = Runtime.build(replace(aws_resources, synthetic_rate=Decimal("1")), with_mirror=False)
    set_runtime(built)
    assert isinstance(built.synthetic, MatcherTraders)
    built.synthetic.fill_timeout_s = 0.3
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


@pytest.mark.parametrize("config", ["matcher"], indirect=True)
def test_it_has_takers_failover_become_conflicts_only_in_a_partition(partitionable: Runtime) -> None:
    import time

    traders, replicator, reconciler = partitionable.synthetic, partitionable.replicator, partitionable.reconciler
    assert isinstance(traders, MatcherTraders)
    east, west = partitionable.config.regions

    def step() -> None:
        traders.run_step()
        replicator.drain()
        time.sleep(0.05)  # the traders' pace (their thread waits 1/rate between steps)

    # Connected: a failover finds the order replicated in the other region, which refuses
    # the changed body. Nothing diverges.
    wait_for(lambda: step() or traders.refused >= 2, timeout_s=60, interval_s=0, message="two failovers refused")
    assert traders.copies == 0
    # Partitioned: each region matches the market on its own, and a failover is a second
    # copy of the order, traded in the other region's book.
    with replicator.paused(east, west):
        wait_for(lambda: step() or traders.copies >= 2, timeout_s=60, interval_s=0, message="two failover copies")
    # Healed: once the copies have settled, the reconciler decides their duplicate fills.
    found: list[dict[str, Any]] = []

    def decided() -> bool:
        step()
        reconciler.run_once()
        found[:] = [c for c in reconciler.store.scan_all("CONFLICT") if c.get("kind") == "duplicate_fill"]
        return bool(found)

    wait_for(decided, timeout_s=90, interval_s=0, message="a duplicate_fill conflict from the traders' failovers")
    assert {c["client"] for c in found} <= set(TAKERS)


@pytest.mark.parametrize("config", ["matcher"], indirect=True)
def test_it_has_the_game_day_clients_fill_a_retry_in_both_regions_books_under_the_matcher(partitionable: Runtime) -> None:
    traders, replicator = partitionable.synthetic, partitionable.replicator
    assert isinstance(traders, MatcherTraders)
    east, west = partitionable.config.regions
    symbol = partitionable.config.markets[0].symbol

    def books_alive() -> bool:
        traders.run_step()
        return all(both_sides(partitionable, region, symbol) for region in (east, west))

    wait_for(books_alive, timeout_s=30, interval_s=0.1, message="both regions' books quoted")
    replicator.drain()
    results = partitionable.partition_play((east, west)).run(cut=replicator.paused(east, west))
    duplicate = results[0]
    assert duplicate.kind == "duplicate_fill" and duplicate.happened, duplicate
    # Immediate-or-cancel: every copy settled (filled, or cancelled with what it got).
    assert all(not copy.is_open for divergence in results for copy in divergence.copies)
    assert {copy.region for copy in duplicate.copies} == {east, west}


@pytest.mark.parametrize("config", ["matcher"], indirect=True)
def test_it_has_the_makers_quote_a_lifted_level_again_without_its_event(partitionable: Runtime) -> None:
    """As in `make run-multi`, where the fills happen in other processes: no order event
    reaches the traders, the book's snapshot and the store tell them what was lifted."""
    import time

    traders = partitionable.synthetic
    assert isinstance(traders, MatcherTraders)  # not started: its event sink is not listening
    stores = partitionable.exchange.stores
    for _ in range(40):
        traders.run_step()
        time.sleep(0.1)

    def status(quote: Any) -> str:
        return stores[traders.orders[quote.order_id].region].orders.get(quote.order_id).status

    lifted = [t for region in stores for t in stores[region].trades.scan_all() if MAKER in (t.client, t.counterparty)]
    assert len(lifted) >= 5
    held_filled = [q for q in traders.flow.quotes.values() if q.order_id in traders.orders and status(q) == "FILLED"]
    assert len(held_filled) <= 3, held_filled  # at most what the last steps' takers lifted
