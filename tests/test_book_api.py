"""GET /api/book as a client sees it: the snapshot's depth, its source, stale and frozen flags,
and a 400 (never a 500) for anything it cannot answer."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from exchange_ui.runtime import Runtime, set_runtime
from faults.experiment import RegionDown
from matcher.book import Book
from matcher.snapshots import BookSnapshots
from tests.conftest import failing_calls, make_config
from trading.models import ApiToken

pytestmark = pytest.mark.django_db

SYMBOL, HOME, OTHER = "BTC-USD", "us-east-1", "eu-west-1"


@pytest.fixture
def config() -> Any:
    return make_config(engine="matcher")


@pytest.fixture
def runtime(aws_resources: Any, book_redis: Any) -> Iterator[Runtime]:
    built = Runtime.build(aws_resources)
    built.snapshots = BookSnapshots(book_redis, built.exchange.stores, on_depth=None, background=False)
    built.plane.install()
    set_runtime(built)
    yield built
    set_runtime(None)
    built.plane.uninstall()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(User.objects.create_user('alice', password='alice-pass-123'))}"}


def resting_book(symbol: str = SYMBOL) -> Book:
    book = Book(symbol, Decimal("0.01"), Decimal("0.0001"))
    rows = [("BUY", "49990.00", "0.0100"), ("BUY", "49990.00", "0.0250"), ("BUY", "49980.00", "0.5000"),
            ("SELL", "50010.00", "0.0300"), ("SELL", "50020.00", "1.0000"), ("SELL", "50050.00", "0.0001")]
    for seq, (side, price, qty) in enumerate(rows, start=1):
        book.place(seq, f"o-{seq}", f"trader-{seq}", side, Decimal(qty), Decimal(price))
    return book


def publish(runtime: Runtime, book: Book, region: str = HOME) -> None:
    runtime.book_snapshots().publish(region, book.symbol, book.depth(50), book.snapshot(), 1_700_000_000_123)


def get(auth: dict[str, str], query: str = "") -> Any:
    return Client().get(f"/api/book{query}", **auth)


def test_it_answers_the_home_regions_book_best_prices_first(runtime: Runtime, auth: dict[str, str]) -> None:
    publish(runtime, resting_book())
    response = get(auth, f"?symbol={SYMBOL}")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "symbol": SYMBOL, "region": HOME, "seq": 6, "ts": 1_700_000_000_123, "source": "redis", "stale": False, "frozen": False,
        "bids": [{"price": "49990.00", "qty": "0.0350", "orders": 2}, {"price": "49980.00", "qty": "0.5000", "orders": 1}],
        "asks": [{"price": "50010.00", "qty": "0.0300", "orders": 1}, {"price": "50020.00", "qty": "1.0000", "orders": 1},
                 {"price": "50050.00", "qty": "0.0001", "orders": 1}],
    }
    assert "trader-1" not in response.content.decode() and "o-1" not in response.content.decode()  # anonymous market data
    assert get(auth, "?depth=1").json()["asks"] == [{"price": "50010.00", "qty": "0.0300", "orders": 1}]  # symbol: the first market


def test_it_answers_each_regions_own_book(runtime: Runtime, auth: dict[str, str]) -> None:
    publish(runtime, resting_book())
    assert get(auth, f"?symbol={SYMBOL}&region={OTHER}").json() == {
        "symbol": SYMBOL, "region": OTHER, "seq": 0, "ts": None, "source": "none", "stale": False, "frozen": False, "bids": [], "asks": []
    }


def test_it_refuses_what_it_cannot_answer_with_400(runtime: Runtime, auth: dict[str, str]) -> None:
    for query, field in [
        ("?symbol=NOPE-USD", "symbol"), ("?symbol=" + "X" * 5000, "symbol"), ("?symbol=btc-usd%27", "symbol"),
        ("?depth=0", "depth"), ("?depth=51", "depth"), ("?depth=abc", "depth"), ("?depth=1.5", "depth"), ("?depth=-1", "depth"),
        ("?depth=%C2%B2", "depth"), ("?depth=99999999999999999999999", "depth"), ("?region=mars-1", "region"),
    ]:
        response = get(auth, query)
        assert response.status_code == 400, (query, response.content)
        assert field in response.json()["errors"], (query, response.json())
    assert get(auth, "?symbol=%00").status_code == 400


def test_it_asks_for_a_login(runtime: Runtime) -> None:
    response = Client().get("/api/book")
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"


def test_it_serves_the_dynamodb_copy_as_stale_while_the_snapshot_redis_is_down(
    runtime: Runtime, auth: dict[str, str], embedded_book_redis: Any
) -> None:
    book = resting_book()
    publish(runtime, book)
    runtime.book_snapshots().persist(HOME, SYMBOL, book.snapshot(), book.last_seq, 1_700_000_000_123)
    embedded_book_redis.kill()
    body = get(auth).json()
    assert (body["source"], body["stale"], body["seq"], body["frozen"]) == ("dynamodb", True, 6, False)
    assert body["bids"][0] == {"price": "49990.00", "qty": "0.0350", "orders": 2}
    # Nothing readable at all (the Redis and the region's table both failing): 503, not 500.
    with failing_calls("GetItem"):
        response = get(auth)
    assert response.status_code == 503 and response["Retry-After"] == "2"
    assert response.json()["error"] == "region_unavailable"


def test_it_marks_a_down_regions_book_frozen_at_its_seq(runtime: Runtime, auth: dict[str, str]) -> None:
    publish(runtime, resting_book())
    runtime.plane.apply("outage", [RegionDown(HOME)])
    body = get(auth).json()
    assert (body["frozen"], body["seq"], body["stale"]) == (True, 6, False)
    assert len(body["bids"]) == 2
    runtime.plane.remove("outage")
    assert get(auth).json()["frozen"] is False


def test_it_has_no_book_under_simfill_and_starts_no_redis_for_it(aws_resources: Any, auth: dict[str, str]) -> None:
    built = Runtime.build(make_config())
    set_runtime(built)
    try:
        body = get(auth, "?symbol=ETH-USD").json()
    finally:
        set_runtime(None)
    assert body == {
        "symbol": "ETH-USD", "region": HOME, "seq": 0, "ts": None, "source": "none", "stale": False, "frozen": False,
        "bids": [], "asks": [], "engine": "simfill",
    }
    assert built.snapshots is None
