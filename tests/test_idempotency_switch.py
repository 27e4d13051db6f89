"""The game-day switch: with idempotency off, a retry becomes a duplicate, counted in red."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from exchange_ui.runtime import Runtime, set_runtime
from tests.conftest import order_payload, wait_for
from trading.actions import Exchange, submit_order
from trading.fragments import render_dashboard_frame

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def runtime(aws_resources: Any) -> Iterator[Runtime]:
    built = Runtime.build(aws_resources)
    built.plane.install()
    set_runtime(built)
    yield built
    built.runner.close()
    built.plane.uninstall()
    set_runtime(None)


def test_it_makes_a_retry_a_second_order_when_idempotency_is_off(aws_resources: Any) -> None:
    ex = Exchange(config=dataclasses.replace(aws_resources, idempotency=False))
    first, created_first = submit_order(ex, "alice", order_payload(), "retry-1")
    second, created_second = submit_order(ex, "alice", order_payload(), "retry-1")
    assert created_first and created_second
    assert first.order_id != second.order_id
    assert first.idempotency_key == second.idempotency_key == "retry-1"
    assert first.simulation_seed == second.simulation_seed  # the same order, twice


def test_it_turns_idempotency_off_only_while_a_tagged_experiment_runs(runtime: Runtime) -> None:
    ex = runtime.exchange
    assert ex.idempotent()
    runtime.runner.start()
    run = runtime.runner.submit({"template": "cpu-spike", "duration": "PT30S", "idempotency": "off"})
    wait_for(lambda: not ex.idempotent(), message="idempotency off while the CPU spike runs")
    one, _ = submit_order(ex, "alice", order_payload(), "spike-retry")
    two, created = submit_order(ex, "alice", order_payload(), "spike-retry")
    assert created and one.order_id != two.order_id

    runtime.catch_up()
    metrics = runtime.metrics()
    assert metrics["duplicate_orders"] == 1 and metrics["idempotency"] is False
    frame = render_dashboard_frame([{"type": "metrics", "region": "global", "ts": 0, "data": metrics}], seq=1, resync=False)
    assert 'class="value dup"' in frame and "idempotency off" in frame

    runtime.runner.stop(run["id"])
    wait_for(lambda: ex.idempotent(), message="idempotency back on after the stop")
    again, created_again = submit_order(ex, "alice", order_payload(), "spike-retry-2")
    replay, created_replay = submit_order(ex, "alice", order_payload(), "spike-retry-2")
    assert created_again and not created_replay and replay.order_id == again.order_id


def test_it_refuses_an_idempotency_option_that_is_not_on_or_off(runtime: Runtime) -> None:
    from faults.templates import TemplateInvalid

    with pytest.raises(TemplateInvalid) as caught:
        runtime.runner.submit({"template": "cpu-spike", "idempotency": "maybe"})
    assert "idempotency" in caught.value.errors


@pytest.mark.parametrize(("idempotency", "duplicates"), [(True, 0), (False, 1)])
def test_it_has_synthetic_clients_retry_an_order_that_never_settled(aws_resources: Any, idempotency: bool, duplicates: int) -> None:
    from decimal import Decimal

    from trading.synthetic import SyntheticTraders, intents

    ex = Exchange(config=dataclasses.replace(aws_resources, idempotency=idempotency))
    traders = SyntheticTraders(ex, Decimal("1"), seed=7, fill_timeout_s=0.0)
    intent = next(intents(ex.config, 7))
    traders.submit(intent)  # no worker runs: the order never settles, the client times out
    assert len(traders.waiting) == 1
    traders.retry_timed_out()
    assert traders.retried == 1 and traders.duplicates == duplicates
    traders.retry_timed_out()  # one retry per order, never a storm
    assert traders.retried == 1
