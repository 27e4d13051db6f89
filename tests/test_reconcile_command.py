"""check_history's exit codes beside a running moto server, and the reconcile JSON API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ninja.testing import TestClient

from reconcile_panel.api import router
from reconcile_panel.provision import ensure_reconcile_tables
from reconcile_panel.replicator import Replicator
from reconcile_panel.scenarios import duplicate_fill, pick_key
from reconcile_panel.worker import ReconcileWorker
from simfill.worker import AzWorker
from tests.conftest import order_payload, wait_for
from trading.actions import Exchange

ROOT = Path(__file__).resolve().parent.parent
STAFF = SimpleNamespace(is_authenticated=True, is_staff=True, username="ops")
TRADER = SimpleNamespace(is_authenticated=True, is_staff=False, username="alice")


def check_history(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "EXCHANGE_POSITION_LIMIT": "", "DJANGO_SETTINGS_MODULE": "exchange_ui.settings"}
    return subprocess.run(
        [sys.executable, "manage.py", "check_history", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def diverged(exchange: Exchange) -> SimpleNamespace:
    """A duplicate fill made during a partition, replicated after the heal, not yet reconciled."""
    config = exchange.config
    ensure_reconcile_tables(config)
    east, west = config.regions
    grid = lambda symbol: (config.market(symbol).tick, config.market(symbol).lot)  # noqa: E731
    fillers = {r: AzWorker(exchange.stores[r], exchange.queues[r], config.azs(r)[0], grid, wait_s=0) for r in config.regions}

    def settle(region: str, order_id: str) -> Any:
        def final() -> Any:
            order = exchange.stores[region].orders.get(order_id)
            if order is not None and not order.is_open:
                return order
            fillers[region].poll_once()
            return None

        return wait_for(final, timeout_s=20, interval_s=0)

    replicator = Replicator(config)
    payload = order_payload(region=east)
    key = pick_key(exchange, "alice", payload, "cmd")
    with replicator.paused(east, west):
        divergence = duplicate_fill(exchange, settle, "alice", payload, key, east, west)
    replicator.drain()
    return SimpleNamespace(ex=exchange, replicator=replicator, divergence=divergence)


def test_it_exits_1_listing_the_undecided_conflict_then_0_once_reconciled(diverged: SimpleNamespace, moto_server: Any) -> None:
    failed = check_history(moto_server.url)
    assert failed.returncode == 1, failed.stderr
    assert "one_decision_per_conflict" in failed.stdout
    assert diverged.divergence.order_ids[0] in failed.stdout

    worker = ReconcileWorker(diverged.ex.config, limits={})
    assert worker.run_once().conflicts == 1
    diverged.replicator.drain()
    passed = check_history(moto_server.url, "--json")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert '"ok": true' in passed.stdout


def test_it_serves_conflicts_adjustments_and_the_check_to_staff_only(diverged: SimpleNamespace, settings: Any) -> None:
    settings.EXCHANGE = diverged.ex.config
    ReconcileWorker(diverged.ex.config, limits={}).run_once()
    diverged.replicator.drain()
    client = TestClient(router)

    conflicts = client.get("/reconcile/conflicts", user=STAFF)
    assert conflicts.status_code == 200
    (conflict,) = conflicts.json()["conflicts"]
    assert conflict["orderId"] == diverged.divergence.order_ids[0]
    assert conflict["kind"] == "duplicate_fill"
    assert conflict["compensations"] and conflict["compensations"][0]["execType"] == "H"

    west = diverged.ex.config.regions[1]
    adjustments = client.get(f"/reconcile/adjustments?region={west}", user=STAFF).json()
    assert adjustments["region"] == west
    assert {t["account"] for t in adjustments["totals"]} >= {"alice"}
    assert all(isinstance(a["amount"], str) for a in adjustments["adjustments"])

    assert client.post("/history/check", user=STAFF).json() == {"ok": True, "violations": [], "counts": {}}
    bad = client.get("/reconcile/conflicts?region=mars-1", user=STAFF)
    assert bad.status_code == 400 and bad.json()["error"] == "unknown_region"
    assert client.get("/reconcile/conflicts?limit=abc", user=STAFF).json()["error"] == "bad_limit"
    assert client.get("/reconcile/conflicts", user=TRADER).status_code == 403
    assert client.post("/history/check", user=TRADER).status_code == 403
