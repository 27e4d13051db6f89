"""The two engines behind the `Engine` protocol.

`SimFillEngine` wraps Phase 1's pure `simfill.engine.decide` unchanged (the same fills,
prices, counterparties and reasons, so a tape made through it is the tape SimFill made);
`MatchingEngine` keeps one `Book` per market.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from matcher.book import SNAPSHOT_FORMAT, Book
from matcher.protocol import BUY, CANCELLED, FILLED, Depth, Engine, Execution, Fill, OrderUpdate, Ticket
from simfill.engine import OrderTerms, decide

ZERO = Decimal(0)


class SimFillEngine:
    """Phase 1 behind the protocol: every order is decided on arrival from its seed alone
    against simulated counterparties; nothing rests, so there is no book and no state."""

    name = "simfill"
    stateful = False

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

    def market_state(self, symbol: str) -> dict[str, Any] | None:
        return None

    def resting_ids(self, state: Mapping[str, Any]) -> tuple[str, ...]:
        return ()

    def reload(self, symbol: str, tick: Decimal, lot: Decimal, last_seq: int, resting: Sequence[tuple[Ticket, Decimal]]) -> None:
        if resting:
            raise ValueError("nothing rests under SimFill")


class MatchingEngine:
    """Phase 2 behind the protocol: one price-time-priority `Book` per market, created on
    the market's first ticket with that ticket's grid."""

    name = "matcher"
    stateful = True

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

    def market_state(self, symbol: str) -> dict[str, Any] | None:
        book = self.books.get(symbol)
        return book.snapshot() if book is not None else None

    def resting_ids(self, state: Mapping[str, Any]) -> tuple[str, ...]:
        orders = [order for side in ("bids", "asks") for _, level in state.get(side, []) for order in level]
        return tuple(str(order[0]) for order in sorted(orders, key=lambda order: int(order[4])))

    def reload(self, symbol: str, tick: Decimal, lot: Decimal, last_seq: int, resting: Sequence[tuple[Ticket, Decimal]]) -> None:
        """Time priority at a price is seq order: the book applies a market's orders in seq
        order, so the orders resting at one price arrived in that order."""
        sides: dict[str, dict[Decimal, list[tuple[int, list[Any]]]]] = {"bids": {}, "asks": {}}
        for ticket, filled in resting:
            if ticket.symbol != symbol or not (0 <= filled < ticket.qty):
                raise ValueError(f"order {ticket.order_id} cannot rest in {symbol} with {filled} of {ticket.qty} filled")
            side = sides["bids" if ticket.side == BUY else "asks"]
            entry = [ticket.order_id, ticket.client, str(ticket.qty), str(ticket.qty - filled), ticket.seq]
            side.setdefault(ticket.price, []).append((ticket.seq, entry))
        state = {
            "format": SNAPSHOT_FORMAT,
            "symbol": symbol,
            "tick": str(tick),
            "lot": str(lot),
            "last_seq": max([last_seq, *(ticket.seq for ticket, _ in resting)]),
            "bids": [[str(p), [e for _, e in sorted(sides["bids"][p])]] for p in sorted(sides["bids"], reverse=True)],
            "asks": [[str(p), [e for _, e in sorted(sides["asks"][p])]] for p in sorted(sides["asks"])],
            "early_cancels": [],
        }
        self.books[symbol] = Book.restore(state)


ENGINES: dict[str, type[SimFillEngine] | type[MatchingEngine]] = {SimFillEngine.name: SimFillEngine, MatchingEngine.name: MatchingEngine}


def engine_for(name: str) -> Engine:
    """A new engine of the kind EXCHANGE_ENGINE names: a stateful one is one task's books."""
    try:
        return ENGINES[name]()
    except KeyError:
        raise ValueError(f"no engine {name!r}; known: {', '.join(ENGINES)}") from None


if TYPE_CHECKING:  # mypy --strict checks that both engines implement the protocol
    _ENGINES: tuple[Engine, Engine] = (SimFillEngine(), MatchingEngine())
