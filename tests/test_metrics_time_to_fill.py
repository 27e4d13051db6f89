"""Time-to-fill is the engine's delay, not the market's: accept to the engine's first decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trading.metrics import fill_samples

REGION = "us-east-1"


@dataclass
class Record:
    region: str
    new_image: dict[str, Any] | None
    old_image: dict[str, Any] | None


def order(status: str, updated_ms: int, region: str = REGION) -> dict[str, Any]:
    return {"pk": "ORDER#o-1", "region": region, "status": status, "createdAt": 1_000, "updatedAt": updated_ms}


def test_it_times_a_simfill_order_from_accept_to_its_final_status() -> None:
    records = [Record(REGION, order("FILLED", 1_250), order("ACCEPTED", 1_000))]
    assert fill_samples(records) == [(REGION, 1_250, 250.0)]


def test_it_times_a_resting_order_to_the_moment_it_rests_not_to_its_later_fill() -> None:
    records = [
        Record(REGION, order("OPEN", 1_040), order("ACCEPTED", 1_000)),
        # Twenty seconds later a counterparty arrives: the wait was the market's.
        Record(REGION, order("FILLED", 21_000), order("OPEN", 1_040)),
    ]
    assert fill_samples(records) == [(REGION, 1_040, 40.0)]


def test_it_counts_nothing_for_a_replica_or_an_order_still_accepted() -> None:
    records = [
        Record("eu-west-1", order("FILLED", 1_300), order("ACCEPTED", 1_000)),
        Record(REGION, order("ACCEPTED", 1_000), None),
    ]
    assert fill_samples(records) == []
