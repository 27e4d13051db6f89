"""The reconcile panel as operators and traders use it, over real records: a partition
played against a moto server (reconcile_panel/scenarios.py), healed and reconciled."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from exchange_ui.runtime import Runtime, set_runtime
from reconcile_panel.provision import ensure_reconcile_tables
from reconcile_panel.replicator import Replicator
from reconcile_panel.scenarios import PartitionPlay
from reconcile_panel.worker import ReconcileWorker
from simfill.worker import AzWorker
from tests.conftest import make_config, wait_for
from trading import events as ev
from trading.actions import Exchange
from trading.fragments import coalesce, render_dashboard_frame
from trading.motoserver import MotoServer

pytestmark = pytest.mark.django_db

LIMIT = Decimal("1")


@pytest.fixture(scope="module")
def reconciled(moto_server: MotoServer) -> Iterator[SimpleNamespace]:
    """One game day, played once for the module: the three divergences, heal, reconcile."""
    from trading.provision import bootstrap
    from trading.queue import forget_urls

    moto_server.reset()
    forget_urls()
    config = make_config(position_limits={"BTC-USD": LIMIT})  # what ingest, check_history and the worker read
    bootstrap(config)
    ensure_reconcile_tables(config)
    ex = Exchange(config=config)
    grid = lambda symbol: (config.market(symbol).tick, config.market(symbol).lot)  # noqa: E731
    fillers = {r: AzWorker(ex.stores[r], ex.queues[r], config.azs(r)[0], grid, wait_s=0) for r in config.regions}

    def settle(region: str, order_id: str) -> Any:
        def final() -> Any:
            order = ex.stores[region].orders.get(order_id)
            if order is not None and not order.is_open:
                return order
            fillers[region].poll_once()
            return None

        return wait_for(final, timeout_s=20, interval_s=0, message=f"{order_id} final in {region}")

    east, west = config.regions
    replicator = Replicator(config)
    captured: list[dict[str, Any]] = []
    ev.add_sink(captured.append)
    try:
        divergences = PartitionPlay(ex, settle, (east, west), limit=LIMIT, tag="ui").run(cut=replicator.paused(east, west))
        replicator.drain()
        result = ReconcileWorker(config, limits={"BTC-USD": LIMIT}).run_once()
        replicator.drain()
    finally:
        ev.remove_sink(captured.append)
    assert result.conflicts == 3, result
    yield SimpleNamespace(ex=ex, config=config, divergences=divergences, result=result, events=captured)


@pytest.fixture
def runtime(reconciled: SimpleNamespace, settings: Any) -> Iterator[Runtime]:
    settings.EXCHANGE = reconciled.config
    built = Runtime.build(reconciled.config, with_mirror=False)
    set_runtime(built)
    yield built
    set_runtime(None)


@pytest.fixture
def ops(runtime: Runtime) -> Client:
    client = Client()
    client.force_login(User.objects.create_user("ops", password="ops-pass-123", is_staff=True))
    return client


def trader(name: str) -> Client:
    client = Client()
    client.force_login(User.objects.create_user(name, password=f"{name}-pass-123"))
    return client


def rows(response: Any) -> list[dict[str, str]]:
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8"))))


def test_it_refuses_traders_and_sends_anonymous_visitors_to_log_in(runtime: Runtime) -> None:
    alice = trader("alice")
    for url in ("/reconcile/", "/reconcile/tapes/", "/reconcile/conflicts.csv", "/reconcile/adjustments.csv", "/reconcile/ledger/"):
        assert alice.get(url).status_code == 403, url
        assert Client().get(url).status_code == 302, url
    assert alice.post("/reconcile/check/").status_code == 403
    assert "Operators only" in alice.get("/reconcile/").content.decode()


def test_it_lists_each_conflict_with_its_decision_and_compensations(ops: Client, reconciled: SimpleNamespace) -> None:
    page = ops.get("/reconcile/").content.decode()
    dup = reconciled.divergences[0]
    assert page.count('class="conflict kind-') == 3
    for kind in ("duplicate_fill", "cancel_fill_race", "over_limit"):
        assert f'data-kind="{kind}"' in page
    assert f"/admin/trading/order/{dup.order_ids[0]}/change/" in page
    assert "earliest acceptance stands" in page
    assert 'title="FIX ExecType H (TRADE_CANCEL)"' in page
    assert "ui-dup" in page and "ui-limit" in page
    # Every trade in a conflict links to its order in the admin.
    east_trade = next(e for e in reconciled.events if e["type"] == ev.TRADE_COMPENSATED)["data"]
    assert f'href="/admin/trading/order/{east_trade["order_id"]}/change/" title="trade {east_trade["trade_id"]}' in page


def test_it_filters_by_kind_account_and_region_over_htmx(ops: Client) -> None:
    by_kind = ops.get("/reconcile/?kind=over_limit", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="reconcile-results", HTTP_HX_TRIGGER="reconcile-filters")
    body = by_kind.content.decode()
    assert by_kind.status_code == 200
    assert body.lstrip().startswith('<div id="reconcile-results"')
    assert body.count('class="conflict kind-') == 1 and 'data-kind="over_limit"' in body
    assert by_kind["HX-Push-Url"] == "/reconcile/?kind=over_limit"
    by_account = ops.get("/reconcile/?account=ui-race", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="reconcile-results").content.decode()
    assert by_account.count('class="conflict kind-') == 1 and "cancel_fill_race" in by_account
    assert "ui-dup" not in by_account.split('id="ledger"')[1]  # the ledger obeys the filter too
    nowhere = ops.get("/reconcile/?region=ap-south-1&kind=bogus").content.decode()  # unknown values are dropped
    assert nowhere.count('class="conflict kind-') == 3
    filtered = ops.get("/reconcile/?account=nobody").content.decode()
    assert "No conflicts match these filters" in filtered


def test_it_exports_conflicts_and_adjustments_as_csv(ops: Client, reconciled: SimpleNamespace) -> None:
    conflicts = ops.get("/reconcile/conflicts.csv")
    assert "attachment;" in conflicts["Content-Disposition"]
    found = rows(conflicts)
    assert sorted(r["kind"] for r in found) == ["cancel_fill_race", "duplicate_fill", "over_limit"]
    assert all(r["rule"] and r["order_id"] for r in found)
    assert any(r["compensations"].startswith("H:") for r in found)
    adjustments = rows(ops.get("/reconcile/adjustments.csv"))
    assert len(adjustments) == reconciled.result.adjustments
    assert sum(Decimal(r["amount"]) for r in adjustments) == 0  # the two legs of each compensation cancel out
    only = rows(ops.get("/reconcile/adjustments.csv?account=ui-dup"))
    assert only and {r["account"] for r in only} == {"ui-dup"}


def test_it_shows_the_invariant_board_green_with_a_rerun_button(ops: Client) -> None:
    page = ops.get("/reconcile/").content.decode()
    assert 'hx-post="/reconcile/check/" hx-trigger="load"' in page
    board = ops.post("/reconcile/check/").content.decode()
    assert "All invariants hold" in board
    assert board.count("rule-ok") == 5 and "rule-bad" not in board
    assert "Re-run check" in board


def test_it_turns_the_board_red_with_the_witnesses_one_click_away(ops: Client, reconciled: SimpleNamespace) -> None:
    from reconcile_panel.store import ItemTable, replicated_tables

    east, west = reconciled.config.regions
    table = ItemTable(west, replicated_tables(reconciled.config.table_prefix)["orders"])
    order_id = reconciled.divergences[0].order_ids[0]
    item = table.get(f"ORDER#{order_id}")
    table._ddb.delete_item(TableName=table.table, Key={"pk": {"S": f"ORDER#{order_id}"}})
    try:
        board = ops.post("/reconcile/check/").content.decode()
    finally:
        table.put_over(item, None)
    assert "rule-bad" in board and 'id="rule-order_in_every_region" class="rule rule-bad"' in board
    assert '<details class="witness">' in board
    assert f"/admin/trading/order/{order_id}/change/" in board


def test_it_keeps_the_regions_tapes_side_by_side(ops: Client, reconciled: SimpleNamespace) -> None:
    page = ops.get("/reconcile/tapes/").content.decode()
    east, west = reconciled.config.regions
    assert f">{east}</th>" in page and f">{west}</th>" in page
    assert "mark-compensated" in page and "mark-standing" in page
    assert 'id="diverged-count" class="">diverged <b class="num">0</b>' in page  # converged after the heal


def test_it_marks_divergence_in_the_gutter(ops: Client, reconciled: SimpleNamespace) -> None:
    from reconcile_panel.store import ItemTable, replicated_tables

    east, west = reconciled.config.regions
    table = ItemTable(west, replicated_tables(reconciled.config.table_prefix)["trades"])
    trade = next(t for t in reconciled.ex.stores[east].trades.scan_all() if t.region == east)
    item = table.get(f"TRADE#{trade.trade_id}")
    table._ddb.delete_item(TableName=table.table, Key={"pk": {"S": f"TRADE#{trade.trade_id}"}})
    try:
        page = ops.get("/reconcile/tapes/").content.decode()
    finally:
        table.put_over(item, None)
    line = page.split(f'id="pair-{trade.trade_id}"')[1].split("</tr>")[0]
    assert line.startswith(' class="pair diverged')
    assert f"not in {west}" in line and f"missing in {west}" in line


def test_it_shows_traders_only_their_own_adjustments(runtime: Runtime) -> None:
    card = trader("ui-dup").get("/reconcile/mine/").content.decode()
    assert 'id="adjustments-card"' in card and "your P&amp;L" in card
    assert "amount-" in card
    assert "No adjustments" in trader("bob").get("/reconcile/mine/").content.decode()


def test_it_pushes_conflicts_compensations_and_adjustments_as_rows(reconciled: SimpleNamespace) -> None:
    batch, cut = coalesce([e for e in reconciled.events if e["type"] in (ev.TRADE_CONFLICTED, ev.TRADE_COMPENSATED, ev.PNL_ADJUSTED)])
    assert not cut
    staff = render_dashboard_frame(batch, 7, resync=False, staff=True)
    conflict = next(e for e in batch if e["type"] == ev.TRADE_CONFLICTED)["data"]
    comp = next(e for e in batch if e["type"] == ev.TRADE_COMPENSATED)["data"]
    adj = next(e for e in batch if e["type"] == ev.PNL_ADJUSTED)["data"]
    assert f'id="conflict-{conflict["conflict_id"]}"' in staff and 'data-upsert-into="#conflicts-body' in staff
    assert f'id="comp-{comp["compensation_id"]}"' in staff and f'data-upsert-into="#comps-{comp["conflict_id"]}"' in staff
    assert f'id="adj-{adj["adjustment_id"]}"' in staff
    # The tape's reorg marks go to everyone; the panel's rows name accounts, so only to staff.
    public = render_dashboard_frame(batch, 8, resync=False, staff=False)
    assert f'id="reorg-{conflict["conflict_id"]}"' in public and 'data-reorg="conflicted"' in public
    assert f'data-trades="{comp["trade_id"]}"' in public and 'data-reorg="compensated"' in public
    assert 'id="conflict-' not in public and 'id="comp-' not in public and 'id="adj-' not in public
    assert 'id="mine-refresh"' in public and 'id="panel-refresh"' not in public
    assert 'id="panel-refresh"' in staff and 'hx-include="#reconcile-filters"' in staff


def test_it_shows_a_trader_what_reconciliation_decided_about_their_order(runtime: Runtime, reconciled: SimpleNamespace) -> None:
    dup = reconciled.divergences[0]
    assert dup.kind == "duplicate_fill"
    owner = trader(dup.client)
    body = owner.get(f"/api/orders/{dup.order_ids[0]}").json()
    found = body["reconciliation"]
    assert [c["kind"] for c in found["conflicts"]] == ["duplicate_fill"]
    (conflict,) = found["conflicts"]
    east, west = reconciled.config.regions
    assert conflict["standing_region"] == east and set(conflict["regions"]) == {east, west}
    # The other region's fills are the ones reversed, each by a trade cancel, in full.
    assert {c["trade_id"] for c in found["compensations"]} == set(conflict["compensated_trade_ids"]) != set()
    assert all(c["region"] == west and c["exec_type"] == "H" and c["reversed_qty"] == c["qty"] for c in found["compensations"])
    assert Decimal(found["reversed_qty"]) == sum(Decimal(c["qty"]) for c in found["compensations"]) > 0
    assert found["complete"] is True
    # Someone else's order stays invisible, reconciliation and all.
    assert trader("nosy").get(f"/api/orders/{dup.order_ids[0]}").status_code == 404


def test_it_says_null_when_reconciliation_decided_nothing(runtime: Runtime, reconciled: SimpleNamespace) -> None:
    from trading.actions import submit_order

    order, _ = submit_order(reconciled.ex, "quiet", {"symbol": "BTC-USD", "side": "SELL", "qty": "0.0100", "price": "50000.00"}, "quiet-1")
    body = trader("quiet").get(f"/api/orders/{order.order_id}").json()
    assert body["order_id"] == order.order_id and body["reconciliation"] is None
