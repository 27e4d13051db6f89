"""The live sockets over the real Redis channel layer: auth, origin, visibility, coalescing."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator

from exchange_ui.push import EVENTS_GROUP
from tests.conftest import connect, order_event, publish_from_worker_thread, token_for, until_subscribed
from trading import events
from trading.consumers import DashboardConsumer

# One xdist group for every test on the real Redis: a failover test kills its clients.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.xdist_group("redis")]


def test_it_pushes_json_frames_to_the_events_socket(redis_layer: None) -> None:
    token = token_for("alice")

    async def scenario() -> None:
        socket = connect("/ws/events/", token)
        connected, _ = await socket.connect()
        assert connected
        await until_subscribed(EVENTS_GROUP)
        await publish_from_worker_thread(
            (events.ORDER_ACCEPTED, order_event("alice")),
            (events.ORDER_ACCEPTED, order_event("bob", "O2")),
            (events.TRADE_EXECUTED, {"trade_id": "T1", "symbol": "BTC-USD", "qty": "0.5", "price": "50000"}),
        )
        frames = [json.loads(await socket.receive_from(timeout=5)) for _ in range(2)]
        assert [f["type"] for f in frames] == ["order.accepted", "trade.executed"]
        assert frames[0]["data"]["order_id"] == "O1"  # bob's order is not alice's to see
        assert set(frames[0]) >= {"type", "region", "ts", "data", "seq"}
        assert frames[1]["seq"] == frames[0]["seq"] + 1
        assert await socket.receive_nothing(timeout=0.3)
        await socket.disconnect()

    async_to_sync(scenario)()


def test_it_coalesces_a_burst_into_one_dashboard_frame(redis_layer: None) -> None:
    token = token_for("ops", staff=True)

    async def scenario() -> None:
        socket = connect("/ws/dashboard/", token)
        assert (await socket.connect())[0]
        await until_subscribed(EVENTS_GROUP)
        burst = [(events.ORDER_ACCEPTED, order_event("alice", f"O{n}")) for n in range(30)]
        burst.append((events.ORDER_STATUS, order_event("alice", "O0", status="FILLED")))
        started = time.monotonic()
        await publish_from_worker_thread(*burst)
        html = ""
        frames = 0
        while html.count('id="order-') < 30:
            html += await socket.receive_from(timeout=5)
            frames += 1
        took = time.monotonic() - started
        # Coalesced per client: at most one frame per flush interval (after a burst of
        # FLUSH_BURST), however many events.
        assert frames <= int(took / DashboardConsumer.flush_interval_s) + DashboardConsumer.flush_burst, (frames, took)
        assert frames < len(burst)
        assert 'id="live-seq"' in html and 'hx-swap-oob' in html
        assert "Awaiting simulated fill" in html and "Filled" in html
        # At most one state of O0 per frame, and the newest one last.
        assert html.count('id="order-O0"') <= frames
        assert "badge-filled" in html.rsplit('id="order-O0"', 1)[1].split("</tr>", 1)[0]
        await socket.disconnect()

    async_to_sync(scenario)()


def test_it_refuses_unauthenticated_sockets(redis_layer: None) -> None:
    async def scenario() -> None:
        socket = connect("/ws/events/", None)
        connected, code = await socket.connect()
        assert not connected or code == 4401
        bad = connect("/ws/events/", "nope")
        connected, _ = await bad.connect()
        assert not connected

    async_to_sync(scenario)()


def test_it_refuses_a_foreign_origin(redis_layer: None) -> None:
    token = token_for("alice")

    async def scenario() -> None:
        socket = connect("/ws/dashboard/", token, origin="https://evil.example")
        connected, _ = await socket.connect()
        assert not connected

    async_to_sync(scenario)()


def test_it_replays_what_a_late_socket_missed_since_its_page_rendered(redis_layer: None) -> None:
    token = token_for("alice")
    rendered_ms = int(time.time() * 1000)
    # Published after the page rendered, before its socket connected: lost without a replay.
    events.publish(events.ORDER_STATUS, "us-east-1", order_event("alice", "O-late", status="FILLED"))
    events.publish(events.ORDER_STATUS, "us-east-1", order_event("bob", "O-bobs", status="FILLED"))

    async def scenario() -> None:
        socket = connect(f"/ws/events/?since={rendered_ms}", token)
        assert (await socket.connect())[0]
        seen = [json.loads(await socket.receive_from(timeout=5))]
        while not await socket.receive_nothing(timeout=0.3):
            seen.append(json.loads(await socket.receive_from(timeout=5)))
        ids = [f["data"].get("order_id") for f in seen]
        assert "O-late" in ids
        assert "O-bobs" not in ids  # bob's is not alice's to see
        private = [f for f in seen if f["type"] in events.PRIVATE_TYPES]
        assert private and all(f["data"].get("client") == "alice" for f in private)
        plain = connect("/ws/events/", token)
        assert (await plain.connect())[0]
        assert await plain.receive_nothing(timeout=0.3)  # no `since`: nothing replayed
        await socket.disconnect()
        await plain.disconnect()

    async_to_sync(scenario)()


def test_a_frame_that_cannot_be_rendered_does_not_silence_the_socket(redis_layer: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from trading import consumers

    token = token_for("alice")
    real_render = consumers.render_dashboard_frame
    failures = []

    def render_once_broken(batch: list[dict[str, Any]], seq: int, resync: bool, staff: bool = False, **more: Any) -> str:
        if not failures:
            failures.append(len(batch))
            raise ValueError("a fragment that cannot be rendered")
        return real_render(batch, seq, resync, staff, **more)

    monkeypatch.setattr(consumers, "render_dashboard_frame", render_once_broken)

    async def scenario() -> None:
        socket = connect("/ws/dashboard/", token)
        assert (await socket.connect())[0]
        await until_subscribed(EVENTS_GROUP)
        await publish_from_worker_thread((events.ORDER_ACCEPTED, order_event("alice", "O-lost")))
        # The failed frame is followed by one that asks the page to resynchronise ...
        first = await socket.receive_from(timeout=5)
        assert failures == [1]
        assert 'data-resync="1"' in first
        # ... and later events still arrive.
        await publish_from_worker_thread((events.ORDER_STATUS, order_event("alice", "O-next", status="FILLED")))
        html = await socket.receive_from(timeout=5)
        assert "order-O-next" in html
        await socket.disconnect()

    async_to_sync(scenario)()


def region_view(region: str, status: str) -> dict[str, Any]:
    return {"region": region, "status": status, "azs": [], "queue_depth": 1, "in_flight": 0, "replication_lag_ms": 0.0, "error": ""}


def row_of(html: str, order_id: str) -> str:
    """The last rendering of the order's row in the frames."""
    return html.rsplit(f'id="order-{order_id}"', 1)[1].split("</tr>", 1)[0]


