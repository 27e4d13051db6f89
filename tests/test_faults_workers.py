"""AZ loss and CPU stress on real SimFill AzWorker threads against the moto server."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from faults.injection import FaultPlane
from faults.runner import ExperimentRunner
from simfill.worker import AzWorker
from trading.actions import submit_order
from trading.domain import FINAL_STATUSES
from tests.conftest import order_payload, wait_for

REGION = "us-east-1"
LOST_AZ, SURVIVING_AZ = "us-east-1a", "us-east-1b"


class WorkerRuntime:
    """The runtime protocol over real AzWorkers of one region (restart in place, as a task would)."""

    def __init__(self, exchange: Any):
        self.exchange = exchange
        self.config = exchange.config
        self.workers: dict[str, AzWorker] = {}
        for az in self.config.azs(REGION):
            self.workers[az] = AzWorker(
                exchange.stores[REGION],
                exchange.queues[REGION],
                az,
                self.grid,
                wait_s=1,
                # The lost AZ's task holds what it received for 3 s before it reappears.
                visibility_timeout=3 if az == LOST_AZ else None,
            )
        self.starts: list[str] = []

    def grid(self, symbol: str) -> tuple[Decimal, Decimal]:
        market = self.config.market(symbol)
        assert market is not None
        return market.tick, market.lot

    def stop_az(self, az: str) -> None:
        self.workers[az].stop()

    def start_az(self, az: str) -> None:
        self.starts.append(az)
        self.workers[az].start()


@pytest.fixture
def runtime(exchange: Any) -> Iterator[WorkerRuntime]:
    made = WorkerRuntime(exchange)
    yield made
    for worker in made.workers.values():
        worker.stop()
    for worker in made.workers.values():
        if worker.thread is not None:
            worker.thread.join(10)


@pytest.fixture
def runner(runtime: WorkerRuntime, published: list[dict[str, Any]]) -> Iterator[ExperimentRunner]:
    plane = FaultPlane(runtime.config, runtime, seed=1).install()
    started = ExperimentRunner(plane, runtime.config, tick_s=0.05, seed=1).start()
    yield started
    started.close()
    plane.uninstall()


def orders_of(exchange: Any) -> dict[str, Any]:
    return {o.order_id: o for o in exchange.stores[REGION].orders.scan_all()}


def assert_nothing_lost_nothing_filled_twice(exchange: Any, accepted: list[Any]) -> None:
    stored = orders_of(exchange)
    trades = list(exchange.stores[REGION].trades.scan_all())
    by_order: dict[str, list[Any]] = defaultdict(list)
    for trade in trades:
        by_order[trade.order_id].append(trade)
    for order in accepted:
        final = stored[order.order_id]
        assert final.status in FINAL_STATUSES, f"{order.order_id} still {final.status}"
        finals = [h for h in final.history if h.status in FINAL_STATUSES]
        assert len(finals) == 1, f"{order.order_id} finished {len(finals)} times"
        fills = by_order.get(order.order_id, [])
        assert sum((t.qty for t in fills), Decimal("0")) == final.filled_qty
        assert {t.fill_az for t in fills} <= {finals[0].az}
    assert len({t.trade_id for t in trades}) == len(trades)


def test_it_stops_the_lost_azs_worker_and_the_survivor_fills_what_it_held(
    exchange: Any, runtime: WorkerRuntime, runner: ExperimentRunner, published: list[dict[str, Any]]
) -> None:
    lost, survivor = runtime.workers[LOST_AZ], runtime.workers[SURVIVING_AZ]
    # A slow task (its CPU burnt for a second before each message), so it is caught
    # holding received messages.
    lost.stress.slice_s, lost.cpu_stress_percent = 1.0, 100
    lost.start()
    accepted = [submit_order(exchange, "alice", order_payload(), f"az-{i}")[0] for i in range(5)]
    wait_for(lambda: exchange.queues[REGION].depth()[1] > 0, message="the lost AZ's worker to hold messages")

    experiment = runner.submit({"template": "az-loss", "duration": "PT8S"})
    wait_for(lambda: not lost.alive, timeout_s=5, message="the lost AZ's worker stopped")
    lost.cpu_stress_percent = 0
    survivor.start()
    assert not exchange.az_up(LOST_AZ)
    during, _ = submit_order(exchange, "alice", order_payload(side="SELL"), "az-during")
    assert during.accepted_az == SURVIVING_AZ
    accepted.append(during)

    def all_final() -> bool:
        stored = orders_of(exchange)
        return all(stored[o.order_id].status in FINAL_STATUSES for o in accepted)

    wait_for(all_final, timeout_s=20, message="every accepted order filled")
    finished_in = {o.order_id: [h.az for h in o.history if h.status in FINAL_STATUSES][0] for o in orders_of(exchange).values()}
    by_survivor = [oid for oid, az in finished_in.items() if az == SURVIVING_AZ]
    by_lost = [oid for oid, az in finished_in.items() if az == LOST_AZ]
    assert len(by_lost) <= 2  # at most what it was working on when stopped
    assert len(by_survivor) >= 4  # what it held came back after the visibility timeout
    assert lost.thread is not None and not lost.thread.is_alive()

    wait_for(lambda: runner.get(experiment["id"])["state"]["status"] == "completed", timeout_s=15, message="completed")
    wait_for(lambda: lost.alive, timeout_s=5, message="the lost AZ's worker restarted")
    assert runtime.starts == [LOST_AZ]
    assert exchange.az_up(LOST_AZ)
    after, _ = submit_order(exchange, "bob", order_payload(), "az-after")
    accepted.append(after)
    wait_for(all_final, timeout_s=15, message="the order after the AZ came back filled")
    assert_nothing_lost_nothing_filled_twice(exchange, accepted)

    states = [e["data"]["state"]["status"] for e in published if e["type"] == "experiment.state"]
    assert states[0] == "pending" and states[-1] == "completed" and "running" in states


def test_it_slows_fills_under_cpu_stress_and_restores_them(
    exchange: Any, runtime: WorkerRuntime, runner: ExperimentRunner
) -> None:
    for worker in runtime.workers.values():
        worker.start()
    experiment = runner.submit(
        {
            "region": REGION,
            "description": "stress the fill tasks",
            "targets": {"tasks": {"resourceType": "aws:ecs:task", "resourceTags": {"exchange:app": "exchange"}}},
            "actions": {
                "stress": {
                    "actionId": "aws:ecs:task-cpu-stress",
                    "parameters": {"duration": "PT5S", "percent": "100"},
                    "targets": {"Tasks": "tasks"},
                }
            },
            "stopConditions": [{"source": "none"}],
        }
    )
    wait_for(lambda: all(w.cpu_stress_percent == 100 for w in runtime.workers.values()), message="stress applied")
    order, _ = submit_order(exchange, "alice", order_payload(), "cpu-1")
    filled = wait_for(
        lambda: (o := exchange.stores[REGION].orders.get(order.order_id)) and o.status in FINAL_STATUSES and o,
        timeout_s=10,
        message="the stressed fill",
    )
    assert filled.updated_ms - filled.created_ms >= 500  # the fill waited out a stressed slice
    wait_for(lambda: runner.get(experiment["id"])["state"]["status"] == "completed", timeout_s=10, message="completed")
    wait_for(lambda: all(w.cpu_stress_percent == 0 for w in runtime.workers.values()), message="stress removed")
    assert all(w.alive for w in runtime.workers.values())
    assert_nothing_lost_nothing_filled_twice(exchange, [order])
