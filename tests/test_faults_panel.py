"""The experiment panel as an operator uses it: staff only, preview, start, stop, stop all, live frames."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from faults import panel
from faults.injection import FaultPlane
from faults.runner import ExperimentRunner, set_runner
from tests.conftest import make_config, wait_for
from trading import events as ev
from trading.fragments import coalesce, render_dashboard_frame

pytestmark = pytest.mark.django_db


@pytest.fixture
def runner() -> Iterator[ExperimentRunner]:
    config = make_config()
    started = ExperimentRunner(FaultPlane(config), config, tick_s=0.05, seed=1, publish=lambda *a: None).start()
    set_runner(started)
    yield started
    set_runner(None)
    started.close()


def logged_in(username: str, staff: bool) -> Client:
    get_user_model().objects.create_user(username=username, password="x", is_staff=staff)
    client = Client()
    client.login(username=username, password="x")
    return client


@pytest.fixture
def ops() -> Client:
    return logged_in("ops", staff=True)


def test_it_sends_anonymous_visitors_to_log_in_and_refuses_traders(runner: ExperimentRunner) -> None:
    anonymous = Client().get("/experiments/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    trader = logged_in("alice", staff=False)
    assert trader.get("/experiments/").status_code == 403
    assert trader.post("/experiments/stop-all/").status_code == 403
    assert trader.post("/experiments/templates/dynamodb-throttle/start/").status_code == 403
    assert runner.history() == []


def test_it_lists_templates_with_fidelity_badges(runner: ExperimentRunner, ops: Client) -> None:
    page = ops.get("/experiments/").content.decode()
    assert "DynamoDB throttling" in page and "simulated only" in page and "real FIS" in page
    assert "Stop all experiments" in page


def test_it_previews_the_blast_radius_before_anything_runs(runner: ExperimentRunner, ops: Client) -> None:
    response = ops.get("/experiments/templates/az-loss/preview/?duration=PT30S")
    assert response.status_code == 200
    body = response.content.decode()
    assert "simfill-us-east-1a" in body and "Start experiment" in body and "30 s" in body
    assert runner.history() == []


def test_it_refuses_a_bad_duration_with_a_clear_message(runner: ExperimentRunner, ops: Client) -> None:
    response = ops.post("/experiments/templates/az-loss/start/", {"duration": "ten minutes"})
    assert response.status_code == 400
    assert "duration" in response.content.decode()
    assert runner.history() == []


def test_it_starts_stops_and_stops_all(runner: ExperimentRunner, ops: Client) -> None:
    started = ops.post("/experiments/templates/dynamodb-throttle/start/", {"duration": "PT1M"})
    assert started.status_code == 200 and "Started EXP" in started.content.decode()
    first = runner.history()[0]["id"]
    wait_for(lambda: runner.get(first)["state"]["status"] == "running", message="running")
    stopped = ops.post(f"/experiments/{first}/stop/")
    assert stopped.status_code == 200 and "stopped" in stopped.content.decode()
    ops.post("/experiments/templates/latency/start/", {"duration": "PT1M"})
    ops.post("/experiments/templates/cpu-spike/start/", {"duration": "PT1M"})
    result = ops.post("/experiments/stop-all/")
    assert "Stopped 2 experiments" in result.content.decode()
    assert runner.running() == []
    assert runner.plane.active() == {}


def test_it_pushes_the_latest_state_of_each_experiment_as_a_gantt(runner: ExperimentRunner) -> None:
    captured: list[dict] = []
    runner.publish = lambda kind, region, data: captured.append(ev.make_event(kind, region, data))
    experiment = runner.submit({"template": "az-loss", "duration": "PT30S"})
    wait_for(lambda: any(e["data"]["state"]["status"] == "running" for e in captured), message="running pushed")
    reduced, _ = coalesce(captured)
    states = [e for e in reduced if e["type"] == ev.EXPERIMENT_STATE]
    assert len(states) == 1 and states[0]["data"]["state"]["status"] == "running"
    frame = render_dashboard_frame(reduced, 1, False, staff=True)
    assert f'id="exp-{experiment["id"]}"' in frame and 'data-upsert-into="#experiment-list"' in frame
    assert "gantt-run state-running" in frame
    assert f'id="fault-window-{experiment["id"]}"' in frame
    assert "Fault injection active" in frame and "AZ us-east-1a down" in frame
    assert 'id="experiments-lever"' in frame


def test_it_draws_planned_and_actual_windows_on_one_scale() -> None:
    snapshot = {
        "id": "EXP1",
        "state": {"status": "running"},
        "creation_time": 0,
        "start_time": 1_000,
        "end_time": None,
        "blast_radius": {"duration_s": 60, "schedule": {"a": {"start_s": 0, "end_s": 30}, "b": {"start_s": 30, "end_s": 60}}},
        "actions": {
            "a": {"state": {"status": "completed"}, "start_time": 1_000, "end_time": 31_000, "duration_s": 30},
            "b": {"state": {"status": "running"}, "start_time": 31_000, "end_time": None, "duration_s": 30},
        },
    }
    picture = panel.timeline(snapshot, now_ms=46_000)
    a, b = picture["rows"]
    assert (a["plan_left"], a["plan_width"], a["run_left"], a["run_width"]) == (0, 50, 0, 50)
    assert (b["plan_left"], b["run_left"], b["run_width"]) == (50, 50, 25)
    assert picture["now_pct"] == 75
    assert panel.fault_window(snapshot) == {"id": "EXP1", "label": "EXP1", "start_ms": 1_000, "end_ms": None}
    assert panel.version({**snapshot, "state": {"status": "stopped"}}) > panel.version(snapshot)


def test_it_starts_the_cpu_spike_with_idempotency_off_from_the_panel(runner: ExperimentRunner, ops: Client) -> None:
    preview = ops.get("/experiments/templates/cpu-spike/preview/", {"duration": "PT1M", "idempotency": "off"})
    assert "Idempotency will be off" in preview.content.decode()
    ops.post("/experiments/templates/cpu-spike/start/", {"duration": "PT1M", "idempotency": "off"})
    run = runner.history()[0]
    wait_for(lambda: runner.plane.snapshot()["idempotency_off"], message="idempotency off while it runs")
    assert not runner.plane.idempotent()
    ops.post("/experiments/stop-all/")
    wait_for(lambda: runner.plane.idempotent(), message="idempotency back on")
    assert runner.get(run["id"])["state"]["status"] in {"stopped", "stopping"}


def test_it_says_why_an_experiment_past_the_cap_does_not_start(ops: Client) -> None:
    config = make_config(max_experiments=1)
    capped = ExperimentRunner(FaultPlane(config), config, tick_s=0.05, seed=1, publish=lambda *a: None).start()
    set_runner(capped)
    try:
        assert ops.post("/experiments/templates/latency/start/", {"duration": "PT1M"}).status_code == 200
        refused = ops.post("/experiments/templates/az-loss/start/", {"duration": "PT1M"})
        assert refused.status_code == 409
        body = refused.content.decode()
        assert 'id="preview-az-loss"' in body and "Not started" in body and "the most this exchange runs at once (1)" in body
        assert len(capped.history()) == 1
    finally:
        set_runner(None)
        capped.close()
