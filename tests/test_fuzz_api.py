"""schemathesis over the OpenAPI document the real app serves: every operation, as a
trader and as staff, bounded examples. No input yields a 5xx, and a response whose
status the document declares matches the declared schema."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

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
def api_schema(tokens: dict[str, str]) -> Iterator[Any]:
    from django.core import signals
    from django.db import close_old_connections

    from exchange_ui.wsgi import application

    # Called as a server would call it, the app closes "old" connections around each
    # request, and the test's open transaction makes PostgreSQL's look old: as Django's
    # test client does, keep the test's connection for the test.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        # The document as the app serves it (it wants a caller, like every other page).
        yield schemathesis.openapi.from_wsgi(
            "/api/openapi.json", application, headers={"Authorization": f"Bearer {tokens['staff']}"}
        )
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


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


# --- The input classes that once answered 500, each fuzzed over every operation that takes it:
# control characters (NUL among them: PostgreSQL refuses it in text) in any path, query or
# header parameter; integers in other scripts' digits; bodies over the upload limit; JSON
# nested without bound. Each answers a 4xx JSON error in the contract's shapes.

BODY_READERS = [("POST", "/api/orders"), ("POST", "/api/experiments"), ("POST", "/api/experiments/preview")]
EDGE_EXAMPLES = 60


def edge_settings(examples: int = EDGE_EXAMPLES) -> Any:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def staff_client(tokens: dict[str, str]) -> Any:
    from django.test import Client

    return Client(HTTP_AUTHORIZATION=f"Bearer {tokens['staff']}")


@pytest.fixture
def parameters(staff_client: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, parameter) for every parameter of every operation the document declares."""
    document = staff_client.get("/api/openapi.json").json()
    return [
        (method.upper(), path, parameter)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for parameter in operation.get("parameters", [])
    ]


def fill_path(path: str, value: str = "x", name: str | None = None) -> str:
    """The path with `name` set to `value` (quoted) and every other path parameter to "x"."""
    for found in re.findall(r"\{(\w+)\}", path):
        path = path.replace(f"{{{found}}}", quote(value if found == name else "x", safe=""))
    return path


def call(client: Any, method: str, url: str, body: bytes | str = b"", **headers: Any) -> Any:
    response = client.generic(method, url, data=body, content_type="application/json", **headers)
    assert response.status_code < 500, (method, url, response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), (method, url, response.status_code, response.content[:200])
    return response


def assert_error(response: Any, status: int, code: str | None = None, field: str | None = None) -> None:
    body = response.json()
    assert response.status_code == status, (status, response.status_code, body)
    if code is not None:
        assert body["error"] == code and isinstance(body["detail"], str) and body["detail"], body
    if field is not None:
        assert isinstance(body["errors"][field], list) and body["errors"][field], body


def with_control_character() -> Any:
    """Text holding at least one control character (Unicode Cc: NUL, C0, DEL, C1)."""
    return st.tuples(st.text(max_size=12), st.characters(categories=["Cc"]), st.text(max_size=12)).map("".join)


def test_it_refuses_a_control_character_in_any_parameter(parameters: list[tuple[str, str, dict[str, Any]]], staff_client: Any) -> None:
    strings = [p for p in parameters if p[2]["in"] in {"path", "query", "header"}]
    assert {p[2]["in"] for p in strings} == {"path", "query", "header"}

    @edge_settings(len(strings) * 6)
    @given(target=st.sampled_from(strings), text=with_control_character())
    def each(target: tuple[str, str, dict[str, Any]], text: str) -> None:
        method, path, parameter = target
        name, where = parameter["name"], parameter["in"]
        if where == "path":
            assert_error(call(staff_client, method, fill_path(path, text, name)), 400, "invalid_path")
        elif where == "query":
            assert_error(call(staff_client, method, f"{fill_path(path)}?{urlencode({name: text})}"), 400, field=name)
        else:
            header = "HTTP_" + name.upper().replace("-", "_")
            body = json.dumps({"symbol": "BTC-USD", "side": "BUY", "qty": "0.5000", "price": "50000.00"})
            assert_error(call(staff_client, method, fill_path(path), body, **{header: text}), 400, field=name)

    each()


