"""The order book, example by example: resting, crossing, partial fills, cancels,
self-trade prevention, replays, early cancels, depth and snapshots."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from matcher.book import Book
from matcher.protocol import CANCELLED, FILLED, OPEN, PARTIALLY_FILLED, Execution

D = Decimal


def make_book() -> Book:
    return Book("BTC-USD", D("0.01"), D("0.0001"))


def statuses(done: Execution) -> list[tuple[str, str, str, str]]:
    return [(u.order_id, u.status, str(u.filled), str(u.left)) for u in done.updates]


def test_it_rests_an_order_that_crosses_nothing_as_open() -> None:
    book = make_book()
    done = book.place(1, "b1", "alice", "BUY", D("1.5"), D("100.00"))
    assert done.fills == ()
    assert statuses(done) == [("b1", OPEN, "0.0000", "1.5000")]
    depth = book.depth()
    assert [(str(lv.price), str(lv.qty), lv.orders) for lv in depth.bids] == [("100.00", "1.5000", 1)]
    assert depth.asks == () and depth.seq == 1


def test_it_fills_part_of_a_resting_order_at_the_resting_price() -> None:
    book = make_book()
    book.place(1, "s1", "bob", "SELL", D("2"), D("100.00"))
    done = book.place(2, "b1", "alice", "BUY", D("0.5"), D("101.00"))
    (fill,) = done.fills
    assert (str(fill.price), str(fill.qty), fill.buy_order, fill.sell_order, fill.maker_order, fill.taker_order) == (
        "100.00", "0.5000", "b1", "s1", "s1", "b1"
    )
    assert fill.trade_id == "BTC-USD-2-0"
    assert statuses(done) == [("s1", PARTIALLY_FILLED, "0.5000", "1.5000"), ("b1", FILLED, "0.5000", "0.0000")]
    assert str(book.depth().asks[0].qty) == "1.5000"


def test_it_walks_the_book_best_price_first_and_rests_the_remainder() -> None:
    book = make_book()
    book.place(1, "s1", "bob", "SELL", D("1"), D("100.02"))
    book.place(2, "s2", "carol", "SELL", D("1"), D("100.01"))
    book.place(3, "s3", "dave", "SELL", D("1"), D("100.01"))
    book.place(4, "s4", "erin", "SELL", D("1"), D("100.05"))
    done = book.place(5, "b1", "alice", "BUY", D("3.5"), D("100.02"))
    assert [(f.maker_order, str(f.price)) for f in done.fills] == [("s2", "100.01"), ("s3", "100.01"), ("s1", "100.02")]
    assert statuses(done)[-1] == ("b1", PARTIALLY_FILLED, "3.0000", "0.5000")
    assert done.updates[-1].reason == "partially filled, resting"
    assert str(book.best_bid()) == "100.02" and str(book.best_ask()) == "100.05"


def test_it_cancels_what_is_left_of_a_resting_order() -> None:
    book = make_book()
    book.place(1, "s1", "bob", "SELL", D("2"), D("100.00"))
    book.place(2, "b1", "alice", "BUY", D("0.5"), D("100.00"))
    done = book.cancel("s1", 1)
    assert statuses(done) == [("s1", CANCELLED, "0.5000", "1.5000")]
    assert book.depth().asks == () and book.resting("s1") is None
    # The cancelled order is gone: a later buy rests instead of trading with it.
    later = book.place(3, "b2", "carol", "BUY", D("1"), D("100.00"))
    assert later.fills == () and later.updates[-1].status == OPEN


def test_it_answers_a_cancel_of_a_finished_order_with_no_updates() -> None:
    book = make_book()
    book.place(1, "s1", "bob", "SELL", D("1"), D("100.00"))
    book.place(2, "b1", "alice", "BUY", D("1"), D("100.00"))
    assert book.cancel("s1", 1).updates == ()


def test_it_repeats_a_cancel_s_answer_as_a_replay() -> None:
    book = make_book()
    book.place(1, "s1", "bob", "SELL", D("1"), D("100.00"))
    first = book.cancel("s1", 1)
    again = book.cancel("s1", 1)
    assert again.replay and again.updates == first.updates


def test_it_cancels_an_order_whose_cancel_arrived_first_when_it_arrives() -> None:
    book = make_book()
    early = book.cancel("b1", 7, D("1"))
    assert statuses(early) == [("b1", CANCELLED, "0.0000", "1.0000")]
    book.place(6, "s1", "bob", "SELL", D("1"), D("100.00"))
    done = book.place(7, "b1", "alice", "BUY", D("1"), D("100.00"))
    assert done.fills == () and statuses(done) == [("b1", CANCELLED, "0.0000", "1.0000")]
    assert book.resting("s1") is not None and book.last_seq == 7


def test_it_prevents_a_self_trade_by_cancelling_the_resting_order() -> None:
    book = make_book()
    book.place(1, "s1", "alice", "SELL", D("1"), D("100.00"))
    book.place(2, "s2", "bob", "SELL", D("1"), D("100.01"))
    done = book.place(3, "b1", "alice", "BUY", D("1"), D("100.01"))
    assert [(f.maker_order, f.maker_client) for f in done.fills] == [("s2", "bob")]
    assert statuses(done) == [("s1", CANCELLED, "0.0000", "1.0000"), ("s2", FILLED, "1.0000", "0.0000"), ("b1", FILLED, "1.0000", "0.0000")]
    assert done.updates[0].reason.startswith("self-trade prevention")
    assert book.resting("s1") is None


def test_it_rests_an_order_whose_only_cross_was_its_own_as_open() -> None:
    book = make_book()
    book.place(1, "s1", "alice", "SELL", D("1"), D("100.00"))
    done = book.place(2, "b1", "alice", "BUY", D("2"), D("100.00"))
    assert done.fills == ()
    assert statuses(done) == [("s1", CANCELLED, "0.0000", "1.0000"), ("b1", OPEN, "0.0000", "2.0000")]
    assert str(book.best_bid()) == "100.00" and book.best_ask() is None


def test_it_answers_a_repeated_seq_with_the_original_execution_and_changes_nothing() -> None:
    book = make_book()
    book.place(1, "s1", "bob", "SELL", D("1"), D("100.00"))
    first = book.place(2, "b1", "alice", "BUY", D("0.4"), D("100.00"))
    before = book.snapshot()
    again = book.place(2, "b1", "alice", "BUY", D("0.4"), D("100.00"))
    assert again.replay and (again.fills, again.updates) == (first.fills, first.updates)
    assert book.snapshot() == before


def test_it_answers_a_seq_it_no_longer_remembers_with_an_empty_replay() -> None:
    book = make_book()
    book.place(5, "b1", "alice", "BUY", D("1"), D("100.00"))
    rebuilt = Book.restore(book.snapshot())
    again = rebuilt.place(5, "b1", "alice", "BUY", D("1"), D("100.00"))
    assert again == Execution(5, (), (), True)
    assert rebuilt.place(3, "x", "bob", "SELL", D("1"), D("100.00")).replay  # a gap below the last seq
    assert rebuilt.resting_count() == 1


def test_it_refuses_prices_and_quantities_off_the_grid() -> None:
    book = make_book()
    for qty, price in ((D("1"), D("100.001")), (D("0.00001"), D("100")), (D("0"), D("100")), (D("1"), D("-1")), (D("1"), D("NaN"))):
        with pytest.raises(ValueError):
            book.place(1, "b1", "alice", "BUY", qty, price)
    with pytest.raises(ValueError):
        book.place(1, "b1", "alice", "HOLD", D("1"), D("100"))
    assert book.last_seq == 0 and book.resting_count() == 0


def test_it_keeps_time_priority_through_a_snapshot() -> None:
    book = make_book()
    book.place(1, "s1", "bob", "SELL", D("1"), D("100.00"))
    book.place(2, "s2", "carol", "SELL", D("1"), D("100.00"))
    book.place(3, "s3", "dave", "SELL", D("1"), D("99.99"))
    book.cancel("s3", 3)
    data = json.loads(json.dumps(book.snapshot()))
    assert data["last_seq"] == 3
    assert data["asks"] == [["100.00", [["s1", "bob", "1.0000", "1.0000", 1], ["s2", "carol", "1.0000", "1.0000", 2]]]]
    rebuilt = Book.restore(data)
    done = rebuilt.place(4, "b1", "alice", "BUY", D("1.5"), D("100.00"))
    assert [(f.maker_order, str(f.qty)) for f in done.fills] == [("s1", "1.0000"), ("s2", "0.5000")]


def test_it_shows_the_best_levels_of_each_side_in_depth() -> None:
    book = make_book()
    for seq, (side, price) in enumerate([("BUY", "99.98"), ("BUY", "99.99"), ("BUY", "99.99"), ("SELL", "100.03"), ("SELL", "100.01"), ("BUY", "99.97")], 1):
        book.place(seq, f"o{seq}", f"c{seq}", side, D("0.5"), D(price))
    data = book.depth(2).as_data()
    assert data == {
        "symbol": "BTC-USD",
        "seq": 6,
        "bids": [{"price": "99.99", "qty": "1.0000", "orders": 2}, {"price": "99.98", "qty": "0.5000", "orders": 1}],
        "asks": [{"price": "100.01", "qty": "0.5000", "orders": 1}, {"price": "100.03", "qty": "0.5000", "orders": 1}],
    }
