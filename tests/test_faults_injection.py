"""Injected faults through the one AWS door, against the real moto server."""

from __future__ import annotations

import dataclasses

import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from faults.experiment import Latency, Partition, RedisFailover, Throttle
from faults.injection import FaultPlane
from faults.runner import ExperimentRunner
from trading import aws
from trading.actions import Exchange, RegionUnavailable, submit_order
from trading.store import to_attrs
from tests.conftest import make_config, order_payload, wait_for

ROLE_TARGET = {"resourceType": "aws:iam:role", "resourceArns": ["arn:aws:iam::000000000000:role/exchange-app"]}


class ExchangeOnly:
    """The runtime as the fault plane sees it, without workers."""

    def __init__(self, exchange: Any):
        self.exchange = exchange
        self.config = exchange.config
        self.workers: dict[str, Any] = {}

    def stop_az(self, az: str) -> None:
        pass

    def start_az(self, az: str) -> None:
        pass


@pytest.fixture
def plane(exchange: Any) -> Iterator[FaultPlane]:
    installed = FaultPlane(exchange.config, ExchangeOnly(exchange), seed=1).install()
    yield installed
    installed.uninstall()


@pytest.fixture
def runner(plane: FaultPlane, exchange: Any, published: list[dict[str, Any]]) -> Iterator[ExperimentRunner]:
    started = ExperimentRunner(plane, exchange.config, tick_s=0.05, seed=1).start()
    yield started
    started.close()


def throttle_template(percentage: int) -> dict[str, Any]:
    return {
        "region": "us-east-1",
        "description": "throttle every DynamoDB call",
        "targets": {"role": ROLE_TARGET},
        "actions": {
            "throttle": {
                "actionId": "aws:fis:inject-api-throttle-error",
                "parameters": {"duration": "PT30S", "service": "dynamodb", "percentage": str(percentage)},
                "targets": {"Roles": "role"},
            }
        },
        "stopConditions": [{"source": "none"}],
    }


def put_probe(region: str = "us-east-1") -> Any:
    return aws.client("dynamodb", region).put_item(
        TableName="exchange-sequences", Item=to_attrs({"pk": "PROBE#1", "n": 1})
    )


def action_status(runner: ExperimentRunner, experiment_id: str, action: str) -> str:
    return str(runner.get(experiment_id)["actions"][action]["state"]["status"])


def test_it_throttles_dynamodb_at_100_percent_after_the_sdk_retries(runner: ExperimentRunner, plane: FaultPlane) -> None:
    experiment = runner.submit(throttle_template(100))
    wait_for(lambda: action_status(runner, experiment["id"], "throttle") == "running", message="throttle running")
    with pytest.raises(ClientError) as caught:
        put_probe()
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # trading.aws sets retries max_attempts=4: four retries after the first attempt.
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 3  # 4 attempts in all (total_max_attempts)
    assert plane.injected["throttle"] == 4
    put_probe("eu-west-1")  # another region is untouched
    runner.stop(experiment["id"])
    assert put_probe()["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_it_lets_every_call_through_at_0_percent(plane: FaultPlane) -> None:
    plane.apply("zero", [Throttle("us-east-1", "dynamodb", frozenset(), 0)])
    for _ in range(5):
        assert put_probe()["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert plane.injected["throttle"] == 0


def test_it_throttles_the_same_calls_for_the_same_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        plane = FaultPlane(make_config(), seed=seed)
        plane.apply("half", [Throttle("us-east-1", "dynamodb", frozenset({"PutItem"}), 50)])
        return [plane.before_send("dynamodb", "us-east-1", "PutItem", None) is not None for _ in range(40)]

    assert pattern(3) == pattern(3)
    assert 5 < sum(pattern(3)) < 35
    plane = FaultPlane(make_config(), seed=3)
    plane.apply("half", [Throttle("us-east-1", "dynamodb", frozenset({"PutItem"}), 100)])
    assert plane.before_send("dynamodb", "us-east-1", "GetItem", None) is None  # another operation


def test_it_takes_a_region_down_so_ingest_refuses_it(runner: ExperimentRunner, plane: FaultPlane, exchange: Any) -> None:
    experiment = runner.submit({"template": "region-outage", "duration": "PT30S"})
    wait_for(lambda: not exchange.region_up("us-east-1"), message="us-east-1 down")
    assert not exchange.az_up("us-east-1a")
    assert exchange.region_up("eu-west-1")
    # Health-checked routing: an order aimed at the down region is rerouted at once.
    rerouted, created = submit_order(exchange, "alice", order_payload(region="us-east-1"), "k-down-0")
    assert created and rerouted.region == "eu-west-1"
    assert rerouted.history[0].note == "rerouted from us-east-1 to eu-west-1"
    # A market that may not reroute: refused at once (503 with Retry-After), nothing written.
    pinned = Exchange(config=dataclasses.replace(exchange.config, reroute=False))
    pinned.region_up = exchange.region_up
    with pytest.raises(RegionUnavailable):
        submit_order(pinned, "alice", order_payload(region="us-east-1"), "k-down-1")
    # Any call that still reaches the region fails as a dead endpoint would, after retries.
    started = time.monotonic()
    with pytest.raises(ClientError):
        exchange.stores["us-east-1"].orders.get("O-any")
    assert time.monotonic() - started < 20
    assert plane.injected["region_down"] >= 4
    order, created = submit_order(exchange, "alice", order_payload(region="eu-west-1"), "k-up-1")
    assert created and order.region == "eu-west-1"
    stopped = runner.stop(experiment["id"])
    assert stopped["state"]["status"] == "stopped"
    assert exchange.region_up("us-east-1")
    order, created = submit_order(exchange, "alice", order_payload(region="us-east-1"), "k-down-1")
    assert created and order.status == "ACCEPTED"


def test_it_partitions_a_pair_of_regions_while_the_partition_runs(runner: ExperimentRunner, plane: FaultPlane) -> None:
    assert not plane.partitioned("us-east-1", "eu-west-1")
    experiment = runner.submit({"template": "partition", "duration": "PT30S"})
    wait_for(lambda: plane.partitioned("eu-west-1", "us-east-1"), message="partitioned")
    assert plane.region_up("us-east-1") and plane.region_up("eu-west-1")
    assert put_probe()["ResponseMetadata"]["HTTPStatusCode"] == 200
    runner.stop(experiment["id"])
    assert not plane.partitioned("us-east-1", "eu-west-1")


def test_it_adds_latency_to_the_calls_in_the_region(plane: FaultPlane) -> None:
    plane.apply("slow", [Latency("us-east-1", 250, 100)])
    started = time.monotonic()
    put_probe()
    assert time.monotonic() - started >= 0.25
    assert plane.injected["latency"] == 1
    plane.remove("slow")
    plane.apply("other", [Latency("eu-west-1", 5000, 100), Partition("eu-west-1", "us-east-1")])
    started = time.monotonic()
    put_probe()
    assert time.monotonic() - started < 2


def test_it_calls_the_redis_failover_slot_once_per_interruption() -> None:
    plane = FaultPlane(make_config())
    dropped: list[tuple[str, str]] = []
    plane.redis_failover = lambda region, az: dropped.append((region, az))
    plane.apply(("EXP", "interrupt"), [RedisFailover("us-east-1", "us-east-1a")])
    assert dropped == [("us-east-1", "us-east-1a")]
    plane.remove(("EXP", "interrupt"))
    assert dropped == [("us-east-1", "us-east-1a")]
