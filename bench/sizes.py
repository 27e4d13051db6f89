"""How much each section measures: the full run and the smoke sizes the test suite uses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    floor_ops: int = 150
    ingest_ops: int = 150  # per concurrency level, split over the threads
    o2b_rates: tuple[int, ...] = (20, 50, 100)
    o2b_seconds: float = 1.5
    # A p99 needs samples: a slow rate runs longer (20 orders/s: 5 s), never fewer orders.
    o2b_min_orders: int = 100
    fanout_clients: int = 200
    fanout_rate: int = 100
    fanout_seconds: float = 30.0
    fanout_multi_seconds: float = 8.0
    banner_trials: int = 20
    reconcile_sizes: tuple[int, ...] = (10_000, 20_000)
    reconcile_repeats: int = 5
    browser_rate: int = 200
    browser_seconds: float = 20.0
    import_samples: int = 3
    settle_s: float = 20.0
    banner_timeout_s: float = 5.0
    idle_s: float = 3.0
    matcher_orders: int = 1_000_000
    matcher_resting: int = 100_000


SMOKE = Sizes(
    floor_ops=8,
    ingest_ops=8,
    o2b_rates=(5,),
    o2b_seconds=1.0,
    o2b_min_orders=1,
    fanout_clients=4,
    fanout_rate=20,
    fanout_seconds=1.5,
    fanout_multi_seconds=1.0,
    banner_trials=1,
    reconcile_sizes=(200, 400),
    reconcile_repeats=1,
    browser_rate=20,
    browser_seconds=1.5,
    import_samples=1,
    settle_s=8.0,
    banner_timeout_s=3.0,
    idle_s=0.5,
    matcher_orders=20_000,
    matcher_resting=5_000,
)

