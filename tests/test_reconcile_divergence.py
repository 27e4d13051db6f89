"""Tape divergence is the trades on one region's tape and not on another's; the
replication backlog is its own figure."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st

from exchange_ui.runtime import Runtime
from faults.experiment import Partition
from reconcile_panel.divergence import TapeDivergence
from tests.conftest import order_payload, wait_for
from trading.actions import submit_order
from trading.domain import FINAL_STATUSES

EAST, WEST = "us-east-1", "eu-west-1"
REGIONS = ("a", "b", "c")


@given(st.lists(st.tuples(st.sampled_from(REGIONS), st.sampled_from(["T1", "T2", "T3", "T4"]), st.booleans()), max_size=60))
def test_it_counts_what_each_tape_has_and_another_lacks(changes: list[tuple[str, str, bool]]) -> None:
    tapes = TapeDivergence(REGIONS)
    held: dict[str, set[str]] = {r: set() for r in REGIONS}
    for region, trade_id, present in changes:
        tapes.apply(region, [(trade_id, present)])
        (held[region].add if present else held[region].discard)(trade_id)
    everywhere = set.intersection(*held.values())
    assert tapes.total() == len(set.union(*held.values()) - everywhere)
    for a in REGIONS:
        for b in REGIONS:
            if a != b:
                assert tapes.missing(a, b) == len(held[a] - held[b])


def test_it_ignores_a_batch_read_twice() -> None:
    tapes = TapeDivergence(("a", "b"))
    tapes.on_tape("a", ["T1"])
    tapes.on_tape("b", ["T1"])
    tapes.on_tape("b", ["T1"])  # the reader went back over a batch whose handler failed
    assert tapes.total() == 0 and tapes.missing("b", "a") == 0


def east_trade_ids(runtime: Runtime) -> set[str]:
    return {t.trade_id for t in runtime.exchange.stores[EAST].trades.scan_all() if t.region == EAST}


@pytest.mark.django_db(transaction=True)
def test_it_counts_a_partitions_one_sided_trades_as_divergence_until_the_heal(filling_runtime: Runtime) -> None:
    runtime, ex = filling_runtime, filling_runtime.exchange
    runtime.plane.apply("cut", [Partition(EAST, WEST)])
    orders = [submit_order(ex, "alice", order_payload(qty="0.0100"), f"cut-{i}")[0] for i in range(6)]
    wait_for(lambda: all(ex.stores[EAST].orders.get(o.order_id).status in FINAL_STATUSES for o in orders), timeout_s=30, message="the orders filled in the east")
    traded = east_trade_ids(runtime)
    assert traded, "the seeded orders made no trade"
    runtime.catch_up()

    cut = runtime.metrics()
    assert cut["tape_divergence"] == len(traded)
    # The backlog counts records waiting (the orders' versions too), not trades.
    assert cut["replication_backlog"] > cut["tape_divergence"]
    operator = Client()
    operator.force_login(User.objects.create_user("ops", is_staff=True))
    api = operator.get("/api/metrics").json()
    assert (api["tape_divergence"], api["replication_backlog"]) == (len(traded), cut["replication_backlog"])
    west = next(r for r in operator.get("/api/regions").json()["regions"] if r["region"] == WEST)
    pair = next(p for p in west["replication"] if p["source"] == EAST)
    assert (pair["divergence"], pair["backlog"]) == (len(traded), cut["replication_backlog"])
    page = operator.get("/").content.decode()
    assert "Replication backlog" in page and "Tape divergence" in page

    runtime.plane.remove("cut")
    runtime.catch_up()  # replication carries the fills across; the west's stream shows them arrive
    healed = runtime.metrics()
    assert (healed["tape_divergence"], healed["replication_backlog"]) == (0, 0)
    assert {t.trade_id for t in ex.stores[WEST].trades.scan_all()} >= traded

