"""The stream mirror: a batch applied in a few statements lands as if applied record by record."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trading import models
from trading.domain import Order, StatusChange, Trade
from trading.mirror import apply_records, supersedes
from trading.store import order_to_item, trade_to_item
from trading.streams import ChangeRecord

pytestmark = pytest.mark.django_db

REGION = "us-east-1"


def order(n: int, status: str, updated_ms: int, region: str = REGION, changes: int = 1) -> Order:
    history = tuple(StatusChange("ACCEPTED" if i == 0 else status, 1000 + i, f"{region}a", f"step {i}") for i in range(changes))
    return Order(
        order_id=f"o{n}", client="alice", symbol="BTC-USD", side="BUY", qty=Decimal("0.5"), price=Decimal("50000.25"),
        status=status, region=region, accepted_az=f"{region}a", seq=n, idempotency_key=f"k{n}", request_hash="h" * 64,
        simulation_seed=n, created_ms=1000, filled_qty=Decimal("0.5") if status == "FILLED" else Decimal("0"),
        history=history, updated_ms=updated_ms,
    )


def record(item: dict, region: str = REGION) -> ChangeRecord:
    return ChangeRecord("MODIFY", {"pk": item["pk"]}, item, None, "1", region, "orders")


def trade(n: int, order_n: int, region: str = REGION) -> Trade:
    return Trade(
        trade_id=f"t{n}", order_id=f"o{order_n}", symbol="BTC-USD", side="BUY", qty=Decimal("0.25"), price=Decimal("50000.25"),
        buy_order=f"o{order_n}", sell_order="SIM", client="alice", counterparty="SIM", region=region, fill_az=f"{region}a",
        seq=order_n, fill_index=n, ts_ms=2000 + n,
    )


def mirrored() -> dict[str, tuple]:
    rows = {o.order_id: (o.status, o.updated_ms, o.filled_qty, o.history.count()) for o in models.Order.objects.all()}
    return rows


image = st.builds(
    lambda n, status, updated, changes: order(n, status, updated, changes=changes),
    st.integers(0, 4),
    st.sampled_from(["ACCEPTED", "FILLED", "CANCELLED"]),
    st.integers(1000, 1010),
    st.integers(1, 3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images=st.lists(image, max_size=12), cuts=st.lists(st.integers(0, 12), max_size=4))
def test_a_batch_lands_as_if_applied_one_record_at_a_time(images: list[Order], cuts: list[int]) -> None:
    models.OrderStatusChange.objects.all().delete()
    models.Order.objects.all().delete()
    # The reference: each image in stream order, kept only if it supersedes the one held.
    expected: dict[str, Order] = {}
    for o in images:
        held = expected.get(o.order_id)
        if supersedes(None if held is None else (held.updated_ms, held.status), o):
            expected[o.order_id] = o
    bounds = sorted({0, len(images), *[c for c in cuts if c <= len(images)]})
    for start, end in zip(bounds, bounds[1:]):
        apply_records([record(order_to_item(o)) for o in images[start:end]])
    got = mirrored()
    assert set(got) == set(expected)
    for order_id, o in expected.items():
        status, updated_ms, filled, changes = got[order_id]
        assert (status, updated_ms, filled) == (o.status, o.updated_ms, o.filled_qty)
        assert changes >= len(o.history)


def test_it_never_goes_backwards_and_keeps_the_home_region_view() -> None:
    final = order(1, "FILLED", 2000, changes=2)
    apply_records([record(order_to_item(final))])
    # A late ACCEPTED image and an older image do not overwrite the final one.
    apply_records([record(order_to_item(order(1, "ACCEPTED", 3000))), record(order_to_item(order(1, "CANCELLED", 1500, changes=2)))])
    # Another region's copy of an order is not the mirror's: only its home region's is.
    apply_records([record(order_to_item(order(2, "ACCEPTED", 1000, region="eu-west-1")), region=REGION)])
    row = models.Order.objects.get(pk="o1")
    assert (row.status, row.updated_ms, row.filled_qty) == ("FILLED", 2000, Decimal("0.5"))
    assert [(h.position, h.status, h.note) for h in row.history.all()] == [(0, "ACCEPTED", "step 0"), (1, "FILLED", "step 1")]
    assert not models.Order.objects.filter(pk="o2").exists()


def test_trades_land_once_and_only_from_their_own_region() -> None:
    apply_records([record(order_to_item(order(1, "FILLED", 2000)))])
    first = [record(trade_to_item(trade(i, 1))) for i in range(3)]
    apply_records(first + first)
    apply_records(first + [record(trade_to_item(trade(9, 1, region="eu-west-1")), region=REGION)])
    rows = list(models.Trade.objects.order_by("fill_index").values_list("trade_id", "qty", "price", "ts_ms"))
    assert rows == [(f"t{i}", Decimal("0.25"), Decimal("50000.25"), 2000 + i) for i in range(3)]
