"""A region outage with rerouting on: what the down region had accepted waits in its queue."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from exchange_ui.runtime import Runtime, set_runtime
from faults.experiment import AzDown, RegionDown
from tests.conftest import order_payload, wait_for
from trading import models
from trading.actions import submit_order

pytestmark = pytest.mark.django_db(transaction=True)

REGION = "us-east-1"


@pytest.fixture
def runtime(aws_resources: Any) -> Iterator[Runtime]:
    built = Runtime.build(aws_resources)
    set_runtime(built)
    built.start(synthetic=False)
    yield built
    built.stop()
    set_runtime(None)


def row_in_snapshot(client: Client, order_id: str) -> str:
    html = client.get("/partials/live/").content.decode()
    assert f'id="order-{order_id}"' in html, "the order is on the page"
    return html.split(f'id="order-{order_id}"', 1)[1].split("</tr>", 1)[0]


def test_it_shows_the_orders_a_down_region_had_accepted_as_queued_until_it_fills_them(runtime: Runtime) -> None:
    client = Client()
    client.force_login(User.objects.create_user("alice", password="alice-pass-123"))
    plane = runtime.plane
    # The region's AZs are cut off first (the region itself still takes orders), so the
    # order is still in its queue when the whole region goes down.
    azs = runtime.config.azs(REGION)
    plane.apply("hold-workers", [AzDown(az) for az in azs])
    wait_for(lambda: not any(runtime.workers[az].thread.is_alive() for az in azs), 15, 0.1, "the region's workers to stop")
    before, _ = submit_order(runtime.exchange, "alice", order_payload(region=REGION), "before-outage")
    assert before.region == REGION
    wait_for(lambda: runtime.exchange.queues[REGION].depth()[0] >= 1, 10, 0.1, "the order in the region's queue")
    wait_for(lambda: models.Order.objects.filter(order_id=before.order_id).exists(), 15, 0.1, "the order in the mirror")
    assert "Awaiting simulated fill" in row_in_snapshot(client, before.order_id)

    plane.apply("outage", [RegionDown(REGION)])
    plane.remove("hold-workers")
    row = row_in_snapshot(client, before.order_id)
    assert "queued in us-east-1 → retrying" in row
    assert "Awaiting simulated fill" not in row
    # A new order aimed at the down region goes elsewhere and says so; it is not queued.
    rerouted, _ = submit_order(runtime.exchange, "alice", order_payload(region=REGION), "during-outage")
    assert rerouted.region == "eu-west-1"
    wait_for(lambda: models.Order.objects.filter(order_id=rerouted.order_id).exists(), 15, 0.1, "the rerouted order in the mirror")
    row = row_in_snapshot(client, rerouted.order_id)
    assert "↪ eu-west-1" in row and "queued in" not in row

    plane.remove("outage")
    wait_for(lambda: models.Order.objects.filter(order_id=before.order_id).exclude(status="ACCEPTED").exists(), 30, 0.2, "the fill after the region is back")
    row = row_in_snapshot(client, before.order_id)
    assert "queued in" not in row
    assert "badge-filled" in row or "badge-partial" in row or "badge-cancelled" in row
