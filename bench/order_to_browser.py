"""Section 2: POST to the trade frame on /ws/events/ at 20/50/100 orders/s vs the fill path alone."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.clients import bench_config, ws_connect
from bench.results import Results, chart, pct
from bench.server import Server
from bench.sizes import Sizes


def section_order_to_browser(res: Results, sizes: Sizes, endpoint: str, server: Server, token: str, client: str) -> None:
    import requests

    from trading.domain import derive_order_id

    system: dict[int, list[float]] = {}
    floor: dict[int, list[float]] = {}
    pending_total = 0
    for rate in sizes.o2b_rates:
        n = max(1, sizes.o2b_min_orders, int(rate * sizes.o2b_seconds))
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        # Where the time goes, per order: the POST's answer, the fill, the frame (wall clock).
        sent_wall: dict[str, float] = {}
        acked: dict[str, float] = {}
        filled_at: dict[str, tuple[float, float]] = {}

        async def listen(stop: asyncio.Event, ready: asyncio.Event) -> None:
            async with ws_connect(server.ws + "/ws/events/?batch=1", token, origin=server.url) as sock:
                ready.set()
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(sock.recv(), timeout=0.5)
                    except asyncio.TimeoutError:
                        continue
                    now, wall = time.perf_counter(), time.time()
                    frame = json.loads(raw)
                    for event in frame.get("events", [frame]):
                        oid = event.get("data", {}).get("order_id")
                        if not oid or oid in seen:
                            continue
                        if event["type"] == "trade.executed" or (event["type"] == "order.status" and event["data"].get("status") in {"FILLED", "CANCELLED", "REJECTED"}):
                            seen[oid] = now
                            # The event's own time: the fill's (a trade) or the publish (a status).
                            filled_at[oid] = (float(event.get("ts") or 0) / 1000, wall)

        def post_all() -> None:
            session_pool = ThreadPoolExecutor(max_workers=16)
            local = threading.local()

            def post(i: int, key: str) -> None:
                session = getattr(local, "s", None) or requests.Session()
                local.s = session
                oid = derive_order_id(client, key)
                sent[oid], sent_wall[oid] = time.perf_counter(), time.time()
                session.post(
                    server.url + "/api/orders",
                    data=json.dumps({"symbol": "BTC-USD", "side": "BUY" if i % 2 else "SELL", "qty": "0.0100", "price": "50000.00"}),
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key, "Content-Type": "application/json"},
                    timeout=30,
                )
                acked[oid] = time.perf_counter()

            started = time.perf_counter()
            futures = []
            for i in range(n):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                futures.append(session_pool.submit(post, i, f"o2b-{rate}-{i}-{uuid.uuid4().hex[:8]}"))
            for f in futures:
                f.result()
            session_pool.shutdown()

        async def run() -> None:
            stop, ready = asyncio.Event(), asyncio.Event()
            listener = asyncio.create_task(listen(stop, ready))
            await asyncio.wait_for(ready.wait(), 30)
            await asyncio.to_thread(post_all)
            deadline = time.perf_counter() + sizes.settle_s
            while time.perf_counter() < deadline and len(seen.keys() & sent.keys()) < len(sent):
                await asyncio.sleep(0.1)
            stop.set()
            await listener

        asyncio.run(run())
        system[rate] = [seen[o] - sent[o] for o in sent if o in seen]
        pending_total += len(sent) - len(system[rate])
        done = [o for o in sent if o in seen and o in acked and filled_at.get(o, (0, 0))[0] > 0]
        if done:
            parts = {
                "the POST's answer": [1000 * (acked[o] - sent[o]) for o in done],
                "submit to fill": [1000 * (filled_at[o][0] - sent_wall[o]) for o in done],
                "fill to frame": [1000 * (filled_at[o][1] - filled_at[o][0]) for o in done],
            }
            res.note(
                "2",
                f"{rate} orders/s, where the time goes (p50 / p99 ms, {len(done)} orders): "
                + "; ".join(f"{name} {pct(v, 50):.0f} / {pct(v, 99):.0f}" for name, v in parts.items())
                + ".",
            )
        floor[rate] = fill_path_floor(endpoint, rate, n, sizes.settle_s)
    add_o2b_results(res, sizes, system, floor, pending_total)



def fill_path_floor(endpoint: str, rate: int, n: int, settle_s: float) -> list[float]:
    """The fill path alone, in-process: submit_order -> SQS -> AzWorker -> the published trade.
    Its own tables and queue, so the server's workers never touch them."""
    from simfill.worker import AzWorker
    from trading import aws, events
    from trading.actions import Exchange, submit_order
    from trading.provision import bootstrap

    aws.use_endpoint(endpoint)
    config = bench_config(regions=("us-east-1",), table_prefix=f"bfloor{uuid.uuid4().hex[:5]}")
    bootstrap(config, say=lambda line: None)
    ex = Exchange(config=config)
    grid = lambda symbol: (config.market(symbol).tick, config.market(symbol).lot)  # noqa: E731
    worker = AzWorker(ex.stores["us-east-1"], ex.queues["us-east-1"], "us-east-1a", grid, wait_s=2)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}

    def sink(event: dict[str, Any]) -> None:
        if event["type"] in {"trade.executed", "order.status"}:
            seen.setdefault(event["data"]["order_id"], time.perf_counter())

    events.add_sink(sink)
    worker.start()
    try:
        pool = ThreadPoolExecutor(max_workers=16)

        def one(i: int) -> None:
            t0 = time.perf_counter()
            order, _ = submit_order(ex, "floor", {"symbol": "BTC-USD", "side": "BUY", "qty": "0.0100", "price": "50000.00"}, f"f-{i}-{uuid.uuid4().hex[:6]}")
            sent[order.order_id] = t0

        started = time.perf_counter()
        futures = []
        for i in range(n):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, i))
        for f in futures:
            f.result()
        pool.shutdown()
        deadline = time.perf_counter() + settle_s
        while time.perf_counter() < deadline and len(seen.keys() & sent.keys()) < len(sent):
            time.sleep(0.05)
    finally:
        worker.stop()
        events.remove_sink(sink)
    return [seen[o] - sent[o] for o in sent if o in seen]


