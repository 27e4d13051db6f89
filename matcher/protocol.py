"""What a fill worker needs from an engine, whichever engine it is.

Two engines implement `Engine`: `SimFillEngine` (Phase 1: each order is decided from its
simulationSeed alone, against simulated counterparties) and `MatchingEngine` (Phase 2: a
price-time-priority book per market, orders trade with each other). A worker hands either
the same `Ticket` and writes what comes back; it never asks which engine it holds.

Plain data only: no boto3, Django, Channels, clock or random. The records a worker gets for
every order (`Execution`, `Fill`, `OrderUpdate`) are NamedTuples: immutable plain data like
a frozen dataclass, built about 3.5x faster (a frozen dataclass's `__init__` goes through
`object.__setattr__` once per field), which is most of the matcher's cost per order.

Statuses an engine reports for an order:

- `OPEN`: resting in the book, nothing filled yet (not final);
- `PARTIALLY_FILLED`: resting in the book with part of it filled (not final);
- `FILLED`: final, all of it traded;
- `CANCELLED`: final; `left` says how much was cancelled (`filled + left == qty`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

BUY, SELL = "BUY", "SELL"
OPEN = "OPEN"
PARTIALLY_FILLED = "PARTIALLY_FILLED"
FILLED = "FILLED"
CANCELLED = "CANCELLED"
RESTING_STATUSES = (OPEN, PARTIALLY_FILLED)
FINAL_STATUSES = (FILLED, CANCELLED)


@dataclass(frozen=True)
class Ticket:
    """An order as an engine sees it: its terms, its place in its market's sequence, its
    seed (SimFill decides from it; the matcher ignores it) and its market's grid."""

    order_id: str
    client: str
    symbol: str
    side: str  # BUY or SELL
    qty: Decimal
    price: Decimal
    seq: int
    seed: int
    tick: Decimal
    lot: Decimal


class Fill(NamedTuple):
    """One trade between the incoming (taker) order and a resting (maker) order.

    `fill_index` counts the taker's fills from 0, so (taker_order, fill_index) names the trade; the
    matcher's `trade_id` is (symbol, seq, fill_index). Under SimFill the maker is a simulated
    counterparty (`SIM-MM-n`) in both `maker_order` and `maker_client`; under the matcher
    both `buy_order` and `sell_order` are real order ids. The price is the maker's."""

    symbol: str
    seq: int
    fill_index: int
    price: Decimal
    qty: Decimal
    buy_order: str
    sell_order: str
    maker_order: str
    taker_order: str
    taker_side: str
    maker_client: str
    taker_client: str

    @property
    def trade_id(self) -> str:
        return f"{self.symbol}-{self.seq}-{self.fill_index}"


class OrderUpdate(NamedTuple):
    """An order's status after a command: `filled + left == qty`, where `left` is what
    rests (OPEN, PARTIALLY_FILLED), what was cancelled (CANCELLED) or zero (FILLED)."""

    order_id: str
    status: str
    qty: Decimal
    filled: Decimal
    left: Decimal
    reason: str

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class Execution(NamedTuple):
    """What one command did. `updates` holds every order it touched (the taker last; a
    maker once per fill, so its last update is its state). `replay` is True when the
    command had been applied before: the fills and updates are then the original ones
    when the engine still remembers them (write them again, idempotently), else empty."""

    seq: int
    fills: tuple[Fill, ...]
    updates: tuple[OrderUpdate, ...]
    replay: bool = False

    def update_of(self, order_id: str) -> OrderUpdate | None:
        """The order's last update in this execution, if it was touched."""
        for update in reversed(self.updates):
            if update.order_id == order_id:
                return update
        return None


@dataclass(frozen=True)
class DepthLevel:
    price: Decimal
    qty: Decimal
    orders: int


@dataclass(frozen=True)
class Depth:
    """The top of a market's book: bids high to low, asks low to high."""

    symbol: str
    seq: int
    bids: tuple[DepthLevel, ...]
    asks: tuple[DepthLevel, ...]

    def as_data(self) -> dict[str, Any]:
        """Plain JSON-able data, Decimal strings."""

        def rows(levels: tuple[DepthLevel, ...]) -> list[dict[str, Any]]:
            return [{"price": str(lv.price), "qty": str(lv.qty), "orders": lv.orders} for lv in levels]

        return {"symbol": self.symbol, "seq": self.seq, "bids": rows(self.bids), "asks": rows(self.asks)}


class Engine(Protocol):
    """The one seam between a fill worker and the engine behind it.

    - `submit(ticket)`: apply a new order (an OrderAccepted). A ticket whose seq the
      engine has applied before is a replay (`Execution.replay`), never a second fill.
    - `cancel(ticket)`: apply a cancel (a CancelRequested) for that order: CANCELLED with
      what was left when it was resting or not submitted yet; no updates when it had
      already finished (filled or cancelled), so the caller keeps the store's status.
    - `depth(symbol, levels)`: the top of the book (empty for SimFill: nothing rests).
    - `last_seq(symbol)`: the last seq applied in that market (0 when stateless).
    - `snapshot()` / `restore(snapshot)`: the engine's whole state as plain JSON-able
      data (Decimal strings) and back; restoring and applying the later commands gives
      what the uninterrupted engine gives.
    - `stateful`: does the engine keep state between orders (a book)? Then one task at a
      time applies a market's commands, once each, in their seq order, and a task that
      takes over rebuilds the state first. SimFill: False (each order alone).
    - `market_state(symbol)`: one market's part of `snapshot()` (None: no state kept);
      `resting_ids(state)`: the orders resting in such a state, in seq order.
    - `reload(symbol, tick, lot, last_seq, resting)`: make a market's state the given
      resting orders (ticket, quantity filled so far), each at its own price in seq order,
      with `last_seq` applied: the book as the store holds it after a takeover.
    """

    name: str
    stateful: bool

    def submit(self, ticket: Ticket) -> Execution: ...

    def cancel(self, ticket: Ticket) -> Execution: ...

    def depth(self, symbol: str, levels: int = 10) -> Depth: ...

    def last_seq(self, symbol: str) -> int: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, snapshot: Mapping[str, Any]) -> None: ...

    def market_state(self, symbol: str) -> dict[str, Any] | None: ...

    def resting_ids(self, state: Mapping[str, Any]) -> tuple[str, ...]: ...

    def reload(self, symbol: str, tick: Decimal, lot: Decimal, last_seq: int, resting: Sequence[tuple[Ticket, Decimal]]) -> None: ...
