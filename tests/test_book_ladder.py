"""The trading page's depth ladder: rendered from the book snapshots, pushed over the
dashboard socket as a fixed-size fragment, dimmed while its region is down, flagged while
the snapshot is stale, and absent (with a word why) under SimFill."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.test import Client

from exchange_ui.runtime import Runtime, set_runtime
from matcher.book import Book
from matcher.snapshots import BookSnapshots
from exchange_ui.push import EVENTS_GROUP
from tests.conftest import connect, make_config, publish_from_worker_thread, token_for, until_subscribed
from trading import events
from trading.fragments import LADDER_LEVELS, BookLadders, coalesce, ladder_context, render_dashboard_frame

HOME, OTHER, SYMBOL = "us-east-1", "eu-west-1", "BTC-USD"


def depth_data(seq: int = 7, region: str = HOME, bids: int = 2, asks: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "symbol": SYMBOL, "region": region, "seq": seq, "ts": 1_700_000_000_000 + seq, "source": "redis", "stale": False,
        "bids": [{"price": f"{49990 - 10 * n}.00", "qty": f"0.{n + 1:04d}", "orders": n + 1} for n in range(bids)],
        "asks": [{"price": f"{50010 + 10 * n}.00", "qty": f"0.{2 * n + 1:04d}", "orders": 1} for n in range(asks)],
        **extra,
    }


def ladder_of(html: str, region: str = HOME) -> str:
    found = re.search(rf'<div id="book-{region}-{SYMBOL}".*?<p class="ladder-foot.*?</p>\s*</div>', html, re.S)
    assert found, html[:2000]
    return found.group(0)


def rows(ladder: str, side: str) -> list[str]:
    """The ladder's rows of one side ("asks" or "bids"), top to bottom."""
    return re.findall(rf'<div class="lvl[^"]*" role="row" data-side="{side[:-1]}"[^>]*>.*?</div>', ladder, re.S)


# --- the fragment -------------------------------------------------------------------------------


def test_it_draws_eight_asks_over_eight_bids_whatever_the_book_holds() -> None:
    for bids, asks in [(0, 0), (2, 3), (12, 12)]:
        html = render_dashboard_frame([events.make_event(events.BOOK_DEPTH, HOME, depth_data(bids=bids, asks=asks), 1)], 1, False)
        ladder = ladder_of(html)
        assert len(rows(ladder, "asks")) == LADDER_LEVELS and len(rows(ladder, "bids")) == LADDER_LEVELS
        assert 'hx-swap-oob="true"' in ladder
    ladder = ladder_of(render_dashboard_frame([events.make_event(events.BOOK_DEPTH, HOME, depth_data(), 1)], 1, False))
    asks, bids = rows(ladder, "asks"), rows(ladder, "bids")
    # The best prices meet at the spread: asks drawn highest first, bids highest first.
    assert [re.search(r"\d+\.\d\d", r).group(0) for r in asks if "blank" not in r] == ["50030.00", "50020.00", "50010.00"]
    assert "49990.00" in bids[0] and "49980.00" in bids[1] and 'lvl blank' in bids[2]
    assert "spread <b>20.00</b>" in ladder
    # Running totals from the spread out, the bars their share of the deeper side (asks: 0.0009).
    assert "0.0009" in asks[LADDER_LEVELS - 3] and "--bar: 100%" in asks[LADDER_LEVELS - 3]
    assert "--bar: 11%" in asks[-1] and "--bar: 33%" in bids[1]
    assert "depth shown · bids <b class=\"num\">0.0003</b> · asks <b class=\"num\">0.0009</b>" in ladder
    assert 'data-seq="7"' in ladder and "seq <b>7</b>" in ladder


def test_it_flags_a_stale_snapshot_and_a_frozen_region() -> None:
    stale = ladder_context(depth_data(stale=True, stale_reason="snapshot Redis not answering"))
    assert stale["stale"] and not stale["frozen"]
    html = render_dashboard_frame([events.make_event(events.BOOK_DEPTH, HOME, depth_data(stale=True, stale_reason="snapshot Redis not answering"), 1)], 1, False)
    assert "book snapshot stale" in ladder_of(html) and "ladder-stale" in ladder_of(html)
    html = render_dashboard_frame([events.make_event(events.BOOK_DEPTH, HOME, depth_data(seq=41), 1)], 1, False, down={HOME})
    assert "region down: book frozen at seq 41" in ladder_of(html) and "ladder-frozen" in ladder_of(html)
    assert "book snapshot stale" not in ladder_of(html)


def test_it_keeps_only_the_newest_depth_of_each_book_in_a_frame() -> None:
    batch = [events.make_event(events.BOOK_DEPTH, region, depth_data(seq=seq, region=region), seq) for seq, region in [(1, HOME), (2, OTHER), (3, HOME)]]
    reduced, _ = coalesce(batch)
    assert [(e["region"], e["data"]["seq"]) for e in reduced] == [(HOME, 3), (OTHER, 2)]


