"""The runtime's game-day clients act on partitions, never on outages."""

from __future__ import annotations

from typing import Any

from exchange_ui.runtime import Runtime
from faults.experiment import Partition, RegionDown
from tests.conftest import make_config


def test_it_sees_a_partition_between_healthy_regions_but_not_an_outage() -> None:
    runtime = Runtime.build(make_config(), with_mirror=False)
    plane: Any = runtime.plane
    assert runtime.cut_pairs() == []
    plane.apply("cut", [Partition("us-east-1", "eu-west-1")])
    assert runtime.cut_pairs() == [("us-east-1", "eu-west-1")]
    plane.remove("cut")
    plane.apply("down", [RegionDown("eu-west-1")])
    # Replication is cut by the outage too, but a client cannot fail over into a dead
    # region: that is not a partition for the game-day clients.
    assert plane.partitioned("us-east-1", "eu-west-1")
    assert runtime.cut_pairs() == []
    plane.clear()
