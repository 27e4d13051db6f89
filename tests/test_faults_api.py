"""The experiments API as an operator drives it: bearer tokens, staff only, JSON errors, no 500s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ninja import NinjaAPI

from faults.api import router
from faults.injection import FaultPlane
from faults.runner import ExperimentRunner, set_runner
from tests.conftest import make_config, wait_for
from trading.auth import API_AUTH
from trading.models import ApiToken

# Mounted as the project mounts it: /api/experiments with the API's auth.
api = NinjaAPI(urls_namespace="faults-api-test")
api.add_router("/experiments", router, auth=API_AUTH)
urlpatterns = [path("api/", api.urls)]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


@pytest.fixture
def runner() -> Iterator[ExperimentRunner]:
    config = make_config()
    started = ExperimentRunner(FaultPlane(config), config, tick_s=0.05, seed=1).start()
    set_runner(started)
    yield started
    set_runner(None)
    started.close()


def client_for(username: str, staff: bool) -> Client:
    user = get_user_model().objects.create_user(username=username, password="x", is_staff=staff)
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)}")


@pytest.fixture
def ops() -> Client:
    return client_for("ops", staff=True)


@pytest.fixture
def alice() -> Client:
    return client_for("alice", staff=False)


def post(client: Client, url: str, body: Any) -> Any:
    return client.post(url, data=json.dumps(body) if not isinstance(body, (bytes, str)) else body, content_type="application/json")


def test_it_lists_the_builtin_templates_to_operators(runner: ExperimentRunner, ops: Client) -> None:
    response = ops.get("/api/experiments/templates")
    assert response.status_code == 200
    ids = [t["id"] for t in response.json()]
    assert "az-loss" in ids and "dynamodb-throttle" in ids
    assert all({"fidelity", "template", "blast_radius"} <= set(t) for t in response.json())


def test_it_runs_and_stops_an_experiment(runner: ExperimentRunner, ops: Client) -> None:
    response = post(ops, "/api/experiments", {"template": "partition", "duration": "PT1M"})
    assert response.status_code == 201
    experiment = response.json()
    assert experiment["state"]["status"] == "pending"
    assert experiment["blast_radius"]["partitions"] == [["eu-west-1", "us-east-1"]]
    url = f"/api/experiments/{experiment['id']}"
    wait_for(lambda: ops.get(url).json()["state"]["status"] == "running", message="running")
    stopped = ops.post(f"{url}/stop")
    assert stopped.status_code == 200
    assert stopped.json()["state"]["status"] == "stopped"
    assert stopped.json()["actions"]["pause-replication"]["state"]["status"] == "stopped"
    assert [e["id"] for e in ops.get("/api/experiments").json()] == [experiment["id"]]


def test_it_accepts_an_fis_template_body_and_stops_all(runner: ExperimentRunner, ops: Client) -> None:
    body = {
        "region": "us-east-1",
        "description": "wait",
        "actions": {"wait": {"actionId": "aws:fis:wait", "parameters": {"duration": "PT1M"}}},
        "stopConditions": [{"source": "none"}],
        "roleArn": "arn:aws:iam::123456789012:role/fis",
    }
    created = post(ops, "/api/experiments", body)
    assert created.status_code == 201
    response = ops.post("/api/experiments/stop-all")
    assert response.status_code == 200
    assert [e["state"]["status"] for e in response.json()["stopped"]] in (["stopped"], ["cancelled"])


def test_it_answers_a_malformed_template_with_field_errors(runner: ExperimentRunner, ops: Client) -> None:
    response = post(ops, "/api/experiments", {"description": "x", "actions": {"a": {"actionId": "aws:nope"}}})
    assert response.status_code == 400
    assert "actions.a.actionId" in response.json()["errors"]
    assert post(ops, "/api/experiments", b"{not json").status_code == 400
    assert runner.history() == []


def test_it_keeps_experiments_to_staff(runner: ExperimentRunner, alice: Client) -> None:
    for response in (
        alice.get("/api/experiments/templates"),
        alice.get("/api/experiments"),
        post(alice, "/api/experiments", {"template": "az-loss"}),
        alice.post("/api/experiments/stop-all"),
    ):
        assert response.status_code == 403
        assert response.json()["error"] == "forbidden"
    assert Client().get("/api/experiments").status_code == 401
    assert runner.history() == []


def test_it_answers_503_as_json_when_no_runner_runs(ops: Client) -> None:
    set_runner(None)
    response = ops.get("/api/experiments")
    assert response.status_code == 503
    assert response.json()["error"] == "fault_plane_unavailable"


def test_it_returns_404_for_an_unknown_experiment(runner: ExperimentRunner, ops: Client) -> None:
    assert ops.get("/api/experiments/EXPnothing").json()["error"] == "not_found"
    assert ops.post("/api/experiments/EXPnothing/stop").status_code == 404


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(JSONISH)
def test_it_never_answers_500_to_any_body(runner: ExperimentRunner, ops: Client, body: Any) -> None:
    response = post(ops, "/api/experiments", body)
    assert response.status_code in {201, 400}
    runner.stop_all()


def test_it_refuses_one_experiment_more_than_the_cap_with_409(ops: Client) -> None:
    config = make_config(max_experiments=2)
    capped = ExperimentRunner(FaultPlane(config), config, tick_s=0.05, seed=1).start()
    set_runner(capped)
    try:
        first = post(ops, "/api/experiments", {"template": "partition", "duration": "PT1M"})
        second = post(ops, "/api/experiments", {"template": "latency", "duration": "PT1M"})
        assert first.status_code == 201 and second.status_code == 201
        refused = post(ops, "/api/experiments", {"template": "az-loss", "duration": "PT1M"})
        assert refused.status_code == 409
        assert refused.json()["error"] == "too_many_experiments"
        assert refused.json()["running"] == 2 and refused.json()["limit"] == 2
        assert "EXCHANGE_MAX_EXPERIMENTS" in refused.json()["detail"]
        assert len(ops.get("/api/experiments").json()) == 2  # nothing queued for the refused one
        # Once one ends, there is room again.
        assert ops.post(f"/api/experiments/{first.json()['id']}/stop").status_code == 200
        assert post(ops, "/api/experiments", {"template": "az-loss", "duration": "PT1M"}).status_code == 201
    finally:
        set_runner(None)
        capped.close()


@pytest.mark.parametrize("digits", ["٥", "５", "²"])
def test_it_reads_template_numbers_in_ascii_digits_only(runner: ExperimentRunner, ops: Client, digits: str) -> None:
    # "٥" is a digit to Python's \d and int(); FIS reads 0-9 only.
    preview = "/api/experiments/preview"
    assert post(ops, preview, {"template": "partition", "duration": "PT5M"}).status_code == 200
    refused = post(ops, preview, {"template": "partition", "duration": f"PT{digits}M"})
    assert refused.status_code == 400 and refused.json()["errors"], refused.content
    cpu = next(t["template"] for t in ops.get("/api/experiments/templates").json() if t["id"] == "cpu-spike")

    def with_numbers(percent: str, selection: str) -> dict[str, Any]:
        body = json.loads(json.dumps(cpu))
        body["actions"]["stress-cpu"]["parameters"]["percent"] = percent
        body["targets"]["region-tasks"]["selectionMode"] = selection
        return body

    assert post(ops, preview, with_numbers("50", "COUNT(1)")).status_code == 200
    for percent, selection in ((f"{digits}0", "COUNT(1)"), ("50", f"COUNT({digits})")):
        refused = post(ops, preview, with_numbers(percent, selection))
        assert refused.status_code == 400 and refused.json()["errors"], (percent, selection, refused.content)
