"""Who receives what over the sockets: two traders (alice, bob) and an operator (ops).

A trader receives their own orders, fills and adjustments whole, and of everything else only
what the market shows everyone: the tape's price, quantity, symbol, region and time, the
reorg marks' trade ids, banners, region health and metrics. Staff receive every event whole.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from exchange_ui.push import EVENTS_GROUP, ChannelLayerSink, batch_message
from faults.injection import FaultPlane
from faults.runner import ExperimentRunner
from reconcile_panel import events as reconcile_events
from simfill.worker import apply_message, publish_applied
from tests.conftest import connect, make_config, order_payload, token_for, wait_for
from trading import events
from trading.actions import submit_order
from trading.events import Viewer, visible_to

REGION = "us-east-1"
DONE_REGION = "zz-done"  # a region.health event no real region sends: the end of a scenario
PLAN_KEYS = {"actions", "targets", "stop_conditions", "tags", "changes", "blast_radius", "fidelity"}

ALICE, BOB, OPS = Viewer("alice"), Viewer("bob"), Viewer("ops", is_staff=True)


# --- the policy, as a pure function -------------------------------------------------------------


def event(kind: str, **data: Any) -> dict[str, Any]:
    return events.make_event(kind, REGION, data, ts_ms=1)


def test_it_delivers_a_private_event_to_its_owner_and_staff_only() -> None:
    for kind in (events.ORDER_ACCEPTED, events.ORDER_STATUS, events.PNL_ADJUSTED):
        mine = event(kind, client="alice", order_id="O-alice")
        assert visible_to(mine, ALICE) is mine
        assert visible_to(mine, OPS) is mine
        assert visible_to(mine, BOB) is None


def test_it_shows_others_only_the_anonymous_part_of_a_fill() -> None:
    fill = event(
        events.TRADE_EXECUTED, trade_id="T1", order_id="O-alice", client="alice", buy_order="O-alice", sell_order="SIM",
        symbol="BTC-USD", side="BUY", qty="0.5", price="50000", region=REGION, fill_az="us-east-1a", seq=3, ts_ms=9,
    )
    assert visible_to(fill, ALICE) is fill and visible_to(fill, OPS) is fill
    seen = visible_to(fill, BOB)
    assert seen is not None and seen["type"] == events.TRADE_EXECUTED and seen["ts"] == 1
    assert seen["data"] == {"trade_id": "T1", "symbol": "BTC-USD", "side": "BUY", "qty": "0.5", "price": "50000", "region": REGION, "fill_az": "us-east-1a", "seq": 3, "ts_ms": 9}
    assert visible_to(fill, BOB) is seen  # one copy for every socket that receives it
    assert fill["data"]["client"] == "alice"  # the published event itself is untouched


def test_it_withholds_the_other_orders_id_from_a_matched_fills_owner() -> None:
    taker, maker = "O" + "a" * 24, "O" + "b" * 24
    fill = event(
        events.TRADE_EXECUTED, trade_id="T1", order_id=taker, client="alice", buy_order=taker, sell_order=maker,
        symbol="BTC-USD", side="BUY", qty="0.5", price="50000", region=REGION, fill_az="us-east-1a", seq=3, ts_ms=9,
    )
    seen = visible_to(fill, ALICE)
    assert seen is not None and seen["data"]["buy_order"] == taker and seen["data"]["sell_order"] == ""
    assert {k: v for k, v in seen["data"].items() if k != "sell_order"} == {k: v for k, v in fill["data"].items() if k != "sell_order"}
    assert visible_to(fill, OPS) is fill and fill["data"]["sell_order"] == maker
    assert "sell_order" not in visible_to(fill, BOB)["data"]  # anyone else: the anonymous part


def test_it_shows_market_wide_events_to_everyone_and_unknown_ones_to_staff() -> None:
    for kind in (events.METRICS, events.REGION_HEALTH, events.BACKPRESSURE, events.BOOK_DEPTH):
        shared = event(kind, active=True)
        assert visible_to(shared, BOB) is shared
    unknown = event("ledger.internal", client="bob")
    assert visible_to(unknown, BOB) is None and visible_to(unknown, OPS) is unknown


def test_it_never_shows_a_trader_the_plan_of_an_experiment() -> None:
    state = event(
        events.EXPERIMENT_STATE, id="EXP1", template_id="az-loss", description="Lose an AZ", region=REGION,
        state={"status": "running", "reason": "Action a began."}, start_time=5, end_time=None, creation_time=4,
        actions={"a": {"targets": {"Workers": "w"}}}, targets={"Workers": ["arn:w"]}, tags={"Name": "x"},
        stop_conditions=[{"source": "none"}], changes=[{"name": "a"}], blast_radius={"azs": ["us-east-1a"]},
        fault_window={"id": "EXP1", "label": "az-loss", "start_ms": 5, "end_ms": None},
        faults={"azs_down": ["us-east-1a"], "effects": [{"kind": "AzDown"}], "injected": {"x": 1}, "idempotency_off": False},
    )
    seen = visible_to(state, BOB)
    assert seen is not None and not PLAN_KEYS & set(seen["data"])
    assert seen["data"]["state"] == {"status": "running"}
    assert seen["data"]["faults"] == {"azs_down": ["us-east-1a"]}
    assert seen["data"]["description"] == "Lose an AZ" and seen["data"]["fault_window"]["start_ms"] == 5
    assert visible_to(state, OPS) is state


# --- over real sockets ----------------------------------------------------------------------------


def conflict_item(order_id: str, trade_ids: list[str]) -> dict[str, Any]:
    return {
        "recordType": "CONFLICT", "conflictId": "C-1", "kind": "duplicate_fill", "orderId": order_id, "client": "alice",
        "symbol": "BTC-USD", "regions": [REGION, "eu-west-1"], "standingRegion": REGION,
        "standingTradeIds": trade_ids[:1], "compensatedTradeIds": ["T-west-1"],
        "acceptances": [{"region": REGION, "qty": "0.5000", "price": "50000.00"}],
        "rule": "lowest seq stands", "detail": f"alice's {order_id} filled in both regions", "decidedAt": 2,
    }


def compensation_item(order_id: str) -> dict[str, Any]:
    return {
        "recordType": "COMPENSATION", "compensationId": "K-1", "conflictId": "C-1", "tradeId": "T-west-1", "execType": "H",
        "execTypeName": "TRADE_CANCEL", "orderId": order_id, "client": "alice", "counterparty": "SIM-MM-1", "symbol": "BTC-USD",
        "side": "BUY", "region": "eu-west-1", "qty": "0.5000", "price": "50000.00", "reversedQty": "0.5000", "correctedQty": "0", "decidedAt": 3,
    }


def adjustment_item(order_id: str) -> dict[str, Any]:
    return {
        "recordType": "ADJUSTMENT", "adjustmentId": "A-1", "conflictId": "C-1", "compensationId": "K-1", "account": "alice",
        "orderId": order_id, "tradeId": "T-west-1", "symbol": "BTC-USD", "side": "BUY", "regions": [REGION, "eu-west-1"],
        "qty": "0.5000", "price": "50000.00", "referencePrice": "50010.00", "amount": "5.00", "decidedAt": 4,
    }


@pytest.fixture
def sink() -> Iterator[ChannelLayerSink]:
    """Events published in this process reach the sockets, as in a worker process."""
    layer_sink = ChannelLayerSink()
    events.add_sink(layer_sink)
    yield layer_sink
    events.remove_sink(layer_sink)
    layer_sink.close()


def alices_day(exchange: Any) -> SimpleNamespace:
    """What alice's order produces, through the real paths: accepted, filled, reconciled, and
    an experiment running meanwhile. Ends with a region.health event for DONE_REGION."""
    order, _ = submit_order(exchange, "alice", order_payload(), "alice-key-1")
    market = exchange.config.market("BTC-USD")
    applied = apply_message(
        exchange.stores[REGION], {"type": "OrderAccepted", "order_id": order.order_id}, "us-east-1a",
        lambda: 1_800_000_000.0, lambda s: (market.tick, market.lot),
    )
    assert applied.trades, "the seeded fill fills this order"
    publish_applied(applied, REGION)
    trade_ids = [t.trade_id for t in applied.trades]
    for item in (conflict_item(order.order_id, trade_ids), compensation_item(order.order_id), adjustment_item(order.order_id)):
        reconcile_events.publish_record(item, REGION)
    config = make_config()
    runner = ExperimentRunner(FaultPlane(config), config, tick_s=0.05, seed=1).start()
    try:
        experiment = runner.submit({"template": "az-loss", "duration": "PT30S"})
        wait_for(lambda: runner.plane.snapshot()["azs_down"], message="the AZ loss applied")
    except BaseException:
        runner.close()
        raise
    # The experiment runs on until the caller has read its sockets (`runner.close()`): a
    # page's coalesced frame renders the banner of the latest state, and a stop published
    # before that frame went out would leave no banner to see.
    events.publish(events.REGION_HEALTH, DONE_REGION, {"region": DONE_REGION, "status": "healthy", "azs": []})
    return SimpleNamespace(order=order, trades=applied.trades, experiment=experiment, runner=runner)


async def until_subscribed(sockets: list[WebsocketCommunicator]) -> None:
    """Send market-wide probes until every socket has received one: the group is live for it."""
    layer = get_channel_layer()
    waiting, deadline = list(sockets), time.monotonic() + 10
    while waiting:
        assert time.monotonic() < deadline, "the sockets never joined the events group"
        await layer.group_send(EVENTS_GROUP, batch_message([events.make_event(events.METRICS, "global", {"probe": True})]))
        for socket in list(waiting):
            try:
                await socket.receive_from(timeout=0.3)
                waiting.remove(socket)
            except asyncio.TimeoutError:
                pass


async def events_until_done(socket: WebsocketCommunicator) -> tuple[list[dict[str, Any]], str]:
    """Every event a JSON socket receives up to the DONE_REGION event, and the raw frames."""
    seen: list[dict[str, Any]] = []
    raw = ""
    while True:
        text = await socket.receive_from(timeout=10)
        raw += text
        frame = json.loads(text)
        for one in frame["events"] if frame["type"] == "batch" else [frame]:
            if one["type"] == events.METRICS and one["data"].get("probe"):
                continue
            if one["type"] == events.REGION_HEALTH and one["region"] == DONE_REGION:
                return seen, raw
            seen.append(one)


async def html_until_done(socket: WebsocketCommunicator) -> str:
    html = ""
    while f'id="region-{DONE_REGION}"' not in html:
        html += await socket.receive_from(timeout=10)
    return html


def of_type(seen: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in seen if e["type"] == kind]


def assert_sees_nothing_of_alice(seen: list[dict[str, Any]], raw: str, day: SimpleNamespace) -> None:
    assert "alice" not in raw and day.order.order_id not in raw and day.order.idempotency_key not in raw
    assert not of_type(seen, events.ORDER_ACCEPTED) and not of_type(seen, events.ORDER_STATUS) and not of_type(seen, events.PNL_ADJUSTED)
    # The tape: every fill, anonymous.
    tape = of_type(seen, events.TRADE_EXECUTED)
    assert [t["data"]["trade_id"] for t in tape] == [t.trade_id for t in day.trades]
    for trade, fill in zip(tape, day.trades):
        assert trade["data"]["price"] == format(fill.price, "f") and trade["data"]["qty"] == format(fill.qty, "f")
        assert trade["data"]["symbol"] == "BTC-USD" and trade["data"]["region"] == REGION and trade["data"]["ts_ms"] == fill.ts_ms
        assert not {"order_id", "buy_order", "sell_order", "client"} & set(trade["data"])
    # The reorg marks: which trades, never whose or how much.
    (conflict,) = of_type(seen, events.TRADE_CONFLICTED)
    assert conflict["data"]["trade_ids"] and not {"client", "order_id", "qty", "price", "detail"} & set(conflict["data"])
    (compensation,) = of_type(seen, events.TRADE_COMPENSATED)
    assert compensation["data"]["trade_id"] == "T-west-1"
    assert not {"client", "counterparty", "order_id", "side", "qty", "price", "reversed_qty"} & set(compensation["data"])
    assert_sees_the_experiment_as_a_trader(seen, day)


def assert_sees_the_experiment_as_a_trader(seen: list[dict[str, Any]], day: SimpleNamespace) -> None:
    states = of_type(seen, events.EXPERIMENT_STATE)
    assert states and all(s["data"]["id"] == day.experiment["id"] for s in states)
    assert all(not PLAN_KEYS & set(s["data"]) and set(s["data"]["state"]) == {"status"} for s in states)
    running = [s for s in states if s["data"]["faults"].get("azs_down")]
    assert running and running[-1]["data"]["fault_window"]["start_ms"] is not None
    assert all(set(s["data"]["faults"]) <= events.BANNER_FAULT_FIELDS for s in states)


@pytest.mark.django_db(transaction=True)
@pytest.mark.redis
@pytest.mark.xdist_group("redis")
def test_it_shows_each_trader_their_own_activity_and_only_the_anonymous_market(redis_layer: None, exchange: Any, sink: ChannelLayerSink) -> None:
    tokens = {"alice": token_for("alice"), "bob": token_for("bob"), "ops": token_for("ops", staff=True)}

    async def scenario() -> None:
        sockets = {
            "alice": connect("/ws/events/", tokens["alice"]),
            "bob": connect("/ws/events/", tokens["bob"]),
            "bob-batch": connect("/ws/events/?batch=1", tokens["bob"]),
            "bob-page": connect("/ws/dashboard/", tokens["bob"]),
            "ops": connect("/ws/events/", tokens["ops"]),
        }
        for socket in sockets.values():
            assert (await socket.connect())[0]
        await until_subscribed(list(sockets.values()))
        started_ms = int(time.time() * 1000)
        day = await asyncio.to_thread(alices_day, exchange)
        try:
            got = {name: await events_until_done(sockets[name]) for name in ("alice", "bob", "bob-batch", "ops")}
            page = await html_until_done(sockets["bob-page"])
        finally:
            await asyncio.to_thread(day.runner.close)

        # bob, one frame per event or in batches: nothing of alice's.
        for name in ("bob", "bob-batch"):
            assert_sees_nothing_of_alice(*got[name], day)

        # alice: her order, its fills and what reconciliation decided about it, whole.
        seen, _ = got["alice"]
        assert [e["data"]["order_id"] for e in of_type(seen, events.ORDER_ACCEPTED)] == [day.order.order_id]
        assert of_type(seen, events.ORDER_STATUS)[-1]["data"]["status"] == "FILLED"
        assert all(t["data"]["order_id"] == day.order.order_id for t in of_type(seen, events.TRADE_EXECUTED))
        assert of_type(seen, events.TRADE_CONFLICTED)[0]["data"]["client"] == "alice"
        assert of_type(seen, events.TRADE_COMPENSATED)[0]["data"]["counterparty"] == "SIM-MM-1"
        assert of_type(seen, events.PNL_ADJUSTED)[0]["data"]["amount"] == "5.00"
        assert_sees_the_experiment_as_a_trader(seen, day)

        # ops: everything, the experiment's plan included.
        seen, _ = got["ops"]
        assert {events.ORDER_ACCEPTED, events.ORDER_STATUS, events.TRADE_EXECUTED, events.TRADE_CONFLICTED, events.TRADE_COMPENSATED, events.PNL_ADJUSTED} <= {e["type"] for e in seen}
        assert of_type(seen, events.TRADE_EXECUTED)[0]["data"]["client"] == "alice"
        assert all(PLAN_KEYS <= set(s["data"]) for s in of_type(seen, events.EXPERIMENT_STATE))

        # bob's page: the tape rows, the reorg marks, the banner and the chart's fault window;
        # no order, adjustment, experiment card or lever.
        assert all(f'id="trade-{t.trade_id}"' in page for t in day.trades)
        assert 'data-reorg="conflicted"' in page and 'data-reorg="compensated"' in page
        assert "AZ us-east-1a down" in page and f'id="fault-window-{day.experiment["id"]}"' in page
        assert "alice" not in page and day.order.order_id not in page
        assert 'id="order-' not in page and 'id="mine-refresh"' not in page
        assert f'id="exp-{day.experiment["id"]}"' not in page and 'id="experiments-lever"' not in page

        # A late socket's replay (`?since=`) follows the same rule.
        late_bob = connect(f"/ws/events/?since={started_ms}", tokens["bob"])
        late_alice = connect(f"/ws/events/?since={started_ms}", tokens["alice"])
        for socket in (late_bob, late_alice):
            assert (await socket.connect())[0]
        assert_sees_nothing_of_alice(*await events_until_done(late_bob), day)
        replayed, _ = await events_until_done(late_alice)
        assert [e["data"]["order_id"] for e in of_type(replayed, events.ORDER_ACCEPTED)] == [day.order.order_id]
        for socket in [*sockets.values(), late_bob, late_alice]:
            await socket.disconnect()

    async_to_sync(scenario)()


# --- the tape over HTTP follows the same rule ------------------------------------------------------


@pytest.fixture
def runtime(aws_resources: Any) -> Iterator[Any]:
    from exchange_ui.runtime import Runtime, set_runtime

    built = Runtime.build(aws_resources)
    set_runtime(built)
    yield built
    set_runtime(None)


@pytest.mark.django_db
def test_it_lists_other_clients_fills_on_the_json_tape_anonymous(runtime: Any) -> None:
    from django.test import Client

    auth = {name: {"HTTP_AUTHORIZATION": f"Bearer {token_for(name, staff=name == 'ops')}"} for name in ("alice", "bob", "ops")}
    posted = Client().post("/api/orders", data=json.dumps(order_payload(qty="1.0000")), content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-1", **auth["alice"])
    order_id = posted.json()["order_id"]
    wait_for(lambda: sum(worker.poll_once() for worker in runtime.workers.values()), message="the order filled")
    runtime.catch_up()
    fills = Client().get(f"/api/orders/{order_id}", **auth["alice"]).json()["fills"]
    assert fills, "the seeded fill fills this order"

    for query in ("", "?region=us-east-1"):
        tapes = {name: Client().get(f"/api/trades{query}", **auth[name]).json()["trades"] for name in auth}
        assert [t["trade_id"] for t in tapes["bob"]] == [t["trade_id"] for t in tapes["ops"]] == [f["trade_id"] for f in fills][::-1]
        assert "alice" not in json.dumps(tapes["bob"]) and order_id not in json.dumps(tapes["bob"])
        assert all({"price", "qty", "symbol", "region", "ts_ms"} <= set(t) for t in tapes["bob"])
        assert all(t["order_id"] == order_id for t in tapes["alice"])
        assert all(t["client"] == "alice" for t in tapes["ops"])
