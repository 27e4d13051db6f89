"""The Django mirror of the DynamoDB items: what admin and the pages read.

Derived data, rebuilt from the tables' Streams; never written by a view.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models


class Order(models.Model):
    STATUS_CHOICES = [("ACCEPTED", "Accepted"), ("OPEN", "Resting"), ("FILLED", "Filled"), ("CANCELLED", "Cancelled")]
    SIDE_CHOICES = [("BUY", "Buy"), ("SELL", "Sell")]

    order_id = models.CharField(max_length=40, primary_key=True)
    client = models.CharField(max_length=150, db_index=True)
    symbol = models.CharField(max_length=20, db_index=True)
    side = models.CharField(max_length=4, choices=SIDE_CHOICES)
    qty = models.DecimalField(max_digits=20, decimal_places=8)
    price = models.DecimalField(max_digits=20, decimal_places=8)
    filled_qty = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    status = models.CharField(max_length=12, choices=STATUS_CHOICES, db_index=True)
    region = models.CharField(max_length=32, db_index=True)
    accepted_az = models.CharField(max_length=40)
    seq = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=128, db_index=True)
    request_hash = models.CharField(max_length=64)
    simulation_seed = models.BigIntegerField()
    cancel_requested = models.BooleanField(default=False)
    created_ms = models.BigIntegerField(db_index=True)
    updated_ms = models.BigIntegerField()

    class Meta:
        ordering = ["-created_ms"]

    def __str__(self) -> str:
        return f"{self.order_id} {self.side} {self.qty} {self.symbol} @ {self.price} ({self.status})"

    @property
    def awaiting_fill(self) -> bool:
        """Not final yet: accepted, or resting in the matcher's book (as Order.is_open)."""
        return self.status in ("ACCEPTED", "OPEN")


class OrderStatusChange(models.Model):
    order = models.ForeignKey(Order, related_name="history", on_delete=models.CASCADE)
    position = models.PositiveIntegerField()
    status = models.CharField(max_length=12)
    ts_ms = models.BigIntegerField()
    az = models.CharField(max_length=40, blank=True)
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["order", "position"]
        constraints = [models.UniqueConstraint(fields=["order", "position"], name="one_change_per_position")]

    def __str__(self) -> str:
        return f"{self.status} @ {self.ts_ms}"


class Trade(models.Model):
    trade_id = models.CharField(max_length=80, primary_key=True)
    order = models.ForeignKey(Order, related_name="trades", on_delete=models.DO_NOTHING, db_constraint=False)
    symbol = models.CharField(max_length=20, db_index=True)
    side = models.CharField(max_length=4)
    qty = models.DecimalField(max_digits=20, decimal_places=8)
    price = models.DecimalField(max_digits=20, decimal_places=8)
    buy_order = models.CharField(max_length=40)
    sell_order = models.CharField(max_length=40)
    client = models.CharField(max_length=150, db_index=True)
    counterparty = models.CharField(max_length=40)
    region = models.CharField(max_length=32, db_index=True)
    fill_az = models.CharField(max_length=40)
    seq = models.BigIntegerField()
    fill_index = models.PositiveIntegerField()
    ts_ms = models.BigIntegerField(db_index=True)

    class Meta:
        ordering = ["-ts_ms", "-trade_id"]

    def __str__(self) -> str:
        return f"{self.trade_id} {self.qty} {self.symbol} @ {self.price}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ApiToken(models.Model):
    """A bearer token for the JSON API and /ws/events/. Only its hash is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, related_name="api_tokens", on_delete=models.CASCADE)
    token_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, user: object) -> str:
        token = "exd_" + secrets.token_urlsafe(32)
        cls.objects.create(user=user, token_hash=hash_token(token), prefix=token[:8])
        return token
