"""The SimFill worker: the adapter around the pure engine.

For each message, in queue order: load the order, skip it if it is already final,
decide from simulationSeed alone, write the trades under deterministic ids
(conditional puts), then the order's final status (conditional on it still being open).
A redelivery after a crash between the steps finds the trades already written and
finishes the order. Events are published after the writes.

An AZ task takes a batch of up to 10 messages: it reads their orders in one BatchGetItem,
decides their fills (plan_fills) and writes all their trades and final statuses in one
TransactWriteItems (RegionStores.commit_fills: each trade only if absent, each status
only if its order is still open). If that is refused (a redelivery, a race), it writes
the trades the long way, one BatchGetItem (which are there already) and BatchWriteItem,
and each status with its own conditional write. Then it publishes the orders one by
one and deletes the applied ones in one DeleteMessageBatch (also when it stops or fails
part-way, so only what it did not apply comes back). A message redelivered after its
order was finished is a no-op that publishes nothing, so publishing before the delete
repeats no event.

The fill decision comes from an `Engine` (matcher.protocol), chosen once when the task is
made: SimFill (each order decided alone from its seed) or the matcher (a price-time book
per market). The worker writes what the engine's Execution says, whichever engine it is:
the trades, the order's status (final, or OPEN while it rests in a book), and the state of
every other order the execution touched (the resting orders it traded with, which SimFill
never produces), each write conditional on the state it was computed from. A stateful
engine's task also holds the region's matcher lease (every write is fenced by it), applies
a market's orders in seq order (an order the queue brought early waits for the ones
before it, read from the store), and rebuilds its books from the latest snapshot and the
orders after it before it consumes (`rebuild_books`).

Django-free: the Lambda handler, the local AZ tasks and the tests all call apply_message().
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from matcher.engines import SimFillEngine
from matcher.protocol import CANCELLED, RESTING_STATUSES, Engine, Execution, Fill, OrderUpdate, Ticket
from simfill.engine import Outcome, OrderTerms
from simfill.stress import CpuStress
from trading import events
from trading.domain import ACCEPTED, OPEN, Order, StatusChange, Trade, derive_trade_id
from trading.limits import signed
from trading.queue import Message, OrderQueue
from trading.store import Fence, LeaseLost, OrderWrite, RegionStores

log = logging.getLogger(__name__)

Clock = Callable[[], float]


# SimFill keeps no state: one engine serves every caller that does not name its own.
SIMFILL = SimFillEngine()
# The lease a region's active matcher holds (in its sequences table).
MATCHER_LEASE = "matcher"
REASON_LATE = "cancelled: it reached the book after later orders of its market"
BOOK_LEVELS = 20


@dataclass(frozen=True)
class Applied:
    """What one message did: for the caller's logs, metrics and tests."""

    order_id: str
    action: str  # filled | rested | cancelled | skipped | unknown
    trades: tuple[Trade, ...] = ()
    order: Order | None = None
    # The other orders its execution changed (the resting orders it traded with), as written.
    touched: tuple[Order, ...] = ()
    # Orders of the same market applied first, because they come before it in its seq order.
    earlier: tuple[Applied, ...] = ()


@dataclass
class TaskState:
    """What a task keeps beside a stateful engine: the orders resting in its books as last
    written (the events of their next change need the whole order), and the lease its
    writes are fenced by."""

    resting: dict[str, Order] = field(default_factory=dict)
    fence: Fence | None = None


def ticket_of(order: Order, tick: Decimal, lot: Decimal) -> Ticket:
    return Ticket(order.order_id, order.client, order.symbol, order.side, order.qty, order.price, order.seq, order.simulation_seed, tick, lot)


def store_status(update: OrderUpdate) -> str:
    """The engine's status as the Orders table keeps it: resting (part-filled or not) is OPEN."""
    return OPEN if update.status in RESTING_STATUSES else update.status


