"""`make run-multi`: the supervisor, real worker processes per AZ, AZ loss stopping their pids."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from exchange_ui.devserver import DevServer
from tests.conftest import wait_for

# One xdist group for every test on the real Redis: a failover kills its clients.
pytestmark = [pytest.mark.redis, pytest.mark.xdist_group("redis")]


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not running: it waits for its parent to reap it
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


class Topology(DevServer):
    """`manage.py run_multi`: the supervisor and a worker process per AZ, with sre the operator."""

    def __init__(self) -> None:
        super().__init__(
            command="run_multi",
            env={
                # One region keeps the start-up (a Django process per worker) inside the test budget.
                "EXCHANGE_REGIONS": "us-east-1",
                "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            },
            unset=("AWS_ENDPOINT_URL",),
            var_prefix="exchange-multi-",
            log_name="supervisor.log",
            ready_line="Exchange failure dashboard (multi-process)",
            manage_timeout_s=60,
        )
        self.control = self.var / "run_multi"

    def prepare(self) -> None:
        self.sre_token = self.token("sre", staff=True)

    def start(self, timeout_s: float = 60.0) -> Topology:
        super().start(timeout_s)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        super().stop(timeout_s)

    def workers(self) -> dict[str, Any]:
        try:
            return json.loads((self.control / "workers.json").read_text())
        except (OSError, ValueError):
            return {}

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.sre_token}", "Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

@pytest.fixture(scope="module")
def topology() -> Any:
    running = Topology().start()
    yield running
    running.stop()


def test_it_fills_orders_in_worker_processes_and_stops_an_azs_pids_on_az_loss(topology: Topology) -> None:
    workers = wait_for(lambda: (w := topology.workers()) and all(v["alive"] for v in w.values()) and w, 30, 0.2, "every worker up")
    assert set(workers) == {"us-east-1a", "us-east-1b"}
    pids = {az: w["pid"] for az, w in workers.items()}
    assert all(pid_running(pid) and pid != topology.process.pid for pid in pids.values())

    status, order = topology.call("POST", "/api/orders", {"symbol": "BTC-USD", "side": "BUY", "qty": "0.0100", "price": "50000.00"}, {"Idempotency-Key": uuid.uuid4().hex})
    assert status == 201, order
    filled = wait_for(lambda: (o := topology.call("GET", f"/api/orders/{order['order_id']}")[1]) and o["status"] != "ACCEPTED" and o, 30, 0.3, "the fill")
    assert filled["status"] in {"FILLED", "CANCELLED"}

    status, experiment = topology.call("POST", "/api/experiments", {"template": "az-loss", "duration": "PT8S"})
    assert status == 201, experiment
    lost = pids["us-east-1a"]
    wait_for(lambda: not pid_running(lost) and not topology.workers()["us-east-1a"]["alive"], 15, 0.1, "the AZ's worker process to stop")
    assert pid_running(pids["us-east-1b"])
    # The lost AZ's task is rescheduled in the surviving AZ, as its own process.
    stand_in = wait_for(lambda: (s := topology.workers()["us-east-1a"]["stand_in"]) and s["alive"] and s, 15, 0.1, "a stand-in in the surviving AZ")
    assert stand_in["az"] == "us-east-1b" and stand_in["name"] == "simfill-us-east-1b-for-us-east-1a"
    assert pid_running(stand_in["pid"]) and stand_in["pid"] not in pids.values()
    status, region = topology.call("GET", "/api/regions")
    assert status == 200
    (east,) = [r for r in region["regions"] if r["region"] == "us-east-1"]
    assert east["status"] == "degraded"
    hosted = {a["az"]: [w["name"] for w in a["workers"]] for a in east["azs"]}
    assert hosted["us-east-1b"] == ["simfill-us-east-1b", "simfill-us-east-1b-for-us-east-1a"]

    status, during = topology.call("POST", "/api/orders", {"symbol": "BTC-USD", "side": "SELL", "qty": "0.0100", "price": "50000.00"}, {"Idempotency-Key": uuid.uuid4().hex})
    assert status == 201 and during["accepted_az"] == "us-east-1b", during
    wait_for(lambda: topology.call("GET", f"/api/orders/{during['order_id']}")[1]["status"] != "ACCEPTED", 30, 0.3, "a fill during the AZ loss")

    wait_for(lambda: topology.call("GET", f"/api/experiments/{experiment['id']}")[1]["state"]["status"] == "completed", 30, 0.3, "the experiment to end")
    back = wait_for(lambda: (w := topology.workers()["us-east-1a"])["alive"] and w, 15, 0.1, "the AZ's worker to come back")
    assert back["pid"] != lost and pid_running(back["pid"])
    wait_for(lambda: topology.workers()["us-east-1a"]["stand_in"] is None and not pid_running(stand_in["pid"]), 15, 0.1, "the stand-in to stop")



def test_it_runs_every_builtin_experiment_and_loses_nothing(topology: Topology) -> None:
    """The same experiments as the embedded runtime, against real worker processes."""
    status, listing = topology.call("GET", "/api/experiments/templates")
    assert status == 200
    ids = [t["id"] for t in listing]
    assert {"az-loss", "region-outage", "dynamodb-throttle", "cpu-spike", "latency", "redis-failover"} <= set(ids)
    accepted: list[str] = []
    for template in ids:
        status, experiment = topology.call("POST", "/api/experiments", {"template": template, "duration": "PT3S"})
        if status == 400:  # only a partition needs a second region, which this topology has not
            assert template == "partition", experiment
            continue
        assert status == 201, (template, experiment)
        # An order while the fault acts: accepted, queued or refused with 503, never a 5xx of another kind.
        status, order = topology.call("POST", "/api/orders", {"symbol": "BTC-USD", "side": "BUY", "qty": "0.0100", "price": "50000.00"}, {"Idempotency-Key": uuid.uuid4().hex})
        assert status in {201, 202, 503}, (template, status, order)
        if status in {201, 202}:
            accepted.append(order["order_id"])
        final = wait_for(
            lambda: (e := topology.call("GET", f"/api/experiments/{experiment['id']}")[1])["state"]["status"] in {"completed", "stopped", "failed"} and e,
            30,
            0.3,
            f"{template} to end",
        )
        assert final["state"]["status"] == "completed", (template, final["state"])
    # After every fault: every worker process back, every accepted order final.
    wait_for(lambda: (w := topology.workers()) and all(v["alive"] and v["stand_in"] is None for v in w.values()), 20, 0.2, "every AZ's own worker back")
    for order_id in accepted:
        wait_for(lambda: topology.call("GET", f"/api/orders/{order_id}")[1]["status"] in {"FILLED", "CANCELLED"}, 60, 0.3, f"{order_id} to finish")


def test_ctrl_c_stops_every_process_it_started(topology: Topology) -> None:
    everything = [w["pid"] for w in topology.workers().values()]
    assert everything and all(pid_running(pid) for pid in everything)
    topology.stop()
    assert topology.process.returncode is not None
    wait_for(lambda: not any(pid_running(pid) for pid in everything), 10, 0.1, "every worker process to exit with the supervisor")
