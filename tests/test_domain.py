"""Order validation and derived identities (pure)."""

from decimal import Decimal

import pytest

from tests.conftest import make_config, order_payload
from trading.domain import (
    ValidationErrors,
    derive_order_id,
    simulation_seed,
    validate_idempotency_key,
    validate_order,
)


def errors_of(payload: object) -> dict[str, list[str]]:
    with pytest.raises(ValidationErrors) as caught:
        validate_order(payload, make_config())
    return caught.value.errors


def test_it_normalises_a_valid_order_to_decimals_on_the_market_grid() -> None:
    request = validate_order(order_payload(qty="0.5", price="50000", side="buy"), make_config())
    assert request.qty == Decimal("0.5000") and str(request.qty) == "0.5000"
    assert str(request.price) == "50000.00"
    assert request.side == "BUY"
    assert request.region == "us-east-1"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"symbol": "DOGE-USD"}, "symbol"),
        ({"symbol": 7}, "symbol"),
        ({"side": "HOLD"}, "side"),
        ({"qty": "0"}, "qty"),
        ({"qty": "-1"}, "qty"),
        ({"qty": "0.00001"}, "qty"),
        ({"qty": "1e999999"}, "qty"),
        ({"qty": "NaN"}, "qty"),
        ({"qty": "Infinity"}, "qty"),
        ({"qty": True}, "qty"),
        ({"qty": [1]}, "qty"),
        ({"price": "50000.001"}, "price"),
        ({"price": "9" * 41}, "price"),
        ({"price": "1" * 30}, "price"),
        ({"region": "mars-1"}, "region"),
        ({"extra": "x"}, "__all__"),
    ],
)
def test_it_names_the_bad_field(overrides: dict[str, object], field: str) -> None:
    assert field in errors_of(order_payload(**overrides))


def test_it_reports_every_bad_field_at_once() -> None:
    errors = errors_of({"symbol": "", "side": None, "qty": "x", "price": None})
    assert set(errors) >= {"symbol", "side", "qty", "price"}


def test_it_refuses_a_body_that_is_not_an_object() -> None:
    assert "__all__" in errors_of(["BTC-USD"])


@pytest.mark.parametrize("key", [None, "", "   ", "k" * 129, "bad\x00key"])
def test_it_refuses_a_missing_or_malformed_idempotency_key(key: object) -> None:
    with pytest.raises(ValidationErrors):
        validate_idempotency_key(key)


def test_it_derives_the_order_id_and_seed_from_identity_alone() -> None:
    assert derive_order_id("alice", "k1") == derive_order_id("alice", "k1")
    assert derive_order_id("alice", "k1") != derive_order_id("bob", "k1")
    assert simulation_seed(1, "alice", "BTC-USD", "k1") == simulation_seed(1, "alice", "BTC-USD", "k1")
    assert simulation_seed(1, "alice", "BTC-USD", "k1") != simulation_seed(2, "alice", "BTC-USD", "k1")