def execution_trades(order: Order, fills: Sequence[Fill], region: str, az: str, ts_ms: int) -> tuple[Trade, ...]:
    """One trade item per fill, named by the taker (`order`) and the fill's index."""
    return tuple(
        Trade(
            trade_id=derive_trade_id(order.order_id, region, fill.fill_index),
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            qty=fill.qty,
            price=fill.price,
            buy_order=fill.buy_order,
            sell_order=fill.sell_order,
            client=order.client,
            counterparty=fill.maker_client,
            region=region,
            fill_az=az,
            seq=order.seq,
            fill_index=fill.fill_index,
            ts_ms=ts_ms,
        )
        for fill in fills
    )


def trades_for(order: Order, outcome: Outcome, region: str, az: str, ts_ms: int) -> tuple[Trade, ...]:
    trades = []
    for index, fill in enumerate(outcome.fills):
        buy, sell = (order.order_id, fill.counterparty) if order.side == "BUY" else (fill.counterparty, order.order_id)
        trades.append(
            Trade(
                trade_id=derive_trade_id(order.order_id, region, index),
                order_id=order.order_id,
                symbol=order.symbol,
                side=order.side,
                qty=fill.qty,
                price=fill.price,
                buy_order=buy,
                sell_order=sell,
                client=order.client,
                counterparty=fill.counterparty,
                region=region,
                fill_az=az,
                seq=order.seq,
                fill_index=index,
                ts_ms=ts_ms,
            )
        )
    return tuple(trades)


def terms_of(order: Order, tick: Decimal, lot: Decimal) -> OrderTerms:
    return OrderTerms(side=order.side, qty=order.qty, price=order.price, tick=tick, lot=lot)


@dataclass(frozen=True)
class Planned:
    """A fill decided for a batch ahead of its message, its trades already written."""

    execution: Execution
    trades: tuple[Trade, ...]
    now_ms: int

    def update(self, order_id: str) -> OrderUpdate:
        update = self.execution.update_of(order_id)
        assert update is not None  # planned only when the engine decided the order
        return update


def plan_fills(
    stores: RegionStores,
    items: list[tuple[dict[str, Any], Order | None]],
    az: str,
    now_ms: int,
    market_grid: Callable[[str], tuple[Decimal, Decimal]],
    engine: Engine = SIMFILL,
) -> dict[str, Planned]:
    """For a batch of (message body, loaded order): decide the fills that apply_message
    would make; the caller writes them all at once. Only the plain case is planned:
    an OrderAccepted for an open order of this region, not flagged for cancel, named
    once in the batch, in a market without a position counter. The rest, and every
    status write, go through apply_message one by one as before."""
    named: dict[str, int] = {}
    for body, _ in items:
        order_id = str(body.get("order_id", ""))
        named[order_id] = named.get(order_id, 0) + 1
    plans: dict[str, Planned] = {}
    for body, order in items:
        if (
            order is None
            or body.get("type") != "OrderAccepted"
            or order.order_id != body.get("order_id")
            or named[order.order_id] != 1
            or not order.is_open
            or order.cancel_requested
            or order.region != stores.region
            or stores.trades.counts(order.symbol)
        ):
            continue
        tick, lot = market_grid(order.symbol)
        execution = engine.submit(ticket_of(order, tick, lot))
        update = execution.update_of(order.order_id)
        if update is None or not update.is_final or len(execution.updates) != 1:
            raise ValueError(f"a planned fill must finish its order alone, and {engine.name} did not: {execution}")
        trades = execution_trades(order, execution.fills, stores.region, az, now_ms)
        plans[order.order_id] = Planned(execution, trades, now_ms)
    return plans


def write_plans(stores: RegionStores, plans: dict[str, Planned], loaded: dict[str, Order], az: str) -> dict[str, bool | None]:
    """Write the planned fills: their trades, then each order's final status. Returns what
    finish_many returns per order (True written, False no longer open, None failed).

    In one transaction when it goes through (one round trip on the FIFO group's critical
    path, not three plus one per order); else the long way: the trades that are not there
    yet in batch writes, and the statuses side by side, each conditional on its own order,
    so a refused order refuses only itself."""
    finals = [
        (loaded[order_id], StatusChange(p.update(order_id).status, p.now_ms, az, p.update(order_id).reason), p.update(order_id).filled, p.trades)
        for order_id, p in plans.items()
    ]
    if stores.commit_fills(finals):
        return {order.order_id: True for order, *_ in finals}
    trades = [t for *_, of_order in finals for t in of_order]
    if trades:
        stores.trades.put_many_once(trades)
    return stores.orders.finish_many([(order, change, qty) for order, change, qty, _ in finals])


