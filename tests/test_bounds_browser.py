"""In Debian's chromium: the experiments cap as an operator meets it in the panel, and the
reconcile pages that now read a bounded page (they still render as before)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from tests.conftest import ARTIFACTS, LiveServer, log_in

pytestmark = pytest.mark.browser

OPS = ("oskar", "oskar-pass-123")


@pytest.fixture(scope="module")
def capped_server() -> Iterator[LiveServer]:
    server = LiveServer(synthetic_rate="3")
    server.env["EXCHANGE_MAX_EXPERIMENTS"] = "1"
    server.start()
    server.manage("shell", "-c", f"from django.contrib.auth.models import User; User.objects.create_user('{OPS[0]}', password='{OPS[1]}', is_staff=True)")
    yield server
    server.stop()


def test_it_tells_the_operator_why_one_experiment_too_many_does_not_start(capped_server: LiveServer, browser: Browser) -> None:  # noqa: F811
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    log_in(page, capped_server, *OPS)
    page.goto(capped_server.url + "/experiments/")
    expect(page.locator("#live")).to_have_attribute("data-connected", "1", timeout=10_000)
    for template_id, outcome in (("latency", "Started EXP"), ("az-loss", "Not started: 1 experiment already pending or running")):
        template = page.locator(f"#template-{template_id}")
        template.locator("select[name=duration]").select_option("PT1M")
        template.get_by_role("button", name="Preview blast radius").click()
        template.get_by_role("button", name="Start experiment").click()
        expect(template).to_contain_text(outcome)
    expect(page.locator("#template-az-loss [role=alert]")).to_contain_text("the most this exchange runs at once (1)")
    expect(page.locator("#experiment-list .experiment")).to_have_count(1)
    page.locator("#template-az-loss").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "experiments-panel-cap.png"))
    page.get_by_role("button", name="Stop all experiments").click()
    page.close()


def test_it_renders_the_reconcile_panel_and_the_tapes_from_pages(capped_server: LiveServer, browser: Browser) -> None:  # noqa: F811
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    log_in(page, capped_server, *OPS)
    page.goto(capped_server.url + "/reconcile/")
    expect(page.locator("h2", has_text="Conflicts")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "reconcile-panel-paged.png"))
    page.goto(capped_server.url + "/reconcile/tapes/")
    expect(page.locator("#tapes-body tr.pair").first).to_be_visible(timeout=20_000)
    expect(page.locator(".tape-figs")).to_contain_text("trades")
    page.screenshot(path=str(ARTIFACTS / "reconcile-tapes-paged.png"))
    page.close()
