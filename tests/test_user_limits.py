"""Per-user limits at the edges: orders per second over HTTP, and open sockets."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client, override_settings

from exchange_ui.runtime import Runtime, set_runtime
from tests.conftest import connect, order_payload, token_for, wait_for
from trading import models
from trading.consumers import CLOSE_TOO_MANY_SOCKETS
from trading.limits import SocketSlots, TokenBuckets

# --- the buckets, on a driven clock ---------------------------------------------------------------


def test_it_grants_a_burst_then_one_order_per_interval() -> None:
    buckets = TokenBuckets(rate=2, burst=3)
    assert [buckets.take("alice", 10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("alice", 10.0) == pytest.approx(0.5)  # the next token is due in 1/rate
    assert buckets.take("bob", 10.0) == 0.0  # one bucket per user
    assert buckets.take("alice", 10.25) == pytest.approx(0.25)  # a refusal takes nothing
    assert buckets.take("alice", 10.5) == 0.0
    assert buckets.take("alice", 10.5) > 0
    assert [buckets.take("alice", 100.0) for _ in range(4)][-1] > 0  # refilled to the burst, no further


def test_it_grants_everything_at_rate_zero_and_forgets_idle_users_past_its_bound() -> None:
    assert all(TokenBuckets(rate=0, burst=1).take("alice", 0.0) == 0.0 for _ in range(100))
    buckets = TokenBuckets(rate=1, burst=1, max_users=10)
    for n in range(1000):
        buckets.take(f"user-{n}", 0.0)
    assert len(buckets._buckets) == 10


def test_it_counts_sockets_per_user_and_in_all() -> None:
    slots = SocketSlots(per_user=2, total=3)
    assert [slots.acquire("alice"), slots.acquire("alice"), slots.acquire("alice")] == ["", "", "user"]
    assert slots.acquire("bob") == "" and slots.acquire("carol") == "total"
    slots.release("alice")
    assert slots.acquire("carol") == "" and slots.held("alice") == 1
    slots.release("nobody")  # a release without a slot changes nothing
    assert slots.acquire("dave") == "total"


# --- POST /api/orders and the order form share one limiter ----------------------------------------


@pytest.fixture
def limited(aws_resources: Any) -> Iterator[Runtime]:
    """An exchange that lets a user submit 2 orders at once, then one a second."""
    config = dataclasses.replace(aws_resources, user_order_rate=Decimal("1"), user_order_burst=2)
    built = Runtime.build(config)
    set_runtime(built)
    yield built
    set_runtime(None)


def post(auth: dict[str, str], key: str) -> Any:
    return Client().post("/api/orders", data=json.dumps(order_payload()), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key, **auth)


def until_refused(send: Any) -> list[int]:
    """Send until the first 429: the statuses, in order (a slow first request refills a token)."""
    statuses: list[int] = []
    while 429 not in statuses:
        statuses.append(send(len(statuses)).status_code)
        assert len(statuses) <= 10, statuses
    return statuses


@pytest.mark.django_db
def test_it_answers_429_with_retry_after_past_the_rate_and_accepts_again_after_it(limited: Runtime) -> None:
    alice = {"HTTP_AUTHORIZATION": f"Bearer {token_for('alice')}"}
    bob = {"HTTP_AUTHORIZATION": f"Bearer {token_for('bob')}"}
    statuses = until_refused(lambda n: post(alice, f"k-{n}"))
    assert statuses[:2] == [201, 201] and set(statuses[:-1]) == {201}
    refused_key = f"k-{len(statuses) - 1}"

    refused = post(alice, refused_key)
    assert refused.status_code == 429 and refused["Retry-After"] == "1"
    body = refused.json()
    assert body["error"] == "rate_limited" and "1 orders/s" in body["detail"] and 0 < body["retry_after_s"] <= 1
    assert post(bob, "k-0").status_code == 201  # another user's bucket is full

    # The refused order was not written: once a token is due, the same key is a new order.
    accepted = wait_for(lambda: (r := post(alice, refused_key)).status_code == 201 and r, timeout_s=5, message="a token again")
    assert accepted.json()["idempotency_key"] == refused_key
    listed = Client().get("/api/orders", **alice).json()["orders"]
    assert len(listed) == len(statuses) and refused_key in {o["idempotency_key"] for o in listed}


@pytest.mark.django_db
def test_it_refuses_the_order_form_from_the_same_bucket(limited: Runtime) -> None:
    alice = User.objects.create_user("alice", password="alice-pass-123")
    page = Client()
    page.login(username="alice", password="alice-pass-123")
    api = {"HTTP_AUTHORIZATION": f"Bearer {models.ApiToken.issue(alice)}"}
    form = {"symbol": "BTC-USD", "side": "BUY", "qty": "0.5000", "price": "50000.00"}
    assert page.post("/orders/submit/", {**form, "idempotency_key": "form-1"}).status_code == 200
    until_refused(lambda n: post(api, f"api-{n}"))

    refused = page.post("/orders/submit/", {**form, "idempotency_key": "form-2"})
    assert refused.status_code == 429 and refused["Retry-After"] == "1"
    html = refused.content.decode()
    assert "Too many orders in a row" in html and "try again in 1 s" in html and 'value="form-2"' in html  # the same entry again stays idempotent
    assert not models.Order.objects.filter(idempotency_key="form-2").exists()
    assert not any(o["idempotency_key"] == "form-2" for o in Client().get("/api/orders", **api).json()["orders"])


# --- the socket cap -------------------------------------------------------------------------------


async def opened(path: str, token: str) -> tuple[Any, int | None]:
    """Connect; the close code when the server closes the socket at once, else None."""
    socket = connect(path, token)
    connected, _ = await socket.connect()
    assert connected
    if await socket.receive_nothing(timeout=0.3):
        return socket, None
    message = await socket.receive_output()
    assert message["type"] == "websocket.close"
    return socket, message.get("code")


@pytest.mark.django_db(transaction=True)
def test_it_closes_a_socket_past_the_user_or_server_cap_with_4429() -> None:
    tokens = {name: token_for(name) for name in ("alice", "bob", "carol")}
    caps = dataclasses.replace(settings.EXCHANGE, user_sockets=2, max_sockets=3)

    async def scenario() -> None:
        first, code_1 = await opened("/ws/events/", tokens["alice"])
        second, code_2 = await opened("/ws/dashboard/", tokens["alice"])  # both paths count
        assert (code_1, code_2) == (None, None)
        third, code_3 = await opened("/ws/events/", tokens["alice"])
        assert code_3 == CLOSE_TOO_MANY_SOCKETS
        bobs, code_bob = await opened("/ws/events/", tokens["bob"])
        assert code_bob is None
        carols, code_carol = await opened("/ws/events/", tokens["carol"])
        assert code_carol == CLOSE_TOO_MANY_SOCKETS  # the server's three are taken
        await first.disconnect()
        again, code_again = await opened("/ws/events/", tokens["alice"])  # a closed socket frees its slot
        assert code_again is None
        for socket in (second, again, bobs):
            await socket.disconnect()

    with override_settings(EXCHANGE=caps):
        async_to_sync(scenario)()
