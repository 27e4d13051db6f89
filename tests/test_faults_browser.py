"""An operator in Debian's chromium runs the DynamoDB throttling game day from the panel."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import ARTIFACTS, LiveServer, log_in

pytestmark = pytest.mark.browser

OPS = ("olga", "olga-pass-123")


@pytest.fixture(scope="module")
def game_day_server() -> Iterator[LiveServer]:
    server = LiveServer(synthetic_rate="4")
    # A busy test machine can see a seconds-long p99 with no fault at all: the bound sits above it.
    server.env["EXCHANGE_BACKPRESSURE_ACCEPT_MS"] = "2500"
    server.env["EXCHANGE_FLASH_FILL_MS"] = "2500"
    server.start()
    server.manage("shell", "-c", f"from django.contrib.auth.models import User; User.objects.create_user('{OPS[0]}', password='{OPS[1]}', is_staff=True)")
    yield server
    server.stop()


def awaiting_order_ids(page: Page, timeout_ms: int = 20_000) -> list[str]:
    """The orders showing "Awaiting simulated fill", read in the same instant they show it
    (under a 50 % throttle a badge can clear between two separate looks)."""
    handle = page.wait_for_function(
        """() => { const ids = [...document.querySelectorAll('#orders-body tr:has(.badge-awaiting)')]
                     .map(r => r.id.replace('order-', ''));
                   return ids.length ? ids : null; }""",
        timeout=timeout_ms,
    )
    return list(handle.json_value())


def test_it_runs_the_throttling_experiment_from_the_panel_and_sees_it_clear(game_day_server: LiveServer, browser: Browser) -> None:  # noqa: F811
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    log_in(page, game_day_server, *OPS)
    expect(page.locator("#experiments-lever")).to_contain_text("No experiment running")

    page.click("#experiments-lever a")
    expect(page.locator("h2", has_text="Templates")).to_be_visible()
    expect(page.locator("#live")).to_have_attribute("data-connected", "1", timeout=10_000)
    template = page.locator("#template-dynamodb-throttle")
    expect(template.locator(".fidelity")).to_have_text("simulated only")
    template.locator("select[name=duration]").select_option("PT1M")
    template.get_by_role("button", name="Preview blast radius").click()
    expect(template.locator(".radius")).to_contain_text("exchange-orders")
    template.get_by_role("button", name="Start experiment").click()
    expect(template).to_contain_text("Started EXP")

    run = page.locator("#experiment-list .experiment").first
    expect(run.locator(".experiment-head .pill")).to_have_text("running", timeout=5_000)
    expect(run.locator(".gantt-run.state-running")).to_be_visible()
    # The fault reaches the open page through the socket, not a reload.
    expect(page.locator("#banner-faults")).to_contain_text("dynamodb throttled 50% in us-east-1", timeout=2_000)
    page.screenshot(path=str(ARTIFACTS / "experiments-panel-running.png"))

    page.click("a.brand")
    expect(page.locator("#live")).to_have_attribute("data-connected", "1", timeout=10_000)
    expect(page.locator("#banner-faults")).to_be_visible()
    expect(page.locator("#experiments-lever")).to_contain_text("1 experiment running")
    expect(page.locator("#banner-backpressure")).to_be_visible(timeout=30_000)
    awaiting = awaiting_order_ids(page)
    assert awaiting
    page.screenshot(path=str(ARTIFACTS / "dashboard-under-throttling.png"))

    page.get_by_role("button", name="Stop all experiments").click()
    expect(page.locator("#experiments-lever")).to_contain_text("No experiment running", timeout=3_000)
    expect(page.locator("#banner-faults")).to_be_hidden(timeout=3_000)
    # The orders that were awaiting their fill during the fault are filled once it is gone.
    for order_id in awaiting:
        page.wait_for_function(
            "id => fetch('/api/orders/' + id).then(r => r.json()).then(o => o.status !== 'ACCEPTED')", arg=order_id, timeout=20_000, polling=500
        )
    expect(page.locator("#banner-backpressure")).to_be_hidden(timeout=40_000)
    page.screenshot(path=str(ARTIFACTS / "dashboard-after-stop.png"))

    page.goto(game_day_server.url + "/experiments/")
    expect(page.locator("#experiment-list .experiment").first.locator(".experiment-head .pill")).to_have_text("stopped")
    page.screenshot(path=str(ARTIFACTS / "experiments-panel-history.png"))
    page.close()


def test_it_refuses_the_panel_to_traders(game_day_server: LiveServer, browser: Browser) -> None:  # noqa: F811
    page = browser.new_page()
    log_in(page, game_day_server)
    expect(page.locator("#experiments-lever")).to_have_count(0)
    response = page.goto(game_day_server.url + "/experiments/")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("Operators only")
    page.close()


def test_it_flashes_the_warning_while_a_cpu_spike_slows_the_fills(game_day_server: LiveServer, browser: Browser) -> None:  # noqa: F811
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    log_in(page, game_day_server, *OPS)
    expect(page.locator("#flash-warning")).to_be_hidden()
    expect(page.locator("canvas[data-chart=fill]")).to_be_visible()

    page.goto(game_day_server.url + "/experiments/")
    template = page.locator("#template-cpu-spike")
    template.locator("select[name=duration]").select_option("PT1M")
    template.get_by_role("button", name="Preview blast radius").click()
    template.get_by_role("button", name="Start experiment").click()
    expect(template).to_contain_text("Started EXP")

    page.click("a.brand")
    expect(page.locator("#live")).to_have_attribute("data-connected", "1", timeout=10_000)
    expect(page.locator("#banner-faults")).to_contain_text("CPU stress 90% on us-east-1a")
    # The stressed tasks fall behind the synthetic clients: fills slow, then clients retry.
    expect(page.locator("#flash-warning")).to_be_visible(timeout=60_000)
    expect(page.locator("#flash-warning")).to_contain_text("time-to-fill p99")
    assert page.locator("#flash-warning").get_attribute("data-flashed-at")
    page.screenshot(path=str(ARTIFACTS / "dashboard-under-cpu-spike.png"))

    page.get_by_role("button", name="Stop all experiments").click()
    expect(page.locator("#experiments-lever")).to_contain_text("No experiment running", timeout=3_000)
    # Once the backlog has drained and the slow fills have left the window, it goes.
    expect(page.locator("#flash-warning")).to_be_hidden(timeout=90_000)
    page.close()


def api_call(page: Page, method: str, path: str, body: object | None = None) -> dict:
    """The JSON API from the logged-in page (its session and CSRF token)."""
    return page.evaluate(
        """([method, path, body]) => fetch(path, {method, headers: {'Content-Type': 'application/json',
              'X-CSRFToken': document.querySelector('[name=csrfmiddlewaretoken]').value},
              body: body === null ? undefined : JSON.stringify(body)}).then(async r => ({status: r.status, json: await r.json()}))""",
        [method, path, body],
    )


def hold_receives(region: str) -> dict:
    """An experiment that throttles every SQS ReceiveMessage in the region: its SimFill tasks
    run but take nothing from the queue, so what it accepts stays queued."""
    return {
        "region": region,
        "description": f"hold {region}'s queue",
        "targets": {"app-role": {"resourceType": "aws:iam:role", "resourceArns": ["arn:aws:iam::000000000000:role/exchange-app"], "selectionMode": "ALL"}},
        "actions": {
            "hold-receives": {
                "actionId": "aws:fis:inject-api-throttle-error",
                "parameters": {"duration": "PT2M", "service": "sqs", "operations": "ReceiveMessage", "percentage": "100"},
                "targets": {"Roles": "app-role"},
            }
        },
        "stopConditions": [{"source": "none"}],
    }


def test_it_shows_what_a_down_region_had_queued_beside_the_rerouted_orders(game_day_server: LiveServer, browser: Browser) -> None:  # noqa: F811
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    log_in(page, game_day_server, *OPS)
    held = api_call(page, "POST", "/api/experiments", hold_receives("us-east-1"))
    assert held["status"] == 201, held
    page.select_option("select[name=region]", "us-east-1")
    page.fill("input[name=qty]", "0.0700")
    page.click("#order-form button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("accepted in us-east-1")
    row = page.locator("#orders-body tr", has_text="0.0700").first
    expect(row.locator(".badge-awaiting")).to_be_visible()
    row_id = row.get_attribute("id")

    outage = api_call(page, "POST", "/api/experiments", {"template": "region-outage", "duration": "PT1M"})
    assert outage["status"] == 201, outage
    assert api_call(page, "POST", f"/api/experiments/{held['json']['id']}/stop")["status"] == 200
    # Told over the socket when the region goes down: the accepted order waits in its queue.
    expect(page.locator("#region-us-east-1")).to_have_class(re.compile(r"\bregion-down\b"), timeout=5_000)
    queued = page.locator(f"#{row_id} .badge-queued")
    expect(queued).to_have_text("queued in us-east-1 → retrying", timeout=5_000)
    # A new order aimed at the down region is rerouted and fills there.
    page.select_option("select[name=region]", "us-east-1")
    page.fill("input[name=qty]", "0.0800")
    page.click("#order-form button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("accepted in eu-west-1")
    rerouted = page.locator("#orders-body tr", has_text="0.0800").first
    expect(rerouted.locator(".rerouted")).to_contain_text("eu-west-1")
    expect(rerouted.locator(".badge-queued")).to_have_count(0)
    expect(queued).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "dashboard-region-outage-queued.png"))

    assert api_call(page, "POST", f"/api/experiments/{outage['json']['id']}/stop")["status"] == 200
    # The region is back: its workers take the queue and the order settles.
    done = page.locator(f"#{row_id} .badge-filled, #{row_id} .badge-partial, #{row_id} .badge-cancelled")
    expect(done).to_be_visible(timeout=30_000)
    expect(page.locator(f"#{row_id} .badge-queued")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "dashboard-region-outage-recovered.png"))
    page.close()