def apply_message(
    stores: RegionStores,
    body: dict[str, Any],
    az: str,
    clock: Clock,
    market_grid: Callable[[str], tuple[Decimal, Decimal]],
    before_finish: Callable[[Order], None] | None = None,
    loaded: Order | None = None,
    planned: Planned | None = None,
    finished: bool | None = None,
    engine: Engine = SIMFILL,
    task: TaskState | None = None,
) -> Applied:
    """Apply one OrderAccepted or CancelRequested message, idempotently.

    `loaded`: the order as read for the batch (a consistent read); the status write is
    conditional on the state it was read in, so a stale copy cannot apply it twice.
    `planned`: its fill as plan_fills decided it from that same copy, trades written.
    `finished`: what finish_many did with that planned fill's final status: True
    written, False refused (the order was no longer open), None not tried or failed.
    `engine`: what decides (SimFill unless the task holds another); `task`: what the
    task keeps beside a stateful engine (its resting orders, its lease).
    """
    order_id = str(body.get("order_id", ""))
    if loaded is not None and loaded.order_id == order_id:
        order: Order | None = loaded
    else:
        order = stores.orders.get(order_id) if order_id else None
    if order is None:
        log.error("message names no known order: %r", body)
        return Applied(order_id, "unknown")
    if not order.is_open:
        return Applied(order_id, "skipped", order=order)
    if order.region != stores.region:
        # After a partition heals, last-writer-wins can leave another region's copy of
        # this order here: that copy is that region's to fill, never ours.
        return Applied(order_id, "skipped", order=order)
    cancelling = body.get("type") == "CancelRequested" or order.cancel_requested
    if not cancelling and order.status != ACCEPTED:
        return Applied(order_id, "skipped", order=order)  # the engine has it already (it rests)
    now_ms = planned.now_ms if planned is not None else int(clock() * 1000)
    tick, lot = market_grid(order.symbol)
    earlier: tuple[Applied, ...] = ()
    if engine.stateful and not cancelling and order.seq > engine.last_seq(order.symbol) + 1:
        earlier = apply_earlier(stores, order, az, clock, market_grid, engine, task)
    if planned is not None:
        execution, trades = planned.execution, planned.trades
    else:
        ticket = ticket_of(order, tick, lot)
        execution = engine.cancel(ticket) if cancelling else engine.submit(ticket)
        trades = execution_trades(order, execution.fills, stores.region, az, now_ms)
    update = execution.update_of(order_id)
    if update is None:
        if order.status != ACCEPTED:
            return Applied(order_id, "skipped", order=order, earlier=earlier)  # the engine had finished it
        # Never in the book, and its place in its market's sequence has passed.
        left = order.qty - order.filled_qty
        update = OrderUpdate(order_id, CANCELLED, order.qty, order.filled_qty, left, "cancelled by client" if cancelling else REASON_LATE)
    others = {u.order_id: u for u in execution.updates if u.order_id != order_id}  # each one's last
    status = store_status(update)
    change = StatusChange(status, now_ms, az, update.reason)
    if others or not update.is_final or (task is not None and task.fence is not None):
        if before_finish is not None and not cancelling:
            before_finish(order)
        applied = write_execution(stores, order, change, update, execution.fills, trades, others, task)
        return replace(applied, earlier=earlier)
    if cancelling:
        if stores.orders.finish(order, change, update.filled):
            return Applied(order_id, "cancelled", order=order.with_status(status, now_ms, az, change.note), earlier=earlier)
        return Applied(order_id, "skipped", order=order, earlier=earlier)
    if planned is None:
        for trade in trades:
            stores.trades.put_once(trade)
    if before_finish is not None:
        before_finish(order)
    if planned is None:
        finished = None
    if finished is None:
        finished = stores.orders.finish(order, change, update.filled)
    if not finished:
        return Applied(order_id, "skipped", order=stores.orders.get(order_id), earlier=earlier)
    done = order.with_status(status, now_ms, az, update.reason, filled=update.filled)
    return Applied(order_id, "filled" if trades else "cancelled", trades=trades, order=done, earlier=earlier)


