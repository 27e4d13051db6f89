"""A trader in Debian's chromium against the real server started as `make run` starts it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from tests.conftest import ARTIFACTS, LiveServer, log_in

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def exchange_server() -> Iterator[LiveServer]:
    server = LiveServer().start()
    yield server
    server.stop()
    assert server.process is not None and server.process.returncode is not None


def test_it_fills_an_order_entered_in_the_form_without_a_reload(exchange_server: LiveServer, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    log_in(page, exchange_server)
    page.fill("input[name=qty]", "0.2500")
    page.fill("input[name=price]", "50000.00")
    page.click("button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("accepted in us-east-1")
    row = page.locator("#orders-body tr").first
    expect(row).to_contain_text("0.2500")
    # The fill arrives over the socket: the badge leaves "Awaiting simulated fill" with no reload.
    done = row.locator(".badge-filled, .badge-partial, .badge-cancelled")
    try:
        expect(done).to_be_visible(timeout=20_000)
    except AssertionError as error:
        order_id = (row.get_attribute("id") or "").removeprefix("order-")
        stored = page.request.get(f"{exchange_server.url}/api/orders/{order_id}")
        raise AssertionError(f"no fill on the page; the API says {stored.status} {stored.text()[:600]}") from error
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    # A response that arrives after the fill (the form's accepted row, out of band) never
    # steps the row back to "Awaiting simulated fill".
    row_id = row.get_attribute("id")
    page.evaluate(
        """id => htmx.swap(document.body, '<template><tr id="' + id + '" data-updated="1" hx-swap-oob="outerHTML">'
            + '<td>stale</td></tr></template>', {swapStyle: 'none'})""",
        row_id,
    )
    expect(page.locator(f"#{row_id}")).not_to_contain_text("stale")
    expect(page.locator(f"#{row_id} .badge-filled, #{row_id} .badge-partial, #{row_id} .badge-cancelled")).to_be_visible()
    if page.locator(f"#{row_id} td").nth(4).inner_text().strip() in {"0", "0.0000"}:
        # SimFill cancels 8 % of orders without a trade (no simulated liquidity; the form's
        # key is random, so the roll is too): nothing of it can reach the tape.
        expect(page.locator(f"#{row_id} .badge-cancelled")).to_be_visible()
    else:
        expect(page.locator("#tape-body tr").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "trading-dashboard.png"))
    page.close()


def test_it_turns_a_double_click_into_one_order(exchange_server: LiveServer, browser: Browser) -> None:
    page = browser.new_page()
    log_in(page, exchange_server)
    before = page.locator("#orders-body tr").count()
    page.fill("input[name=qty]", "0.0300")
    key = page.locator("input[name=idempotency_key]").input_value()
    statuses = page.evaluate(
        """() => { const f = document.getElementById('order-form');
                   const body = new FormData(f);
                   return Promise.all([1, 2].map(() => fetch('/orders/submit/', {method: 'POST', body,
                     headers: {'X-CSRFToken': body.get('csrfmiddlewaretoken')}}).then(r => r.status))); }"""
    )
    assert sorted(statuses) == [200, 200], statuses  # the second is a replay, not a second order
    page.reload()
    rows = page.locator("#orders-body tr", has_text="0.0300")
    expect(rows).to_have_count(1, timeout=10_000)
    assert page.locator("#orders-body tr").count() == before + 1
    assert key
    page.close()


def test_it_shows_field_errors_without_losing_the_entry(exchange_server: LiveServer, browser: Browser) -> None:
    page = browser.new_page()
    log_in(page, exchange_server)
    page.fill("input[name=qty]", "-5")
    page.click("button[type=submit]")
    expect(page.locator("#order-form .error")).to_contain_text("qty")
    expect(page.locator("input[name=qty]")).to_have_value("-5")
    page.close()


def test_it_sends_anonymous_visitors_to_the_login_page(exchange_server: LiveServer, browser: Browser) -> None:
    page = browser.new_page()
    page.goto(exchange_server.url + "/")
    expect(page.locator("h1")).to_have_text("Log in")
    page.screenshot(path=str(ARTIFACTS / "login.png"))
    page.close()


# The pixels a chart's series drew in its colour (a CSS variable of the page's palette).
SERIES_PIXELS = """([selector, variable]) => {
  const canvas = document.querySelector(selector);
  const probe = document.createElement('span');
  probe.style.color = getComputedStyle(document.documentElement).getPropertyValue(variable).trim();
  document.body.appendChild(probe);
  const [r, g, b] = getComputedStyle(probe).color.match(/\\d+/g).map(Number);
  probe.remove();
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let count = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 200 && Math.abs(data[i] - r) < 40 && Math.abs(data[i + 1] - g) < 40 && Math.abs(data[i + 2] - b) < 40) count++;
  }
  return count;
}"""


def test_it_charts_the_socket_and_api_round_trips(exchange_server: LiveServer, browser: Browser) -> None:
    import re

    page = browser.new_page(viewport={"width": 1440, "height": 900})
    log_in(page, exchange_server)
    # The page times its own ping; the server's figures (every browser's, and each region's
    # API probe) come with the metrics it pushes once a second.
    expect(page.locator("#live")).to_have_attribute("data-rtt", re.compile(r"^\d"), timeout=10_000)
    metrics = page.locator("#metrics")
    expect(metrics).to_have_attribute("data-socket-rtt-p50", re.compile(r"^\d"), timeout=15_000)
    expect(metrics).to_have_attribute("data-api-rtt", re.compile(r"^us-east-1=\d[\d.]* eu-west-1=\d"), timeout=15_000)
    expect(metrics.locator(".fig", has_text="Socket round trip")).to_contain_text(re.compile(r"\d+ ms / \d+ ms"))
    expect(page.locator("#region-us-east-1 .region-figs")).to_contain_text(re.compile(r"API \d+ ms"))
    # The lines are drawn: this page's own round trip, and us-east-1's API round trip.
    page.wait_for_function(f"({SERIES_PIXELS})(['canvas[data-chart=\"socket-rtt\"]', '--buy']) > 10", timeout=15_000)
    page.wait_for_function(f"({SERIES_PIXELS})(['canvas[data-chart=\"api-rtt\"]', '--accent']) > 10", timeout=15_000)
    expect(page.locator("#charts figcaption", has_text="API RTT")).to_contain_text("us-east-1")
    page.locator("#charts").screenshot(path=str(ARTIFACTS / "charts-round-trips.png"))
    page.close()
