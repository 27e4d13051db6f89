"""The Django admin as an operator opens it: every mirrored model viewable, nothing editable."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from trading.models import ApiToken, Order, OrderStatusChange, Trade
from trading.operators import PROJECT_APPS

pytestmark = pytest.mark.django_db


def mirrored_rows() -> tuple[Order, Trade]:
    order = Order.objects.create(
        order_id="ord-admin-1", client="alice", symbol="BTC-USD", side="BUY", qty="0.5", price="50000",
        filled_qty="0.5", status="FILLED", region="us-east-1", accepted_az="us-east-1a", seq=7,
        idempotency_key="key-admin-1", request_hash="h" * 64, simulation_seed=1, created_ms=1, updated_ms=2,
    )
    OrderStatusChange.objects.create(order=order, position=0, status="ACCEPTED", ts_ms=1, az="us-east-1a")
    trade = Trade.objects.create(
        trade_id="trd-admin-1", order=order, symbol="BTC-USD", side="BUY", qty="0.5", price="50000",
        buy_order=order.order_id, sell_order="simfill", client="alice", counterparty="simfill",
        region="us-east-1", fill_az="us-east-1a", seq=7, fill_index=0, ts_ms=2,
    )
    return order, trade


def project_admin_pages() -> list[str]:
    """The changelist of every model of the project's apps registered in the admin."""
    registered = [m for m in admin.site._registry if m._meta.app_label in PROJECT_APPS]
    assert {Order, Trade} <= set(registered)
    return [f"/admin/{m._meta.app_label}/{m._meta.model_name}/" for m in registered]


def assert_operator_sees_the_mirror(client: Client) -> None:
    order, trade = mirrored_rows()
    ApiToken.issue(User.objects.get_or_create(username="alice")[0])
    for url in project_admin_pages():
        response = client.get(url)
        assert response.status_code == 200, url
    orders = client.get("/admin/trading/order/").content.decode()
    assert f"/admin/trading/order/{order.order_id}/change/" in orders
    trades = client.get("/admin/trading/trade/").content.decode()
    assert f"/admin/trading/trade/{trade.trade_id}/change/" in trades
    detail = client.get(f"/admin/trading/order/{order.order_id}/change/")
    assert detail.status_code == 200
    page = detail.content.decode()
    assert "ACCEPTED" in page and trade.trade_id in page  # the status history and fills inlines
    assert 'name="_save"' not in page  # view only
    tokens = client.get("/admin/trading/apitoken/").content.decode()
    assert "alice" in tokens and not re.search(r"\b[0-9a-f]{64}\b", tokens)
    index = client.get("/admin/").content.decode()
    assert "/admin/trading/order/" in index and "/admin/trading/trade/" in index


def test_it_lets_the_demo_operator_view_every_mirrored_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from exchange_ui.management.commands import run_exchange

    monkeypatch.setattr(run_exchange, "LOGINS_FILE", tmp_path / "demo-logins.txt")
    logins = {name: password for name, password, _ in run_exchange.ensure_demo_users()}
    client = Client()
    assert client.login(username="ops", password=logins["ops"])
    assert_operator_sees_the_mirror(client)
    # A second `make run` keeps the operator in the group, once.
    run_exchange.ensure_demo_users()
    assert User.objects.get(username="ops").groups.filter(name="operators").count() == 1


def test_it_lets_a_staff_token_user_view_every_mirrored_model() -> None:
    out = StringIO()
    call_command("create_api_token", "sre", "--staff", "--create", stdout=out)
    assert out.getvalue().strip().startswith("exd_")
    client = Client()
    client.force_login(User.objects.get(username="sre"))
    assert_operator_sees_the_mirror(client)


def test_it_gives_operators_view_and_nothing_else() -> None:
    call_command("create_api_token", "sre", "--staff", "--create", stdout=StringIO())
    sre = User.objects.get(username="sre")
    labels = {m._meta.app_label for m in apps.get_models()} & set(PROJECT_APPS)
    for model in apps.get_models():
        if model._meta.app_label in labels:
            name = f"{model._meta.app_label}.%s_{model._meta.model_name}"
            assert sre.has_perm(name % "view"), model
            assert not any(sre.has_perm(name % verb) for verb in ("add", "change", "delete")), model
    assert not sre.has_perm("auth.view_user")
    client = Client()
    client.force_login(sre)
    order, _ = mirrored_rows()
    response = client.post(f"/admin/trading/order/{order.order_id}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert Order.objects.filter(pk=order.pk).exists()


@pytest.mark.parametrize("url", ["/admin/trading/order/", "/admin/trading/trade/"])
def test_it_sends_a_trader_and_a_stranger_to_the_login(url: str) -> None:
    trader = Client()
    trader.force_login(User.objects.create_user("tina", password="tina-pass-123"))
    for client in (trader, Client()):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_it_makes_the_group_again_idempotently_after_migrate() -> None:
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import Group

    group = Group.objects.get(name="operators")
    assert group.permissions.filter(codename="view_order").count() == 1
    assert group.permissions.filter(codename="view_orderstatuschange").exists()
    assert not group.permissions.exclude(codename__startswith="view_").exists()


@pytest.mark.django_db(transaction=True)
def test_it_puts_the_staff_users_of_before_the_migration_in_the_group() -> None:
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("trading", "0001_initial")])
    assert not Group.objects.filter(name="operators").exists()
    User.objects.create_user("old-ops", password="old-ops-pass-123", is_staff=True)
    User.objects.create_user("old-trader", password="old-trader-pass-123")
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    members = set(Group.objects.get(name="operators").user_set.values_list("username", flat=True))
    assert members == {"old-ops"}
    client = Client()
    client.force_login(User.objects.get(username="old-ops"))
    assert client.get("/admin/trading/order/").status_code == 200
