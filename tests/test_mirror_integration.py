"""The stream mirror against a real moto server: a failed write is retried, a poison
record waits in the retry list without holding up the rest, a periodic sweep restores
what the mirror lost, and a heal's backlog no longer keeps the streams unread."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from exchange_ui.runtime import Runtime, set_runtime
from tests.conftest import failing_db_writes, order_payload, wait_for
from trading import models
from trading.models import ApiToken
from trading.store import batch_put_items, order_to_item
from trading.domain import Order

pytestmark = pytest.mark.django_db(transaction=True)

EAST, WEST = "us-east-1", "eu-west-1"


@pytest.fixture
def runtime(aws_resources: Any) -> Iterator[Runtime]:
    built = Runtime.build(aws_resources)
    set_runtime(built)
    yield built
    built.mirror_feed.stop()
    if built.mirror_feed.thread is not None:
        built.mirror_feed.thread.join(10)
    set_runtime(None)



def post_order(user: User, key: str, **overrides: Any) -> dict[str, Any]:
    response = Client().post(
        "/api/orders", data=json.dumps(order_payload(**overrides)), content_type="application/json",
        HTTP_IDEMPOTENCY_KEY=key, HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)}",
    )
    assert response.status_code == 201, response.content
    return response.json()


def dashboard(user: User) -> str:
    client = Client()
    client.force_login(user)
    response = client.get("/")
    assert response.status_code == 200
    return response.content.decode()


def mirrored(order_id: str) -> models.Order | None:
    return models.Order.objects.filter(pk=order_id).first()


def fill(runtime: Runtime, region: str, orders: list[dict[str, Any]]) -> None:
    store = runtime.exchange.stores[region].orders
    workers = [runtime.workers[az] for az in runtime.config.azs(region)]
    for worker in workers:
        worker.wait_s = 0

    def settled() -> bool:
        for worker in workers:
            worker.poll_once()
        return all(not store.get(o["order_id"]).is_open for o in orders)

    wait_for(settled, message="the orders final")


def test_it_applies_a_batch_again_after_the_database_refused_it(runtime: Runtime, alice: User) -> None:
    feed = runtime.mirror_feed
    with failing_db_writes("trading_order", times=1) as refused:
        feed.start()
        order = post_order(alice, "k-1")
        runtime.replicator.drain()
        wait_for(lambda: mirrored(order["order_id"]), message="the order in the mirror")
    assert len(refused) == 1  # the first write was refused; the retry took it
    assert f'id="order-{order["order_id"]}"' in dashboard(alice)
    assert runtime.metrics()["mirror_retry_list"] == 0


def test_it_keeps_a_poison_record_for_later_and_applies_the_rest(runtime: Runtime, alice: User) -> None:
    feed = runtime.mirror_feed
    poison = post_order(alice, "k-poison")
    healthy = post_order(alice, "k-healthy")
    with failing_db_writes("trading_order", times=None, matching=poison["order_id"]) as refused:
        feed.start()
        runtime.replicator.drain()
        wait_for(lambda: mirrored(healthy["order_id"]), message="the healthy order in the mirror")
        wait_for(lambda: runtime.metrics()["mirror_retry_list"] == 1, message="the poison record in the retry list")
        assert mirrored(poison["order_id"]) is None
        page = dashboard(alice)
        assert f'id="order-{healthy["order_id"]}"' in page and f'id="order-{poison["order_id"]}"' not in page
        assert "1 record waiting to be retried" in page and "mirror lag <b" in page
        # The mirror goes on meanwhile: a later order lands at once.
        later = post_order(alice, "k-later")
        runtime.replicator.drain()
        wait_for(lambda: mirrored(later["order_id"]), message="a later order in the mirror")
    assert len(refused) > 1
    # The database takes it again: the retry list is tried again and empties.
    feed.retry_every_s = 0.1
    wait_for(lambda: mirrored(poison["order_id"]), message="the poison record applied on a later retry")
    assert runtime.metrics()["mirror_retry_list"] == 0
    page = dashboard(alice)
    assert f'id="order-{poison["order_id"]}"' in page and "waiting to be retried" not in page


def test_it_sweeps_the_tables_and_restores_what_the_mirror_lost(runtime: Runtime, alice: User) -> None:
    feed = runtime.mirror_feed
    lost = post_order(alice, "k-lost")
    stale = post_order(alice, "k-stale", qty="1.0000")
    runtime.catch_up()
    assert mirrored(lost["order_id"]) and mirrored(stale["order_id"]).status == "ACCEPTED"
    # The mirror misses what follows: a row gone, a fill and a new order it never saw.
    runtime.replicator.listeners.remove(feed)
    models.Order.objects.filter(pk=lost["order_id"]).delete()
    never = post_order(alice, "k-never", region=WEST)
    fill(runtime, EAST, [stale])
    runtime.replicator.drain()
    final = runtime.exchange.stores[EAST].orders.get(stale["order_id"])
    fills = runtime.exchange.stores[EAST].trades.for_order(stale["order_id"], EAST)
    assert mirrored(stale["order_id"]).status == "ACCEPTED" and not mirrored(never["order_id"])

    feed.sweep_every_s, feed.sweep_settle_s = 0.2, 0.0  # a pass at once, over items of any age
    feed.start()
    wait_for(lambda: feed.sweeps >= 1, message="a whole sweep")
    assert mirrored(lost["order_id"]) and mirrored(never["order_id"])
    assert mirrored(stale["order_id"]).status == final.status
    assert runtime.metrics()["mirror_repaired"] >= 3 + len(fills)
    assert {t.trade_id for t in fills} <= set(models.Trade.objects.values_list("trade_id", flat=True))
    page = dashboard(alice)
    for order in (lost, stale, never):
        assert f'id="order-{order["order_id"]}"' in page
    # A pass over a mirror that holds everything repairs nothing.
    assert feed.sweep() == 0


def test_it_reads_the_streams_while_a_heal_drains_its_backlog(runtime: Runtime, alice: User) -> None:
    replicator, feed = runtime.replicator, runtime.mirror_feed
    replicator.pause(EAST, WEST)
    backlog = [
        Order(
            order_id=f"Obacklog{n:05d}", client="bulk", symbol="BTC-USD", side="BUY", qty=Decimal("0.0100"), price=Decimal("50000.00"),
            status="ACCEPTED", region=EAST, accepted_az="us-east-1a", seq=n + 1, idempotency_key=f"bulk-{n}", request_hash="h" * 64,
            simulation_seed=n, created_ms=1_000 + n, updated_ms=1_000 + n,
        )
        for n in range(120)
    ]
    east = runtime.exchange.stores[EAST].orders
    batch_put_items(runtime.exchange.stores[EAST].orders._ddb, east.table, [order_to_item(o) for o in backlog])
    replicator.drain()
    assert replicator.backlog_size(EAST, WEST) == len(backlog)
    replicator.resume(EAST, WEST)  # the heal
    replicator.deliver_budget_s = 0.1
    replicator.pump()
    assert 0 < replicator.backlog_size(EAST, WEST) < len(backlog)
    # Fills made in the other region right after the heal reach the mirror (and the
    # dashboard's tape) on the next round, long before the backlog is through.
    orders = [post_order(alice, f"k-west-{n}", region=WEST, qty="1.0000") for n in range(3)]
    fill(runtime, WEST, orders)
    replicator.pump()
    feed.apply_pending()
    assert replicator.backlog_size(EAST, WEST) > 0
    trades = [t for o in orders for t in runtime.exchange.stores[WEST].trades.for_order(o["order_id"], WEST)]
    assert trades  # SimFill is seeded: some of them fill
    page = dashboard(alice)
    for trade in trades:
        assert f'id="trade-{trade.trade_id}"' in page


def test_it_shows_how_far_the_mirror_trails_the_tables(runtime: Runtime, alice: User) -> None:
    order = post_order(alice, "k-1")
    runtime.replicator.drain()  # read from the stream and handed to the mirror, not applied yet
    lag = wait_for(lambda: (runtime.metrics()["mirror_lag_ms"] or 0) >= 300 and runtime.metrics()["mirror_lag_ms"], message="a waiting batch's age")
    assert lag >= 300 and not mirrored(order["order_id"])
    page = dashboard(alice)
    shown = page.split("mirror lag <b", 1)[1].split("</b>", 1)[0]
    assert shown.endswith(" ms") and int(shown.split(">", 1)[1].split()[0]) >= 300
    runtime.mirror_feed.apply_pending()
    assert mirrored(order["order_id"])
    # Caught up: the lag is the last batch's (write to row), no longer growing.
    settled = runtime.metrics()["mirror_lag_ms"]
    assert settled >= lag and runtime.metrics()["mirror_lag_ms"] == settled