def test_it_shows_an_open_order_queued_in_its_down_region_until_the_region_is_back(redis_layer: None) -> None:
    token = token_for("alice")

    async def receive_until(socket: WebsocketCommunicator, text: str) -> str:
        html = ""
        while text not in html:
            html += await socket.receive_from(timeout=5)
        return html

    async def scenario() -> None:
        socket = connect("/ws/dashboard/", token)
        assert (await socket.connect())[0]
        await until_subscribed(EVENTS_GROUP)
        waiting = order_event("alice", "O-east")
        elsewhere = {**order_event("alice", "O-west"), "region": "eu-west-1", "accepted_az": "eu-west-1a"}
        await publish_from_worker_thread((events.ORDER_ACCEPTED, waiting), (events.ORDER_ACCEPTED, elsewhere))
        html = await receive_until(socket, 'id="order-O-west"')
        assert "Awaiting simulated fill" in row_of(html, "O-east")
        # The outage changes no order: the page is told again about the open order it shows.
        await publish_from_worker_thread((events.REGION_HEALTH, region_view("us-east-1", "down")), (events.REGION_HEALTH, region_view("eu-west-1", "healthy")))
        html = await receive_until(socket, 'id="region-eu-west-1"')
        assert "queued in us-east-1 → retrying" in row_of(html, "O-east")
        assert 'id="order-O-west"' not in html  # its region is up: nothing to say again
        # An order event while the region is down renders queued too; a final one does not.
        await publish_from_worker_thread((events.ORDER_STATUS, {**waiting, "note": "cancel requested"}))
        html = await receive_until(socket, 'id="order-O-east"')
        assert "queued in us-east-1 → retrying" in row_of(html, "O-east")
        await publish_from_worker_thread((events.REGION_HEALTH, region_view("us-east-1", "healthy")))
        html = await receive_until(socket, 'id="order-O-east"')
        row = row_of(html, "O-east")
        assert "queued in" not in row and "Awaiting simulated fill" in row
        await publish_from_worker_thread((events.REGION_HEALTH, region_view("us-east-1", "down")), (events.ORDER_STATUS, order_event("alice", "O-east", status="FILLED")))
        html = await receive_until(socket, "badge-filled")
        assert "badge-filled" in row_of(html, "O-east")  # the newest state of the row: final, not queued
        await socket.disconnect()

    async_to_sync(scenario)()


