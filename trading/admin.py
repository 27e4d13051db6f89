"""Admin for the mirror: read-only, since it is derived from the DynamoDB tables."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from trading.models import ApiToken, Order, OrderStatusChange, Trade


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class StatusChangeInline(ReadOnlyMixin, admin.TabularInline):
    model = OrderStatusChange
    fields = ("position", "status", "ts_ms", "az", "note")
    readonly_fields = fields
    extra = 0


class TradeInline(ReadOnlyMixin, admin.TabularInline):
    model = Trade
    fk_name = "order"
    fields = ("trade_id", "qty", "price", "counterparty", "region", "fill_az", "ts_ms")
    readonly_fields = fields
    extra = 0


@admin.register(Order)
class OrderAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("order_id", "client", "symbol", "side", "qty", "price", "filled_qty", "status", "region", "accepted_az", "seq")
    list_filter = ("status", "region", "symbol", "side")
    search_fields = ("order_id", "idempotency_key", "client")
    inlines = [StatusChangeInline, TradeInline]


@admin.register(Trade)
class TradeAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("trade_id", "order", "symbol", "side", "qty", "price", "counterparty", "region", "fill_az", "ts_ms")
    list_filter = ("region", "symbol", "side")
    search_fields = ("trade_id", "order__order_id")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "created", "last_used")
    fields = ("user", "prefix", "created", "last_used")  # not the hash: operators view this page too
    readonly_fields = ("prefix", "created", "last_used")
    search_fields = ("user__username", "prefix")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # tokens are issued with `manage.py create_api_token`, which prints them once
