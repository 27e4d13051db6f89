"""The matching engine's book against its rules, over generated streams of orders and
cancels: an obviously-correct reference book (a list scanned for the best price, then the
earliest seq) gives the same fills and statuses; quantity is conserved; the book never
rests crossed; a repeated seq changes nothing; a snapshot plus the later commands equals
the uninterrupted book; and a seeded 20,000-order stream's tape digest is pinned."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from matcher.book import REMEMBERED, Book
from matcher.protocol import CANCELLED, FILLED, OPEN, PARTIALLY_FILLED, Execution
from matcher.stream import CANCEL, PLACE, Command, apply, commands

TICK, LOT = Decimal("0.01"), Decimal("0.0001")
CLIENTS = ("alice", "bob", "carol")


def new_book() -> Book:
    return Book("BTC-USD", TICK, LOT)


# --- generated streams -------------------------------------------------------------------

# One step: a roll picks its kind (6 in 10 a new order, 3 a cancel of an earlier order,
# 1 a cancel sent ahead of the next order); few prices and clients, so orders queue at one
# price, cross several levels and meet their own client's orders.
step = st.tuples(
    st.integers(min_value=0, max_value=9),
    st.booleans(),
    st.integers(min_value=97, max_value=103),
    st.integers(min_value=1, max_value=8),
    st.sampled_from(CLIENTS),
    st.integers(min_value=0, max_value=10**6),
)
steps = st.lists(step, min_size=5, max_size=150)
gaps = st.lists(st.integers(min_value=1, max_value=3), min_size=150, max_size=150)


def materialise(raw: list[Any], seq_gaps: list[int]) -> list[Command]:
    """Steps to commands: increasing seqs (with gaps), cancels of earlier orders (some of
    them finished already, some cancelled twice) and cancels sent before their order."""
    out: list[Command] = []
    placed: list[Command] = []
    seq = 0
    cancel_next = False
    for i, (roll, is_buy, ticks, lots, client, pick) in enumerate(raw):
        if roll == 9:
            cancel_next = True
            continue
        if roll >= 6:
            if placed:
                out.append(placed[pick % len(placed)]._replace(kind=CANCEL))
            continue
        seq += seq_gaps[i % len(seq_gaps)]
        command = Command(PLACE, seq, f"O{seq:04d}", client, is_buy, ticks, lots)
        if cancel_next:
            out.append(command._replace(kind=CANCEL))
            cancel_next = False
        out.append(command)
        placed.append(command)
    return out


def run(book: Book, stream: list[Command]) -> list[Execution]:
    return [apply(book, command) for command in stream]


def lots(qty: Decimal) -> int:
    return int(qty / LOT)


# --- the reference book ------------------------------------------------------------------


@dataclass
class RefOrder:
    order_id: str
    client: str
    is_buy: bool
    ticks: int
    lots: int
    left: int
    seq: int


class ReferenceBook:
    """The rules, written as plainly as possible: O(n) per order, no cleverness."""

    def __init__(self) -> None:
        self.orders: list[RefOrder] = []
        self.last_seq = 0
        self.early: set[str] = set()
        self.finished: set[str] = set()

    def place(self, c: Command) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] | None:
        if c.seq <= self.last_seq:
            return None
        self.last_seq = c.seq
        if c.order_id in self.early:
            self.early.discard(c.order_id)
            self.finished.add(c.order_id)
            return [], [(c.order_id, CANCELLED, c.lots, 0, c.lots)]
        fills: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        left = c.lots
        while left:
            crossing = [o for o in self.orders if o.is_buy != c.is_buy and (o.ticks <= c.ticks if c.is_buy else o.ticks >= c.ticks)]
            if not crossing:
                break
            best = min(crossing, key=lambda o: (o.ticks if c.is_buy else -o.ticks, o.seq))
            if best.client == c.client:
                self.orders.remove(best)
                self.finished.add(best.order_id)
                updates.append((best.order_id, CANCELLED, best.lots, best.lots - best.left, best.left))
                continue
            traded = min(left, best.left)
            left -= traded
            best.left -= traded
            buy, sell = (c.order_id, best.order_id) if c.is_buy else (best.order_id, c.order_id)
            fills.append((len(fills), best.ticks, traded, buy, sell, best.order_id, c.order_id))
            if best.left:
                updates.append((best.order_id, PARTIALLY_FILLED, best.lots, best.lots - best.left, best.left))
            else:
                self.orders.remove(best)
                self.finished.add(best.order_id)
                updates.append((best.order_id, FILLED, best.lots, best.lots, 0))
        if not left:
            self.finished.add(c.order_id)
            updates.append((c.order_id, FILLED, c.lots, c.lots, 0))
        else:
            self.orders.append(RefOrder(c.order_id, c.client, c.is_buy, c.ticks, c.lots, left, c.seq))
            updates.append((c.order_id, OPEN if left == c.lots else PARTIALLY_FILLED, c.lots, c.lots - left, left))
        return fills, updates

    def cancel(self, c: Command) -> list[tuple[Any, ...]]:
        for o in self.orders:
            if o.order_id == c.order_id:
                self.orders.remove(o)
                self.finished.add(o.order_id)
                return [(o.order_id, CANCELLED, o.lots, o.lots - o.left, o.left)]
        if c.seq > self.last_seq and c.order_id not in self.early:
            self.early.add(c.order_id)
            return [(c.order_id, CANCELLED, c.lots, 0, c.lots)]
        return []


def plain_fills(done: Execution) -> list[tuple[Any, ...]]:
    return [(f.fill_index, int(f.price / TICK), lots(f.qty), f.buy_order, f.sell_order, f.maker_order, f.taker_order) for f in done.fills]


def plain_updates(done: Execution) -> list[tuple[Any, ...]]:
    return [(u.order_id, u.status, lots(u.qty), lots(u.filled), lots(u.left)) for u in done.updates]


# --- properties --------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(raw=steps, seq_gaps=gaps)
def test_it_fills_as_the_reference_book_does_best_price_then_earliest_order(raw: list[Any], seq_gaps: list[int]) -> None:
    stream = materialise(raw, seq_gaps)
    book, ref = new_book(), ReferenceBook()
    for command in stream:
        done = apply(book, command)
        if command.kind == PLACE:
            expected = ref.place(command)
            assert expected is not None
            assert (plain_fills(done), plain_updates(done)) == expected, command
        else:
            if done.replay:  # a second cancel: the book repeats the first one's answer
                continue
            assert plain_updates(done) == ref.cancel(command), command
    resting = sorted((o.order_id, o.left) for o in ref.orders)
    assert sorted((oid, lots(book.resting(oid).left)) for oid, _ in resting if book.resting(oid)) == resting  # type: ignore[union-attr]
    assert book.resting_count() == len(ref.orders)


@settings(max_examples=300, deadline=None)
@given(raw=steps, seq_gaps=gaps)
def test_it_conserves_every_orders_quantity(raw: list[Any], seq_gaps: list[int]) -> None:
    stream = materialise(raw, seq_gaps)
    book = new_book()
    qty = {c.order_id: c.lots for c in stream if c.kind == PLACE}
    traded: dict[str, int] = {}
    last: dict[str, tuple[str, int, int]] = {}
    for done in run(book, stream):
        if done.replay:
            continue
        for fill in done.fills:
            for oid in (fill.buy_order, fill.sell_order):
                traded[oid] = traded.get(oid, 0) + lots(fill.qty)
        for update in done.updates:
            assert lots(update.filled) + lots(update.left) == lots(update.qty) == qty[update.order_id]
            last[update.order_id] = (update.status, lots(update.filled), lots(update.left))
    for oid, total in qty.items():
        status, filled, left = last[oid]
        assert traded.get(oid, 0) == filled <= total
        assert filled + left == total
        resting = book.resting(oid)
        if status in (OPEN, PARTIALLY_FILLED):
            assert resting is not None and lots(resting.left) == left
        else:
            assert resting is None
            assert (status == FILLED) == (left == 0 and filled == total)


@settings(max_examples=300, deadline=None)
@given(raw=steps, seq_gaps=gaps)
def test_it_never_rests_crossed_and_trades_at_the_resting_price(raw: list[Any], seq_gaps: list[int]) -> None:
    stream = materialise(raw, seq_gaps)
    book = new_book()
    limit = {c.order_id: c.ticks * TICK for c in stream if c.kind == PLACE}
    for command in stream:
        done = apply(book, command)
        for fill in done.fills:
            assert fill.price == limit[fill.maker_order]
            assert fill.maker_client != fill.taker_client  # no self-trade prints
            if fill.taker_side == "BUY":
                assert fill.price <= limit[fill.taker_order]
            else:
                assert fill.price >= limit[fill.taker_order]
        prices = [f.price for f in done.fills]
        assert prices == sorted(prices, reverse=command.side == "SELL")  # best price first
        bid, ask = book.best_bid(), book.best_ask()
        if bid is not None and ask is not None:
            assert bid < ask
        depth = book.depth(50)
        assert [lv.price for lv in depth.bids] == sorted((lv.price for lv in depth.bids), reverse=True)
        assert [lv.price for lv in depth.asks] == sorted(lv.price for lv in depth.asks)


@settings(max_examples=300, deadline=None)
@given(raw=steps, seq_gaps=gaps)
def test_it_applies_a_repeated_seq_once_and_answers_it_with_the_original_execution(raw: list[Any], seq_gaps: list[int]) -> None:
    stream = materialise(raw, seq_gaps)
    book = new_book()
    first = run(book, stream)
    after = json.dumps(book.snapshot())
    cancels = [c.order_id for c in stream if c.kind == CANCEL]
    for command, original in zip(stream, first):
        again = apply(book, command)
        if command.kind == PLACE:
            assert again.replay
            if command.seq > book.last_seq - REMEMBERED:
                assert (again.fills, again.updates) == (original.fills, original.updates)
            else:  # forgotten: nothing is applied again, and nothing is made up
                assert (again.fills, again.updates) == ((), ())
        elif original.updates and command.order_id in cancels[-REMEMBERED:]:
            assert again.replay and (again.fills, again.updates) == (original.fills, original.updates)
        else:  # a cancel of an order that had finished, or one forgotten: nothing to cancel now
            assert not again.updates or again.replay
    assert json.dumps(book.snapshot()) == after


@settings(max_examples=300, deadline=None)
@given(raw=steps, seq_gaps=gaps, cut=st.integers(min_value=0, max_value=200))
def test_it_rebuilds_from_a_snapshot_plus_the_later_commands_to_the_uninterrupted_book(raw: list[Any], seq_gaps: list[int], cut: int) -> None:
    stream = materialise(raw, seq_gaps)
    cut = min(cut, len(stream))
    whole = new_book()
    expected = run(whole, stream)
    part = new_book()
    run(part, stream[:cut])
    rebuilt = Book.restore(json.loads(json.dumps(part.snapshot())))
    assert rebuilt.snapshot() == part.snapshot()
    for command, want in zip(stream[cut:], expected[cut:]):
        got = apply(rebuilt, command)
        if want.replay:  # a repeated cancel: the snapshot keeps no memory of answers
            assert not got.updates or got.replay
            continue
        assert got == want, command
    assert json.dumps(rebuilt.snapshot()) == json.dumps(whole.snapshot())
    assert rebuilt.depth(20) == whole.depth(20)


@settings(max_examples=100, deadline=None)
@given(raw=steps, seq_gaps=gaps)
def test_it_gives_the_same_stream_the_same_bytes(raw: list[Any], seq_gaps: list[int]) -> None:
    stream = materialise(raw, seq_gaps)

    def serialised() -> bytes:
        book = new_book()
        executions = [[list(map(str, f)) for f in done.fills] + [list(map(str, u)) for u in done.updates] for done in run(book, stream)]
        return json.dumps([executions, book.snapshot()], sort_keys=True).encode()

    assert serialised() == serialised()


# --- the golden tape ---------------------------------------------------------------------

GOLDEN_SEED = 15
GOLDEN_ORDERS = 20_000
GOLDEN_TAPE = "5997552651fc84ba"  # sha256 of the tape below, first 16 hex
GOLDEN_FILLS = 9_632


def tape_digest(executions: list[Execution]) -> tuple[str, int]:
    lines = [
        f"{f.trade_id}|{f.buy_order}|{f.sell_order}|{f.maker_order}|{f.taker_side}|{f.qty}|{f.price}"
        for done in executions
        for f in done.fills
    ]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16], len(lines)


def test_it_prints_the_pinned_tape_for_the_golden_seed() -> None:
    book = new_book()
    executions = run(book, list(commands(random.Random(GOLDEN_SEED), GOLDEN_ORDERS)))
    digest, fills = tape_digest(executions)
    assert (digest, fills) == (GOLDEN_TAPE, GOLDEN_FILLS), f"seed {GOLDEN_SEED}: tape {digest} with {fills} fills"
