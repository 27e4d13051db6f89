"""A game day in Debian's chromium: a partition experiment, a client's retry filled twice,
the heal, the reorg on the trade tape, and the reconcile panel filling up."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from reconcile_panel.scenarios import pick_key
from tests.conftest import ARTIFACTS, LiveServer
from trading.config import ExchangeConfig

pytestmark = pytest.mark.browser

EAST, WEST = "us-east-1", "eu-west-1"
TINA = ("tina", "tina-pass-123")
OPS = ("ops", "ops-pass-123")


class Api:
    def __init__(self, server: LiveServer, token: str):
        self.server, self.token = server, token

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")


def wait_until(condition: Any, timeout_s: float, message: str, interval_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(interval_s)


@pytest.fixture(scope="module")
def game_day() -> Iterator[SimpleNamespace]:
    server = LiveServer().start()
    ops = Api(server, server.manage("create_api_token", "ops", "--staff", "--create").strip().split()[-1])
    # The operator the run created on first start: a known password for the browser.
    server.manage("shell", "-c", "from django.contrib.auth.models import User; u = User.objects.get(username='ops'); u.set_password('ops-pass-123'); u.save()")
    tina = Api(server, server.manage("create_api_token", "tina").strip().split()[-1])
    yield SimpleNamespace(server=server, ops=ops, tina=tina)
    server.stop()


def log_in(page: Page, server: LiveServer, who: tuple[str, str], path: str) -> None:
    page.goto(server.url + "/login/?next=" + path)
    page.fill("input[name=username]", who[0])
    page.fill("input[name=password]", who[1])
    page.click("button[type=submit]")
    expect(page.locator("#live")).to_have_attribute("data-connected", "1", timeout=15_000)


def log_in_plain(page: Page, server: LiveServer, who: tuple[str, str], path: str) -> None:
    page.goto(server.url + "/login/?next=" + path)
    page.fill("input[name=username]", who[0])
    page.fill("input[name=password]", who[1])
    page.click("button[type=submit]")
    expect(page).to_have_url(server.url + path)


def experiment_status(api: Api, experiment_id: str) -> str:
    _, body = api.call("GET", f"/api/experiments/{experiment_id}")
    state = body.get("state") if isinstance(body, dict) else None
    return str((state or {}).get("status") if isinstance(state, dict) else body.get("status", ""))


def test_it_plays_the_reorg_and_fills_the_reconcile_panel_after_a_partition_heals(game_day: SimpleNamespace, browser: Browser) -> None:  # noqa: F811
    server, ops, tina = game_day.server, game_day.ops, game_day.tina
    trader = browser.new_page(viewport={"width": 1440, "height": 900})
    log_in(trader, server, TINA, "/")
    expect(trader.locator("#adjustments-card")).to_contain_text("No adjustments")
    panel = browser.new_page(viewport={"width": 1500, "height": 1000})
    log_in(panel, server, OPS, "/reconcile/")
    expect(panel.locator("#invariant-board .verdict")).to_have_text("All invariants hold", timeout=15_000)

    status, experiment = ops.call("POST", "/api/experiments", {"template": "partition", "duration": "PT15S"})
    assert status == 201, experiment
    wait_until(lambda: experiment_status(ops, experiment["id"]) == "running", 15, "the partition to run")

    # A retry of the same entry lands in the other region, which cannot see the first acceptance.
    payload = {"symbol": "BTC-USD", "side": "BUY", "qty": "0.2000", "price": "50100.00"}
    key = pick_key(SimpleNamespace(config=ExchangeConfig.from_env()), "tina", payload, "game-day-retry")
    status, first = tina.call("POST", "/api/orders", {**payload, "region": EAST}, {"Idempotency-Key": key})
    assert status == 201, first
    wait_until(lambda: tina.call("GET", f"/api/orders/{first['order_id']}")[1].get("status") == "FILLED", 20, "the first fill")
    tape = trader.locator("#tape-body tr")
    expect(tape.first).to_be_visible(timeout=10_000)
    fills = tape.count()  # SimFill may fill the order in several trades
    status, second = tina.call("POST", "/api/orders", {**payload, "region": WEST}, {"Idempotency-Key": key})
    assert status == 201, second  # created again: eu-west-1 never saw the first acceptance
    assert second["order_id"] == first["order_id"] and second["region"] == WEST
    conflicted = trader.locator("#tape-body tr.reorg-conflicted")
    # Both regions filled it: the tape shows each fill twice (unless the heal already began).
    wait_until(lambda: tape.count() >= 2 * fills or conflicted.count() > 0, 20, "the second region's fills on the tape")
    trader.screenshot(path=str(ARTIFACTS / "reconcile-1-partitioned-tape.png"))
    study = browser.new_page(viewport={"width": 1500, "height": 700})
    log_in_plain(study, server, OPS, "/reconcile/tapes/")
    if experiment_status(ops, experiment["id"]) == "running":
        expect(study.locator("tr.pair.diverged").first).to_be_visible()
    study.screenshot(path=str(ARTIFACTS / "reconcile-1-partitioned-tapes.png"), full_page=True)
    study.close()

    # The heal: replication drains, the reconciler decides, and the tape plays the reorg.
    expect(conflicted.first).to_be_visible(timeout=45_000)
    trader.screenshot(path=str(ARTIFACTS / "reconcile-2-reorg-orange.png"))
    struck = trader.locator("#tape-body tr.reorg-compensated")
    expect(struck.first).to_be_visible(timeout=10_000)
    expect(struck.first.locator(".label-compensated")).to_have_text("compensated")
    trader.screenshot(path=str(ARTIFACTS / "reconcile-3-reorg-compensated.png"))
    expect(trader.locator("#reorg-status")).to_have_attribute("data-state", "settled", timeout=10_000)
    expect(tape).to_have_count(fills)
    expect(trader.locator("#tape-body tr.reorg-settled .label-standing")).to_have_count(fills)
    expect(trader.locator("#adjustments-card")).to_contain_text("your P&L", timeout=10_000)
    expect(trader.locator("#adjustments-card .amount-credit").first).to_be_visible()
    trader.screenshot(path=str(ARTIFACTS / "reconcile-4-reorg-settled.png"))

    # A reload shows the corrected tape at once.
    trader.reload()
    expect(trader.locator("#tape-body tr.reorg-settled")).to_have_count(fills, timeout=10_000)
    expect(tape).to_have_count(fills)

    # The panel filled live: the conflict, its compensation (ExecType H), both legs of the adjustment.
    row = panel.locator("#conflicts-body tr.conflict")
    expect(row).to_have_count(1, timeout=10_000)
    expect(row).to_contain_text("duplicate_fill")
    expect(row.locator(".exec")).to_have_count(fills)
    expect(row.locator(".exec").first).to_have_text("H")
    expect(row.locator(f"a[href='/admin/trading/order/{first['order_id']}/change/']").first).to_be_visible()
    expect(panel.locator("#adjustments-body tr")).to_have_count(2 * fills, timeout=10_000)  # both legs of each
    expect(panel.locator("#ledger-totals tr", has_text="tina")).to_have_count(1, timeout=10_000)
    panel.click("#invariant-board button")
    expect(panel.locator("#invariant-board .verdict")).to_have_text("All invariants hold", timeout=20_000)
    expect(panel.locator("#invariant-board .rule-ok")).to_have_count(5)
    panel.screenshot(path=str(ARTIFACTS / "reconcile-5-panel.png"), full_page=True)

    panel.select_option("select[name=kind]", "over_limit")
    expect(panel.locator("#conflicts-body tr")).to_have_count(0)
    expect(panel).to_have_url(server.url + "/reconcile/?kind=over_limit&account=&region=")

    panel.goto(server.url + "/reconcile/tapes/")
    expect(panel.locator("tr.pair.mark-compensated")).to_have_count(fills)
    expect(panel.locator("#diverged-count b")).to_have_text("0")
    panel.screenshot(path=str(ARTIFACTS / "reconcile-6-tapes.png"), full_page=True)
    trader.close()
    panel.close()


def test_it_plays_the_reorg_fast_and_without_motion_when_asked(game_day: SimpleNamespace, browser: Browser) -> None:  # noqa: F811
    context = browser.new_context(reduced_motion="reduce", viewport={"width": 1440, "height": 900})
    page = context.new_page()
    log_in(page, game_day.server, TINA, "/?reorg_speed=10")
    assert page.evaluate("matchMedia('(prefers-reduced-motion: reduce)').matches")
    assert page.locator("#tape-body").get_attribute("data-reorg-speed-now") == "10"
    # Marks pushed at 10x: the conflict turns orange, the compensated fill leaves within about a second.
    page.evaluate(
        """() => {
          const body = document.getElementById('tape-body');
          body.insertAdjacentHTML('afterbegin', '<tr id="trade-demo-a"><td>a</td><td></td><td></td><td></td><td></td><td>az</td></tr>' +
                                               '<tr id="trade-demo-b"><td>b</td><td></td><td></td><td></td><td></td><td>az</td></tr>');
          const q = document.getElementById('reorg-queue');
          q.insertAdjacentHTML('beforeend', '<i data-reorg="conflicted" data-trades="demo-a demo-b" data-standing="demo-a"></i>');
          q.insertAdjacentHTML('beforeend', '<i data-reorg="compensated" data-trades="demo-b" data-exec-type="H"></i>');
        }"""
    )
    expect(page.locator("#trade-demo-b.reorg-compensated")).to_be_visible(timeout=2_000)
    assert set(page.locator("#trade-demo-a").evaluate("el => getComputedStyle(el).transitionDuration").split(", ")) == {"0s"}
    expect(page.locator("#trade-demo-b")).to_have_count(0, timeout=3_000)
    expect(page.locator("#trade-demo-a.reorg-settled")).to_be_visible()
    expect(page.locator("#reorg-status")).to_contain_text("10x")
    page.screenshot(path=str(ARTIFACTS / "reconcile-7-reduced-motion-10x.png"))
    context.close()