def test_it_draws_a_ladder_again_when_its_region_goes_down_and_comes_back() -> None:
    ladders = BookLadders()
    assert ladders.follow([events.make_event(events.BOOK_DEPTH, HOME, depth_data(seq=9), 1)]) == []
    down = ladders.follow([events.make_event(events.REGION_HEALTH, HOME, {"region": HOME, "status": "down"}, 2)])
    assert [e["data"]["seq"] for e in down] == [9] and ladders.down == {HOME}
    assert ladders.follow([events.make_event(events.REGION_HEALTH, HOME, {"region": HOME, "status": "down"}, 3)]) == []  # no change
    back = ladders.follow([events.make_event(events.REGION_HEALTH, HOME, {"region": HOME, "status": "healthy"}, 4)])
    assert [e["data"]["seq"] for e in back] == [9] and ladders.down == frozenset()


# --- the page -----------------------------------------------------------------------------------


@pytest.fixture
def config() -> Any:
    return make_config(engine="matcher")


@pytest.fixture
def matcher_runtime(aws_resources: Any, book_redis: Any) -> Iterator[Runtime]:
    built = Runtime.build(aws_resources)
    built.snapshots = BookSnapshots(book_redis, built.exchange.stores, on_depth=None, background=False)
    set_runtime(built)
    yield built
    set_runtime(None)


def logged_in() -> Client:
    client = Client()
    User.objects.create_user("tina", password="tina-pass-123")
    assert client.login(username="tina", password="tina-pass-123")
    return client


@pytest.mark.django_db
def test_it_renders_the_home_regions_book_on_the_trading_page(matcher_runtime: Runtime) -> None:
    book = Book(SYMBOL, Decimal("0.01"), Decimal("0.0001"))
    book.place(1, "o-1", "maker", "SELL", Decimal("0.2500"), Decimal("50005.00"))
    book.place(2, "o-2", "maker", "BUY", Decimal("0.1000"), Decimal("49995.00"))
    matcher_runtime.book_snapshots().publish(HOME, SYMBOL, book.depth(50), book.snapshot(), 1_700_000_000_000)
    client = logged_in()
    page = client.get("/").content.decode()
    ladder = ladder_of(page)
    assert "50005.00" in ladder and "49995.00" in ladder and "spread <b>10.00</b>" in ladder
    # Every (market, region) book is on the page; the first market's home region shows.
    sections = re.findall(r'<section class="ladder" data-region="([^"]+)" data-symbol="([^"]+)"[^>]*?( hidden)?>', page)
    assert sections == [(HOME, SYMBOL, ""), (OTHER, SYMBOL, " hidden"), (HOME, "ETH-USD", " hidden"), (OTHER, "ETH-USD", " hidden")]
    assert "no resting orders" in ladder_of(page, OTHER)
    # The resync after a gap carries the ladders too.
    snapshot = client.get("/partials/live/").content.decode()
    assert "50005.00" in ladder_of(snapshot)


@pytest.mark.django_db
def test_it_says_why_there_is_no_book_under_simfill(aws_resources: Any) -> None:
    built = Runtime.build(make_config())
    set_runtime(built)
    try:
        page = logged_in().get("/").content.decode()
    finally:
        set_runtime(None)
    assert "No order book under SimFill (Phase 1)" in page
    assert 'class="ladder"' not in page
    assert built.snapshots is None  # no Redis started for a book that cannot exist


# --- the sockets --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.redis
@pytest.mark.xdist_group("redis")
def test_it_pushes_the_ladder_and_dims_it_when_the_region_goes_down(redis_layer: None) -> None:
    trader = token_for("alice")

    async def scenario() -> None:
        dashboard = connect("/ws/dashboard/", trader)
        feed = connect("/ws/events/", trader)
        assert (await dashboard.connect())[0] and (await feed.connect())[0]
        await until_subscribed(EVENTS_GROUP)
        await publish_from_worker_thread((events.BOOK_DEPTH, depth_data(seq=12)))
        frame = await dashboard.receive_from(timeout=5)
        assert "50010.00" in ladder_of(frame) and "region down" not in frame
        # Anonymous market data: a trader's JSON feed has it whole.
        sent = json.loads(await feed.receive_from(timeout=5))
        assert sent["type"] == "book.depth" and sent["data"]["bids"] == depth_data(seq=12)["bids"]
        await publish_from_worker_thread((events.REGION_HEALTH, {"region": HOME, "status": "down", "azs": []}))
        frame = await dashboard.receive_from(timeout=5)
        assert "region down: book frozen at seq 12" in ladder_of(frame)
        await dashboard.disconnect()
        await feed.disconnect()

    async_to_sync(scenario)()
