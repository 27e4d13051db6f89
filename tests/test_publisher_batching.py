"""The publisher coalesces: one group message per flush carries the batch, to every socket.

With N sockets in one process every group message is decoded N times; sending one message
per 100 ms instead of one per event is what lets one process serve many sockets. Each socket
still gets every event it may see, in order, with its own continuous `seq`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers, get_channel_layer
from django.test import override_settings

from exchange_ui.push import EVENTS_GROUP, ChannelLayerSink
from tests.conftest import connect, order_event, token_for, until_subscribed
from trading import events

pytestmark = [pytest.mark.django_db(transaction=True)]


def count_group_sends(sink: ChannelLayerSink) -> list[dict[str, Any]]:
    """Every message the sink hands the channel layer, as the layer receives it."""
    sent: list[dict[str, Any]] = []
    real = sink.layer.group_send

    async def counting(group: str, message: dict[str, Any]) -> None:
        assert group == EVENTS_GROUP
        sent.append(message)
        await real(group, message)

    sink.layer.group_send = counting  # an instance attribute shadows the layer's own
    return sent


def mixed_events(m: int) -> list[tuple[str, dict[str, Any]]]:
    """alice's and bob's orders and market-wide trades, interleaved."""
    out: list[tuple[str, dict[str, Any]]] = []
    for n in range(m):
        if n % 3 == 0:
            out.append((events.ORDER_ACCEPTED, order_event("alice", f"A{n}")))
        elif n % 3 == 1:
            out.append((events.ORDER_ACCEPTED, order_event("bob", f"B{n}")))
        else:
            out.append((events.TRADE_EXECUTED, {"trade_id": f"T{n}", "symbol": "BTC-USD", "qty": "0.5", "price": "50000"}))
    return out


def ident(event: dict[str, Any]) -> str:
    return event["data"].get("order_id") or event["data"]["trade_id"]


async def read_batches(socket: Any, expected: int) -> tuple[list[str], list[int]]:
    """A ?batch=1 socket's events (ids) and frame seqs, until `expected` events came."""
    ids: list[str] = []
    seqs: list[int] = []
    while len(ids) < expected:
        frame = json.loads(await socket.receive_from(timeout=5))
        assert frame["type"] == "batch" and not frame["resync"]
        seqs.append(frame["seq"])
        ids.extend(ident(e) for e in frame["events"])
    return ids, seqs


async def fan_out_scenario(sink_for_loop: Any, m: int, alice: str, bob: str, ops: str) -> None:
    sockets = {
        "alice": connect("/ws/events/?batch=1", alice),
        "alice-2": connect("/ws/events/?batch=1", alice),
        "bob": connect("/ws/events/?batch=1", bob),
        "ops": connect("/ws/events/?batch=1", ops),
        "alice-plain": connect("/ws/events/", alice),
    }
    for socket in sockets.values():
        assert (await socket.connect())[0]
    await until_subscribed(EVENTS_GROUP)
    sink = sink_for_loop(asyncio.get_running_loop())
    sent = count_group_sends(sink)
    burst = mixed_events(m)

    def publish_all() -> None:  # as a SimFill worker thread does
        events.add_sink(sink)
        try:
            for kind, data in burst:
                events.publish(kind, "us-east-1", data)
        finally:
            events.remove_sink(sink)

    await asyncio.to_thread(publish_all)
    everything = [ident({"data": data}) for _, data in burst]
    allowed = {
        "alice": [i for i in everything if not i.startswith("B")],
        "bob": [i for i in everything if not i.startswith("A")],
        "ops": everything,
    }
    for name in ("alice", "alice-2", "bob", "ops"):
        want = allowed[name.split("-")[0]]
        ids, seqs = await read_batches(sockets[name], len(want))
        assert ids == want, name  # every allowed event, in publishing order, nobody else's
        assert seqs == list(range(1, len(seqs) + 1)), name  # continuous per connection
        assert await sockets[name].receive_nothing(timeout=0.3)
    plain = [json.loads(await sockets["alice-plain"].receive_from(timeout=5)) for _ in allowed["alice"]]
    assert [ident(f) for f in plain] == allowed["alice"]
    assert [f["seq"] for f in plain] == list(range(1, len(plain) + 1))
    assert all(f["data"].get("client") in (None, "alice") for f in plain)
    # The layer carried batches: the first event at once, the rest of the burst in one message
    # (the publisher's thread ran well within one interval), never one message per event.
    assert all(message["type"] == "exchange.events" for message in sent)
    assert sum(len(message["events"]) for message in sent) == m
    assert len(sent) <= 2, [len(message["events"]) for message in sent]
    await asyncio.to_thread(sink.close)  # from another thread: close() waits for the flusher to end
    assert sink._thread is None
    for socket in sockets.values():
        await socket.disconnect()


