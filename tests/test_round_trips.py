"""Round trips: each browser's socket (ping / pong on /ws/dashboard/) and each region's API probe."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from exchange_ui.runtime import Runtime, set_runtime
from faults.experiment import Latency, RegionDown
from tests.conftest import wait_for
from trading.models import ApiToken

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def runtime(aws_resources: Any) -> Iterator[Runtime]:
    built = Runtime.build(aws_resources, with_mirror=False)
    set_runtime(built)
    built.start(synthetic=False, consumers=False)
    yield built
    built.stop()
    set_runtime(None)


def bearer(username: str, staff: bool = False) -> dict[str, str]:
    user = User.objects.create_user(username, password=f"{username}-pass-123", is_staff=staff)
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user)}"}


def dashboard_socket(token: str) -> WebsocketCommunicator:
    from exchange_ui.asgi import application

    headers = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {token}".encode())]
    return WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)


def test_it_answers_a_dashboard_ping_with_a_pong_and_counts_the_round_trip_it_reports(runtime: Runtime) -> None:
    auth = bearer("alice")
    token = auth["HTTP_AUTHORIZATION"].split()[1]

    async def scenario() -> None:
        socket = dashboard_socket(token)
        assert (await socket.connect())[0]
        await socket.send_to(text_data=json.dumps({"type": "ping", "t": 1234.5, "rtt": None}))
        pong = json.loads(await socket.receive_from(timeout=2))
        assert pong == {"type": "pong", "t": 1234.5}  # no frame number: it is not a frame
        # The round trip the page measured comes with its next ping.
        await socket.send_to(text_data=json.dumps({"type": "ping", "t": 3234.5, "rtt": 42.0}))
        assert json.loads(await socket.receive_from(timeout=2))["t"] == 3234.5
        # Anything else is ignored, a figure that is not a plausible round trip is not counted,
        # and the socket stays open.
        for junk in ("hello", "{", "[]", "x" * 10_000, json.dumps({"type": "ping", "t": "x", "rtt": 1e99})):
            await socket.send_to(text_data=junk)
        assert json.loads(await socket.receive_from(timeout=2)) == {"type": "pong", "t": None}
        await socket.send_to(text_data=json.dumps({"type": "ping", "t": 1, "rtt": -5}))
        assert json.loads(await socket.receive_from(timeout=2)) == {"type": "pong", "t": 1}
        assert await socket.receive_nothing(timeout=0.2)
        await socket.disconnect()

    async_to_sync(scenario)()
    metrics = Client().get("/api/metrics", **auth).json()
    assert metrics["socket_rtt_p50_ms"] == 42.0 and metrics["socket_rtt_p99_ms"] == 42.0
    assert metrics["socket_rtt_browsers"] >= 1
    for field in ("time_to_accept_p50_ms", "time_to_accept_p99_ms", "queued_events", "awaiting_fill", "tape_divergence", "replication_lag_ms", "backpressure"):
        assert field in metrics


def api_round_trips(auth: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {r["region"]: r for r in Client().get("/api/regions", **auth).json()["regions"]}


def probed_since(auth: dict[str, str], region: str, since_ms: int) -> dict[str, Any] | None:
    found = api_round_trips(auth)[region]
    return found if found["api_rtt_at_ms"] is not None and found["api_rtt_at_ms"] > since_ms else None


def test_it_shows_a_latency_fault_and_an_outage_in_the_regions_api_round_trip(runtime: Runtime) -> None:
    auth = bearer("ops", staff=True)
    start_ms = int(time.time() * 1000)
    before = wait_for(lambda: probed_since(auth, "us-east-1", start_ms), 10, 0.1, "a first probe of us-east-1")
    assert before["api_rtt_ms"] is not None and before["api_rtt_error"] == ""
    # The first probe may pay for a connection and a cold moto; the baseline is the warm one.
    again = wait_for(lambda: probed_since(auth, "us-east-1", before["api_rtt_at_ms"] + 1), 10, 0.1, "a second probe of us-east-1")
    baseline = min(before["api_rtt_ms"], again["api_rtt_ms"] if again["api_rtt_ms"] is not None else before["api_rtt_ms"])

    applied_ms = int(time.time() * 1000)
    runtime.plane.apply("slow", [Latency("us-east-1", 400, 100)])
    slow = wait_for(lambda: probed_since(auth, "us-east-1", applied_ms + 400), 10, 0.1, "a probe under the latency fault")
    assert slow["api_rtt_ms"] >= baseline + 350, (baseline, slow)
    other = wait_for(lambda: probed_since(auth, "eu-west-1", applied_ms), 10, 0.1, "a probe of eu-west-1")
    assert other["api_rtt_ms"] < 350, other
    # The metrics (sampled once a second) carry the same figure per region.
    wait_for(
        lambda: (Client().get("/api/metrics", **auth).json()["per_region"]["us-east-1"]["api_rtt_ms"] or 0) >= baseline + 350,
        5, 0.2, "the metrics' figure for us-east-1 under the latency fault",
    )

    runtime.plane.remove("slow")
    down_ms = int(time.time() * 1000)
    runtime.plane.apply("outage", [RegionDown("us-east-1")])
    failed = wait_for(lambda: probed_since(auth, "us-east-1", down_ms), 10, 0.1, "a probe during the outage")
    assert failed["api_rtt_ms"] is None and "unavailable" in failed["api_rtt_error"]