def test_the_layer_decodes_a_group_message_once_for_all_its_local_members(redis_layer: None) -> None:
    layer = channel_layers["default"]
    decoded: list[int] = []
    real = layer._serializer.deserialize

    def counting(message: bytes) -> Any:
        decoded.append(len(message))
        return real(message)

    layer._serializer.deserialize = counting

    async def scenario() -> None:
        members = [await layer.new_channel("member.") for _ in range(5)]
        for channel in members:
            await layer.group_add("decode-once", channel)
        await until_subscribed("decode-once")
        for n in range(3):
            await layer.group_send("decode-once", {"type": "exchange.events", "events": [{"n": n}]})
        received = [[await asyncio.wait_for(layer.receive(channel), 5) for _ in range(3)] for channel in members]
        # Every member got every message, in order, as the one object decoded once.
        assert all([m["events"][0]["n"] for m in got] == [0, 1, 2] for got in received)
        assert all(got[n] is received[0][n] for got in received for n in range(3))
        assert len(decoded) == 3  # once per message, not once per member
        for channel in members:
            await layer.group_discard("decode-once", channel)

    async_to_sync(scenario)()


def test_the_batched_events_socket_keeps_every_event_within_its_frame_budget(redis_layer: None) -> None:
    from channels.layers import get_channel_layer

    from exchange_ui.push import batch_message
    from trading.consumers import EventsConsumer

    token = token_for("ops", staff=True)

    async def scenario() -> None:
        socket = connect("/ws/events/?batch=1", token)
        assert (await socket.connect())[0]
        await until_subscribed(EVENTS_GROUP)
        layer = get_channel_layer()
        sent = 40
        started = time.monotonic()
        for n in range(sent):  # one group message every 10 ms, as forty publishers might
            await layer.group_send(EVENTS_GROUP, batch_message([{"type": "bench.tick", "region": "global", "ts": n, "data": {"n": n}}]))
            await asyncio.sleep(0.01)
        seen: list[int] = []
        frames = 0
        while len(seen) < sent:
            frame = json.loads(await socket.receive_from(timeout=5))
            frames += 1
            assert frame["type"] == "batch" and frame["seq"] == frames and not frame["resync"]
            seen += [e["data"]["n"] for e in frame["events"]]
        took = time.monotonic() - started
        assert seen == list(range(sent))  # every event, in order
        # The bucket: its burst at once, then one frame per interval on average.
        assert EventsConsumer.flush_burst <= frames <= int(took / EventsConsumer.flush_interval_s) + EventsConsumer.flush_burst, (frames, took)
        await socket.disconnect()

    async_to_sync(scenario)()
