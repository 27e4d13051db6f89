"""AZ loss reschedules the lost AZ's SimFill task in a surviving AZ (simfill.placement)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from exchange_ui.runtime import Runtime, set_runtime
from simfill.placement import stand_in_hosts
from tests.conftest import order_payload, wait_for
from trading.actions import submit_order

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_spreads_the_lost_tasks_over_the_survivors_in_order() -> None:
    azs = ("r-1a", "r-1b", "r-1c")
    assert stand_in_hosts(azs, []) == {}
    assert stand_in_hosts(azs, ["r-1a"]) == {"r-1a": "r-1b"}
    assert stand_in_hosts(azs, ["r-1a", "r-1c"]) == {"r-1a": "r-1b", "r-1c": "r-1b"}
    assert stand_in_hosts(azs, ["r-1b", "r-1a"]) == {"r-1a": "r-1c", "r-1b": "r-1c"}
    assert stand_in_hosts(("r-1a", "r-1b", "r-1c", "r-1d"), ["r-1a", "r-1b"]) == {"r-1a": "r-1c", "r-1b": "r-1d"}
    # A region outage leaves nowhere to run: the queue keeps the work until it is back.
    assert stand_in_hosts(azs, azs) == {}


@pytest.fixture
def runtime(aws_resources: Any) -> Iterator[Runtime]:
    built = Runtime.build(aws_resources, with_mirror=False)
    set_runtime(built)
    built.start(synthetic=False)
    yield built
    built.stop()
    set_runtime(None)


def workers_of(runtime: Runtime, az: str) -> list[dict[str, Any]]:
    for region in runtime.regions():
        for entry in region["azs"]:
            if entry["az"] == az:
                return list(entry["workers"])
    raise KeyError(az)


def test_the_embedded_runtime_runs_a_stand_in_while_the_az_is_down(runtime: Runtime) -> None:
    run = runtime.runner.submit({"template": "az-loss", "duration": "PT6S"})
    wait_for(lambda: "us-east-1a" in runtime.stand_ins, 10, 0.05, "a stand-in for the lost AZ")
    stand_in = runtime.stand_ins["us-east-1a"]
    assert stand_in.az == "us-east-1b" and stand_in.alive
    assert not runtime.workers["us-east-1a"].alive
    hosted = workers_of(runtime, "us-east-1b")
    assert [w["name"] for w in hosted] == ["simfill-us-east-1b", "simfill-us-east-1b-for-us-east-1a"]
    assert hosted[1]["stand_in_for"] == "us-east-1a" and hosted[1]["alive"]
    # The other region is untouched.
    assert all(len(workers_of(runtime, az)) == 1 for az in runtime.config.azs("eu-west-1"))

    order, _ = submit_order(runtime.exchange, "alice", order_payload(), "during-az-loss")
    assert order.accepted_az == "us-east-1b"
    filled = wait_for(
        lambda: (o := runtime.exchange.stores["us-east-1"].orders.get(order.order_id)) and o.status != "ACCEPTED" and o, 20, 0.2, "the fill"
    )
    assert filled.status in {"FILLED", "CANCELLED"}

    wait_for(lambda: runtime.runner.get(run["id"])["state"]["status"] == "completed", 20, 0.2, "the experiment to end")
    wait_for(lambda: runtime.workers["us-east-1a"].alive and not runtime.stand_ins, 15, 0.1, "the AZ's own task back, the stand-in gone")
    wait_for(lambda: not stand_in.alive, 10, 0.1, "the stand-in's thread to end")
    assert [w["name"] for w in workers_of(runtime, "us-east-1b")] == ["simfill-us-east-1b"]
