"""One market's limit order book: price-time priority, plain data in and out.

Rules (what a trader can rely on):

- Orders are good-till-cancelled limit orders, BUY or SELL, applied in their market's
  sequence (`seq`, increasing, gaps allowed). An incoming order trades with the best
  resting price first and, at one price, with the order that arrived first; what it cannot
  fill rests at its own limit. Every trade is at the resting (maker) order's price.
- Self-trade prevention, "cancel resting" (Binance's EXPIRE_MAKER, CME's cancel-resting
  option): when an incoming order would trade with a resting order of the same client, the
  resting order is cancelled in full and the incoming order goes on matching the rest of
  the book. The newest instruction is taken as the client's intent; no self-trade prints.
- A seq at or below the last one applied is a replay: nothing changes and the original
  execution is returned while the book still remembers it (the last `REMEMBERED` seqs;
  not kept in a snapshot), else an empty one, both marked `replay`. A worker
  whose write failed after the book applied a batch gets the same fills back on redelivery.
- A cancel of a resting order cancels what is left of it. A cancel that arrives before
  its order (a seq the book has not reached) is kept: the order is cancelled whole when it
  arrives, without touching the book. A cancel of an order that already finished is a
  no-op (no updates); a repeated cancel returns the first one's execution while remembered.
- Deterministic: the same commands in the same order give the same fills, updates,
  depth and snapshot, byte for byte.

Inside, prices are integer ticks and quantities integer lots (exact and fast); Decimal
comes in and goes out at the edge (`place`, the records, `depth`, `snapshot`). Each side
is a heap of price keys (asks: ticks, bids: -ticks, so the best is always the smallest)
with a FIFO deque per price; cancels mark the order dead and leave it in its deque until
it reaches the front (lazy deletion), while the level's totals change at once.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from matcher.protocol import (
    BUY,
    CANCELLED,
    FILLED,
    OPEN,
    PARTIALLY_FILLED,
    SELL,
    Depth,
    DepthLevel,
    Execution,
    Fill,
    OrderUpdate,
)

SNAPSHOT_FORMAT = 1
# Executions kept for replay, per book. Enough: a FIFO group delivers nothing more of a
# market while a batch of it (at most 10 messages) is in flight, so a batch that comes back
# finds the book no further on than itself. Each kept execution is live garbage for the
# collector to walk: 1,024 of them cost a fifth of the throughput (bench section 8).
REMEMBERED = 64
REASON_RESTING = "resting"
REASON_PARTIAL = "partially filled, resting"
REASON_FILLED = "filled"
REASON_CANCELLED = "cancelled by client"
REASON_EARLY_CANCEL = "cancelled before it reached the book"
REASON_SELF_TRADE = "self-trade prevention: a newer order of the same client crossed it"


class _Resting:
    """An order in the book. `left` is its open quantity in lots; 0 marks it dead."""

    __slots__ = ("order_id", "client", "level", "lots", "left", "seq")

    def __init__(self, order_id: str, client: str, level: _Level, lots: int, left: int, seq: int) -> None:
        self.order_id = order_id
        self.client = client
        self.level = level  # its price: a cancel goes straight to it
        self.lots = lots
        self.left = left
        self.seq = seq


class _Level:
    """One price: its orders in time priority, and the live ones' totals."""

    __slots__ = ("price", "queue", "lots", "count")

    def __init__(self, price: Decimal) -> None:
        self.price = price
        self.queue: deque[_Resting] = deque()
        self.lots = 0
        self.count = 0


class _Quantities(dict[int, Decimal]):
    """Lots to their Decimal quantity, made once per distinct count: a lookup is a third
    of the cost of the multiplication."""

    def __init__(self, lot: Decimal) -> None:
        super().__init__()
        self.lot = lot
        self.zero = Decimal(0).quantize(lot)  # "0.0000", where 0 * lot would print "0E-4"

    def __missing__(self, lots: int) -> Decimal:
        if len(self) >= 1 << 16:
            self.clear()
        qty = self[lots] = lots * self.lot if lots else self.zero
        return qty


