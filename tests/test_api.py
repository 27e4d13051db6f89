"""The JSON API as a client drives it: status codes, error shapes, auth, visibility."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth.models import User
from django.test import Client

from exchange_ui.runtime import Runtime, set_runtime
from tests.conftest import bearer, both_engines, order_payload
from trading.models import ApiToken, hash_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def runtime(aws_resources: Any) -> Iterator[Runtime]:
    built = Runtime.build(aws_resources)
    set_runtime(built)
    yield built
    set_runtime(None)



def post_order(client: Client, auth: dict[str, str], body: Any, key: str | None = "key-1", raw: bool = False) -> Any:
    headers = dict(auth)
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    data = body if raw else json.dumps(body)
    return client.post("/api/orders", data=data, content_type="application/json", **headers)


def mirror(runtime: Runtime) -> None:
    runtime.catch_up()


def consume(runtime: Runtime, region: str = "us-east-1") -> int:
    """One poll by each of the region's tasks that consume (under the matcher the active
    one alone: a standby holds no book)."""
    return sum(w.poll_once() for az, w in runtime.workers.items() if az.startswith(region) and not w.standby)


@both_engines
def test_it_creates_an_order_then_replays_it(runtime: Runtime, alice: User) -> None:
    client, auth = Client(), bearer(alice)
    first = post_order(client, auth, order_payload())
    assert first.status_code == 201
    body = first.json()
    for field in ("order_id", "seq", "status", "region", "accepted_az", "idempotency_key"):
        assert field in body
    assert body["status"] == "ACCEPTED" and body["qty"] == "0.5000" and body["idempotency_key"] == "key-1"
    again = post_order(client, auth, order_payload())
    assert again.status_code == 200 and again.json()["order_id"] == body["order_id"]
    assert post_order(client, auth, order_payload(price="49999.00")).status_code == 422


@both_engines
def test_it_answers_400_with_field_errors_and_writes_nothing(runtime: Runtime, alice: User) -> None:
    client, auth = Client(), bearer(alice)
    response = post_order(client, auth, {"symbol": "NOPE", "side": "UP", "qty": "abc"})
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) >= {"symbol", "side", "qty", "price"}
    assert post_order(client, auth, order_payload(), key=None).status_code == 400
    assert sum(1 for _ in runtime.exchange.stores["us-east-1"].orders.scan_all()) == 0


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "",
        "[]",
        '"text"',
        "null",
        '{"symbol": "BTC-USD", "side": "BUY", "qty": 1e400, "price": "1"}',
        '{"symbol": "BTC-USD", "side": "BUY", "qty": NaN, "price": "1"}',
        json.dumps({"symbol": "x" * 10_000, "side": "BUY", "qty": "1", "price": "1"}),
        json.dumps({"symbol": "BTC-USD", "side": "ВУУ", "qty": "١", "price": "💰"}),
        "[" * 5000 + "]" * 5000,
        json.dumps({"symbol": {"nested": True}, "side": ["BUY"], "qty": {}, "price": []}),
    ],
)
def test_it_never_answers_500_to_malformed_bodies(runtime: Runtime, alice: User, raw: str) -> None:
    response = post_order(Client(), bearer(alice), raw, raw=True)
    assert response.status_code == 400, response.content
    assert "errors" in response.json()


def test_it_refuses_a_wrong_content_type_cleanly(runtime: Runtime, alice: User) -> None:
    response = Client().post("/api/orders", data={"symbol": "BTC-USD"}, HTTP_IDEMPOTENCY_KEY="k", **bearer(alice))
    assert response.status_code == 400


def test_it_requires_authentication(runtime: Runtime) -> None:
    response = post_order(Client(), {}, order_payload())
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert Client().get("/api/orders", HTTP_AUTHORIZATION="Bearer not-a-token").status_code == 401


def test_it_checks_csrf_for_session_callers(runtime: Runtime, alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert post_order(client, {}, order_payload()).status_code in {401, 403}
    assert client.get("/api/orders").status_code == 200


def test_it_shows_traders_their_own_orders_and_staff_all(runtime: Runtime, alice: User, ops: User) -> None:
    bob = User.objects.create_user("bob", password="bob-pass-123")
    client = Client()
    mine = post_order(client, bearer(alice), order_payload()).json()
    theirs = post_order(client, bearer(bob), order_payload()).json()
    mirror(runtime)
    alice_ids = [o["order_id"] for o in client.get("/api/orders", **bearer(alice)).json()["orders"]]
    assert alice_ids == [mine["order_id"]]
    staff_ids = {o["order_id"] for o in client.get("/api/orders", **bearer(ops)).json()["orders"]}
    assert staff_ids == {mine["order_id"], theirs["order_id"]}
    assert client.get(f"/api/orders/{theirs['order_id']}", **bearer(alice)).status_code == 404
    detail = client.get(f"/api/orders/{mine['order_id']}", **bearer(alice)).json()
    assert detail["history"][0]["status"] == "ACCEPTED" and detail["fills"] == []


@both_engines
def test_it_serves_the_order_with_history_and_fills_after_the_fill(runtime: Runtime, alice: User) -> None:
    client, auth = Client(), bearer(alice)
    if runtime.config.engine == "matcher":  # something to trade with: a resting sell
        bob = User.objects.create_user("bob", password="bob-pass-123")
        assert post_order(client, bearer(bob), order_payload(side="SELL", qty="1.0000"), key="bob-1").status_code == 201
        assert consume(runtime) == 1
    order_id = post_order(client, auth, order_payload(qty="1.0000")).json()["order_id"]
    assert consume(runtime) >= 1
    detail = client.get(f"/api/orders/{order_id}", **auth).json()
    assert [h["status"] for h in detail["history"]][0] == "ACCEPTED"
    assert detail["status"] in {"FILLED", "CANCELLED"}
    assert sum(float(f["qty"]) for f in detail["fills"]) == pytest.approx(float(detail["filled_qty"]))
    mirror(runtime)
    tape = client.get("/api/trades?symbol=BTC-USD", **auth).json()["trades"]
    assert {t["trade_id"] for t in tape} == {f["trade_id"] for f in detail["fills"]}
    assert client.get("/api/trades?region=us-east-1", **auth).json()["trades"] == detail["fills"][::-1] or detail["status"] == "CANCELLED"
    assert client.get("/api/trades?region=mars", **auth).status_code == 400


@both_engines
def test_it_accepts_a_cancel_request(runtime: Runtime, alice: User) -> None:
    client, auth = Client(), bearer(alice)
    order_id = post_order(client, auth, order_payload()).json()["order_id"]
    response = client.delete(f"/api/orders/{order_id}", **auth)
    assert response.status_code == 202 and response.json()["cancel"] == "requested"
    # The cancel travels behind the order in the same FIFO group: the order ends cancelled.
    for _ in range(5):
        runtime.workers["us-east-1a"].poll_once()
        if runtime.exchange.stores["us-east-1"].orders.get(order_id).status not in ("ACCEPTED", "OPEN"):
            break
    assert runtime.exchange.stores["us-east-1"].orders.get(order_id).status == "CANCELLED"
    assert client.delete(f"/api/orders/{order_id}", **auth).json()["cancel"] == "too_late"
    assert client.delete("/api/orders/Onope", **auth).status_code == 404


@both_engines
def test_it_cancels_a_resting_order_and_answers_too_late_once_it_is_final(runtime: Runtime, alice: User) -> None:
    client, auth = Client(), bearer(alice)
    order_id = post_order(client, auth, order_payload(price="1000.00")).json()["order_id"]
    assert consume(runtime) == 1
    status = client.get(f"/api/orders/{order_id}", **auth).json()["status"]
    # SimFill finishes every order on arrival; the matcher leaves one that crosses nothing resting.
    assert status == ("OPEN" if runtime.config.engine == "matcher" else status) and status in {"OPEN", "FILLED", "CANCELLED"}
    response = client.delete(f"/api/orders/{order_id}", **auth)
    if status != "OPEN":
        assert response.status_code == 202 and response.json()["cancel"] == "too_late"
        return
    mirror(runtime)
    listed = client.get("/api/orders", **auth).json()["orders"]
    assert [(o["status"], o["awaiting_fill"]) for o in listed] == [("OPEN", True)]  # the listing and the order agree
    assert client.get(f"/api/orders/{order_id}", **auth).json()["awaiting_fill"] is True
    assert response.status_code == 202 and response.json()["cancel"] == "requested"
    assert consume(runtime) == 1
    detail = client.get(f"/api/orders/{order_id}", **auth).json()
    assert detail["status"] == "CANCELLED" and [h["status"] for h in detail["history"]] == ["ACCEPTED", "OPEN", "CANCELLED"]
    assert detail["awaiting_fill"] is False
    assert client.delete(f"/api/orders/{order_id}", **auth).json()["cancel"] == "too_late"


@pytest.mark.parametrize("config", ["matcher"], indirect=True)
def test_it_shows_each_side_its_fill_and_never_the_other_order(runtime: Runtime, alice: User, ops: User) -> None:
    bob = User.objects.create_user("bob", password="bob-pass-123")
    client = Client()
    resting = post_order(client, bearer(alice), order_payload(qty="1.0000"), key="rest-1").json()
    assert consume(runtime) == 1
    crossing = post_order(client, bearer(bob), order_payload(side="SELL", qty="0.4000", price="49000.00"), key="cross-1").json()
    assert consume(runtime) == 1
    mine = client.get(f"/api/orders/{resting['order_id']}", **bearer(alice)).json()
    assert (mine["status"], mine["filled_qty"]) == ("OPEN", "0.4000")
    assert [(f["order_id"], f["side"], f["client"], f["buy_order"], f["sell_order"], f["qty"], f["price"]) for f in mine["fills"]] == [
        (resting["order_id"], "BUY", "alice", resting["order_id"], "", "0.4000", "50000.00")
    ]
    theirs = client.get(f"/api/orders/{crossing['order_id']}", **bearer(bob)).json()
    assert [(f["client"], f["buy_order"], f["sell_order"]) for f in theirs["fills"]] == [("bob", "", crossing["order_id"])]
    staff = client.get(f"/api/orders/{resting['order_id']}", **bearer(ops)).json()
    assert [(f["buy_order"], f["sell_order"], f["client"]) for f in staff["fills"]] == [(resting["order_id"], crossing["order_id"], "bob")]


@both_engines
def test_it_answers_503_with_retry_after_when_no_region_can_take_the_order(runtime: Runtime, alice: User) -> None:
    runtime.exchange.region_up = lambda region: False
    response = post_order(Client(), bearer(alice), order_payload())
    assert response.status_code == 503 and response["Retry-After"] == "2"
    assert response.json()["error"] == "region_unavailable"
    assert sum(1 for _ in runtime.exchange.stores["us-east-1"].orders.scan_all()) == 0


def test_it_reports_regions_and_metrics(runtime: Runtime, alice: User) -> None:
    client, auth = Client(), bearer(alice)
    post_order(client, auth, order_payload())
    runtime.sample()
    regions = client.get("/api/regions", **auth).json()["regions"]
    assert [r["region"] for r in regions] == ["us-east-1", "eu-west-1"]
    assert regions[0]["queue_depth"] == 1 and regions[0]["status"] in {"healthy", "degraded"}
    assert [a["az"] for a in regions[0]["azs"]] == ["us-east-1a", "us-east-1b"]
    metrics = client.get("/api/metrics", **auth).json()
    for field in ("time_to_accept_p50_ms", "time_to_accept_p99_ms", "queued_events", "awaiting_fill", "tape_divergence", "replication_lag_ms", "backpressure"):
        assert field in metrics
    assert metrics["queued_events"] == 1


def test_it_publishes_the_openapi_document_to_signed_in_callers(runtime: Runtime, alice: User) -> None:
    assert Client().get("/api/openapi.json").status_code == 401
    assert Client().get("/api/docs").status_code == 302
    doc = Client().get("/api/openapi.json", **bearer(alice)).json()
    assert "/api/orders" in doc["paths"]
    assert "requestBody" in doc["paths"]["/api/orders"]["post"]


def test_a_token_records_its_last_use_to_the_minute_without_a_write_per_request(alice: User) -> None:
    from datetime import timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from trading.auth import LAST_USED_RESOLUTION, forget_tokens, user_for_token

    token = ApiToken.issue(alice)
    assert user_for_token(token) == alice
    first = ApiToken.objects.get(user=alice).last_used
    assert first is not None
    forget_tokens()  # past the in-process cache: the database read, but no write
    with CaptureQueriesContext(connection) as queries:
        assert user_for_token(token) == alice
    assert len(queries) == 1 and queries[0]["sql"].lstrip().upper().startswith("SELECT")
    assert ApiToken.objects.get(user=alice).last_used == first
    with CaptureQueriesContext(connection) as queries:
        assert user_for_token(token) == alice
    assert len(queries) == 0  # the cache: no database at all
    ApiToken.objects.filter(user=alice).update(last_used=first - LAST_USED_RESOLUTION - timedelta(seconds=1))
    forget_tokens()
    assert user_for_token(token) == alice
    assert ApiToken.objects.get(user=alice).last_used >= first
    assert user_for_token(token + "x") is None


def test_a_revoked_token_or_a_deactivated_user_is_refused_at_once(alice: User) -> None:
    from trading.auth import user_for_token

    token, other = ApiToken.issue(alice), ApiToken.issue(alice)
    assert user_for_token(token) == alice and user_for_token(other) == alice  # both cached now
    ApiToken.objects.get(token_hash=hash_token(token)).delete()
    assert user_for_token(token) is None
    assert user_for_token(other) == alice
    alice.is_active = False
    alice.save()
    assert user_for_token(other) is None
    response = Client().get("/api/orders", HTTP_AUTHORIZATION=f"Bearer {other}")
    assert response.status_code == 401


def test_a_lookup_overtaken_by_a_revocation_does_not_cache_what_it_read(alice: User, monkeypatch: pytest.MonkeyPatch) -> None:
    from trading import auth

    token = ApiToken.issue(alice)
    assert auth.user_for_token(token) == alice  # records its last use: no write below
    auth.forget_tokens()
    manager = ApiToken.objects
    real_first = manager.select_related("user").filter(token_hash=hash_token(token)).first()

    class Racing:
        """The token is read, then deleted (by another request) before the reader caches it."""

        def select_related(self, *_: Any) -> Racing:
            return self

        def filter(self, **_: Any) -> Racing:
            return self

        def first(self) -> Any:
            manager.filter(pk=real_first.pk).delete()
            return real_first

    with monkeypatch.context() as patched:
        patched.setattr(auth.ApiToken, "objects", Racing())
        assert auth.user_for_token(token) == alice  # it was valid when read
    assert auth.user_for_token(token) is None  # and is not served from the cache after


# Inputs that once answered 500: each class gets a 4xx JSON error (tests/test_fuzz_api.py
# fuzzes the same classes over every operation).


@pytest.fixture
def staff_runtime(runtime: Runtime) -> Iterator[Runtime]:
    from faults.runner import set_runner

    set_runner(runtime.runner)
    yield runtime
    set_runner(None)


def assert_json_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    if code is not None:
        assert body["error"] == code and body["detail"], body
    else:
        assert body["errors"] and all(isinstance(m, list) and m for m in body["errors"].values()), body
    return body


def test_it_answers_413_to_a_body_over_64_kib_on_every_endpoint_that_reads_one(staff_runtime: Runtime, alice: User, ops: User) -> None:
    big = json.dumps({**order_payload(), "pad": "x" * (64 * 1024)})
    response = post_order(Client(), bearer(alice), big, raw=True)
    assert_json_error(response, 413, "payload_too_large")
    for url in ("/api/experiments", "/api/experiments/preview"):
        assert_json_error(Client().post(url, data=big, content_type="application/json", **bearer(ops)), 413, "payload_too_large")
    assert sum(1 for _ in staff_runtime.exchange.stores["us-east-1"].orders.scan_all()) == 0


@pytest.mark.parametrize("depth", [40, 900, 5000])
def test_it_answers_400_to_deeply_nested_json(staff_runtime: Runtime, alice: User, ops: User, depth: int) -> None:
    nested = '{"template": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    for url in ("/api/experiments", "/api/experiments/preview"):
        assert_json_error(Client().post(url, data=nested, content_type="application/json", **bearer(ops)), 400)
    assert_json_error(post_order(Client(), bearer(alice), "[" * depth + "]" * depth, raw=True), 400)


@pytest.mark.parametrize("limit", ["²", "١٢", "１２", "1_0", " 12", "12.0", "+5", "0x10", ""])
def test_it_answers_400_to_a_limit_that_is_not_plain_ascii_digits(runtime: Runtime, ops: User, limit: str) -> None:
    client, auth = Client(), bearer(ops)
    for url in ("/api/reconcile/conflicts", "/api/reconcile/adjustments", "/api/orders", "/api/trades"):
        if limit == "" and url.startswith("/api/reconcile"):
            continue  # an empty limit there means the default
        body = assert_json_error(client.get(url, {"limit": limit}, **auth), 400, "bad_limit" if "reconcile" in url else None)
        assert "limit" in body.get("errors", {"limit": ""}), body


@pytest.mark.parametrize("limit", ["0", "1001", "99999999999999999999"])
def test_it_answers_400_to_a_reconcile_limit_out_of_range(runtime: Runtime, ops: User, limit: str) -> None:
    for url in ("/api/reconcile/conflicts", "/api/reconcile/adjustments"):
        assert_json_error(Client().get(url, {"limit": limit}, **bearer(ops)), 400, "bad_limit")


@pytest.mark.parametrize("text", ["\x00", "BTC\x00USD", "\x1b[2J", "\x7f", "\u0085", "line\nbreak"])
def test_it_refuses_control_characters_in_query_and_path(runtime: Runtime, alice: User, text: str) -> None:
    client, auth = Client(), bearer(alice)
    for name in ("status", "symbol"):
        body = assert_json_error(client.get("/api/orders", {name: text}, **auth), 400)
        assert list(body["errors"]) == [name]
    assert_json_error(client.get("/api/trades", {"symbol": text}, **auth), 400)
    quoted = quote(f"O{text}", safe="")
    for method in (client.get, client.delete):
        assert_json_error(method(f"/api/orders/{quoted}", **auth), 400, "invalid_path")


def test_it_answers_json_for_an_unknown_route_or_a_wrong_method(runtime: Runtime, alice: User) -> None:
    client, auth = Client(), bearer(alice)
    assert_json_error(client.get("/api/nope", **auth), 404, "not_found")
    assert_json_error(client.get("/api/orders/", **auth), 404, "not_found")
    wrong = client.put("/api/regions", **auth)
    assert_json_error(wrong, 405, "method_not_allowed")
    assert wrong["Allow"] == "GET"
    assert Client().get("/nope/").status_code == 404 and not Client().get("/nope/")["Content-Type"].startswith("application/json")


def test_it_refuses_a_nul_in_a_page_address_but_serves_the_page_otherwise(ops: User) -> None:
    # The admin would look the object up by that id: on PostgreSQL, a 500.
    client = Client()
    client.force_login(ops)
    for url in ("/admin/trading/order/O%00x/change/", "/admin/trading/order/?q=%00", "/login/?next=%00"):
        response = client.get(url)
        assert response.status_code == 400 and b"NUL" in response.content, (url, response.status_code)
    assert client.get("/login/?next=/%09").status_code == 200  # other control characters pass on pages