def add_o2b_results(res: Results, sizes: Sizes, system: dict[int, list[float]], floor: dict[int, list[float]], pending: int) -> None:
    groups, s99, f99, s50, f50 = [], [], [], [], []
    for rate in sizes.o2b_rates:
        s, f = system[rate], floor[rate]
        sp99, fp99 = (pct(s, 99) or math.nan) * 1000, (pct(f, 99) or math.nan) * 1000
        res.add(f"order_to_browser_{rate}_per_s_p99_ms", sp99, "ms", floor=fp99, samples=len(s), section="2", goal="<= 250 ms", met=sp99 <= 250)
        res.add(f"order_to_browser_{rate}_per_s_p50_ms", (pct(s, 50) or math.nan) * 1000, "ms", floor=(pct(f, 50) or math.nan) * 1000, samples=len(s), section="2")
        res.tables.setdefault("2", []).append(
            f"| {rate}/s | {1000 * (pct(f, 50) or math.nan):.0f} / {fp99:.0f} ({len(f)}) | {1000 * (pct(s, 50) or math.nan):.0f} / {sp99:.0f} ({len(s)}) | {sp99 / fp99:.2f} |"
        )
        groups.append(f"{rate}/s")
        s99.append(sp99)
        f99.append(fp99)
        s50.append((pct(s, 50) or math.nan) * 1000)
        f50.append((pct(f, 50) or math.nan) * 1000)
    top = sizes.o2b_rates[-1]
    value = s99[-1]
    res.add("order_to_browser_p99_ms", value, "ms", floor=f99[-1], samples=len(system[top]), section="2", goal=f"<= 250 ms at {top} orders/s", met=value <= 250)
    if pending:
        res.note("2", f"{pending} order(s) had no trade frame within {sizes.settle_s:g} s of the last POST (left out of the percentiles).")
    chart(res, "2", "order_to_browser.svg", "Order to browser (p50 and p99)", groups, {"floor p50": f50, "floor p99 (fill path alone)": f99, "system p50": s50, "system p99": s99}, "ms", goal=250)


