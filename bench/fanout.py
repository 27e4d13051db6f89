"""Section 3: 200 sockets, 100 events/s through the batching publisher, Redis and daphne vs a
plain relay consumer fed one group message per event; 2 processes."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.clients import ws_connect
from bench.results import PY, ROOT, Results, chart, pct
from bench.server import Server, running
from bench.sizes import Sizes


@dataclass
class FanoutRun:
    latencies: list[float]
    frames: int
    events_delivered: int
    lost: int
    resyncs: int
    seconds: float
    connected: int


def publish_events(rate: int, seconds: float, kind: str = "bench.tick", make: Callable[[int], dict[str, Any]] | None = None, through_sink: bool = False) -> int:
    """Publish `rate` events/s into the events group through the (Redis) channel layer.

    `through_sink`: as the exchange publishes (exchange_ui.push.ChannelLayerSink: one group
    message per 100 ms carrying the batch); otherwise one group message per event."""
    from channels.layers import get_channel_layer

    from exchange_ui.push import EVENTS_GROUP, ChannelLayerSink

    layer = get_channel_layer()
    sink = ChannelLayerSink() if through_sink else None
    n = int(rate * seconds)

    async def run() -> None:
        started = time.perf_counter()
        for i in range(n):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            data = make(i) if make else {"n": i}
            event = {"type": kind, "region": "global", "ts": int(time.time() * 1000), "data": data, "t": time.time()}
            if sink is not None:
                sink(event)
            else:
                await layer.group_send(EVENTS_GROUP, {"type": "exchange.event", "event": event})
        if sink is not None:
            await asyncio.to_thread(sink.close)
        await asyncio.sleep(0.5)

    asyncio.run(run())
    return n


def publish_in_child(rate: int, seconds: float, through_sink: bool) -> float:
    """publish_events in a process of its own; returns the seconds the publishing took.

    The exchange's other publishers (SimFill workers under `run_multi`) are processes of
    their own too. In this process the publisher shared the interpreter with the sockets
    that measure, and waited for it whenever 200 frames arrived at once (fan-out p99 at 200
    sockets: ~330 ms with the publisher here, ~285 ms in its own process, same server)."""
    code = (
        "import time, django; django.setup(); from bench.fanout import publish_events; "
        f"t0 = time.perf_counter(); publish_events({rate!r}, {seconds!r}, through_sink={through_sink!r}); "
        "print(time.perf_counter() - t0)"
    )
    done = subprocess.run([PY, "-c", code], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"the publisher failed: {done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def fanout_run(urls: list[str], token: str | None, origin: str | None, rate: int, seconds: float, batched: bool) -> FanoutRun:
    """Connect len(urls) clients, publish for `seconds`, collect per-client arrivals."""
    n_clients = len(urls)
    received: list[set[int]] = [set() for _ in range(n_clients)]
    latencies: list[float] = []
    counters = {"frames": 0, "events": 0, "resyncs": 0, "connected": 0}
    lock = threading.Lock()
    total = int(rate * seconds)

    async def client(index: int, ready: asyncio.Event, stop: asyncio.Event) -> None:
        try:
            async with ws_connect(urls[index], token, origin=origin) as sock:
                counters["connected"] += 1
                if counters["connected"] == n_clients:
                    ready.set()
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(sock.recv(), timeout=0.5)
                    except asyncio.TimeoutError:
                        continue
                    now = time.time()
                    frame = json.loads(raw)
                    batch = frame.get("events") if frame.get("type") == "batch" else [frame]
                    if frame.get("resync") or frame.get("type") == "resync":
                        counters["resyncs"] += 1
                    counters["frames"] += 1
                    for event in batch:
                        if event.get("type") != "bench.tick":
                            continue
                        counters["events"] += 1
                        received[index].add(event["data"]["n"])
                        latencies.append(now - event["t"])
        except Exception as error:  # a refused or dropped socket counts as losing its events
            with lock:
                counters.setdefault("errors", 0)
                counters["errors"] += 1
            if not ready.is_set() and counters.get("errors", 0) + counters["connected"] >= n_clients:
                ready.set()
            _ = error

    async def run() -> float:
        ready, stop = asyncio.Event(), asyncio.Event()
        tasks = []
        for i in range(n_clients):
            tasks.append(asyncio.create_task(client(i, ready, stop)))
            if i % 20 == 19:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(0.5)
        elapsed = await asyncio.to_thread(publish_in_child, rate, seconds, batched)
        grace = time.perf_counter() + 5
        while time.perf_counter() < grace and sum(len(r) for r in received) < total * counters["connected"]:
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return elapsed

    elapsed = asyncio.run(run())
    lost = sum(total - len(r) for r in received)
    return FanoutRun(latencies, counters["frames"], counters["events"], lost, counters["resyncs"], elapsed, counters["connected"])


def section_fanout(res: Results, sizes: Sizes, endpoint: str, redis_url: str, server: Server, token: str, smoke: bool) -> None:
    clients, rate = sizes.fanout_clients, sizes.fanout_rate
    system = fanout_run([server.ws + "/ws/events/?batch=1"] * clients, token, server.url, rate, sizes.fanout_seconds, True)
    a = Server(endpoint, redis_url=redis_url, app="bench.floor_asgi:application")
    b = Server(endpoint, redis_url=redis_url, app="bench.floor_asgi:application")
    with running(a):
        floor = fanout_run([a.ws + "/ws/relay/"] * clients, None, None, rate, sizes.fanout_seconds, False)
        if smoke:
            multi = floor  # the shape only: a second process is not worth its start-up here
        else:
            # Two processes behind the same Redis, half of the clients each (the relay: its frame rate is the capacity).
            with running(b):
                urls = [a.ws + "/ws/relay/"] * (clients // 2) + [b.ws + "/ws/relay/"] * (clients - clients // 2)
                multi = fanout_run(urls, None, None, rate, sizes.fanout_multi_seconds, False)

    s99 = (pct(system.latencies, 99) or math.nan) * 1000
    f99 = (pct(floor.latencies, 99) or math.nan) * 1000
    expected = clients * int(rate * sizes.fanout_seconds)
    s_rate = system.events_delivered / system.seconds
    f_rate = floor.events_delivered / floor.seconds
    res.add("fanout_p99_ms", s99, "ms", floor=f99, samples=len(system.latencies), section="3", goal="<= 250 ms", met=s99 <= 250)
    res.add("fanout_p50_ms", (pct(system.latencies, 50) or math.nan) * 1000, "ms", floor=(pct(floor.latencies, 50) or math.nan) * 1000, samples=len(system.latencies), section="3")
    res.add("fanout_lost_events", system.lost, "events", floor=floor.lost, samples=expected, section="3", goal="0 (or recovered by resync)", met=system.lost == 0 or system.resyncs > 0)
    res.add(
        "fanout_frames_ratio",
        s_rate,
        "events/s delivered",
        floor=f_rate,
        samples=system.frames,
        section="3",
        goal=">= 0.8x the relay floor",
        met=f_rate > 0 and s_rate / f_rate >= 0.8,
    )
    res.add("fanout_system_frames_per_s", system.frames / system.seconds, "frames/s", floor=floor.frames / floor.seconds, samples=system.frames, section="3")
    per_process = multi.frames / multi.seconds / 2
    per_client = min(rate, 1 / 0.1)  # coalesced: at most one frame per flush interval
    needed = math.ceil(1000 * per_client / per_process) if per_process > 0 else None
    res.add("fanout_frames_per_s_per_process_2proc", per_process, "frames/s", samples=multi.frames, section="3", goal="informational")
    res.add("daphne_processes_for_1000_clients", needed, "processes", samples=multi.frames, section="3", goal="informational")
    res.tables.setdefault("3", []).extend(
        [
            f"| system (coalesced, {clients} clients) | {system.connected} | {system.frames / system.seconds:.0f} | {s_rate:.0f} | "
            f"{1000 * (pct(system.latencies, 50) or math.nan):.0f} / {s99:.0f} | {system.lost} | {system.resyncs} |",
            f"| relay floor (1 frame per event) | {floor.connected} | {floor.frames / floor.seconds:.0f} | {f_rate:.0f} | "
            f"{1000 * (pct(floor.latencies, 50) or math.nan):.0f} / {f99:.0f} | {floor.lost} | {floor.resyncs} |",
            f"| relay floor, 2 processes | {multi.connected} | {multi.frames / multi.seconds:.0f} | {multi.events_delivered / multi.seconds:.0f} | "
            f"{1000 * (pct(multi.latencies, 50) or math.nan):.0f} / {1000 * (pct(multi.latencies, 99) or math.nan):.0f} | {multi.lost} | {multi.resyncs} |",
        ]
    )
    res.note("3", f"1,000 coalesced clients want {1000 * per_client:.0f} frames/s; one process pushed {per_process:.0f} frames/s with two behind the same Redis, so {needed} process(es).")
    chart(
        res, "3", "fanout.svg", f"Fan-out: {clients} sockets, {rate} events/s", ["p50", "p99"],
        {"relay floor": [(pct(floor.latencies, 50) or math.nan) * 1000, f99], "system (coalesced)": [(pct(system.latencies, 50) or math.nan) * 1000, s99]},
        "ms", goal=250,
    )


