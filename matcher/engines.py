"""The two engines behind the `Engine` protocol.

`SimFillEngine` wraps Phase 1's pure `simfill.engine.decide` unchanged (the same fills,
prices, counterparties and reasons, so a tape made through it is the tape SimFill made);
`MatchingEngine` keeps one `Book` per market.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from matcher.book import Book
from matcher.protocol import BUY, CANCELLED, FILLED, Depth, Engine, Execution, Fill, OrderUpdate, Ticket
from simfill.engine import OrderTerms, decide

ZERO = Decimal(0)


class SimFillEngine:
    """Phase 1 behind the protocol: every order is decided on arrival from its seed alone
    against simulated counterparties; nothing rests, so there is no book and no state."""

    name = "simfill"

    def submit(self, ticket: Ticket) -> Execution:
        outcome = decide(OrderTerms(ticket.side, ticket.qty, ticket.price, ticket.tick, ticket.lot), ticket.seed)
        fills = []
        for index, fill in enumerate(outcome.fills):
            if ticket.side == BUY:
                buy, sell = ticket.order_id, fill.counterparty
            else:
                buy, sell = fill.counterparty, ticket.order_id
            fills.append(
                Fill(
                    ticket.symbol, ticket.seq, index, fill.price, fill.qty, buy, sell,
                    fill.counterparty, ticket.order_id, ticket.side, fill.counterparty, ticket.client,
                )
            )
        filled = outcome.filled_qty
        left = ZERO if outcome.final_status == FILLED else ticket.qty - filled
        update = OrderUpdate(ticket.order_id, outcome.final_status, ticket.qty, filled, left, outcome.reason)
        return Execution(ticket.seq, tuple(fills), (update,))

    def cancel(self, ticket: Ticket) -> Execution:
        # An order SimFill has not decided yet is open and unfilled: all of it is cancelled.
        return Execution(ticket.seq, (), (OrderUpdate(ticket.order_id, CANCELLED, ticket.qty, ZERO, ticket.qty, "cancelled by client"),))

    def depth(self, symbol: str, levels: int = 10) -> Depth:
        return Depth(symbol, 0, (), ())

    def last_seq(self, symbol: str) -> int:
        return 0

    def snapshot(self) -> dict[str, Any]:
        return {"engine": self.name}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        if snapshot.get("engine") != self.name:
            raise ValueError(f"not a {self.name} snapshot: {snapshot.get('engine')!r}")


class MatchingEngine:
    """Phase 2 behind the protocol: one price-time-priority `Book` per market, created on
    the market's first ticket with that ticket's grid."""

    name = "matcher"

    def __init__(self) -> None:
        self.books: dict[str, Book] = {}

    def book(self, ticket: Ticket) -> Book:
        book = self.books.get(ticket.symbol)
        if book is None:
            book = self.books[ticket.symbol] = Book(ticket.symbol, ticket.tick, ticket.lot)
        elif book.tick != ticket.tick or book.lot != ticket.lot:
            raise ValueError(f"{ticket.symbol} trades on tick {book.tick} / lot {book.lot}, not {ticket.tick} / {ticket.lot}")
        return book

    def submit(self, ticket: Ticket) -> Execution:
        return self.book(ticket).place(ticket.seq, ticket.order_id, ticket.client, ticket.side, ticket.qty, ticket.price)

    def cancel(self, ticket: Ticket) -> Execution:
        return self.book(ticket).cancel(ticket.order_id, ticket.seq, ticket.qty)

    def depth(self, symbol: str, levels: int = 10) -> Depth:
        book = self.books.get(symbol)
        return book.depth(levels) if book is not None else Depth(symbol, 0, (), ())

    def last_seq(self, symbol: str) -> int:
        book = self.books.get(symbol)
        return book.last_seq if book is not None else 0

    def snapshot(self) -> dict[str, Any]:
        return {"engine": self.name, "books": {symbol: self.books[symbol].snapshot() for symbol in sorted(self.books)}}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        if snapshot.get("engine") != self.name:
            raise ValueError(f"not a {self.name} snapshot: {snapshot.get('engine')!r}")
        self.books = {str(symbol): Book.restore(data) for symbol, data in snapshot["books"].items()}


if TYPE_CHECKING:  # mypy --strict checks that both engines implement the protocol
    _ENGINES: tuple[Engine, Engine] = (SimFillEngine(), MatchingEngine())
