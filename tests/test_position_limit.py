"""The per-account position limit: the pure rules, and the pre-trade check at ingest
against each region's position counter, over a real moto server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from exchange_ui.runtime import Runtime, set_runtime
from reconcile_panel.limits import local_position
from reconcile_panel.scenarios import pick_key
from simfill.worker import AzWorker, apply_message
from tests.conftest import make_config, order_payload, wait_for
from trading import aws
from trading.actions import Exchange, IdempotencyConflict, submit_order
from trading.config import ConfigError, ExchangeConfig
from trading.domain import derive_order_id
from trading.limits import PositionLimitExceeded, parse_limits, signed, within_limit
from trading.models import ApiToken
from trading.store import put_new_counted, trade_to_item

EAST, WEST = "us-east-1", "eu-west-1"
LIMIT = Decimal("1")
SYMBOLS = ("BTC-USD", "ETH-USD")


@pytest.fixture
def config() -> ExchangeConfig:
    return make_config(position_limits={"BTC-USD": LIMIT})


def grid(config: Any) -> Any:
    return lambda symbol: (config.market(symbol).tick, config.market(symbol).lot)


def filler(ex: Exchange, region: str = EAST) -> AzWorker:
    return AzWorker(ex.stores[region], ex.queues[region], ex.config.azs(region)[0], grid(ex.config), wait_s=1)


def fill(ex: Exchange, client: str, payload: dict[str, Any], prefix: str, region: str = EAST) -> Any:
    """Submit an order SimFill fills completely and let the region's worker fill it."""
    key = pick_key(ex, client, payload, prefix)
    order, created = submit_order(ex, client, payload, key)
    assert created
    worker = filler(ex, region)
    for _ in range(20):
        stored = ex.stores[region].orders.get(order.order_id)
        if stored is not None and not stored.is_open:
            assert stored.filled_qty == order.qty
            return stored
        worker.poll_once()
    raise AssertionError(f"{order.order_id} was not filled in {region}")


def position(ex: Exchange, client: str, region: str = EAST, symbol: str = "BTC-USD") -> Decimal:
    return ex.stores[region].sequences.position(client, symbol)


# --- the pure rules -------------------------------------------------------------------


