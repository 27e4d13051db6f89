"""The real-AWS additions to provisioning: the plan, alarms against moto, bootstrap unchanged."""

from __future__ import annotations

from typing import Any

from tests.conftest import make_config
from trading import aws
from trading.provision import alarm_specs, bootstrap, ensure_alarms, plan


def test_it_plans_global_tables_and_alarms_for_real_aws() -> None:
    steps = plan(make_config(), real_aws=True)
    assert any("Global Table exchange-orders" in s and "replicas in eu-west-1" in s for s in steps)
    assert any("exchange-sequences" in s and "regional" in s for s in steps)
    assert any("alarm exchange-us-east-1-dlq-not-empty" in s for s in steps)
    assert any("orders-replication-to-eu-west-1" in s for s in steps)


def test_it_plans_the_local_resources_against_an_endpoint() -> None:
    steps = plan(make_config(), real_aws=False)
    assert not any("Global Table" in s or "alarm" in s for s in steps)


def test_it_creates_the_alarms_once_and_updates_them_after(aws_resources: Any) -> None:
    first: list[str] = []
    second: list[str] = []
    ensure_alarms(aws_resources, say=first.append)
    ensure_alarms(aws_resources, say=second.append)
    assert all(line.endswith("created") for line in first)
    assert all(line.endswith("updated") for line in second)
    names = {a["AlarmName"] for a in aws.client("cloudwatch", "us-east-1").describe_alarms()["MetricAlarms"]}
    assert {s.name for s in alarm_specs(aws_resources) if s.region == "us-east-1"} <= names


def test_it_keeps_bootstrap_against_moto_as_it_was(aws_resources: Any) -> None:
    said: list[str] = []
    bootstrap(aws_resources, say=said.append)  # a second run: everything exists
    assert said and all(line.endswith("exists") for line in said)
    assert not any("alarm" in line or "replica" in line for line in said)
