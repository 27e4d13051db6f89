"""The ElastiCache failover on the real Redis: a trader's open dashboard loses its socket
when the server's Redis connections are killed, reconnects by itself and misses nothing."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis
from playwright.sync_api import Browser, Page, expect

from simfill.engine import OrderTerms, decide
from tests.conftest import ARTIFACTS, LiveServer, log_in, wait_for
from trading.config import Market
from trading.consumers import CLOSE_FAILOVER
from trading.domain import simulation_seed

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.xdist_group("redis")]

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
REDIS_PORT = urlparse(REDIS_URL).port or 6379
TRADER = "tina"  # LiveServer creates her
MARKET = Market(symbol="BTC-USD", home_region="us-east-1")
EXCHANGE_SEED = 1


class Api:
    """The JSON API with a staff bearer token."""

    def __init__(self, base: str, token: str):
        self.base = base
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")


class SessionApi:
    """The JSON API as the logged-in trader's browser session calls it (CSRF on unsafe methods)."""

    def __init__(self, page: Page, base: str):
        self.request = page.request
        self.base = base
        self.csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        response = self.request.fetch(
            self.base + path, method=method, data=body, headers={"X-CSRFToken": self.csrf, "Referer": self.base + "/", **(headers or {})}
        )
        return response.status, response.json()


@pytest.fixture(scope="module")
def failover_server() -> Iterator[LiveServer]:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError as error:
        pytest.fail(f"the real Redis at {REDIS_URL} is required: {error}")
    server = LiveServer()
    server.env["REDIS_URL"] = REDIS_URL  # channels-redis, and a failover that kills real connections
    server.env["EXCHANGE_SEED"] = str(EXCHANGE_SEED)  # filling_key predicts SimFill from it
    server.start()
    yield server
    server.stop()


def redis_ports_of(pid: int) -> set[int]:
    """The local ports of the process's TCP connections to Redis (from /proc, no extra package)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            match = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
        except OSError:
            continue
        if match:
            inodes.add(match.group(1))
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == REDIS_PORT:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def all_clients() -> list[dict[str, Any]]:
    client = redis.Redis.from_url(REDIS_URL)  # a fresh connection: a failover kills the old ones
    try:
        return client.client_list()
    finally:
        client.close()


def server_clients(server: LiveServer) -> list[dict[str, Any]]:
    """CLIENT LIST, narrowed to the server's own connections (others may share this Redis)."""
    assert server.process is not None
    listed = all_clients()
    ports = redis_ports_of(server.process.pid)
    return [c for c in listed if int(c["addr"].rsplit(":", 1)[1]) in ports]


def subscribed(clients: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in clients if int(c.get("sub", 0)) > 0 or "P" in c.get("flags", "")]


def filling_key(label: str, qty: str) -> str:
    """An idempotency key whose SimFill outcome (seeded by the order's identity) is a full fill."""
    terms = OrderTerms(side="BUY", qty=Decimal(qty), price=Decimal("50000.00"), tick=MARKET.tick, lot=MARKET.lot)
    for n in range(1000):
        key = f"failover-{label}-{uuid.uuid4().hex[:8]}-{n}"
        if decide(terms, simulation_seed(EXCHANGE_SEED, TRADER, MARKET.symbol, key)).final_status == "FILLED":
            return key
    raise AssertionError("no filling key found")


def submit(api: SessionApi, label: str, qty: str) -> dict[str, Any]:
    status, order = api.call(
        "POST", "/api/orders", {"symbol": "BTC-USD", "side": "BUY", "qty": qty, "price": "50000.00"}, {"Idempotency-Key": filling_key(label, qty)}
    )
    assert status == 201, order
    return order


def expect_filled_live(page: Page, api: SessionApi, order: dict[str, Any]) -> list[str]:
    """The order's row appears and turns Filled, and each of its trades reaches the tape, all pushed."""
    row = page.locator(f"#order-{order['order_id']}")
    expect(row).to_contain_text(order["qty"], timeout=10_000)
    expect(row.locator(".badge-filled")).to_be_visible(timeout=15_000)
    fills = wait_for(lambda: api.call("GET", f"/api/orders/{order['order_id']}")[1].get("fills"), timeout_s=10, message="the order's fills")
    trade_ids = [f["trade_id"] for f in fills]
    for trade_id in trade_ids:
        expect(page.locator(f"#tape-body #trade-{trade_id}")).to_be_visible(timeout=10_000)
    return trade_ids