def test_it_parses_one_limit_for_every_market_or_one_per_market() -> None:
    assert parse_limits("", SYMBOLS) == {}
    assert parse_limits("  ", SYMBOLS) == {}
    assert parse_limits("10", SYMBOLS) == {"BTC-USD": Decimal("10"), "ETH-USD": Decimal("10")}
    assert parse_limits("btc-usd=2, ETH-USD=30", SYMBOLS) == {"BTC-USD": Decimal("2"), "ETH-USD": Decimal("30")}
    assert parse_limits("0.5,ETH-USD=30", SYMBOLS) == {"BTC-USD": Decimal("0.5"), "ETH-USD": Decimal("30")}


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "NaN", "Infinity", "BTC-USD=", "BTC-USD=x", "DOGE-USD=5"])
def test_it_refuses_a_bad_limit(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_limits(raw, SYMBOLS)


def test_it_lets_an_order_through_while_it_stays_within_the_limit_or_reduces_the_exposure() -> None:
    assert signed("BUY", Decimal("2")) == Decimal("2") and signed("SELL", Decimal("2")) == Decimal("-2")
    assert within_limit(Decimal("0"), "BUY", Decimal("1"), LIMIT)  # exactly at the limit
    assert not within_limit(Decimal("0.5"), "BUY", Decimal("0.6"), LIMIT)
    assert not within_limit(Decimal("-0.5"), "SELL", Decimal("0.6"), LIMIT)  # short side too
    assert within_limit(Decimal("1.6"), "BUY", Decimal("0"), LIMIT)  # already over: no growth
    assert within_limit(Decimal("1.6"), "SELL", Decimal("0.5"), LIMIT)  # reduces, still over
    assert within_limit(Decimal("0.8"), "SELL", Decimal("1.6"), LIMIT)  # flips to -0.8
    assert not within_limit(Decimal("0.8"), "SELL", Decimal("2"), LIMIT)  # flips past -1
    assert within_limit(Decimal("5"), "BUY", Decimal("5"), None)


def test_it_reads_the_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_MARKETS", "BTC-USD,ETH-USD")
    monkeypatch.delenv("EXCHANGE_POSITION_LIMIT", raising=False)
    assert ExchangeConfig.from_env().position_limits == {}
    monkeypatch.setenv("EXCHANGE_POSITION_LIMIT", "BTC-USD=2,ETH-USD=30")
    config = ExchangeConfig.from_env()
    assert config.position_limit("BTC-USD") == Decimal("2") and config.position_limit("ETH-USD") == Decimal("30")
    assert config.position_limit("SOL-USD") is None
    for bad in ("-1", "BTC-USD=lots", "SOL-USD=3"):
        monkeypatch.setenv("EXCHANGE_POSITION_LIMIT", bad)
        with pytest.raises(ConfigError, match="EXCHANGE_POSITION_LIMIT"):
            ExchangeConfig.from_env()


# --- ingest against the region's counter ------------------------------------------------


def test_it_fills_up_to_the_limit_then_refuses_the_next_order_and_writes_nothing(exchange: Exchange) -> None:
    first = fill(exchange, "alice", order_payload(qty="0.6000"), "a")
    fill(exchange, "alice", order_payload(qty="0.4000"), "b")
    assert position(exchange, "alice") == LIMIT == local_position(exchange.stores[EAST], "alice", "BTC-USD")

    with pytest.raises(PositionLimitExceeded) as refused:
        submit_order(exchange, "alice", order_payload(qty="0.0001"), "c-0")
    assert (refused.value.position, refused.value.limit) == (LIMIT, LIMIT)
    assert "limit 1" in str(refused.value)
    assert exchange.stores[EAST].orders.get(derive_order_id("alice", "c-0")) is None
    assert exchange.queues[EAST].depth() == (0, 0)

    # Nothing burned: the next accepted order takes the next sequence number.
    reducing, created = submit_order(exchange, "alice", order_payload(side="SELL", qty="0.5000"), "d-0")
    assert created and reducing.seq == first.seq + 2
    # Other accounts and other markets are not held back by alice's position.
    assert submit_order(exchange, "bob", order_payload(qty="1.0000"), "e-0")[1]
    assert submit_order(exchange, "alice", order_payload(symbol="ETH-USD", qty="5.0000", price="3000.00"), "f-0")[1]


def test_it_returns_the_original_order_on_replay_after_the_limit_is_reached(exchange: Exchange) -> None:
    payload = order_payload(qty="1.0000")
    key = pick_key(exchange, "alice", payload, "full")
    original, _ = submit_order(exchange, "alice", payload, key)
    fill(exchange, "alice", order_payload(side="SELL", qty="0.2000"), "sell")  # fills after the BUY (FIFO)
    assert not within_limit(position(exchange, "alice"), "BUY", Decimal("1"), LIMIT)

    again, created = submit_order(exchange, "alice", payload, key)
    assert not created and again.order_id == original.order_id and again.seq == original.seq
    with pytest.raises(IdempotencyConflict):
        submit_order(exchange, "alice", order_payload(qty="0.9000"), key)


def test_it_counts_a_redelivered_fill_once(exchange: Exchange) -> None:
    payload = order_payload(qty="0.7000")
    order, _ = submit_order(exchange, "alice", payload, pick_key(exchange, "alice", payload, "redeliver"))
    message = exchange.queues[EAST].receive(wait_s=1)[0]
    stores = exchange.stores[EAST]

    def crash(_: Any) -> None:
        raise RuntimeError("worker died after writing the trades")

    with pytest.raises(RuntimeError):
        apply_message(stores, message.body, "us-east-1a", lambda: 1000.0, grid(exchange.config), before_finish=crash)
    assert position(exchange, "alice") == Decimal("0.7000")
    redelivered = exchange.queues[EAST].receive(wait_s=5)
    result = apply_message(stores, redelivered[0].body, "us-east-1b", lambda: 1001.0, grid(exchange.config))
    assert result.action == "filled"
    assert stores.orders.get(order.order_id).filled_qty == Decimal("0.7000")
    assert position(exchange, "alice") == Decimal("0.7000") == local_position(stores, "alice", "BTC-USD")
    for trade in stores.trades.for_order(order.order_id, EAST):
        assert stores.trades.put_once(trade) is False
        # The transaction's own condition refuses it too, and the counter does not move.
        count = stores.sequences.position_change(trade.client, trade.symbol, trade.qty)
        assert put_new_counted(aws.client("dynamodb", EAST), stores.trades.table, trade_to_item(trade), count) is False
    assert position(exchange, "alice") == Decimal("0.7000")


def test_it_keeps_markets_without_a_limit_off_the_counter(exchange: Exchange) -> None:
    fill(exchange, "alice", order_payload(symbol="ETH-USD", qty="2.0000", price="3000.00"), "eth")
    assert position(exchange, "alice", symbol="ETH-USD") == 0
    assert local_position(exchange.stores[EAST], "alice", "ETH-USD") == Decimal("2")


def test_it_checks_a_rerouted_order_against_the_region_it_lands_in(exchange: Exchange) -> None:
    fill(exchange, "alice", order_payload(qty="1.0000"), "east")
    with pytest.raises(PositionLimitExceeded):
        submit_order(exchange, "alice", order_payload(qty="0.5000"), "more-0")
    exchange.region_up = lambda region: region != EAST
    # West has not seen east's fill (nothing replicates here): its own count lets it in.
    order, created = submit_order(exchange, "alice", order_payload(qty="0.5000"), "more-0")
    assert created and order.region == WEST and order.history[0].note.startswith("rerouted")


# --- the JSON API and the trading form --------------------------------------------------


@pytest.fixture
def runtime(aws_resources: ExchangeConfig, settings: Any) -> Iterator[Runtime]:
    settings.EXCHANGE = aws_resources
    built = Runtime.build(aws_resources, with_mirror=False)
    set_runtime(built)
    yield built
    set_runtime(None)


def post_order(client: Client, user: User, body: dict[str, Any], key: str) -> Any:
    return client.post(
        "/api/orders",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)}",
        HTTP_IDEMPOTENCY_KEY=key,
    )


