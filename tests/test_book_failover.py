"""The ElastiCache failover on the embedded snapshot Redis: the node really dies and a fresh
one answers; the book reads "stale" from DynamoDB meanwhile and comes back whole, unasked."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from exchange_ui import runtime as runtime_module
from exchange_ui.runtime import Runtime, set_runtime
from faults.experiment import RedisFailover
from matcher.book import Book
from matcher.book_redis import answers
from tests.conftest import make_config, wait_for
from trading import events

HOME, SYMBOL = "us-east-1", "BTC-USD"


@pytest.fixture
def config() -> Any:
    return make_config(engine="matcher")


@pytest.fixture
def runtime(aws_resources: Any, book_redis: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setattr(runtime_module, "BOOK_REDIS_FAILOVER_S", 2.0)
    built = Runtime.build(aws_resources)
    built.plane.install()
    set_runtime(built)
    yield built
    set_runtime(None)
    built.plane.uninstall()
    if built.snapshots is not None:
        built.snapshots.close(persist=False)


def test_it_restarts_the_snapshot_redis_and_the_book_comes_back_whole(
    runtime: Runtime, embedded_book_redis: Any, published: list[dict[str, Any]]
) -> None:
    book = Book(SYMBOL, Decimal("0.01"), Decimal("0.0001"))
    for seq, (side, price) in enumerate([("BUY", "49990.00"), ("SELL", "50010.00"), ("BUY", "49980.00")], start=1):
        book.place(seq, f"o-{seq}", "maker", side, Decimal("0.1000"), Decimal(price))
    snapshots = runtime.book_snapshots()
    snapshots.publish(HOME, SYMBOL, book.depth(50), book.snapshot(), 1_700_000_000_000)
    snapshots.persist(HOME, SYMBOL, book.snapshot(), book.last_seq, 1_700_000_000_000)
    wait_for(lambda: snapshots._server_id, timeout_s=5, message="the snapshots to know their server")
    before = runtime.book(SYMBOL, HOME, 10)
    assert (before["source"], before["stale"]) == ("redis", False)

    runtime.plane.apply("failover", [RedisFailover(HOME, "us-east-1a")])

    # The node is really gone: the book is read from DynamoDB, marked stale, and the page is told.
    wait_for(lambda: not answers(embedded_book_redis.url), timeout_s=1, message="the node to lose power")
    during = runtime.book(SYMBOL, HOME, 10)
    assert (during["source"], during["stale"], during["seq"]) == ("dynamodb", True, 3)
    assert during["bids"] == before["bids"] and during["asks"] == before["asks"]
    wait_for(lambda: any(e["type"] == events.BOOK_DEPTH and e["data"]["stale"] for e in published), timeout_s=5, message="a stale book.depth")

    # A fresh node answers; the snapshots republish the quiet book by themselves.
    wait_for(lambda: runtime.book(SYMBOL, HOME, 10)["source"] == "redis", timeout_s=10, message="the book back in Redis")
    after = runtime.book(SYMBOL, HOME, 10)
    assert {k: after[k] for k in ("seq", "bids", "asks", "stale")} == {k: before[k] for k in ("seq", "bids", "asks", "stale")}
    assert snapshots.latest_state(HOME, SYMBOL) == (book.snapshot(), 3, "redis")
    wait_for(lambda: not [e for e in published if e["type"] == events.BOOK_DEPTH][-1]["data"]["stale"], timeout_s=5, message="a fresh book.depth")
