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

Django-free: the Lambda handler, the local AZ tasks and the tests all call apply_message().
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from simfill.engine import Outcome, OrderTerms, decide
from simfill.stress import CpuStress
from trading import events
from trading.domain import Order, StatusChange, Trade, derive_trade_id
from trading.queue import Message, OrderQueue
from trading.store import RegionStores

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class Applied:
    """What one message did: for the caller's logs, metrics and tests."""

    order_id: str
    action: str  # filled | cancelled | skipped | unknown
    trades: tuple[Trade, ...] = ()
    order: Order | None = None


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

    outcome: Outcome
    trades: tuple[Trade, ...]
    now_ms: int


def plan_fills(
    stores: RegionStores,
    items: list[tuple[dict[str, Any], Order | None]],
    az: str,
    now_ms: int,
    market_grid: Callable[[str], tuple[Decimal, Decimal]],
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
        outcome = decide(terms_of(order, tick, lot), order.simulation_seed)
        plans[order.order_id] = Planned(outcome, trades_for(order, outcome, stores.region, az, now_ms), now_ms)
    return plans


def write_plans(stores: RegionStores, plans: dict[str, Planned], loaded: dict[str, Order], az: str) -> dict[str, bool | None]:
    """Write the planned fills: their trades, then each order's final status. Returns what
    finish_many returns per order (True written, False no longer open, None failed).

    In one transaction when it goes through (one round trip on the FIFO group's critical
    path, not three plus one per order); else the long way: the trades that are not there
    yet in batch writes, and the statuses side by side, each conditional on its own order,
    so a refused order refuses only itself."""
    finals = [
        (loaded[order_id], StatusChange(p.outcome.final_status, p.now_ms, az, p.outcome.reason), p.outcome.filled_qty, p.trades)
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
) -> Applied:
    """Apply one OrderAccepted or CancelRequested message, idempotently.

    `loaded`: the order as read for the batch (a consistent read); the final status
    write is conditional on it still being open, so a stale copy cannot finish it twice.
    `planned`: its fill as plan_fills decided it from that same copy, trades written.
    `finished`: what finish_many did with that planned fill's final status: True
    written, False refused (the order was no longer open), None not tried or failed.
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
    now_ms = planned.now_ms if planned is not None else int(clock() * 1000)
    if body.get("type") == "CancelRequested" or order.cancel_requested:
        change = StatusChange("CANCELLED", now_ms, az, "cancelled by client")
        if stores.orders.finish(order, change, order.filled_qty):
            done = order.with_status("CANCELLED", now_ms, az, change.note)
            return Applied(order_id, "cancelled", order=done)
        return Applied(order_id, "skipped", order=order)
    if planned is not None:
        outcome, trades = planned.outcome, planned.trades
    else:
        tick, lot = market_grid(order.symbol)
        outcome = decide(terms_of(order, tick, lot), order.simulation_seed)
        trades = trades_for(order, outcome, stores.region, az, now_ms)
        for trade in trades:
            stores.trades.put_once(trade)
    if before_finish is not None:
        before_finish(order)
    change = StatusChange(outcome.final_status, now_ms, az, outcome.reason)
    if planned is None:
        finished = None
    if finished is None:
        finished = stores.orders.finish(order, change, outcome.filled_qty)
    if not finished:
        return Applied(order_id, "skipped", order=stores.orders.get(order_id))
    done = order.with_status(outcome.final_status, now_ms, az, outcome.reason, filled=outcome.filled_qty)
    return Applied(order_id, "filled" if outcome.fills else "cancelled", trades=trades, order=done)


def publish_applied(applied: Applied, region: str) -> None:
    if applied.order is None or applied.action in {"skipped", "unknown"}:
        return
    for trade in applied.trades:
        events.publish(events.TRADE_EXECUTED, region, events.trade_data(trade), ts_ms=trade.ts_ms)
    events.publish(events.ORDER_STATUS, region, events.order_data(applied.order))


class AzWorker:
    """One SimFill task in one AZ: long-polls its region's FIFO queue until stopped."""

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
    ):
        self.stores = stores
        self.queue = queue
        self.az = az
        self.market_grid = market_grid
        self.clock = clock
        self.wait_s = wait_s
        self.visibility_timeout = visibility_timeout
        self.on_applied = on_applied
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
        self.thread = threading.Thread(target=self.run, name=f"simfill-{self.az}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        backoff = 0.05
        while not self.stop_event.is_set():
            try:
                self.poll_once()
                backoff = 0.05
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

    def process(self, messages: list[Message]) -> int:
        """Apply a batch in order; stop at the first failure so FIFO order holds."""
        applied_handles: list[str] = []
        try:
            ids = sorted({str(m.body.get("order_id", "")) for m in messages} - {""})
            loaded = {order.order_id: order for order in self.stores.orders.get_many(ids)} if len(ids) > 1 else {}
            plans: dict[str, Planned] = {}
            finished: dict[str, bool | None] = {}
            if len(messages) > 1 and not self.stress.percent:
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
                )
                applied_handles.append(message.receipt_handle)
                publish_applied(applied, self.stores.region)
                self.applied_count += 1
                if self.on_applied is not None:
                    self.on_applied(applied)
        finally:
            if applied_handles:
                failed = self.queue.delete_batch(applied_handles)
                if failed:
                    log.warning("simfill %s: %d applied message(s) not deleted; they come back as no-ops", self.az, failed)
        return len(applied_handles)
