"""Orders and trades as plain data, and the pure rules about them.

No boto3, no Django, no clock: time comes in as an argument.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from trading.markets import ExchangeConfig, Market

SIDES = ("BUY", "SELL")
# ACCEPTED: written, not seen by the engine yet. OPEN: resting in the matcher's book
# (`filled_qty` > 0 once part of it traded); SimFill never leaves an order resting.
ACCEPTED, OPEN = "ACCEPTED", "OPEN"
OPEN_STATUSES = (ACCEPTED, OPEN)
FINAL_STATUSES = ("FILLED", "CANCELLED")
STATUSES = OPEN_STATUSES + FINAL_STATUSES

MAX_IDEMPOTENCY_KEY_LEN = 128
_MAX_NUMBER_TEXT = 40  # longer numeric text is refused before Decimal sees it


@dataclass(frozen=True)
class StatusChange:
    status: str
    ts_ms: int
    az: str = ""
    note: str = ""


@dataclass(frozen=True)
class Order:
    order_id: str
    client: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    status: str
    region: str
    accepted_az: str
    seq: int
    idempotency_key: str
    request_hash: str
    simulation_seed: int
    created_ms: int
    filled_qty: Decimal = Decimal("0")
    cancel_requested: bool = False
    history: tuple[StatusChange, ...] = ()
    updated_ms: int = 0
    # The trades this order made as the resting (maker) side in the matcher's book: their
    # ids derive from the taker, so the maker's item keeps them.
    maker_trades: tuple[str, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def with_status(self, status: str, ts_ms: int, az: str = "", note: str = "", filled: Decimal | None = None) -> Order:
        return replace(
            self,
            status=status,
            filled_qty=self.filled_qty if filled is None else filled,
            history=self.history + (StatusChange(status, ts_ms, az, note),),
            updated_ms=ts_ms,
        )


@dataclass(frozen=True)
class Trade:
    trade_id: str
    order_id: str
    symbol: str
    side: str  # the side of the order that was filled
    qty: Decimal
    price: Decimal
    buy_order: str
    sell_order: str
    client: str
    counterparty: str
    region: str
    fill_az: str
    seq: int
    fill_index: int
    ts_ms: int


@dataclass(frozen=True)
class OrderRequest:
    """A validated order entry: what the client asked for, normalised."""

    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    region: str

    def canonical(self) -> str:
        return json.dumps(
            {"symbol": self.symbol, "side": self.side, "qty": str(self.qty), "price": str(self.price), "region": self.region},
            sort_keys=True,
        )


@dataclass
class ValidationErrors(Exception):
    errors: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.errors)


def parse_decimal(raw: Any, name: str, errors: ValidationErrors) -> Decimal | None:
    """Strings or JSON numbers (already Decimal when parsed with parse_float=Decimal)."""
    if isinstance(raw, bool) or raw is None:
        errors.add(name, "This field is required and must be a decimal number." if raw is None else "Must be a decimal number.")
        return None
    if isinstance(raw, float):  # a caller that parsed JSON with floats: refuse rather than round
        raw = repr(raw)
    if isinstance(raw, int):
        raw = str(raw)
    if isinstance(raw, Decimal):
        raw = str(raw)
    if not isinstance(raw, str):
        errors.add(name, "Must be a decimal number given as a string or a JSON number.")
        return None
    text = raw.strip()
    if not text or len(text) > _MAX_NUMBER_TEXT:
        errors.add(name, "Must be a decimal number of at most 40 characters.")
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        errors.add(name, "Must be a decimal number.")
        return None
    if not value.is_finite():
        errors.add(name, "Must be a finite number.")
        return None
    if value <= 0:
        errors.add(name, "Must be greater than zero.")
        return None
    return value


def on_grid(value: Decimal, step: Decimal) -> bool:
    if abs(value.adjusted()) > 30:
        return False
    return (value / step) == (value / step).to_integral_value()


def validate_order(payload: Any, config: ExchangeConfig, default_region: str | None = None) -> OrderRequest:
    """Check an order entry; raise ValidationErrors naming every bad field."""
    errors = ValidationErrors()
    if not isinstance(payload, dict):
        errors.add("__all__", "The body must be a JSON object.")
        raise errors
    unknown = sorted(str(k)[:40] for k in payload if k not in {"symbol", "side", "qty", "price", "region"})
    if unknown:
        errors.add("__all__", f"Unknown fields: {', '.join(unknown)}.")

    symbol_raw = payload.get("symbol")
    market: Market | None = None
    if not isinstance(symbol_raw, str) or not symbol_raw.strip():
        errors.add("symbol", "This field is required.")
    else:
        market = config.market(symbol_raw.strip().upper())
        if market is None:
            errors.add("symbol", f"Unknown symbol. Known: {', '.join(config.market_symbols)}.")

    side = payload.get("side")
    if not isinstance(side, str) or side.strip().upper() not in SIDES:
        errors.add("side", "Must be BUY or SELL.")
        side = None
    else:
        side = side.strip().upper()

    qty = parse_decimal(payload.get("qty"), "qty", errors)
    price = parse_decimal(payload.get("price"), "price", errors)
    if market is not None:
        if qty is not None:
            if qty < market.min_qty or qty > market.max_qty:
                errors.add("qty", f"Must be between {market.min_qty} and {market.max_qty}.")
            elif not on_grid(qty, market.lot):
                errors.add("qty", f"Must be a multiple of the lot size {market.lot}.")
        if price is not None:
            if price > market.max_price:
                errors.add("price", f"Must be at most {market.max_price}.")
            elif not on_grid(price, market.tick):
                errors.add("price", f"Must be a multiple of the tick size {market.tick}.")

    region_raw = payload.get("region")
    region = None
    if region_raw is None or region_raw == "":
        region = default_region or (market.home_region if market else config.regions[0])
    elif not isinstance(region_raw, str) or region_raw not in config.regions:
        errors.add("region", f"Unknown region. Known: {', '.join(config.regions)}.")
    else:
        region = region_raw

    if errors or market is None or side is None or qty is None or price is None or region is None:
        raise errors
    return OrderRequest(
        symbol=market.symbol,
        side=side,
        qty=qty.quantize(market.lot),
        price=price.quantize(market.tick),
        region=region,
    )


def validate_idempotency_key(key: Any) -> str:
    errors = ValidationErrors()
    if not isinstance(key, str) or not key.strip():
        errors.add("Idempotency-Key", "The Idempotency-Key header is required.")
    elif len(key) > MAX_IDEMPOTENCY_KEY_LEN:
        errors.add("Idempotency-Key", f"Must be at most {MAX_IDEMPOTENCY_KEY_LEN} characters.")
    elif not key.isprintable():
        errors.add("Idempotency-Key", "Must be printable text.")
    if errors or not isinstance(key, str):
        raise errors
    return key.strip()


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def derive_order_id(client: str, idempotency_key: str) -> str:
    """The same (client, key) always names the same order: the id is the idempotency record."""
    return "O" + _digest("order", client, idempotency_key)[:24]


def is_order_id(text: str) -> bool:
    """Does `text` name an order (derive_order_id's shape), not a simulated counterparty?"""
    return len(text) == 25 and text.startswith("O") and all(c in "0123456789abcdef" for c in text[1:])


def request_hash(request: OrderRequest) -> str:
    return _digest("request", request.canonical())


def simulation_seed(exchange_seed: int, client: str, symbol: str, idempotency_key: str) -> int:
    """From the order's own identity and the exchange seed only, never from arrival order."""
    return int(_digest("simfill", str(exchange_seed), client, symbol, idempotency_key)[:15], 16)


def derive_trade_id(order_id: str, region: str, fill_index: int) -> str:
    """Region in the id: last-writer-wins replication can never erase another region's fill."""
    return f"T{order_id[1:17]}-{region}-{fill_index}"


def event_id(kind: str, *parts: str) -> str:
    return kind + "-" + _digest(kind, *parts)[:24]