def write_execution(
    stores: RegionStores,
    order: Order,
    change: StatusChange,
    update: OrderUpdate,
    fills: Sequence[Fill],
    trades: Sequence[Trade],
    others: dict[str, OrderUpdate],
    task: TaskState | None,
) -> Applied:
    """Write an execution that touches more than its own order, leaves it resting, or must
    be fenced: one transaction when it fits, else item by item (a replay finds its items
    there and writes nothing). Each resting order's write is conditional on the filled
    quantity it had before these fills, so no fill is applied to it twice."""
    resting = task.resting if task is not None else {}
    trade_of = {trade.fill_index: trade.trade_id for trade in trades}
    made: dict[str, list[str]] = {}
    traded: dict[str, Decimal] = {}
    for fill in fills:
        made.setdefault(fill.maker_order, []).append(trade_of[fill.fill_index])
        traded[fill.maker_order] = traded.get(fill.maker_order, Decimal(0)) + fill.qty
    writes: list[OrderWrite] = []
    for other_id, other in others.items():
        known = resting.get(other_id) or stores.orders.get(other_id)
        if known is None:
            log.error("%s touched order %s, which the store does not hold", order.order_id, other_id)
            continue
        before = replace(known, status=OPEN, filled_qty=other.filled - traded.get(other_id, Decimal(0)))
        other_change = StatusChange(store_status(other), change.ts_ms, change.az, other.reason)
        writes.append(OrderWrite(before, other_change, other.filled, tuple(made.get(other_id, ()))))
    writes.append(OrderWrite(order, change, update.filled))
    # Position counters move for both sides of each trade with a real resting order.
    positions: dict[tuple[str, str], Decimal] = {}
    of_order: dict[str, dict[tuple[str, str], Decimal]] = {}
    if stores.trades.counts(order.symbol):
        maker_side = "SELL" if order.side == "BUY" else "BUY"
        for fill in fills:
            taker_key = (order.client, order.symbol)
            positions[taker_key] = positions.get(taker_key, Decimal(0)) + signed(order.side, fill.qty)
            if fill.maker_order in others:
                maker_key = (fill.maker_client, order.symbol)
                delta = signed(maker_side, fill.qty)
                positions[maker_key] = positions.get(maker_key, Decimal(0)) + delta
                mine = of_order.setdefault(fill.maker_order, {})
                mine[maker_key] = mine.get(maker_key, Decimal(0)) + delta
    fence = task.fence if task is not None else None
    if stores.commit_execution(trades, writes, positions, fence):
        written = {w.before.order_id: True for w in writes}
    else:
        written = stores.write_execution_long_way(trades, writes, of_order, fence)
    touched = []
    for write in writes:
        if not written.get(write.before.order_id):
            continue
        after = write.applied()
        if after.order_id != order.order_id:
            touched.append(after)
        if task is not None:
            if after.status == OPEN:
                resting[after.order_id] = after
            else:
                resting.pop(after.order_id, None)
    if not written.get(order.order_id):
        return Applied(order.order_id, "skipped", order=stores.orders.get(order.order_id), touched=tuple(touched))
    done = writes[-1].applied()
    action = "filled" if fills else ("rested" if done.status == OPEN else "cancelled")
    return Applied(order.order_id, action, trades=tuple(trades), order=done, touched=tuple(touched))


