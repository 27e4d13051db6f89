"""A seeded stream of orders and cancels for one market, for tests, the golden tape and
the benchmark: makers quote a few ticks around a drifting reference price, takers cross
it, and some orders are cancelled later. Pure: the randomness is the `rng` passed in
(a `random.Random(seed)`), so one seed is one stream everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, Protocol

from matcher.book import Book
from matcher.protocol import BUY, SELL, Execution

PLACE, CANCEL = "PLACE", "CANCEL"


class Rng(Protocol):
    def randrange(self, start: int, stop: int | None = None) -> int: ...


class Command(NamedTuple):
    """A new order (PLACE) or a cancel of an earlier one (CANCEL: its seq and terms)."""

    kind: str
    seq: int
    order_id: str
    client: str
    is_buy: bool
    ticks: int
    lots: int

    @property
    def side(self) -> str:
        return BUY if self.is_buy else SELL


def commands(
    rng: Rng,
    n: int,
    mid_ticks: int = 5_000_000,
    clients: int = 200,
    cancel_pct: int = 15,
    cross_pct: int = 25,
    spread_ticks: int = 20,
    max_lots: int = 100,
    cancelable: int = 10_000,
) -> Iterator[Command]:
    """`n` commands: `cancel_pct`% cancels of a recent order (it may have filled already),
    `cross_pct`% orders priced through the reference (takers), the rest quotes 1 to
    `spread_ticks` ticks on their own side of it. The reference moves one tick about
    every 20 orders."""
    names = [f"c{i:03d}" for i in range(clients)]
    recent: list[Command] = []
    mid = mid_ticks
    seq = 0
    for _ in range(n):
        roll = rng.randrange(100)
        if roll < cancel_pct and recent:
            i = rng.randrange(len(recent))
            target = recent[i]
            recent[i] = recent[-1]
            recent.pop()
            yield target._replace(kind=CANCEL)
            continue
        seq += 1
        is_buy = rng.randrange(2) == 0
        if roll < cancel_pct + cross_pct:
            offset = -rng.randrange(10)
            lots = 1 + rng.randrange(2 * max_lots)
        else:
            offset = 1 + rng.randrange(spread_ticks)
            lots = 1 + rng.randrange(max_lots)
        ticks = mid - offset if is_buy else mid + offset
        command = Command(PLACE, seq, f"O{seq:024x}", names[rng.randrange(clients)], is_buy, max(ticks, 1), lots)
        if len(recent) < cancelable:
            recent.append(command)
        else:
            recent[rng.randrange(cancelable)] = command
        yield command
        if rng.randrange(20) == 0:
            mid = max(mid + rng.randrange(3) - 1, spread_ticks + 1)


def apply(book: Book, command: Command) -> Execution:
    """Apply a command through the book's Decimal edge, as a worker would."""
    qty = command.lots * book.lot
    if command.kind == PLACE:
        return book.place(command.seq, command.order_id, command.client, command.side, qty, command.ticks * book.tick)
    return book.cancel(command.order_id, command.seq, qty)