def experiment_end(staff: Api, experiment_id: str) -> dict[str, Any] | None:
    status, experiment = staff.call("GET", f"/api/experiments/{experiment_id}")
    assert status == 200, experiment
    return experiment if experiment["state"]["status"] in {"completed", "stopped", "failed", "cancelled"} else None


def test_it_survives_a_redis_failover_with_the_page_reconnecting_and_losing_nothing(failover_server: LiveServer, browser: Browser) -> None:  # noqa: F811
    server = failover_server
    staff = Api(server.url, server.manage("create_api_token", "rolf", "--staff", "--create").strip())
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    log_in(page, server)
    trader = SessionApi(page, server.url)
    # Every change of the connection indicator, in order (a drop can be shorter than a poll),
    # and the code of every close of the socket.
    page.evaluate(
        """() => { const live = document.getElementById('live');
                   window.connectionTrail = [live.getAttribute('data-connected')];
                   new MutationObserver(() => window.connectionTrail.push(live.getAttribute('data-connected')))
                     .observe(live, {attributes: true, attributeFilter: ['data-connected']});
                   window.closeCodes = [];
                   live.addEventListener('htmx:wsClose', e => window.closeCodes.push(e.detail.event.code)); }"""
    )

    # Before: the live view already rides on Redis (a fill pushed through channels-redis).
    expect_filled_live(page, trader, submit(trader, "before", "0.1000"))
    before = server_clients(server)
    assert subscribed(before), f"the server holds no Redis pub/sub connection: {before}"
    before_ids = {c["id"] for c in before}
    assert page.get_attribute("#live", "data-resyncs") in (None, "0")

    status, experiment = staff.call("POST", "/api/experiments", {"template": "redis-failover", "duration": "PT5S"})
    assert status == 201, experiment
    assert experiment["template_id"] == "redis-failover"
    # An order at once, while the channel layer's connections are being killed...
    amid = submit(trader, "amid", "0.1500")

    # ...the killed connections are really gone from Redis...
    wait_for(lambda: not before_ids & {c["id"] for c in all_clients()}, timeout_s=5, message="the pre-failover connections to die")
    # ...the server closes the socket as a restarting service does...
    page.wait_for_function("window.connectionTrail.includes('0')", timeout=10_000)
    assert page.evaluate("window.closeCodes") == [CLOSE_FAILOVER]
    # ...and an order entered while the page is cut off.
    during = submit(trader, "during", "0.2000")

    # The page reconnects by itself and resynchronises from the store.
    expect(page.locator("#live")).to_have_attribute("data-connected", "1", timeout=15_000)
    expect(page.locator("#live")).to_have_attribute("data-last-resync", "reconnect", timeout=5_000)
    assert int(page.get_attribute("#live", "data-resyncs") or "0") >= 1
    expect(page.locator("#banner-disconnected")).to_be_hidden()
    trail = page.evaluate("window.connectionTrail")
    assert trail[0] == "1" and "0" in trail and trail[-1] == "1", trail
    expect_filled_live(page, trader, amid)
    expect_filled_live(page, trader, during)

    # The channel layer subscribed again on fresh connections.
    wait_for(lambda: subscribed([c for c in server_clients(server) if c["id"] not in before_ids]), timeout_s=10, message="a new pub/sub subscription")

    # A reconnect resyncs twice: at once, and once more when the mirror (which trails the
    # tables) has caught up with what changed while the socket was down.
    wait_for(lambda: int(page.get_attribute("#live", "data-resyncs") or "0") >= 2, timeout_s=10, message="the settling resync")
    # An order after the failover reaches the page over the socket alone: no reload, no resync.
    resyncs = page.get_attribute("#live", "data-resyncs")
    seq = int(page.get_attribute("#live-seq", "data-seq") or "0")
    expect_filled_live(page, trader, submit(trader, "after", "0.3000"))
    assert page.get_attribute("#live", "data-resyncs") == resyncs
    assert int(page.get_attribute("#live-seq", "data-seq") or "0") > seq
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1

    done = wait_for(lambda: experiment_end(staff, experiment["id"]), timeout_s=20, interval_s=0.25, message="the experiment to end")
    assert done["state"]["status"] == "completed", done["state"]
    assert all(a["state"]["status"] == "completed" for a in done["actions"].values()), done["actions"]
    expect(page.locator("#live")).to_have_attribute("data-connected", "1")
    page.screenshot(path=str(ARTIFACTS / "dashboard-after-redis-failover.png"))
    page.close()
