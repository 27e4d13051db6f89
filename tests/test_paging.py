"""Reads that stay bounded however large the tables grow: the tape of a region a page at a
time (`GET /api/trades?region=`, `next_cursor`), against the real moto server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from exchange_ui.runtime import Runtime, set_runtime
from trading import aws
from trading.domain import Trade
from trading.models import ApiToken
from trading.store import INDEX_PAGES

pytestmark = pytest.mark.django_db

EAST, WEST = "us-east-1", "eu-west-1"


@pytest.fixture
def runtime(aws_resources: Any) -> Iterator[Runtime]:
    built = Runtime.build(aws_resources)
    set_runtime(built)
    yield built
    set_runtime(None)


@pytest.fixture
def ops() -> dict[str, str]:
    user = User.objects.create_user("ops", password="ops-pass-123", is_staff=True)
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user)}"}


@contextmanager
def reads() -> Iterator[list[tuple[str, int | None]]]:
    """Every AWS call while the block runs: (operation, the Limit it asked for)."""
    calls: list[tuple[str, int | None]] = []

    def record(service: str, region: str, operation: str, request: Any) -> None:
        body = json.loads(request.body or b"{}") if service == "dynamodb" else {}
        calls.append((operation, body.get("Limit")))

    aws.register_before_send(record)
    try:
        yield calls
    finally:
        aws.unregister_before_send(record)


def fill_tape(runtime: Runtime, region: str = EAST) -> list[Trade]:
    """240 trades in `region`'s table: its own fills and the replicas of the other region's,
    some on the same millisecond, a quarter of them in another market."""
    trades = []
    for n in range(240):
        executed = EAST if n % 3 else WEST
        trades.append(
            Trade(
                trade_id=f"T{n:05d}-{executed}-0", order_id=f"O{n:05d}", symbol="ETH-USD" if n % 4 == 0 else "BTC-USD", side="BUY",
                qty=Decimal("0.5"), price=Decimal("50000.00"), buy_order=f"O{n:05d}", sell_order="SIM", client="alice",
                counterparty="SIM-MM-1", region=executed, fill_az=f"{executed}a", seq=n, fill_index=0, ts_ms=1_700_000_000_000 + (n // 3) * 10,
            )
        )
    runtime.exchange.stores[region].trades.put_many_once(trades)
    return trades


def walk(client: Client, auth: dict[str, str], query: str) -> tuple[list[list[dict[str, Any]]], list[list[tuple[str, int | None]]]]:
    pages, calls = [], []
    cursor = ""
    while True:
        with reads() as made:
            response = client.get(f"/api/trades?{query}" + (f"&cursor={cursor}" if cursor else ""), **auth)
        assert response.status_code == 200, response.content
        pages.append(response.json()["trades"])
        calls.append(made)
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return pages, calls
        assert len(pages) < 50, "the cursor never ends"


def test_it_reads_a_regions_tape_a_bounded_page_at_a_time(runtime: Runtime, ops: dict[str, str]) -> None:
    trades = fill_tape(runtime)
    client = Client()
    pages, calls = walk(client, ops, f"region={EAST}&limit=50")
    for made in calls:
        operations = [operation for operation, _ in made]
        assert "Scan" not in operations, operations
        # One Query per executing region, a few pages at most, never more than a page's worth each.
        assert operations.count("Query") <= 2 * INDEX_PAGES and all(limit <= 50 for op, limit in made if op == "Query"), made
    assert [len(page) for page in pages[:4]] == [50, 50, 50, 50]
    seen = [t["trade_id"] for page in pages for t in page]
    assert len(seen) == len(set(seen)) == 240 and set(seen) == {t.trade_id for t in trades}
    stamps = [t["ts_ms"] for page in pages for t in page]
    assert stamps == sorted(stamps, reverse=True)  # newest first, across the pages too


def test_it_pages_a_filtered_tape_to_its_end(runtime: Runtime, ops: dict[str, str]) -> None:
    trades = fill_tape(runtime)
    client = Client()
    pages, _ = walk(client, ops, f"region={EAST}&symbol=ETH-USD&limit=20")
    assert sorted(t["trade_id"] for page in pages for t in page) == sorted(t.trade_id for t in trades if t.symbol == "ETH-USD")
    pages, _ = walk(client, ops, f"region={EAST}&executed_in={WEST}&limit=30")
    assert sorted(t["trade_id"] for page in pages for t in page) == sorted(t.trade_id for t in trades if t.region == WEST)
    assert all(t["region"] == WEST for page in pages for t in page)


def test_it_refuses_a_cursor_it_did_not_give_out(runtime: Runtime, ops: dict[str, str]) -> None:
    client = Client()
    for cursor in ("nonsense", "e30", "eyJtYXJzLTEiOm51bGx9", "\u00b2"):
        response = client.get(f"/api/trades?region={EAST}&cursor={cursor}", **ops)
        assert response.status_code == 400 and "cursor" in response.json()["errors"], cursor
    # The first page of an empty tape: nothing, and nothing to go on with.
    assert client.get(f"/api/trades?region={EAST}", **ops).json() == {"trades": [], "next_cursor": None}
