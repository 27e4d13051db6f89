"""schemathesis over the OpenAPI document the real app serves: every operation, as a
trader and as staff, bounded examples. No input yields a 5xx, and a response whose
status the document declares matches the declared schema."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from exchange_ui.runtime import Runtime, set_runtime
from faults.runner import set_runner
from trading.models import ApiToken

pytestmark = pytest.mark.django_db

# Bounded: ~15 operations x 2 personas x this many examples stays well under a minute.
MAX_EXAMPLES = 8
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.content_type_conformance,
]


@pytest.fixture
def fuzz_runtime(aws_resources: Any) -> Iterator[Runtime]:
    # Built, not started: the API reads and writes the real (moto) tables, and the
    # fault runner accepts experiments without turning faults on under the fuzzer.
    runtime = Runtime.build(aws_resources)
    set_runtime(runtime)
    set_runner(runtime.runner)
    yield runtime
    set_runner(None)
    set_runtime(None)


@pytest.fixture
def tokens(fuzz_runtime: Runtime) -> dict[str, str]:
    users = get_user_model()
    alice = users.objects.create_user("alice", password="alice-pass-123")
    ops = users.objects.create_user("ops", password="ops-pass-123", is_staff=True)
    return {"trader": ApiToken.issue(alice), "staff": ApiToken.issue(ops)}


@pytest.fixture
def api_schema(tokens: dict[str, str]) -> Any:
    from exchange_ui.wsgi import application

    # The document as the app serves it (it wants a caller, like every other page).
    return schemathesis.openapi.from_wsgi(
        "/api/openapi.json", application, headers={"Authorization": f"Bearer {tokens['staff']}"}
    )


def exercise(operation: Any, mode: Any, tokens: dict[str, str]) -> None:
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def each(case: Any) -> None:
        # Each generated request is sent as the trader and as the operator.
        for persona in ("trader", "staff"):
            headers = {**(case.headers or {}), "Authorization": f"Bearer {tokens[persona]}"}
            response = case.call(headers=headers)
            assert response.status_code < 500, (
                f"{persona}: {case.method} {case.formatted_path} -> {response.status_code} {response.text[:400]}"
            )
            case.validate_response(response, checks=CHECKS, headers=headers)

    each()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_it_never_answers_5xx_and_matches_the_declared_schema(api_schema: Any, tokens: dict[str, str], mode: Any) -> None:
    # The schemathesis pytest plugin's lazy loader does not run on this pytest, so each
    # operation gets its own hypothesis run here; a failure names the operation.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert operations
    for operation in operations:
        try:
            exercise(operation, mode, tokens)
        except Exception as failure:
            raise AssertionError(f"{operation.method.upper()} {operation.path} ({mode.value}): {failure}") from failure


def test_it_serves_a_document_that_covers_every_route(api_schema: Any) -> None:
    operations = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert ("POST", "/api/orders") in operations
    assert ("GET", "/api/experiments/{experiment_id}") in operations
    assert len(operations) >= 15


def order_bodies() -> Any:
    """Orders a trader would plausibly send: on and off the grid, known and unknown regions."""
    qty = st.one_of(st.integers(1, 2_000_000).map(lambda lots: str(Decimal(lots) * Decimal("0.0001"))), st.text(max_size=8))
    price = st.one_of(st.integers(1, 10**9).map(lambda ticks: str(Decimal(ticks) * Decimal("0.01"))), st.decimals(allow_nan=True).map(str))
    return st.fixed_dictionaries(
        {"symbol": st.sampled_from(["BTC-USD", "ETH-USD", "NOPE"]), "side": st.sampled_from(["BUY", "SELL", "buy"]), "qty": qty, "price": price},
        optional={"region": st.sampled_from(["us-east-1", "eu-west-1", "mars-1", ""])},
    )


def test_it_accepts_or_refuses_plausible_orders_without_5xx_and_replays_them(api_schema: Any, tokens: dict[str, str]) -> None:
    operation = api_schema["/api/orders"]["POST"]
    seen: set[int] = set()

    @settings(max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(), body=order_bodies(), key=st.text("abcdefghijklmnop0123456789-", min_size=1, max_size=40))
    def each(case: Any, body: dict[str, Any], key: str) -> None:
        case.body = body
        headers = {"Authorization": f"Bearer {tokens['trader']}", "Idempotency-Key": key}
        first = case.call(headers=headers)
        assert first.status_code in {200, 201, 400, 422}, (body, first.status_code, first.text[:300])
        case.validate_response(first, checks=CHECKS, headers=headers)
        seen.add(first.status_code)
        if first.status_code in {200, 201}:
            again = case.call(headers=headers)
            assert again.status_code == 200 and again.json()["order_id"] == first.json()["order_id"]

    each()
    assert 201 in seen and 400 in seen, seen


def test_it_starts_and_stops_every_builtin_experiment_through_the_api(api_schema: Any, tokens: dict[str, str], fuzz_runtime: Runtime) -> None:
    operation = api_schema["/api/experiments"]["POST"]
    template_ids = [t["id"] for t in fuzz_runtime.runner.templates()]

    @settings(max_examples=len(template_ids) * 2, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(), template=st.sampled_from(template_ids), duration=st.sampled_from(["PT1S", "PT5M", "P1D", "PT0S", "soon"]))
    def each(case: Any, template: str, duration: str) -> None:
        case.body = {"template": template, "duration": duration}
        headers = {"Authorization": f"Bearer {tokens['staff']}"}
        response = case.call(headers=headers)
        assert response.status_code in {201, 400}, (case.body, response.status_code, response.text[:300])
        case.validate_response(response, checks=CHECKS, headers=headers)
        if response.status_code == 201:
            stop = api_schema["/api/experiments/{experiment_id}/stop"]["POST"]
            stopped = stop.Case(path_parameters={"experiment_id": response.json()["id"]}).call(headers=headers)
            assert stopped.status_code == 200, stopped.text[:300]

    each()
