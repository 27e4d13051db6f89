"""Section 4: the throttling experiment to the backpressure frame, 20 trials."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid

from bench.clients import ws_connect
from bench.results import Results, chart, pct
from bench.server import Server
from bench.sizes import Sizes


def trickle(server: Server, token: str, rate: float, stop: threading.Event, accepted: dict[str, float] | None = None) -> None:
    """A few orders a second, as the synthetic traders would send: throttling needs traffic to show.

    `accepted["at"]`: when (perf_counter) the last order was accepted."""
    import requests

    session = requests.Session()
    i = 0
    while not stop.wait(1 / rate):
        i += 1
        try:
            response = session.post(
                server.url + "/api/orders",
                data=json.dumps({"symbol": "BTC-USD", "side": "BUY" if i % 2 else "SELL", "qty": "0.0100", "price": "50000.00"}),
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"},
                timeout=30,
            )
            if accepted is not None and response.status_code == 201:
                accepted["at"] = time.perf_counter()
        except requests.RequestException:
            pass


def section_fault_to_banner(res: Results, sizes: Sizes, server: Server, staff_token: str, trader_token: str) -> None:
    import requests

    headers = {"Authorization": f"Bearer {staff_token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    timeouts = 0
    stop_trickle = threading.Event()
    accepted = {"at": 0.0}
    feeder = threading.Thread(target=trickle, args=(server, trader_token, 5.0, stop_trickle, accepted), daemon=True)
    feeder.start()

    async def trial_loop() -> None:
        nonlocal timeouts
        async with ws_connect(server.ws + "/ws/events/?batch=1", staff_token, origin=server.url) as sock:
            state = {"active": None}

            async def wait_backpressure(active: bool, timeout_s: float) -> float | None:
                deadline = time.perf_counter() + timeout_s
                while time.perf_counter() < deadline:
                    try:
                        raw = await asyncio.wait_for(sock.recv(), timeout=max(0.01, deadline - time.perf_counter()))
                    except asyncio.TimeoutError:
                        return None
                    now = time.perf_counter()
                    for event in json.loads(raw).get("events", []):
                        if event.get("type") == "backpressure":
                            state["active"] = bool(event["data"].get("active"))
                            if state["active"] == active:
                                return now
                return None

            settled_since = time.perf_counter()
            for _ in range(sizes.banner_trials):
                # Each trial starts from a flowing exchange: an order accepted since the last
                # trial ended. Else a request of the last trial still in the SDK's throttling
                # back-off (up to 1 + 2 + 4 s) holds the trickle and the market's sequence
                # counter, nothing reaches DynamoDB, and the trial times the last one's recovery.
                deadline = time.perf_counter() + 15
                while accepted["at"] < settled_since and time.perf_counter() < deadline:
                    await asyncio.sleep(0.02)
                t0 = time.perf_counter()
                response = await asyncio.to_thread(
                    requests.post, server.url + "/api/experiments", data=json.dumps({"template": "dynamodb-throttle", "duration": "PT20S"}), headers=headers, timeout=30
                )
                response.raise_for_status()
                seen = await wait_backpressure(True, sizes.banner_timeout_s)
                if seen is None:
                    timeouts += 1
                    if timeouts >= 3 and not latencies:
                        res.note("4", "three trials in a row saw no backpressure frame: the remaining trials were skipped")
                        await asyncio.to_thread(requests.post, server.url + f"/api/experiments/{response.json()['id']}/stop", headers=headers, timeout=30)
                        return
                else:
                    latencies.append(seen - t0)
                await asyncio.to_thread(requests.post, server.url + f"/api/experiments/{response.json()['id']}/stop", headers=headers, timeout=30)
                if state["active"]:
                    await wait_backpressure(False, 1.5 * sizes.banner_timeout_s)
                settled_since = time.perf_counter()

    try:
        asyncio.run(trial_loop())
    finally:
        stop_trickle.set()
        feeder.join()
    p99 = (pct(latencies, 99) or math.nan) * 1000
    cloudwatch_ms = 10_000.0
    res.add(
        "fault_to_banner_p99_ms", p99, "ms", floor=cloudwatch_ms, samples=len(latencies), section="4",
        goal="<= 1000 ms", met=p99 <= 1000 and timeouts == 0,
    )
    res.add("fault_to_banner_p50_ms", (pct(latencies, 50) or math.nan) * 1000, "ms", floor=cloudwatch_ms, samples=len(latencies), section="4")
    res.add("fault_to_banner_timeouts", timeouts, "trials", samples=sizes.banner_trials, section="4", goal="0", met=timeouts == 0)
    if latencies:
        res.note("4", f"The fastest CloudWatch alarm (10 s) is {cloudwatch_ms / p99:.0f}x slower than this p99, the slow end (60 s) {60_000 / p99:.0f}x.")
    chart(res, "4", "fault_to_banner.svg", "Fault to banner, each trial", [str(i + 1) for i in range(len(latencies))], {"ms": [x * 1000 for x in latencies]}, "ms", goal=1000)


