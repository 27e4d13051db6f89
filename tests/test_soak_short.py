"""A short seeded game day, as `make soak` runs it: every built-in experiment on a
schedule from the seed while synthetic orders flow, then check_history must hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from exchange_ui.management.commands.soak import game_day_schedule, overlaps

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ["az-loss", "region-outage", "partition", "dynamodb-throttle", "cpu-spike", "latency", "redis-failover"]


def test_it_derives_the_same_schedule_from_the_same_seed() -> None:
    first = game_day_schedule(42, 600, TEMPLATES)
    assert first == game_day_schedule(42, 600, list(reversed(TEMPLATES)))
    assert first != game_day_schedule(43, 600, TEMPLATES)
    assert sorted(slot.template for slot in first) == sorted(TEMPLATES)
    for slot in first:
        assert 0 <= slot.start_s and slot.end_s <= 600 and slot.duration_s >= 3


def test_it_overlaps_experiments_where_the_seed_says_so() -> None:
    assert any(overlaps(game_day_schedule(seed, 60, TEMPLATES)) for seed in range(5))


def test_it_keeps_every_invariant_through_a_short_game_day(tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    env = {**os.environ, "EXCHANGE_VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "exchange_ui.settings"}
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "soak", "--seed", "7", "--orders", "40", "--rate", "4", "--json", str(report_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    print(done.stdout)
    assert "soak: seed 7" in done.stdout
    report = json.loads(report_path.read_text())
    counts = report["counts"]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    assert report["ok"] and not report["violations"]
    assert counts["accepted_orders_lost"] == 0
    assert counts["double_fills_left"] == 0
    assert counts["regions_diverging_items"] == 0
    assert counts["accepted"] + counts["refused_after_retries"] == 40
    assert sorted(slot["template"] for slot in report["schedule"]) == sorted(TEMPLATES)
    assert all("error" not in run for run in report["experiments"]), report["experiments"]
    # Each process's resident memory while the orders went in and settled: the soak's and
    # one moto server per region.
    memory = report["memory_mb"]
    assert set(memory) == {"soak process", "moto us-east-1", "moto eu-west-1"}, memory
    assert all(0 < m["start"] <= m["peak"] and m["end"] <= m["peak"] for m in memory.values()), memory
    assert "memory (resident MB" in done.stdout
    # The reconcile worker's retained state, sampled while the orders went in (a stream this
    # short spans less than four horizons: reported, not judged).
    retained = report["reconcile_retained"]
    assert retained["flat"] is None and retained["samples"] >= 2 and retained["entries"]["peak"] > 0
    assert "reconcile worker (horizon 60 s)" in done.stdout


class Worker:
    """A reconcile worker's counters as RetainedWatch reads them, set by the test."""

    horizon_ms = 60_000
    retire_every_ms = 6_000
    retired_total = late_records_dropped = restored_total = 0

    def __init__(self, holds: int, stream_ms: int):
        self.holds = holds
        self.stream_ms = stream_ms

    def retained(self) -> dict[str, int]:
        keys = ("copies", "fills", "tombstones", "held_in", "written", "accounts", "openings", "pending")
        return {"orders": self.holds, **{key: 0 for key in keys}}

    def held_orders(self) -> dict[str, int]:
        return {"recent": self.holds}

    def measured(self, size: object) -> int:
        return self.holds * 100


def test_it_fails_the_soak_when_the_settled_reconcile_worker_holds_more_than_its_window() -> None:
    from types import SimpleNamespace

    from exchange_ui.management.commands.soak import RetainedWatch

    # 10,000 orders at 20/s: their last writes 50 ms apart, the stream ending at 500 s.
    orders = {f"ORDER#O{n}": {"orderId": f"O{n}", "updatedAt": 50 * n} for n in range(10_000)}
    history = SimpleNamespace(regions=("us-east-1",), tables={"us-east-1": {"orders": orders, "trades": {}}})
    for holds, bounded in ((10_000, False), (2_600, True)):
        worker = Worker(holds, stream_ms=500_000)
        watch = RetainedWatch(worker, lambda: 1.0, window_s=500)
        watch.sample(deep=True)
        watch.mark_stream_end()
        verdict = watch.judge(history)
        assert verdict["orders_in_window"] == 2_519  # the last 126 s: two horizons and a step
        assert verdict["flat"] is bounded, verdict
