"""The depth ladder in Debian's chromium, against the server started as `make run` starts it
under EXCHANGE_ENGINE=matcher: resting orders appear without a reload, a cross takes them
away, a down region's book dims at its seq, and the Redis failover shows the snapshot stale
until the book is republished."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import ARTIFACTS, LiveServer, log_in, wait_for
from tests.test_redis_failover_browser import Api, experiment_end

pytestmark = pytest.mark.browser

HOME = "us-east-1"
LADDER = f"#book section.ladder[data-region='{HOME}'][data-symbol='BTC-USD']"


@pytest.fixture(scope="module")
def matcher_server() -> Iterator[LiveServer]:
    server = LiveServer()  # no synthetic traders: the book holds only what the test puts in it
    server.env["EXCHANGE_ENGINE"] = "matcher"
    server.start()
    yield server
    server.stop()


def api_for(server: LiveServer, user: str, staff: bool = False) -> Api:
    args = ["create_api_token", user, "--create", *(["--staff"] if staff else [])]
    return Api(server.url, server.manage(*args).strip().splitlines()[-1])


def post(api: Api, path: str, body: Any) -> Any:
    import json
    import urllib.request

    request = urllib.request.Request(
        api.base + path, method="POST", data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def ladder_prices(page: Page, side: str) -> list[str]:
    text = page.locator(f"{LADDER} .{side}").inner_text()
    return re.findall(r"\d+\.\d\d(?=\s)", text + " ")


def open_dashboard(browser: Browser, server: LiveServer) -> Page:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    log_in(page, server)
    expect(page.locator(LADDER)).to_be_visible()
    return page


def test_it_shows_resting_orders_in_the_ladder_and_takes_them_away_on_a_cross(matcher_server: LiveServer, browser: Browser) -> None:
    maker = api_for(matcher_server, "mira")
    page = open_dashboard(browser, matcher_server)
    expect(page.locator(f"{LADDER} .lvl-spread")).to_have_text("no resting orders")
    rows_before = page.locator(f"{LADDER} .lvl").count()

    for side, qty, price in [("SELL", "0.2500", "50010.00"), ("SELL", "0.1000", "50020.00"), ("BUY", "0.3000", "49990.00"), ("BUY", "0.0500", "49990.00")]:
        post(maker, "/api/orders", {"symbol": "BTC-USD", "side": side, "qty": qty, "price": price})
    # Pushed, no reload: the best prices meet at the spread, two orders on the best bid.
    expect(page.locator(f"{LADDER} .lvl-spread")).to_have_text("spread 20.00", timeout=15_000)
    assert ladder_prices(page, "asks") == ["50020.00", "50010.00"]
    assert ladder_prices(page, "bids") == ["49990.00"]
    expect(page.locator(f"{LADDER} .bids .lvl").first).to_contain_text("0.3500")
    assert page.locator(f"{LADDER} .lvl").count() == rows_before  # a fixed ladder: nothing moved
    # The depth shown, which the card's chart samples each second (an AZ loss's dip shows there).
    expect(page.locator(f"{LADDER} .ladder-body")).to_have_attribute("data-ask-total", "0.3500")
    expect(page.locator("#book canvas[data-chart='depth']")).to_be_visible()
    page.locator("#book").screenshot(path=str(ARTIFACTS / "book-ladder.png"))

    # A cross (another trader: the maker's own buy would cancel its ask, self-trade prevention):
    # the buy takes the best ask whole, and it leaves the ladder.
    trader = api_for(matcher_server, "theo")
    taker = post(trader, "/api/orders", {"symbol": "BTC-USD", "side": "BUY", "qty": "0.2500", "price": "50010.00"})
    expect(page.locator(f"{LADDER} .lvl-spread")).to_have_text("spread 30.00", timeout=15_000)
    assert ladder_prices(page, "asks") == ["50020.00"]
    status, order = trader.call("GET", f"/api/orders/{taker['order_id']}")
    assert status == 200 and order["status"] == "FILLED"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1

    # The switch shows the other region's own book (empty: every order went to the home region).
    page.click("#book button[data-book-region='eu-west-1']")
    expect(page.locator("#book section.ladder[data-region='eu-west-1'][data-symbol='BTC-USD']")).to_be_visible()
    expect(page.locator(LADDER)).to_be_hidden()
    expect(page.locator("#book section.ladder[data-region='eu-west-1'] .lvl-spread")).to_have_text("no resting orders")
    page.click(f"#book button[data-book-region='{HOME}']")
    expect(page.locator(LADDER)).to_be_visible()
    page.close()


def test_it_dims_a_down_regions_book_at_its_seq_and_flags_a_stale_snapshot(matcher_server: LiveServer, browser: Browser) -> None:
    maker, staff = api_for(matcher_server, "mira"), api_for(matcher_server, "rolf", staff=True)
    post(maker, "/api/orders", {"symbol": "BTC-USD", "side": "SELL", "qty": "0.4000", "price": "50100.00"})
    page = open_dashboard(browser, matcher_server)
    expect(page.locator(LADDER)).to_contain_text("50100.00", timeout=15_000)
    seq = page.locator(f"{LADDER} .ladder-body").get_attribute("data-seq")

    # The region goes down: its ladder dims where it stands, without a reload.
    status, outage = staff.call("POST", "/api/experiments", {"template": "region-outage", "duration": "PT60S"})
    assert status == 201, outage
    expect(page.locator(f"{LADDER} .flag-frozen")).to_have_text(f"region down: book frozen at seq {seq}", timeout=15_000)
    expect(page.locator(f"{LADDER} .ladder-body")).to_have_class(re.compile(r"ladder-frozen"))
    page.locator("#book").screenshot(path=str(ARTIFACTS / "book-ladder-region-down.png"))
    status, _ = staff.call("POST", f"/api/experiments/{outage['id']}/stop")
    assert status in (200, 202)
    wait_for(lambda: experiment_end(staff, outage["id"]), timeout_s=30, interval_s=0.25, message="the outage to end")
    expect(page.locator(f"{LADDER} .flag-frozen")).to_have_count(0, timeout=20_000)

    # The snapshot Redis fails over: "stale" until the book is republished, and nothing is lost.
    status, failover = staff.call("POST", "/api/experiments", {"template": "redis-failover", "duration": "PT5S"})
    assert status == 201, failover
    expect(page.locator(f"{LADDER} .flag-stale")).to_have_text("book snapshot stale", timeout=10_000)
    page.locator("#book").screenshot(path=str(ARTIFACTS / "book-ladder-stale.png"))
    expect(page.locator(f"{LADDER} .flag-stale")).to_have_count(0, timeout=20_000)
    expect(page.locator(LADDER)).to_contain_text("50100.00")
    status, book = maker.call("GET", "/api/book?symbol=BTC-USD")
    assert status == 200 and (book["source"], book["stale"]) == ("redis", False)
    assert any(level["price"] == "50100.00" and level["qty"] == "0.4000" for level in book["asks"]), book
    page.close()
