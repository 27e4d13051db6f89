"""The CPU spike against a real moto server: the fill tasks burn their CPU, time-to-fill
rises, and the dashboard's flash warning comes up on it."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from exchange_ui.runtime import FLASH_WINDOW_S, Runtime
from tests.conftest import order_payload, wait_for
from trading.actions import submit_order
from trading.domain import FINAL_STATUSES
from trading.fragments import render_dashboard_frame
from trading.metrics import METRICS

pytestmark = pytest.mark.django_db(transaction=True)

REGION = "us-east-1"
ORDERS = 10


@pytest.fixture
def runtime(filling_runtime: Runtime) -> Runtime:
    METRICS.time_to_fill.clear()  # the process's windows hold earlier tests' fills
    return filling_runtime


def fill_orders(runtime: Runtime, tag: str) -> None:
    """A burst of orders, each to its final status, and the streams read."""
    ex = runtime.exchange
    orders = [submit_order(ex, "alice", order_payload(qty="0.0100"), f"{tag}-{i}")[0] for i in range(ORDERS)]

    def all_final() -> bool:
        return all(ex.stores[REGION].orders.get(o.order_id).status in FINAL_STATUSES for o in orders)

    wait_for(all_final, timeout_s=60, interval_s=0.1, message=f"the {tag} orders filled")
    runtime.catch_up()


def tasks_cpu_s(runtime: Runtime) -> float:
    return sum(runtime.workers[az].cpu_time_s() or 0.0 for az in runtime.config.azs(REGION))


def flash_tag(html: str) -> str:
    found = re.search(r'<div id="flash-warning"[^>]*>', html)
    assert found, "no flash warning element"
    return found.group(0)


def test_it_burns_the_fill_tasks_cpu_raises_time_to_fill_and_flashes_the_warning(runtime: Runtime) -> None:
    cpu_at_start = tasks_cpu_s(runtime)
    fill_orders(runtime, "calm")
    calm_cpu_s = tasks_cpu_s(runtime) - cpu_at_start
    calm_p99 = runtime.metrics()["per_region"][REGION]["time_to_fill_p99_ms"]
    assert calm_p99 is not None
    # A busy test machine may fill slowly without any fault: the bound sits above what it took.
    runtime.flash_fill_ms = max(runtime.flash_fill_ms, 1.5 * calm_p99)
    calm = runtime.metrics()
    assert calm["time_to_fill_p99_ms"] == calm_p99 and not calm["flash_warning"]
    assert "hidden" in flash_tag(render_dashboard_frame([{"type": "metrics", "region": "global", "ts": 0, "data": calm}], seq=1, resync=False))

    run = runtime.runner.submit({"template": "cpu-spike", "duration": "PT2M"})
    wait_for(lambda: all(runtime.workers[az].cpu_stress_percent == 90 for az in runtime.config.azs(REGION)), message="the stress on the tasks")
    cpu_before_spike = tasks_cpu_s(runtime)
    fill_orders(runtime, "spike")
    spike_cpu_s = tasks_cpu_s(runtime) - cpu_before_spike

    # The same number of fills cost the stressed tasks' threads far more CPU time.
    assert spike_cpu_s > 3 * calm_cpu_s, (calm_cpu_s, spike_cpu_s)
    runtime.sample()  # what the dashboard and the API are given
    spiked = runtime.last_metrics
    # Each of the burst's messages waits out a stressed slice in turn: the last ones fill late.
    assert spiked["per_region"][REGION]["time_to_fill_p99_ms"] > 1.5 * calm_p99
    assert spiked["flash_warning"] and "time-to-fill p99" in spiked["flash_reason"]

    frame = render_dashboard_frame([{"type": "metrics", "region": "global", "ts": 0, "data": spiked}], seq=2, resync=False)
    assert "hidden" not in flash_tag(frame) and "Fills slowing" in frame and "time-to-fill p99" in frame
    operator = Client()
    operator.force_login(User.objects.create_user("ops", is_staff=True))
    page = operator.get("/").content.decode()
    assert "hidden" not in flash_tag(page)
    assert 'data-chart="fill"' in page and 'data-fill-p99="' in page
    api = operator.get("/api/metrics").json()
    assert api["time_to_fill_p99_ms"] == spiked["time_to_fill_p99_ms"] and api["flash_warning"] is True
    for field in ("time_to_accept_p50_ms", "time_to_accept_p99_ms", "queued_events", "awaiting_fill", "tape_divergence", "replication_lag_ms", "backpressure"):
        assert field in api

    runtime.runner.stop(run["id"])
    wait_for(lambda: all(runtime.workers[az].cpu_stress_percent == 0 for az in runtime.config.azs(REGION)), message="the stress lifted")
    # The warning holds while the slow fills are in its window, and clears after.
    assert runtime.flash_reasons(time.time() + FLASH_WINDOW_S + 1) == []