@pytest.mark.django_db
def test_it_answers_422_position_limit_and_still_replays_an_accepted_key(runtime: Runtime) -> None:
    alice = User.objects.create_user("alice", password="alice-pass-123")
    client = Client()
    payload = order_payload(qty="1.0000")
    key = pick_key(runtime.exchange, "alice", payload, "api")
    assert post_order(client, alice, payload, key).status_code == 201
    worker = filler(runtime.exchange)
    wait_for(lambda: worker.poll_once() == 0 and position(runtime.exchange, "alice") == LIMIT, message="the order filled")

    refused = post_order(client, alice, order_payload(qty="0.1000"), "api-more")
    assert refused.status_code == 422
    body = refused.json()
    assert body["error"] == "position_limit" and set(body) == {"error", "detail"}
    assert "exceeds the limit 1" in body["detail"]
    assert post_order(client, alice, payload, key).status_code == 200
    assert post_order(client, alice, order_payload(side="SELL", qty="0.5000"), "api-sell").status_code == 201


@pytest.mark.django_db
def test_it_shows_the_refusal_in_the_trading_form(runtime: Runtime) -> None:
    client = Client()
    client.force_login(User.objects.create_user("alice", password="alice-pass-123"))
    fill(runtime.exchange, "alice", order_payload(qty="1.0000"), "form")
    form = {"symbol": "BTC-USD", "side": "BUY", "qty": "0.5000", "price": "50000.00", "idempotency_key": "form-more"}
    response = client.post("/orders/submit/", form)
    assert response.status_code == 422
    page = response.content.decode()
    assert 'role="alert"' in page and "Refused: your BTC-USD position is 1.0000; 0.5000 more" in page and "limit of 1." in page
    assert runtime.exchange.stores[EAST].orders.get(derive_order_id("alice", "form-more")) is None