class _Texts(dict[int, str]):
    """Lots to their Decimal text, for a snapshot: made once per distinct count."""

    def __init__(self, quantities: _Quantities) -> None:
        super().__init__()
        self.quantities = quantities

    def __missing__(self, lots: int) -> str:
        text = self[lots] = str(self.quantities[lots])
        return text


_new = tuple.__new__


def _whole_reciprocal(step: Decimal) -> Decimal | None:
    reciprocal = 1 / step
    if reciprocal == reciprocal.to_integral_value() and reciprocal * step == 1:
        return reciprocal
    return None


class Book:
    def __init__(self, symbol: str, tick: Decimal, lot: Decimal) -> None:
        if not (tick > 0 and lot > 0):
            raise ValueError("tick and lot must be positive")
        self.symbol = symbol
        self.tick = tick
        self.lot = lot
        self.last_seq = 0
        # A grid step of 1/k: multiplying by k is exact and cheaper than dividing.
        self._per_tick = _whole_reciprocal(tick)
        self._per_lot = _whole_reciprocal(lot)
        self._qty = _Quantities(lot)
        self._zero = self._qty.zero
        # Keyed by price key; the heaps hold each key of their dict once.
        self._bids: dict[int, _Level] = {}
        self._asks: dict[int, _Level] = {}
        self._bid_heap: list[int] = []
        self._ask_heap: list[int] = []
        self._resting: dict[str, _Resting] = {}
        self._early_cancels: dict[int, str] = {}  # seq -> order id, for seqs not reached yet
        self._recent: list[Execution | None] = [None] * REMEMBERED  # by seq % REMEMBERED
        self._recent_cancels: dict[str, Execution] = {}
        self._recent_cancel_ids: deque[str] = deque()

    # --- the edge: Decimal in ------------------------------------------------------------

    def ticks(self, price: Decimal) -> int:
        """A price in whole ticks; ValueError when it is not a positive multiple of the tick."""
        try:
            ticks, denominator = (price * self._per_tick if self._per_tick else price / self.tick).as_integer_ratio()
        except (ArithmeticError, ValueError):  # NaN, infinity
            denominator = 0
        if denominator != 1 or ticks <= 0:
            raise ValueError(f"price {price} is not a positive multiple of the tick {self.tick}")
        return ticks

    def lots(self, qty: Decimal) -> int:
        """A quantity in whole lots; ValueError when it is not a positive multiple of the lot."""
        try:
            lots, denominator = (qty * self._per_lot if self._per_lot else qty / self.lot).as_integer_ratio()
        except (ArithmeticError, ValueError):  # NaN, infinity
            denominator = 0
        if denominator != 1 or lots <= 0:
            raise ValueError(f"qty {qty} is not a positive multiple of the lot {self.lot}")
        return lots

    def place(self, seq: int, order_id: str, client: str, side: str, qty: Decimal, price: Decimal) -> Execution:
        """Apply a new limit order; see the module's rules."""
        if side == BUY:
            is_buy = True
        elif side == SELL:
            is_buy = False
        else:
            raise ValueError(f"side must be BUY or SELL, not {side!r}")
        per_tick, per_lot = self._per_tick, self._per_lot
        if per_tick is not None and per_lot is not None:  # the usual grid, inline: ticks() and lots() cost a call each
            try:
                ticks, tick_denominator = (price * per_tick).as_integer_ratio()
                lots, lot_denominator = (qty * per_lot).as_integer_ratio()
            except (ArithmeticError, ValueError):
                tick_denominator = 0
            if tick_denominator == 1 == lot_denominator and ticks > 0 and lots > 0:
                return self.place_lots(seq, order_id, client, is_buy, ticks, lots)
        return self.place_lots(seq, order_id, client, is_buy, self.ticks(price), self.lots(qty))

    # --- the core: integers --------------------------------------------------------------

    def place_lots(self, seq: int, order_id: str, client: str, is_buy: bool, ticks: int, lots: int) -> Execution:
        """`place` on the integer grid: price in ticks, quantity in lots."""
        if seq <= self.last_seq:
            return self._replayed(seq)
        resting = self._resting
        if order_id in resting:
            raise ValueError(f"order {order_id} is already resting in {self.symbol}")
        decimal_qty, zero = self._qty, self._zero
        if self._early_cancels and self._early_cancel(seq, order_id):
            self.last_seq = seq
            qty = decimal_qty[lots]
            done = _new(Execution, (seq, (), (_new(OrderUpdate, (order_id, CANCELLED, qty, zero, qty, REASON_EARLY_CANCEL)),), False))
            self._remember(seq, done)
            return done
        self.last_seq = seq
        if is_buy:
            heap, limit = self._ask_heap, ticks
        else:
            heap, limit = self._bid_heap, -ticks
        left = lots
        if heap and heap[0] <= limit:
            # The records are built with tuple.__new__: the NamedTuples' own constructors
            # are Python functions, and calling them was a third of an order's cost.
            levels = self._asks if is_buy else self._bids
            symbol = self.symbol
            side = BUY if is_buy else SELL
            fills: list[Fill] = []
            updates: list[OrderUpdate] = []
            while left and heap:
                key = heap[0]
                if key > limit:
                    break
                level = levels[key]
                queue = level.queue
                while queue:
                    maker = queue[0]
                    open_lots = maker.left
                    if not open_lots:  # cancelled earlier: dropped as it reaches the front
                        queue.popleft()
                        continue
                    maker_id = maker.order_id
                    if maker.client == client:
                        queue.popleft()
                        maker.left = 0
                        level.lots -= open_lots
                        level.count -= 1
                        del resting[maker_id]
                        updates.append(
                            _new(OrderUpdate, (maker_id, CANCELLED, decimal_qty[maker.lots], decimal_qty[maker.lots - open_lots], decimal_qty[open_lots], REASON_SELF_TRADE))
                        )
                        continue
                    traded = left if left < open_lots else open_lots
                    left -= traded
                    level.lots -= traded
                    if is_buy:
                        fills.append(
                            _new(Fill, (symbol, seq, len(fills), level.price, decimal_qty[traded], order_id, maker_id, maker_id, order_id, side, maker.client, client))
                        )
                    else:
                        fills.append(
                            _new(Fill, (symbol, seq, len(fills), level.price, decimal_qty[traded], maker_id, order_id, maker_id, order_id, side, maker.client, client))
                        )
                    if traded < open_lots:
                        maker_left = open_lots - traded
                        maker.left = maker_left
                        updates.append(
                            _new(OrderUpdate, (maker_id, PARTIALLY_FILLED, decimal_qty[maker.lots], decimal_qty[maker.lots - maker_left], decimal_qty[maker_left], REASON_PARTIAL))
                        )
                        break  # the taker is done: it was the smaller
                    queue.popleft()
                    maker.left = 0
                    level.count -= 1
                    del resting[maker_id]
                    maker_qty = decimal_qty[maker.lots]
                    updates.append(_new(OrderUpdate, (maker_id, FILLED, maker_qty, maker_qty, zero, REASON_FILLED)))
                    if not left:
                        break
                if not level.count:
                    heapq.heappop(heap)
                    del levels[key]
            qty = decimal_qty[lots]
            if not left:
                reason = REASON_FILLED if len(fills) == 1 else f"filled in {len(fills)} trades"
                updates.append(_new(OrderUpdate, (order_id, FILLED, qty, qty, zero, reason)))
                done = _new(Execution, (seq, tuple(fills), tuple(updates), False))
                self._recent[seq % REMEMBERED] = done
                return done
            if fills:
                update = _new(OrderUpdate, (order_id, PARTIALLY_FILLED, qty, decimal_qty[lots - left], decimal_qty[left], REASON_PARTIAL))
            else:  # every order it crossed was its own, now cancelled
                update = _new(OrderUpdate, (order_id, OPEN, qty, zero, qty, REASON_RESTING))
            updates.append(update)
            done = _new(Execution, (seq, tuple(fills), tuple(updates), False))
        else:
            qty = decimal_qty[lots]
            done = _new(Execution, (seq, (), (_new(OrderUpdate, (order_id, OPEN, qty, zero, qty, REASON_RESTING)),), False))
        if is_buy:
            own, own_heap, own_key = self._bids, self._bid_heap, -ticks
        else:
            own, own_heap, own_key = self._asks, self._ask_heap, ticks
        home = own.get(own_key)
        if home is None:
            home = own[own_key] = _Level(ticks * self.tick)
            heapq.heappush(own_heap, own_key)
        order = _Resting(order_id, client, home, lots, left, seq)
        home.queue.append(order)
        home.lots += left
        home.count += 1
        resting[order_id] = order
        self._recent[seq % REMEMBERED] = done
        return done

    def cancel(self, order_id: str, seq: int = 0, qty: Decimal | None = None) -> Execution:
        """Cancel an order: resting, it is cancelled now; not reached yet (`seq` above the
        last applied), it is cancelled whole (`qty`) when it arrives; finished, nothing."""
        order = self._resting.pop(order_id, None)
        if order is None:
            known = self._recent_cancels.get(order_id)
            if known is not None:
                return known._replace(replay=True)
            if seq > self.last_seq:
                self._early_cancels[seq] = order_id
                whole = self._zero if qty is None else self._qty[self.lots(qty)]
                done = Execution(seq, (), (OrderUpdate(order_id, CANCELLED, whole, self._zero, whole, REASON_EARLY_CANCEL),))
                self._remember_cancel(order_id, done)
                return done
            return Execution(seq, (), ())
        level = order.level
        open_lots = order.left
        order.left = 0
        level.lots -= open_lots
        level.count -= 1
        queue = level.queue
        if not level.count:
            queue.clear()  # the empty level itself goes when it reaches the top of its side
        elif len(queue) > 2 * level.count + 8:
            level.queue = deque(o for o in queue if o.left)
        decimal_qty = self._qty
        update = OrderUpdate(order_id, CANCELLED, decimal_qty[order.lots], decimal_qty[order.lots - open_lots], decimal_qty[open_lots], REASON_CANCELLED)
        done = Execution(order.seq, (), (update,))
        self._remember_cancel(order_id, done)
        return done

    # --- replay memory -------------------------------------------------------------------

    def _remember(self, seq: int, done: Execution) -> None:
        self._recent[seq % REMEMBERED] = done

    def _remember_cancel(self, order_id: str, done: Execution) -> None:
        self._recent_cancels[order_id] = done
        ids = self._recent_cancel_ids
        ids.append(order_id)
        if len(ids) > REMEMBERED:
            self._recent_cancels.pop(ids.popleft(), None)

    def _replayed(self, seq: int) -> Execution:
        known = self._recent[seq % REMEMBERED]
        if known is None or known.seq != seq:
            return Execution(seq, (), (), True)
        return known._replace(replay=True)

    def _early_cancel(self, seq: int, order_id: str) -> bool:
        """Whether this order was cancelled before it arrived; forgets early cancels whose
        seq has been passed (their order was never placed here)."""
        early = self._early_cancels
        found = early.pop(seq, None) == order_id
        for passed in [s for s in early if s < seq]:
            del early[passed]
        return found

    # --- reading -------------------------------------------------------------------------

    def _levels(self, side: dict[int, _Level], n: int) -> tuple[DepthLevel, ...]:
        keys = heapq.nsmallest(n, (k for k, lv in side.items() if lv.count))
        lot = self.lot
        return tuple(DepthLevel(side[k].price, side[k].lots * lot, side[k].count) for k in keys)

    def depth(self, n: int = 10) -> Depth:
        """The best `n` prices a side: bids high to low, asks low to high."""
        return Depth(self.symbol, self.last_seq, self._levels(self._bids, n), self._levels(self._asks, n))

    def best_bid(self) -> Decimal | None:
        top = self._levels(self._bids, 1)
        return top[0].price if top else None

    def best_ask(self) -> Decimal | None:
        top = self._levels(self._asks, 1)
        return top[0].price if top else None

    def resting_count(self) -> int:
        return len(self._resting)

    def resting(self, order_id: str) -> OrderUpdate | None:
        """A resting order's state, or None when it is not in the book."""
        order = self._resting.get(order_id)
        if order is None:
            return None
        lot = self.lot
        status = OPEN if order.left == order.lots else PARTIALLY_FILLED
        return OrderUpdate(order_id, status, order.lots * lot, (order.lots - order.left) * lot, order.left * lot, "")

    # --- snapshot ------------------------------------------------------------------------

    def _side_data(self, side: dict[int, _Level], texts: _Texts) -> list[list[Any]]:
        data: list[list[Any]] = []
        for key in sorted(k for k, lv in side.items() if lv.count):
            level = side[key]
            orders = [[o.order_id, o.client, texts[o.lots], texts[o.left], o.seq] for o in level.queue if o.left]
            data.append([str(level.price), orders])
        return data

    def snapshot(self) -> dict[str, Any]:
        """The book as plain JSON-able data: each side best price first, each price's
        orders in time priority as [order_id, client, qty, left, seq], Decimal strings."""
        texts = _Texts(self._qty)
        return {
            "format": SNAPSHOT_FORMAT,
            "symbol": self.symbol,
            "tick": str(self.tick),
            "lot": str(self.lot),
            "last_seq": self.last_seq,
            "bids": self._side_data(self._bids, texts),
            "asks": self._side_data(self._asks, texts),
            "early_cancels": [[seq, self._early_cancels[seq]] for seq in sorted(self._early_cancels)],
        }

    @classmethod
    def restore(cls, snapshot: Mapping[str, Any]) -> Book:
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown book snapshot format {snapshot.get('format')!r}")
        book = cls(str(snapshot["symbol"]), Decimal(snapshot["tick"]), Decimal(snapshot["lot"]))
        book.last_seq = int(snapshot["last_seq"])
        resting = book._resting
        lots_of: dict[str, int] = {}  # the few distinct quantity texts, parsed once each
        for name, sign in (("bids", -1), ("asks", 1)):
            levels = book._bids if sign < 0 else book._asks
            heap = book._bid_heap if sign < 0 else book._ask_heap
            for price_text, orders in snapshot[name]:
                ticks = book.ticks(Decimal(price_text))
                key = sign * ticks
                if key in levels:
                    raise ValueError(f"price {price_text} twice in the snapshot's {name}")
                level = levels[key] = _Level(ticks * book.tick)
                queue = level.queue
                total = 0
                for order_id, client, qty, left, seq in orders:
                    qty_lots = lots_of.get(qty)
                    if qty_lots is None:
                        qty_lots = lots_of[qty] = book.lots(Decimal(qty))
                    left_lots = lots_of.get(left)
                    if left_lots is None:
                        left_lots = lots_of[left] = book.lots(Decimal(left))
                    order = _Resting(order_id, client, level, qty_lots, left_lots, int(seq))
                    if order.left > order.lots or order_id in resting:
                        raise ValueError(f"order {order_id} is not a valid resting order in the snapshot")
                    queue.append(order)
                    resting[order_id] = order
                    total += order.left
                level.lots = total
                level.count = len(queue)
                heap.append(key)
        heapq.heapify(book._bid_heap)
        heapq.heapify(book._ask_heap)
        book._early_cancels = {int(seq): str(order_id) for seq, order_id in snapshot.get("early_cancels", [])}
        return book