def apply_earlier(
    stores: RegionStores,
    order: Order,
    az: str,
    clock: Clock,
    market_grid: Callable[[str], tuple[Decimal, Decimal]],
    engine: Engine,
    task: TaskState | None,
) -> tuple[Applied, ...]:
    """The orders of `order`'s market that come before it in seq order and that the engine
    has not seen (the queue brought `order` first: sends of one commit race each other),
    applied now, from the store, so the book applies its market in seq order. Their own
    messages find them applied when they arrive."""
    applied = []
    for earlier in stores.orders.in_market(order.symbol, engine.last_seq(order.symbol), order.seq):
        if earlier.status == ACCEPTED and earlier.region == stores.region:
            body = {"type": "OrderAccepted", "order_id": earlier.order_id}
            applied.append(apply_message(stores, body, az, clock, market_grid, loaded=earlier, engine=engine, task=task))
    return tuple(applied)


def publish_applied(applied: Applied, region: str) -> None:
    for before in applied.earlier:
        publish_applied(before, region)
    if applied.order is None or applied.action in {"skipped", "unknown"}:
        for other in applied.touched:
            events.publish(events.ORDER_STATUS, region, events.order_data(other))
        return
    for trade in applied.trades:
        events.publish(events.TRADE_EXECUTED, region, events.trade_data(trade), ts_ms=trade.ts_ms)
    for other in applied.touched:
        events.publish(events.ORDER_STATUS, region, events.order_data(other))
    events.publish(events.ORDER_STATUS, region, events.order_data(applied.order))


def rebuild_books(
    stores: RegionStores,
    engine: Engine,
    task: TaskState,
    snapshots: Any,
    symbols: Sequence[str],
    market_grid: Callable[[str], tuple[Decimal, Decimal]],
) -> dict[str, int]:
    """Make the engine's books what the store says they are, before a task consumes: each
    market from its latest snapshot (`snapshots.latest_state`, Redis first, else DynamoDB)
    and the region's orders after the snapshot's seq. The snapshot names the orders that
    rested at its seq; those and the later ones are read as they are now, and the ones
    still OPEN rest again at their prices, in seq order, with what is left of them. (The
    store, not a replay of the commands, is the truth: a cancel's place among the orders
    is not recorded, and an execution's writes go in together or are redone whole.)
    Returns {symbol: seq the book is at}. Nothing for an engine that keeps no state."""
    if not engine.stateful:
        return {}
    at: dict[str, int] = {}
    for symbol in symbols:
        tick, lot = market_grid(symbol)
        found = snapshots.latest_state(stores.region, symbol) if snapshots is not None else None
        state, snapshot_seq = (found[0], int(found[1])) if found is not None else (None, 0)
        candidates = {o.order_id: o for o in stores.orders.get_many(list(engine.resting_ids(state)))} if state else {}
        later = list(stores.orders.in_market(symbol, snapshot_seq))
        candidates.update((o.order_id, o) for o in later)
        # A taker whose execution was written part-way (too large for one transaction, so
        # item by item, and its task died): its trades are there and its own status is not.
        # The resting orders it traded with rest again as they were before it, so its
        # message, applied again, makes the same execution, and its writes find the done
        # ones done.
        # (A resting order's write lists the trades it took in, so only those are undone.)
        written = [
            (trade.sell_order if trade.buy_order == taker.order_id else trade.buy_order, trade)
            for taker in later
            if taker.status == ACCEPTED
            for trade in stores.trades.for_order(taker.order_id, stores.region)
        ]
        if written:
            candidates.update((o.order_id, o) for o in stores.orders.get_many(sorted({m for m, _ in written} - set(candidates))))
        undo: dict[str, Decimal] = {}
        for maker_id, trade in written:
            maker = candidates.get(maker_id)
            if maker is not None and trade.trade_id in maker.maker_trades:
                undo[maker_id] = undo.get(maker_id, Decimal(0)) + trade.qty
        resting = sorted(
            (
                replace(o, status=OPEN, filled_qty=o.filled_qty - undo.get(o.order_id, Decimal(0)))
                for o in candidates.values()
                if (o.status == OPEN or (o.status == "FILLED" and o.order_id in undo)) and o.region == stores.region and o.symbol == symbol
            ),
            key=lambda o: o.seq,
        )
        last_seq = max([snapshot_seq, *(o.seq for o in later if o.status != ACCEPTED)])
        engine.reload(symbol, tick, lot, last_seq, [(ticket_of(o, tick, lot), o.filled_qty) for o in resting])
        for known in [o for o in task.resting.values() if o.symbol == symbol]:
            del task.resting[known.order_id]
        task.resting.update((o.order_id, o) for o in resting)
        at[symbol] = engine.last_seq(symbol)
        log.info(
            "%s book %s rebuilt at seq %d: %d resting (snapshot %s, %d order(s) after it)",
            stores.region, symbol, at[symbol], len(resting), f"at seq {snapshot_seq} from {found[2]}" if found else "none", len(later),
        )
    return at


