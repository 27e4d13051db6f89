"""Read-your-writes against a real moto server: the listings do not wait for the mirror.

The mirror is fed from the Streams and trails them; here it is held back on purpose
(nothing reads the streams until a test says so), as it is after a heal or under load.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from exchange_ui.runtime import Runtime, set_runtime
from tests.conftest import bearer, order_payload, wait_for
from trading import models

pytestmark = pytest.mark.django_db


@pytest.fixture
def runtime(aws_resources: Any) -> Iterator[Runtime]:
    built = Runtime.build(aws_resources)
    set_runtime(built)
    yield built
    set_runtime(None)



def post_order(auth: dict[str, str], key: str, **overrides: Any) -> dict[str, Any]:
    response = Client().post("/api/orders", data=json.dumps(order_payload(**overrides)), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key, **auth)
    assert response.status_code == 201, response.content
    return response.json()


def listed(auth: dict[str, str], query: str = "") -> list[dict[str, Any]]:
    response = Client().get(f"/api/orders{query}", **auth)
    assert response.status_code == 200
    return response.json()["orders"]


def tape(auth: dict[str, str], query: str = "") -> list[dict[str, Any]]:
    response = Client().get(f"/api/trades{query}", **auth)
    assert response.status_code == 200
    return response.json()["trades"]


def fill_all(runtime: Runtime) -> int:
    """One short receive per AZ task: what SimFill does with what is queued now."""
    for worker in runtime.workers.values():
        worker.wait_s = 0
    return sum(worker.poll_once() for worker in runtime.workers.values())


def test_it_lists_an_order_the_moment_it_is_answered_201(runtime: Runtime, alice: User, ops: User) -> None:
    bob = User.objects.create_user("bob", password="bob-pass-123")
    mine = post_order(bearer(alice), "k-1")
    other = post_order(bearer(alice), "k-2", region="eu-west-1")
    theirs = post_order(bearer(bob), "k-1")
    mop = post_order(bearer(ops), "k-ops")
    assert not models.Order.objects.exists()  # the mirror has not seen any of them

    assert [o["order_id"] for o in listed(bearer(alice))] == [other["order_id"], mine["order_id"]]
    assert [o["order_id"] for o in listed(bearer(bob))] == [theirs["order_id"]]
    # Staff see all that the mirror holds, and their own writes at once.
    assert mop["order_id"] in {o["order_id"] for o in listed(bearer(ops))}
    detail = Client().get(f"/api/orders/{mine['order_id']}", **bearer(alice))
    assert detail.status_code == 200 and detail.json()["status"] == "ACCEPTED"
    assert Client().get(f"/api/orders/{theirs['order_id']}", **bearer(alice)).status_code == 404


def test_it_lists_the_table_read_order_in_the_mirror_rows_exact_shape(runtime: Runtime, alice: User) -> None:
    auth = bearer(alice)
    post_order(auth, "k-1", qty="0.5", price="50000")
    before = listed(auth)
    runtime.catch_up()
    after = listed(auth)
    assert models.Order.objects.count() == 1
    assert before == after
    assert after[0]["qty"] == "0.5000" and after[0]["price"] == "50000.00" and after[0]["awaiting_fill"] is True


def test_it_lists_the_latest_status_while_the_mirror_holds_an_older_one(runtime: Runtime, alice: User) -> None:
    auth = bearer(alice)
    order = post_order(auth, "k-1", qty="1.0000")
    runtime.catch_up()
    assert models.Order.objects.get(pk=order["order_id"]).status == "ACCEPTED"
    orders = runtime.exchange.stores["us-east-1"].orders
    wait_for(lambda: fill_all(runtime) >= 0 and not orders.get(order["order_id"]).is_open, message="the order final")
    final = orders.get(order["order_id"])

    assert models.Order.objects.get(pk=order["order_id"]).status == "ACCEPTED"  # still trailing
    assert [o["status"] for o in listed(auth)] == [final.status]
    assert listed(auth, "?status=ACCEPTED") == []
    assert [o["order_id"] for o in listed(auth, f"?status={final.status}")] == [order["order_id"]]


def test_it_puts_every_fill_an_order_reports_on_the_tape_of_the_region_that_made_it(runtime: Runtime, alice: User) -> None:
    auth = bearer(alice)
    orders = [post_order(auth, f"k-{region}-{n}", qty="1.0000", region=region) for region in ("us-east-1", "eu-west-1") for n in range(3)]
    store = runtime.exchange.stores
    wait_for(lambda: fill_all(runtime) >= 0 and all(not store[o["region"]].orders.get(o["order_id"]).is_open for o in orders), message="every order final")
    fills: dict[str, set[str]] = {"us-east-1": set(), "eu-west-1": set()}
    for order in orders:
        detail = Client().get(f"/api/orders/{order['order_id']}", **auth).json()
        assert detail["status"] != "ACCEPTED", detail
        fills[order["region"]] |= {f["trade_id"] for f in detail["fills"]}
    assert fills["us-east-1"] and fills["eu-west-1"]  # SimFill is seeded: some of each region's orders fill
    assert not models.Trade.objects.exists()  # the mirror has none of them yet

    assert {t["trade_id"] for t in tape(auth)} == fills["us-east-1"] | fills["eu-west-1"]
    assert {t["trade_id"] for t in tape(auth, "?executed_in=us-east-1")} == fills["us-east-1"]
    assert {t["trade_id"] for t in tape(auth, "?executed_in=eu-west-1&symbol=BTC-USD")} == fills["eu-west-1"]
    assert tape(auth, "?symbol=ETH-USD") == []
    # The same rows, in the same shape and order, once the mirror has them.
    before = tape(auth)
    runtime.catch_up()
    assert models.Trade.objects.count() == len(before)
    assert tape(auth) == before


def test_it_adds_the_listing_indexes_to_tables_made_before_them(aws_resources: Any) -> None:
    from tests.conftest import make_config
    from trading import aws
    from trading.provision import bootstrap, ensure_table

    config = make_config(table_prefix="older")
    for role in ("orders", "trades"):
        ensure_table("us-east-1", f"older-{role}", streams=True)  # as a bootstrap before the indexes made them
    bootstrap(config)
    bootstrap(config)  # idempotent
    ddb = aws.client("dynamodb", "us-east-1")
    for role, index in (("orders", "by-client"), ("trades", "by-region")):
        for region in config.regions:
            table = aws.client("dynamodb", region).describe_table(TableName=f"older-{role}")["Table"]
            assert index in [i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])]
    assert ddb.query(
        TableName="older-orders", IndexName="by-client", KeyConditionExpression="client = :c", ExpressionAttributeValues={":c": {"S": "alice"}}
    )["Items"] == []
