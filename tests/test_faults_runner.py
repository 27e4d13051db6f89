"""The runner: stop conditions over live metrics, the stop-all lever, history, published states."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from faults.experiment import Alarm
from faults.injection import FaultPlane
from faults.runner import ExperimentNotFound, ExperimentRunner
from faults.templates import TemplateInvalid
from tests.conftest import make_config, wait_for

ALARM = Alarm("test-accept-slow", "time_to_accept_p99_ms", Decimal("100"), 0.3)


@pytest.fixture
def live_metrics() -> dict[str, Any]:
    return {"time_to_accept_p99_ms": 20}


@pytest.fixture
def runner(live_metrics: dict[str, Any], published: list[dict[str, Any]]) -> Iterator[ExperimentRunner]:
    config = make_config()
    started = ExperimentRunner(
        FaultPlane(config), config, metrics=lambda: live_metrics, alarms=[ALARM], tick_s=0.05, seed=1
    ).start()
    yield started
    started.close()


def waiting(seconds: int = 30, alarm: bool = True) -> dict[str, Any]:
    return {
        "region": "us-east-1",
        "description": "wait under watch",
        "actions": {"wait": {"actionId": "aws:fis:wait", "parameters": {"duration": f"PT{seconds}S"}}},
        "stopConditions": [{"source": "aws:cloudwatch:alarm", "value": ALARM.arn("us-east-1")}]
        if alarm
        else [{"source": "none"}],
    }


def status(runner: ExperimentRunner, experiment_id: str) -> str:
    return str(runner.get(experiment_id)["state"]["status"])


def test_it_stops_an_experiment_when_its_stop_condition_alarms(
    runner: ExperimentRunner, live_metrics: dict[str, Any], published: list[dict[str, Any]]
) -> None:
    experiment = runner.submit(waiting())
    wait_for(lambda: status(runner, experiment["id"]) == "running", message="running")
    live_metrics["time_to_accept_p99_ms"] = 900
    wait_for(lambda: status(runner, experiment["id"]) == "stopped", message="stopped by the alarm")
    state = runner.get(experiment["id"])
    assert "test-accept-slow" in state["state"]["reason"]
    assert state["actions"]["wait"]["state"]["status"] == "stopped"
    last = [e for e in published if e["type"] == "experiment.state"][-1]
    assert last["region"] == "us-east-1"
    assert last["data"]["id"] == experiment["id"]
    assert last["data"]["state"]["status"] == "stopped"
    assert {"subject", "name", "from", "to", "reason", "at_s"} <= set(last["data"]["changes"][0])


def test_it_refuses_a_malformed_template_and_runs_nothing(runner: ExperimentRunner) -> None:
    with pytest.raises(TemplateInvalid) as caught:
        runner.submit({"description": "no actions", "stopConditions": [{"source": "none"}]})
    assert "actions" in caught.value.errors
    with pytest.raises(TemplateInvalid) as caught:
        runner.submit({"template": "no-such-thing"})
    assert "template" in caught.value.errors
    with pytest.raises(TemplateInvalid) as caught:
        runner.submit({"template": "az-loss", "duration": "forever"})
    assert "duration" in caught.value.errors
    assert runner.history() == []


def test_it_stops_everything_with_one_lever_and_keeps_the_history(runner: ExperimentRunner) -> None:
    first = runner.submit(waiting(alarm=False))
    second = runner.submit({"template": "partition", "duration": "PT1M"})
    wait_for(lambda: all(status(runner, e["id"]) == "running" for e in (first, second)), message="both running")
    wait_for(lambda: runner.plane.partitioned("us-east-1", "eu-west-1"), message="partition applied")
    stopped = runner.stop_all()
    assert {s["id"] for s in stopped} == {first["id"], second["id"]}
    assert all(s["state"]["status"] == "stopped" for s in stopped)
    assert not runner.plane.partitioned("us-east-1", "eu-west-1")
    assert runner.plane.active() == {}
    assert [e["id"] for e in runner.history()] == [second["id"], first["id"]]
    assert runner.history()[0]["template_id"] == "partition"
    assert runner.history()[0]["fidelity"]["level"] == "faithful"
    with pytest.raises(ExperimentNotFound):
        runner.get("EXPnope")


def test_it_lists_the_builtins_with_their_blast_radius(runner: ExperimentRunner) -> None:
    templates = {t["id"]: t for t in runner.templates()}
    assert templates["az-loss"]["blast_radius"]["workers"] == ["us-east-1a"]
    assert templates["region-outage"]["fidelity"]["level"] == "approximate"
    assert runner.preview({"template": "cpu-spike"})["workers"] == ["us-east-1a", "us-east-1b"]
