"""A trader in Debian's chromium against the real server started as `make run` starts it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ARTIFACTS
from trading.motoserver import free_port

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


class LiveServer:
    def __init__(self, synthetic_rate: str = "0"):
        self.port = free_port()
        self.var = Path(tempfile.mkdtemp(prefix="exchange-var-"))
        self.env = {
            **os.environ,
            "EXCHANGE_VAR_DIR": str(self.var),
            "EXCHANGE_SYNTHETIC_RATE": synthetic_rate,
            "PORT": str(self.port),
            "DJANGO_SETTINGS_MODULE": "exchange_ui.settings",
        }
        self.env.pop("AWS_ENDPOINT_URL", None)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self) -> LiveServer:
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('tina', password='tina-pass-123')")
        self.log = open(self.var / "server.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_exchange", "--port", str(self.port)], cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.var / "server.log").read_text()
            try:
                urllib.request.urlopen(self.url + "/login/", timeout=1)
                if "Exchange failure dashboard:" in (self.var / "server.log").read_text():
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not start: " + (self.var / "server.log").read_text())

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(2)  # Ctrl-C, as a user stops it
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope="module")
def exchange_server() -> Iterator[LiveServer]:
    server = LiveServer().start()
    yield server
    server.stop()
    assert server.process is not None and server.process.returncode is not None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def log_in(page: Page, server: LiveServer, username: str = "tina", password: str = "tina-pass-123") -> None:
    page.goto(server.url + "/")
    expect(page).to_have_url(server.url + "/login/?next=/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.locator("#order-form")).to_be_visible()
    expect(page.locator("#live")).to_have_attribute("data-connected", "1", timeout=10_000)


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