class AzWorker:
    """One fill task in one AZ: long-polls its region's FIFO queue until stopped.

    With a stateful engine (the matcher) only the region's active task consumes: it takes
    the matcher lease and rebuilds its books first; a standby task (`standby`) waits, and a
    task whose lease was taken by another becomes one."""

    def __init__(
        self,
        stores: RegionStores,
        queue: OrderQueue,
        az: str,
        market_grid: Callable[[str], tuple[Decimal, Decimal]],
        clock: Clock = time.time,
        wait_s: int = 2,
        visibility_timeout: int | None = None,
        on_applied: Callable[[Applied], None] | None = None,
        engine: Engine = SIMFILL,
        symbols: Sequence[str] = (),
        snapshots: Any = None,
        standby: bool = False,
        name: str = "",
    ):
        self.stores = stores
        self.queue = queue
        self.az = az
        self.market_grid = market_grid
        self.clock = clock
        self.wait_s = wait_s
        self.visibility_timeout = visibility_timeout
        self.on_applied = on_applied
        self.engine = engine
        self.symbols = tuple(symbols)
        self.snapshots = snapshots  # matcher.snapshots.BookSnapshots, or None
        self.standby = standby
        self.name = name or f"{engine.name}-{az}"
        self.task = TaskState()
        self.ready = not engine.stateful  # a stateful engine's books are rebuilt first
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.applied_count = 0
        self.last_error: str = ""
        # The fault plane's CPU stress: burns this task's thread before each message.
        self.stress = CpuStress()

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and not self.stop_event.is_set()

    @property
    def cpu_stress_percent(self) -> int:
        return self.stress.percent

    @cpu_stress_percent.setter
    def cpu_stress_percent(self, percent: int) -> None:
        self.stress.percent = int(percent)

    def cpu_time_s(self) -> float | None:
        """The CPU time the task's thread has used so far (None before it started or after it ended)."""
        thread = self.thread
        if thread is None or thread.ident is None or not thread.is_alive():
            return None
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, AttributeError):  # the thread just ended, or no per-thread clocks here
            return None

    def start(self) -> None:
        self.stop_event.clear()
        self.thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def prepare(self) -> None:
        """Before a stateful engine's task consumes: take the region's matcher lease (every
        write after this is fenced by it: a task still unwinding elsewhere writes nothing
        more), then rebuild the books from the snapshots and the store, and publish them."""
        if self.engine.stateful:
            epoch = self.stores.sequences.take_lease(MATCHER_LEASE, self.name, int(self.clock() * 1000))
            self.task.fence = Fence(MATCHER_LEASE, epoch)
            rebuilt = rebuild_books(self.stores, self.engine, self.task, self.snapshots, self.symbols, self.market_grid)
            self.publish_books(set(rebuilt))
        self.ready = True

    def run(self) -> None:
        backoff = 0.05
        while not self.stop_event.is_set():
            try:
                if self.standby:
                    self.stop_event.wait(1.0)
                    continue
                if not self.ready:
                    self.prepare()
                self.poll_once()
                backoff = 0.05
            except LeaseLost as lost:
                # Another task is the region's matcher now: this one stands by.
                self.last_error = str(lost)[:200]
                log.warning("%s: %s; standing by", self.name, self.last_error)
                self.standby, self.ready = True, False
            except (BotoCoreError, ClientError) as error:
                self.last_error = str(error)[:200]
                log.warning("simfill %s: %s", self.az, self.last_error)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:  # keep the task alive; the message will come back
                log.exception("simfill %s crashed on a batch", self.az)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def poll_once(self) -> int:
        messages = self.queue.receive(max_messages=10, wait_s=self.wait_s, visibility_timeout=self.visibility_timeout)
        return self.process(messages)

    def publish_books(self, symbols: set[str]) -> None:
        """After a batch whose writes all went in: each touched book's snapshot to Redis (the
        snapshots persist it to DynamoDB on their schedule) and its `book.depth` event
        (coalesced per market by trading.events). An engine that keeps no books has none."""
        ts_ms = int(self.clock() * 1000)
        for symbol in sorted(symbols):
            state = self.engine.market_state(symbol)
            if state is None:
                continue
            depth = self.engine.depth(symbol, BOOK_LEVELS)
            region = self.stores.region
            if self.snapshots is not None:
                # The snapshots send the book.depth event: what Redis took, or, while it is
                # away, its last copy marked stale (the display reads the snapshot).
                self.snapshots.publish(region, symbol, depth, state, ts_ms)
            else:
                events.publish_depth(region, {**depth.as_data(), "region": region, "ts": ts_ms, "source": self.engine.name, "stale": False})

    def process(self, messages: list[Message]) -> int:
        """Apply a batch in order; stop at the first failure so FIFO order holds."""
        applied_handles: list[str] = []
        touched: set[str] = set()
        complete = False
        try:
            ids = sorted({str(m.body.get("order_id", "")) for m in messages} - {""})
            loaded = {order.order_id: order for order in self.stores.orders.get_many(ids)} if len(ids) > 1 else {}
            plans: dict[str, Planned] = {}
            finished: dict[str, bool | None] = {}
            # Planning decides a batch's fills ahead of their messages: a stateful engine
            # must see a market's messages in queue order, one at a time.
            if len(messages) > 1 and not self.stress.percent and not self.engine.stateful:
                items = [(m.body, loaded.get(str(m.body.get("order_id", "")))) for m in messages]
                plans = plan_fills(self.stores, items, self.az, int(self.clock() * 1000), self.market_grid)
                finished = write_plans(self.stores, plans, loaded, self.az) if plans else {}
            for message in messages:
                order_id = str(message.body.get("order_id", ""))
                if self.stop_event.is_set() and not finished.get(order_id):
                    # The task was stopped (AZ loss): what it holds and has not applied
                    # comes back after the visibility timeout, for a surviving AZ. (An order
                    # already finished in this batch is published and deleted still.)
                    continue
                if self.stress.percent and not finished.get(order_id):
                    self.stress.burn(self.stop_event)
                    if self.stop_event.is_set():
                        continue
                applied = apply_message(
                    self.stores,
                    message.body,
                    self.az,
                    self.clock,
                    self.market_grid,
                    loaded=loaded.get(order_id),
                    planned=plans.get(order_id),
                    finished=finished.get(order_id),
                    engine=self.engine,
                    task=self.task,
                )
                for done in (*applied.earlier, applied):
                    if done.order is not None:
                        loaded[done.order_id] = done.order  # applied ahead of its own message
                        touched.add(done.order.symbol)
                applied_handles.append(message.receipt_handle)
                publish_applied(applied, self.stores.region)
                self.applied_count += 1
                if self.on_applied is not None:
                    self.on_applied(applied)
            complete = True
        finally:
            if applied_handles:
                failed = self.queue.delete_batch(applied_handles)
                if failed:
                    log.warning("simfill %s: %d applied message(s) not deleted; they come back as no-ops", self.az, failed)
        if complete and touched:
            # Only after every write of the batch: a snapshot never runs ahead of the store.
            self.publish_books(touched)
        return len(applied_handles)