def tokens() -> tuple[str, str, str]:
    return token_for("alice"), token_for("bob"), token_for("ops", staff=True)


def test_it_sends_one_group_message_per_flush_over_redis(redis_layer: None) -> None:
    # An interval long enough that a slow machine still publishes the burst inside one.
    # No loop: how a `simfill_worker` process publishes (its own flusher thread and loop).
    async_to_sync(fan_out_scenario)(lambda loop: ChannelLayerSink(interval_s=0.5), 60, *tokens())


def test_it_sends_one_group_message_per_flush_in_memory() -> None:
    layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 10000}}}
    with override_settings(CHANNEL_LAYERS=layers):
        channel_layers.backends.clear()
        try:
            # With the server's loop: how run_exchange publishes (the batches are sent on that loop).
            async_to_sync(fan_out_scenario)(lambda loop: ChannelLayerSink(loop, interval_s=0.5), 60, *tokens())
        finally:
            channel_layers.backends.clear()


def test_a_full_batch_goes_before_the_interval_and_close_flushes_the_rest(redis_layer: None) -> None:
    sink = ChannelLayerSink(interval_s=30.0, max_batch=10)
    sent = count_group_sends(sink)
    done = threading.Event()

    def publish_all() -> None:
        for n in range(25):
            sink(events.make_event("bench.tick", "global", {"n": n}))
        done.set()

    publish_all()
    assert done.wait(1)
    for _ in range(50):  # the leading event, then one full batch of 10, well before 30 s
        if sum(len(m["events"]) for m in sent) >= 11:
            break
        threading.Event().wait(0.05)
    assert sum(len(m["events"]) for m in sent) >= 11
    sink.close()  # the rest now, not after the interval
    assert [e["data"]["n"] for m in sent for e in m["events"]] == list(range(25))
    assert all(len(m["events"]) <= 10 for m in sent)
    assert sink._thread is None
    sink(events.make_event("bench.tick", "global", {"n": 25}))  # after close: at once, on its own
    assert sent[-1]["events"][0]["data"]["n"] == 25


def test_consumers_still_take_single_event_messages(redis_layer: None) -> None:
    token = token_for("alice")

    async def scenario() -> None:
        socket = connect("/ws/events/?batch=1", token)
        assert (await socket.connect())[0]
        await until_subscribed(EVENTS_GROUP)
        layer = get_channel_layer()
        for kind, data in mixed_events(4):
            await layer.group_send(EVENTS_GROUP, {"type": "exchange.event", "event": events.make_event(kind, "us-east-1", data)})
        ids, _ = await read_batches(socket, 3)
        assert ids == ["A0", "T2", "A3"]
        await socket.disconnect()

    async_to_sync(scenario)()


def test_a_backpressure_change_is_not_held_for_the_interval(redis_layer: None) -> None:
    # The fault-to-banner goal (<= 1 s): an operator-facing change goes at once, with what is
    # buffered before it, in order.
    sink = ChannelLayerSink(interval_s=30.0)
    sent = count_group_sends(sink)

    def wait_for(n: int) -> None:
        for _ in range(40):
            if len(sent) >= n:
                return
            threading.Event().wait(0.05)

    sink(events.make_event(events.METRICS, "global", {"n": 0}))  # after a quiet spell: at once
    wait_for(1)
    sink(events.make_event(events.METRICS, "global", {"n": 1}))  # held for the interval
    threading.Event().wait(0.2)
    assert len(sent) == 1
    sink(events.make_event(events.BACKPRESSURE, "global", {"active": True, "reason": "throttled"}))
    wait_for(2)
    assert [[e["type"] for e in m["events"]] for m in sent] == [[events.METRICS], [events.METRICS, events.BACKPRESSURE]]
    sink.close()
