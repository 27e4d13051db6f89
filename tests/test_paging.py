"""Reads that stay bounded however large the tables grow: the tape of a region a page at a
time (`GET /api/trades?region=`, `next_cursor`), against the real moto server."""

from __future__ import annotations

import base64
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
    deep = base64.urlsafe_b64encode(b"[" * 3000).decode()  # nested past the JSON parser's recursion limit
    for cursor in ("nonsense", "e30", "eyJtYXJzLTEiOm51bGx9", "\u00b2", deep):
        response = client.get(f"/api/trades?region={EAST}&cursor={cursor}", **ops)
        assert response.status_code == 400 and "cursor" in response.json()["errors"], cursor
    # The first page of an empty tape: nothing, and nothing to go on with.
    assert client.get(f"/api/trades?region={EAST}", **ops).json() == {"trades": [], "next_cursor": None}


# --- the reconcile records and pages ---------------------------------------------------


def conflicted_history(runtime: Runtime, orders: int = 300) -> list[dict[str, Any]]:
    """`orders` duplicate fills decided and written to the home region's reconcile table:
    a conflict, a compensation and two adjustments each, every one decided at its own time."""
    from reconcile_panel.provision import reconcile_table_name
    from reconcile_panel.codec import decision_items
    from reconcile_panel.reconciler import Acceptance, Fill, Ledger, reconcile
    from reconcile_panel.store import ItemTable

    copies, fills = [], []
    for n in range(orders):
        order_id = f"O{n:05d}"
        for region, accepted in ((EAST, 1_000_000 + n * 100), (WEST, 1_000_050 + n * 100)):
            copies.append(Acceptance(order_id, region, f"acct-{n % 7}", "BTC-USD", "BUY", Decimal("0.5"), Decimal("50010"), n, accepted, "FILLED", Decimal("0.5"), False, accepted + 10))
            fills.append(Fill(f"T{n:05d}-{region}-0", order_id, region, f"acct-{n % 7}", "SIM-MM-1", "BTC-USD", "BUY", Decimal("0.5"), Decimal("50010"), n, 0, accepted + 10))
    items = decision_items(reconcile(Ledger(tuple(copies), tuple(fills), {"BTC-USD": Decimal("50000")})))
    ItemTable(EAST, reconcile_table_name(runtime.config.table_prefix)).put_absent_many(items)
    return items


def walk_records(client: Client, auth: dict[str, str], path: str, key: str) -> tuple[list[dict[str, Any]], list[list[tuple[str, int | None]]], dict[str, Any]]:
    rows, calls, cursor, first = [], [], "", {}
    while True:
        with reads() as made:
            response = client.get(path + (f"&cursor={cursor}" if cursor else ""), **auth)
        assert response.status_code == 200, response.content
        body = response.json()
        first = first or body
        assert body["count"] == len(body[key])
        rows += body[key]
        calls.append(made)
        cursor = body["next_cursor"]
        if cursor is None:
            return rows, calls, first
        assert len(calls) < 100, "the cursor never ends"


def test_it_pages_the_reconcile_records_with_a_bounded_read_each(runtime: Runtime, ops: dict[str, str]) -> None:
    items = conflicted_history(runtime)
    client = Client()
    conflicts, calls, first = walk_records(client, ops, "/api/reconcile/conflicts?limit=50", "conflicts")
    assert first["count"] == 50 and first["next_cursor"]
    for made in calls:
        operations = [operation for operation, _ in made]
        assert "Scan" not in operations, operations
        assert operations.count("Query") <= INDEX_PAGES and all(limit <= 50 for op, limit in made if op == "Query"), made
        assert operations.count("BatchGetItem") <= 1  # the page's compensations, by id
    assert sorted(c["conflictId"] for c in conflicts) == sorted(i["conflictId"] for i in items if i["recordType"] == "CONFLICT")
    assert [c["decidedAt"] for c in conflicts] == sorted((c["decidedAt"] for c in conflicts), reverse=True)
    assert all(len(c["compensations"]) == 1 for c in conflicts)

    adjustments, calls, first = walk_records(client, ops, "/api/reconcile/adjustments?limit=100", "adjustments")
    assert len(adjustments) == 600 and len({a["adjustmentId"] for a in adjustments}) == 600
    assert all("Scan" not in [operation for operation, _ in made] for made in calls)
    expected: dict[tuple[str, str], Decimal] = {}
    for item in items:
        if item["recordType"] == "ADJUSTMENT":
            key = (item["account"], item["symbol"])
            expected[key] = expected.get(key, Decimal("0")) + item["amount"]
    assert first["totals_complete"] is True
    assert {(t["account"], t["symbol"]): Decimal(t["amount"]) for t in first["totals"]} == expected
    one = client.get("/api/reconcile/conflicts?order_id=O00042", **ops).json()
    assert [c["orderId"] for c in one["conflicts"]] == ["O00042"] and one["next_cursor"] is None
    for bogus in ("bogus", base64.urlsafe_b64encode(b"[" * 700).decode()):
        assert client.get(f"/api/reconcile/conflicts?cursor={bogus}", **ops).json()["error"] == "bad_cursor"


def test_it_renders_the_reconcile_pages_from_bounded_reads(runtime: Runtime) -> None:
    conflicted_history(runtime)
    trades = fill_tape(runtime, EAST)
    fill_tape(runtime, WEST)
    newer = [
        Trade(
            trade_id=f"TW{n:04d}-{WEST}-0", order_id=f"OW{n:04d}", symbol="BTC-USD", side="SELL", qty=Decimal("0.1"), price=Decimal("50000.00"),
            buy_order="SIM", sell_order=f"OW{n:04d}", client="bob", counterparty="SIM-MM-1", region=WEST, fill_az=f"{WEST}a", seq=n,
            fill_index=0, ts_ms=trades[-1].ts_ms + 1000 + n,
        )
        for n in range(30)
    ]
    runtime.exchange.stores[WEST].trades.put_many_once(newer)  # the west's own, not replicated yet
    operator = Client()
    operator.force_login(User.objects.create_user("ops2", password="x", is_staff=True))
    for url in ("/reconcile/", "/reconcile/ledger/", "/reconcile/tapes/", "/reconcile/marks/", "/reconcile/?account=acct-3"):
        with reads() as made:
            response = operator.get(url)
        assert response.status_code == 200, url
        operations = [operation for operation, _ in made]
        assert "Scan" not in operations, (url, operations)
        assert len(operations) <= 24, (url, operations)
    panel_page = operator.get("/reconcile/").content.decode()
    assert 'id="reconcile-truncated"' in panel_page and "The newest 200 conflicts and 500 adjustments" in panel_page
    assert panel_page.count('<tr id="conflict-') == 200
    page = operator.get("/reconcile/tapes/").content.decode()
    assert "diverged <b class=\"num\">30</b> of the 150 shown" in page
    assert "240</b> trades" in page and "270</b> trades" in page
