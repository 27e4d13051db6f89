"""Book snapshots on the embedded real Redis and a real moto server: published after each
batch, persisted to DynamoDB, read back with the right source, republished after a failover."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from matcher.book import Book
from matcher.snapshots import BookSnapshots, book_key
from tests.conftest import failing_calls, wait_for
from trading import aws
from trading.config import ExchangeConfig
from trading.store import RegionStores

REGION = "us-east-1"
SYMBOL = "BTC-USD"
TICK, LOT = Decimal("0.01"), Decimal("0.0001")


def make_book(orders: int = 6) -> Book:
    """Resting bids below 50,000 and asks above it, two orders at the best of each side."""
    book = Book(SYMBOL, TICK, LOT)
    seq = 0
    for n in range(orders):
        seq += 1
        side, price = ("BUY", Decimal("49990.00") - n // 2 * 10) if n % 2 == 0 else ("SELL", Decimal("50010.00") + n // 2 * 10)
        book.place(seq, f"o-{seq}", f"client-{n % 3}", side, Decimal("0.0100") * (n + 1), price)
    seq += 1
    book.place(seq, f"o-{seq}", "client-x", "BUY", Decimal("0.0500"), Decimal("49990.00"))
    return book


@pytest.fixture
def stores(aws_resources: ExchangeConfig) -> dict[str, RegionStores]:
    return {region: RegionStores.for_region(region, aws_resources.table_prefix) for region in aws_resources.regions}


@pytest.fixture
def snapshots(book_redis: Any, stores: dict[str, RegionStores]) -> Iterator[BookSnapshots]:
    made = BookSnapshots(book_redis, stores, every_s=3600, every_seq=1000)
    yield made
    made.close(persist=False)


def publish(snapshots: BookSnapshots, book: Book, ts_ms: int = 1_700_000_000_000) -> None:
    snapshots.publish(REGION, SYMBOL, book.depth(50), book.snapshot(), ts_ms)


def test_it_serves_the_published_depth_from_redis(snapshots: BookSnapshots, book_redis: Any) -> None:
    book = make_book()
    publish(snapshots, book)
    depth = snapshots.depth(REGION, SYMBOL, 10)
    assert depth is not None
    assert (depth["source"], depth["stale"], depth["seq"], depth["ts"]) == ("redis", False, book.last_seq, 1_700_000_000_000)
    assert depth["bids"][0] == {"price": "49990.00", "qty": "0.0600", "orders": 2}
    assert [row["price"] for row in depth["bids"]] == ["49990.00", "49980.00", "49970.00"]
    assert [row["price"] for row in depth["asks"]] == ["50010.00", "50020.00", "50030.00"]
    assert snapshots.depth(REGION, SYMBOL, 1)["asks"] == [{"price": "50010.00", "qty": "0.0200", "orders": 1}]
    # The key holds what the plan names, the book's whole state included.
    stored = json.loads(book_redis.get(book_key(REGION, SYMBOL)))
    assert list(stored) == ["symbol", "region", "seq", "ts", "bids", "asks", "state", "gen"]
    assert stored["state"] == book.snapshot()
    assert snapshots.latest_state(REGION, SYMBOL) == (book.snapshot(), book.last_seq, "redis")


def test_it_has_no_snapshot_for_a_book_never_published(snapshots: BookSnapshots, embedded_book_redis: Any) -> None:
    assert snapshots.depth(REGION, SYMBOL, 10) is None
    assert snapshots.latest_state(REGION, SYMBOL) is None
    # With Redis away and nothing persisted, the book is unknown, not empty.
    embedded_book_redis.kill()
    unknown = snapshots.depth(REGION, SYMBOL, 10)
    assert unknown is not None and (unknown["stale"], unknown["source"], unknown["bids"], unknown["asks"]) == (True, "none", [], [])


def test_it_serves_the_dynamodb_copy_marked_stale_while_redis_is_down(
    snapshots: BookSnapshots, embedded_book_redis: Any
) -> None:
    book = make_book()
    publish(snapshots, book)
    snapshots.persist(REGION, SYMBOL, book.snapshot(), book.last_seq, 1_700_000_000_000)
    embedded_book_redis.kill()
    depth = snapshots.depth(REGION, SYMBOL, 10)
    assert depth is not None
    assert (depth["source"], depth["stale"], depth["seq"]) == ("dynamodb", True, book.last_seq)
    assert depth["stale_reason"] == "snapshot Redis not answering"
    assert depth["bids"][0] == {"price": "49990.00", "qty": "0.0600", "orders": 2}
    assert depth["asks"] == snapshots_depth_rows(book)["asks"]
    # A book rebuilt from it is the book.
    state, seq, source = snapshots.latest_state(REGION, SYMBOL)
    assert (seq, source) == (book.last_seq, "dynamodb")
    assert Book.restore(state).snapshot() == book.snapshot()
    # Publishing while Redis is down does not raise: the batch goes on.
    book.place(book.last_seq + 1, "o-late", "client-y", "SELL", Decimal("0.0100"), Decimal("50500.00"))
    publish(snapshots, book)


def snapshots_depth_rows(book: Book) -> dict[str, Any]:
    data = book.depth(10).as_data()
    return {"bids": data["bids"], "asks": data["asks"]}


def test_it_republishes_the_latest_book_when_a_new_redis_answers(snapshots: BookSnapshots, embedded_book_redis: Any) -> None:
    book = make_book()
    publish(snapshots, book)
    snapshots.tick()  # the server it wrote to is known
    embedded_book_redis.restart(0)  # a failover: a fresh, empty node on the same address
    assert snapshots.depth(REGION, SYMBOL, 10) is None  # nothing persisted, the node forgot
    # No new batch: the quiet book comes back by itself.
    wait_for(lambda: snapshots.depth(REGION, SYMBOL, 10), timeout_s=5, message="the book republished")
    depth = snapshots.depth(REGION, SYMBOL, 10)
    assert (depth["source"], depth["seq"]) == ("redis", book.last_seq)
    assert snapshots.republished >= 1


def test_it_writes_a_publish_that_failed_once_redis_is_back(snapshots: BookSnapshots, embedded_book_redis: Any) -> None:
    book = make_book()
    embedded_book_redis.kill()
    publish(snapshots, book)  # lost in the gap
    embedded_book_redis.restart(0)
    wait_for(lambda: snapshots.depth(REGION, SYMBOL, 10), timeout_s=5, message="the failed publish written")
    assert snapshots.latest_state(REGION, SYMBOL) == (book.snapshot(), book.last_seq, "redis")


def test_it_persists_every_n_seqs_in_the_background(book_redis: Any, stores: dict[str, RegionStores]) -> None:
    snapshots = BookSnapshots(book_redis, stores, every_s=3600, every_seq=5)
    try:
        book = make_book(orders=2)  # seq 3
        publish(snapshots, book)
        snapshots.tick()
        assert stores[REGION].sequences.book_snapshot(SYMBOL) is None  # 3 seqs: not due
        book = make_book(orders=6)  # seq 7
        publish(snapshots, book)
        wait_for(lambda: stores[REGION].sequences.book_snapshot(SYMBOL), timeout_s=5, message="the persisted snapshot")
        _, seq, ts_ms = stores[REGION].sequences.book_snapshot(SYMBOL)
        assert (seq, ts_ms) == (7, 1_700_000_000_000)
    finally:
        snapshots.close(persist=False)


def test_it_persists_after_every_s_and_at_close(book_redis: Any, stores: dict[str, RegionStores]) -> None:
    now = [100.0]
    snapshots = BookSnapshots(book_redis, stores, every_s=5, every_seq=1000, clock=lambda: now[0], background=False)
    book = make_book()
    publish(snapshots, book)
    snapshots.tick()
    assert stores[REGION].sequences.book_snapshot(SYMBOL) is None
    now[0] += 5
    snapshots.tick()
    assert stores[REGION].sequences.book_snapshot(SYMBOL)[1] == book.last_seq
    book.place(book.last_seq + 1, "o-next", "client-y", "BUY", Decimal("0.0100"), Decimal("49000.00"))
    publish(snapshots, book)
    snapshots.close()  # a task stopping leaves DynamoDB at its last seq
    assert stores[REGION].sequences.book_snapshot(SYMBOL)[1] == book.last_seq


def test_it_keeps_the_persist_due_while_dynamodb_fails(book_redis: Any, stores: dict[str, RegionStores]) -> None:
    now = [100.0]
    snapshots = BookSnapshots(book_redis, stores, every_s=5, every_seq=1000, clock=lambda: now[0], background=False)
    book = make_book()
    publish(snapshots, book)
    now[0] += 5
    with failing_calls("PutItem"):  # through the stores' one client: the fault plane's hooks apply
        snapshots.tick()
    assert stores[REGION].sequences.book_snapshot(SYMBOL) is None
    now[0] += 5
    snapshots.tick()
    assert stores[REGION].sequences.book_snapshot(SYMBOL)[1] == book.last_seq
    snapshots.close(persist=False)


def test_it_never_replaces_a_later_snapshot_with_an_earlier_one(snapshots: BookSnapshots, stores: dict[str, RegionStores]) -> None:
    later = make_book(orders=6)
    earlier = make_book(orders=2)
    snapshots.persist(REGION, SYMBOL, later.snapshot(), later.last_seq, 2)
    snapshots.persist(REGION, SYMBOL, earlier.snapshot(), earlier.last_seq, 1)  # a stale task's write
    snapshots.persist(REGION, SYMBOL, later.snapshot(), later.last_seq, 2)  # a repeat is harmless
    snapshots.redis.flushall()
    state, seq, source = snapshots.latest_state(REGION, SYMBOL)
    assert (state, seq, source) == (later.snapshot(), later.last_seq, "dynamodb")


def test_it_splits_a_book_larger_than_an_item_over_parts(snapshots: BookSnapshots, stores: dict[str, RegionStores]) -> None:
    big = Book(SYMBOL, TICK, LOT)
    for seq in range(1, 40_001):  # order ids as random as real ones: the state hardly compresses
        big.place(seq, hashlib.sha256(b"%d" % seq).hexdigest()[:24], f"client-{seq % 97}", "BUY" if seq % 2 else "SELL",
                  Decimal("0.0001") * (seq % 50 + 1), Decimal("40000.00") + (seq % 2000) if seq % 2 else Decimal("60000.00") + (seq % 2000))
    snapshots.persist(REGION, SYMBOL, big.snapshot(), big.last_seq, 5)
    blob, seq, _ = stores[REGION].sequences.book_snapshot(SYMBOL)
    assert len(blob) > 300_000  # more than one item holds
    state, seq, source = snapshots.latest_state(REGION, SYMBOL)
    assert (seq, source) == (40_000, "dynamodb")
    assert Book.restore(state).snapshot() == big.snapshot()

    def parts_of(seq: int) -> list[str]:
        items = aws.client("dynamodb", REGION).scan(TableName=stores[REGION].sequences.table)["Items"]
        return [item["pk"]["S"] for item in items if item["pk"]["S"].startswith(f"SNAP#{SYMBOL}#{seq}#")]

    assert len(parts_of(40_000)) >= 2
    # A later snapshot replaces it and the earlier one's parts are gone.
    big.place(40_001, "taker", "client-t", "BUY", Decimal("0.0001"), Decimal("60000.00"))
    snapshots.persist(REGION, SYMBOL, big.snapshot(), big.last_seq, 6)
    assert len(parts_of(40_001)) >= 2
    assert parts_of(40_000) == []


def test_it_tells_the_display_what_the_snapshot_holds_and_when_it_went_stale(book_redis: Any, stores: dict[str, RegionStores], embedded_book_redis: Any) -> None:
    told: list[dict[str, Any]] = []
    now = [100.0]
    snapshots = BookSnapshots(book_redis, stores, on_depth=lambda region, data: told.append(data), background=False, clock=lambda: now[0])
    book = make_book()
    publish(snapshots, book)
    snapshots.tick()
    assert [(d["seq"], d["stale"]) for d in told] == [(book.last_seq, False)]
    assert told[0]["bids"] == book.depth(10).as_data()["bids"]
    embedded_book_redis.kill()
    now[0] += 1  # the server is checked once a second
    snapshots.tick()  # a quiet book: the page still learns the snapshot is stale
    assert (told[-1]["stale"], told[-1]["stale_reason"], told[-1]["seq"]) == (True, "snapshot Redis not answering", book.last_seq)
    book.place(book.last_seq + 1, "o-new", "client-n", "BUY", Decimal("1.0000"), Decimal("49000.00"))
    publish(snapshots, book)  # the batch goes on; the display keeps what Redis last held
    assert (told[-1]["stale"], told[-1]["seq"]) == (True, book.last_seq - 1)
    embedded_book_redis.restart(0)
    snapshots.tick()
    assert (told[-1]["stale"], told[-1]["seq"], told[-1]["source"]) == (False, book.last_seq, "redis")
    assert snapshots.depth(REGION, SYMBOL, 10)["seq"] == book.last_seq


def test_it_coalesces_book_depth_events_to_four_a_second_and_sends_the_last(published: list[dict[str, Any]]) -> None:
    from trading.events import BOOK_DEPTH, DepthCoalescer

    # The burst happens at one instant of the coalescer's clock, however slow the machine is.
    coalescer = DepthCoalescer(interval_s=0.25, clock=lambda: 0.0)
    for seq in range(1, 21):
        coalescer.offer(REGION, {"symbol": SYMBOL, "seq": seq})
    coalescer.offer("eu-west-1", {"symbol": SYMBOL, "seq": 1})  # another region's book has its own pace
    wait_for(lambda: any(e["data"]["seq"] == 20 for e in published), timeout_s=2, message="the burst's last depth")
    depths = [(e["region"], e["data"]["seq"]) for e in published if e["type"] == BOOK_DEPTH]
    assert depths == [(REGION, 1), ("eu-west-1", 1), (REGION, 20)]


def test_it_ignores_a_book_that_other_tables_left_in_redis(book_redis: Any, stores: dict[str, RegionStores], moto_server: Any, aws_resources: ExchangeConfig) -> None:
    """A Redis that outlives its tables (a local one across fresh exchanges) holds books of
    another exchange: a stand-in must not rebuild from them, nor a page show them."""
    from trading.provision import bootstrap

    earlier = BookSnapshots(book_redis, stores, on_depth=None, background=False)
    publish(earlier, make_book())
    moto_server.reset()  # a fresh exchange: new tables, the same Redis
    bootstrap(aws_resources)
    later = BookSnapshots(book_redis, stores, on_depth=None, background=False)
    assert later.depth(REGION, SYMBOL, 10) is None
    assert later.latest_state(REGION, SYMBOL) is None
    book = make_book(orders=2)
    publish(later, book)
    assert later.latest_state(REGION, SYMBOL) == (book.snapshot(), book.last_seq, "redis")


@pytest.mark.redis
@pytest.mark.xdist_group("redis")
def test_it_writes_the_book_again_after_redis_killed_its_connections(stores: dict[str, RegionStores]) -> None:
    """With REDIS_URL the failover kills the server's clients (CLIENT KILL): the snapshots'
    next write finds its connection gone, and the book is written again on a new one."""
    import uuid

    from matcher.book_redis import connect

    url = "redis://127.0.0.1:6379/0"
    client, killer = connect(url), connect(url)
    snapshots = BookSnapshots(client, stores, namespace=f"book-test-{uuid.uuid4().hex[:8]}", on_depth=None, background=False)
    try:
        book = make_book()
        publish(snapshots, book)
        own = client.client_id()
        killer.execute_command("CLIENT", "KILL", "ID", own)
        book.place(book.last_seq + 1, "o-after", "client-z", "SELL", Decimal("0.0100"), Decimal("50100.00"))
        publish(snapshots, book)  # on the killed connection: it fails, and nothing raises
        wait_for(lambda: snapshots.tick() or snapshots.latest_state(REGION, SYMBOL)[1] == book.last_seq, timeout_s=5, message="the book written again")
        assert snapshots.latest_state(REGION, SYMBOL) == (book.snapshot(), book.last_seq, "redis")
    finally:
        client.delete(book_key(REGION, SYMBOL, snapshots.namespace))
        client.close()
        killer.close()