def in_other_digits() -> Any:
    """A number written with at least one digit that is not ASCII 0-9 ("²", "١", "５", "Ⅻ")."""
    other = st.characters(categories=["Nd", "No", "Nl"]).filter(lambda ch: not ch.isascii())
    ascii_digits = st.text("0123456789", max_size=3)
    return st.tuples(ascii_digits, other, ascii_digits).map("".join)


def test_it_reads_a_count_in_ascii_digits_only(parameters: list[tuple[str, str, dict[str, Any]]], staff_client: Any) -> None:
    counts = [(method, path) for method, path, parameter in parameters if parameter["name"] == "limit"]
    assert len(counts) == 4, counts

    @edge_settings()
    @given(target=st.sampled_from(counts), text=in_other_digits(), plain=st.integers(1, 1000))
    def each(target: tuple[str, str], text: str, plain: int) -> None:
        method, path = target
        refused = call(staff_client, method, f"{path}?{urlencode({'limit': text})}")
        assert_error(refused, 400, "bad_limit" if "reconcile" in path else None, None if "reconcile" in path else "limit")
        assert call(staff_client, method, f"{path}?limit={plain}").status_code == 200

    each()


def test_it_answers_413_to_a_body_over_the_upload_limit(staff_client: Any, tokens: dict[str, str]) -> None:
    from django.conf import settings as django_settings

    limit = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    padding = st.sampled_from([" ", "[", "{", "x", "\x00", "é"])

    @edge_settings(30)
    @given(target=st.sampled_from(BODY_READERS), over=st.integers(1, 3 * limit), pad=padding, persona=st.sampled_from(["trader", "staff"]))
    def each(target: tuple[str, str], over: int, pad: str, persona: str) -> None:
        method, path = target
        head = json.dumps({"symbol": "BTC-USD", "side": "BUY", "qty": "1", "price": "1", "template": "partition", "pad": ""})[:-2]
        body = (head + pad * (limit + over)).encode()[: limit + over]
        response = call(staff_client, method, path, body, HTTP_AUTHORIZATION=f"Bearer {tokens[persona]}", HTTP_IDEMPOTENCY_KEY="big")
        if persona == "trader" and "experiments" in path:
            assert response.status_code == 403  # refused before the body is read
        else:
            assert_error(response, 413, "payload_too_large")

    each()


def nested(depth: int, brackets: str) -> str:
    """JSON nested `depth` deep, each level an array or an object as `brackets` says (cycled)."""
    opening = "".join('{"a": ' if brackets[i % len(brackets)] == "{" else "[" for i in range(depth))
    closing = "".join("}" if brackets[i % len(brackets)] == "{" else "]" for i in reversed(range(depth)))
    return opening + "1" + closing


def test_it_answers_400_to_json_nested_beyond_the_limit(staff_client: Any) -> None:
    from exchange_ui.api_input import MAX_JSON_DEPTH

    @edge_settings()
    @given(
        target=st.sampled_from(BODY_READERS),
        depth=st.one_of(st.integers(MAX_JSON_DEPTH + 1, 100), st.integers(100, 9000)),  # 9000 objects: 63 KB
        brackets=st.text("[{", min_size=1, max_size=4),
    )
    def each(target: tuple[str, str], depth: int, brackets: str) -> None:
        method, path = target
        response = call(staff_client, method, path, nested(depth, brackets), HTTP_IDEMPOTENCY_KEY="deep")
        assert_error(response, 400, field="__all__" if path == "/api/orders" else "body")

    each()


def test_it_counts_nesting_outside_strings_only(staff_client: Any) -> None:
    @edge_settings(30)
    @given(symbol=st.text('[]{}"\\a', min_size=40, max_size=2000))
    def each(symbol: str) -> None:
        # Brackets (and escaped quotes) inside a string are text: the order is refused for its
        # symbol, not for its nesting.
        body = json.dumps({"symbol": symbol, "side": "BUY", "qty": "0.5000", "price": "50000.00"})
        response = call(staff_client, "POST", "/api/orders", body, HTTP_IDEMPOTENCY_KEY="strings")
        assert_error(response, 400, field="symbol")
        assert "__all__" not in response.json()["errors"]

    each()
