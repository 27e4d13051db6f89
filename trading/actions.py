"""The verbs that change the exchange: submit_order, cancel_order, sweep_outbox.

Each verb makes its durable write first and publishes its event after it. Django-free:
the same verbs serve the Django views, the synthetic traders and the Lambda facade.
"""

from __future__ import annotations

import itertools
import logging
import uuid
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from trading import events
from trading.config import ExchangeConfig
from trading.domain import (
    Order,
    StatusChange,
    derive_order_id,
    event_id,
    request_hash,
    simulation_seed,
    validate_idempotency_key,
    validate_order,
)
from trading.limits import PositionLimitExceeded, within_limit
from trading.metrics import METRICS, Metrics
from trading.queue import OrderQueue, queue_name
from trading.store import RegionStores

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class IdempotencyConflict(Exception):
    """The key was used before with another body."""

    def __init__(self, order: Order):
        super().__init__(f"idempotency key already used for order {order.order_id} with another body")
        self.order = order


class RegionUnavailable(Exception):
    def __init__(self, region: str, retry_after_s: int = 2):
        super().__init__(f"region {region} is unavailable and no other region can take the order")
        self.region = region
        self.retry_after_s = retry_after_s


@dataclass
class Exchange:
    """Everything the verbs act on: the configured regions' tables and queues, and a clock."""

    config: ExchangeConfig
    clock: Clock = time.time
    metrics: Metrics = field(default_factory=lambda: METRICS)
    stores: dict[str, RegionStores] = field(default_factory=dict)
    queues: dict[str, OrderQueue] = field(default_factory=dict)
    _az_cycle: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Sends that failed after their order was written: the outbox sweep's cue. `unsent`
    # maps each such order id to (region, when the send failed, by `clock`).
    unconfirmed_sends: int = 0
    last_unconfirmed_s: float = 0.0
    unsent: dict[str, tuple[str, float]] = field(default_factory=dict)
    # Set by the fault plane: is the region reachable, which AZs are up.
    region_up: Callable[[str], bool] = lambda region: True
    az_up: Callable[[str], bool] = lambda az: True
    # Does the facade honour Idempotency-Key? The setting; the fault plane may turn it off.
    idempotent: Callable[[], bool] = lambda: True
    # Sends OrderAccepted off the request thread (a long-running server starts one);
    # None: the request sends it itself, as a Lambda must before it returns.
    relay: AcceptedRelay | None = None


    def __post_init__(self) -> None:
        if not self.config.idempotency:
            self.idempotent = lambda: False
        for region in self.config.regions:
            self.stores.setdefault(
                region, RegionStores.for_region(region, self.config.table_prefix, counted_symbols=self.config.position_limits)
            )
            self.queues.setdefault(region, OrderQueue(region, queue_name(self.config.table_prefix, region)))

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def next_az(self, region: str) -> str:
        azs = [az for az in self.config.azs(region) if self.az_up(az)] or list(self.config.azs(region))
        with self._lock:
            cycle = self._az_cycle.setdefault(region, itertools.count())
            return azs[next(cycle) % len(azs)]


def _accepted_message(order: Order) -> dict[str, Any]:
    return {
        "type": "OrderAccepted",
        "event_id": event_id("accepted", order.order_id),
        "order_id": order.order_id,
        "symbol": order.symbol,
        "seq": order.seq,
        "region": order.region,
    }


def _send_accepted(ex: Exchange, order: Order, clear_outbox: bool = False) -> bool:
    """Send OrderAccepted. The order's `outboxPending` flag stays on the item until SimFill
    finishes the order (its final write removes it): clearing it here would cost every
    order a second write, and every region a replicated version, on the request path.
    Only a re-send by the sweep clears it (`clear_outbox`), so the sweep does not repeat it.

    With a relay running, a new order's send is handed to it (True: handed over)."""
    if ex.relay is not None and not clear_outbox and ex.relay.put(order):
        return True
    message = _accepted_message(order)
    try:
        ex.queues[order.region].send(message, group_id=order.symbol, dedup_id=message["event_id"])
        if clear_outbox:
            ex.stores[order.region].orders.clear_outbox(order.order_id)
    except (BotoCoreError, ClientError):
        _send_failed(ex, order)
        log.warning("OrderAccepted send failed for %s; the outbox sweep will re-send it", order.order_id, exc_info=True)
        return False
    _sent(ex, order)
    return True


def _send_failed(ex: Exchange, order: Order) -> None:
    with ex._lock:
        ex.unconfirmed_sends += 1
        ex.last_unconfirmed_s = ex.clock()
        ex.unsent[order.order_id] = (order.region, ex.last_unconfirmed_s)


def _sent(ex: Exchange, order: Order) -> None:
    with ex._lock:
        ex.unsent.pop(order.order_id, None)


class AcceptedRelay:
    """The outbox's relay: sends OrderAccepted for orders already written (each carries
    `outboxPending`, so it is durable before its message is), off the request thread.

    One thread per region sends what waits, in the order it was written, up to ten
    messages in one SendMessageBatch: under load one call carries several orders, and a
    request answers after its one write. A send that fails goes to the outbox sweep, as a
    failed inline send does; the FIFO deduplication id makes any re-send harmless.
    """

    MAX_BATCH = 10  # SendMessageBatch's limit

    def __init__(self, ex: Exchange):
        self.ex = ex
        self._waiting: dict[str, deque[Order]] = {region: deque() for region in ex.config.regions}
        self._busy: set[str] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self.batches = 0
        self.messages = 0
        self.threads = [
            threading.Thread(target=self._run, args=(region,), name=f"accepted-relay-{region}", daemon=True)
            for region in ex.config.regions
        ]

    def start(self) -> AcceptedRelay:
        for thread in self.threads:
            thread.start()
        return self

    def put(self, order: Order) -> bool:
        """Queue the order's send; False once the relay is stopping (send it inline)."""
        with self._cond:
            if self._stopping or order.region not in self._waiting:
                return False
            self._waiting[order.region].append(order)
            self._cond.notify_all()
        return True

    def pending(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._waiting.values()) + len(self._busy)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything handed over has been sent (or handed to the sweep)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while any(self._waiting.values()) or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        self.flush(timeout_s)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self.threads:
            thread.join(timeout_s)

    def _run(self, region: str) -> None:
        waiting = self._waiting[region]
        while True:
            with self._cond:
                while not waiting and not self._stopping:
                    self._cond.wait()
                if not waiting:
                    return
                batch = [waiting.popleft() for _ in range(min(self.MAX_BATCH, len(waiting)))]
                self._busy.add(region)
            try:
                self._send(region, batch)
            except Exception:  # never lose the thread: the orders go to the sweep
                log.exception("the OrderAccepted relay failed in %s; the outbox sweep will re-send", region)
                for order in batch:
                    _send_failed(self.ex, order)
            finally:
                with self._cond:
                    self._busy.discard(region)
                    self._cond.notify_all()

    def _send(self, region: str, batch: list[Order]) -> None:
        messages = [_accepted_message(order) for order in batch]
        try:
            failed = self.ex.queues[region].send_batch([(m, m["symbol"], m["event_id"]) for m in messages])
        except (BotoCoreError, ClientError):
            log.warning("OrderAccepted batch of %d failed in %s; the outbox sweep will re-send it", len(batch), region, exc_info=True)
            failed = set(range(len(batch)))
        self.batches += 1
        self.messages += len(batch) - len(failed)
        for index, order in enumerate(batch):
            if index in failed:
                _send_failed(self.ex, order)
            else:
                _sent(self.ex, order)


def submit_order(ex: Exchange, client: str, payload: Any, idempotency_key: Any) -> tuple[Order, bool]:
    """Accept an order once per (client, key). Returns (order, created).

    Raises ValidationErrors (nothing written), IdempotencyConflict (422),
    PositionLimitExceeded (422, nothing written), RegionUnavailable (503).
    """
    started = ex.clock()
    key = validate_idempotency_key(idempotency_key)
    request = validate_order(payload, ex.config)
    # With idempotency off (a game-day switch), every request is a new order: a retry
    # of the same key becomes a duplicate, which is exactly what the operator wants to see.
    order_id = derive_order_id(client, key if ex.idempotent() else f"{key}#{uuid.uuid4().hex}")
    digest = request_hash(request)
    region, note = route(ex, request.region)
    limit = ex.config.position_limit(request.symbol)
    try:
        if limit is not None:
            # The pre-trade check, against the position the landing region counts. Only
            # a refusal costs a second read: a replay of an accepted key is still a replay.
            position = ex.stores[region].sequences.position(client, request.symbol)
            if not within_limit(position, request.side, request.qty, limit):
                existing = ex.stores[region].orders.get(order_id)
                if existing is not None:
                    return _replay(existing, digest), False
                raise PositionLimitExceeded(client, request.symbol, position, request.qty, limit)
        # Write first, read only when the write finds the id taken: a new order costs one
        # round trip (the seq and the order in one transaction), a replay burns no number.
        az = ex.next_az(region)

        def build(seq: int) -> Order:
            # Called under the market's lock, when the number is claimed: the accept time
            # is read there too, so seq order is accept-time order (check_history's
            # seq_monotonic; read before the lock, a request that waited behind another's
            # throttled claim carried an earlier time than the seq before it).
            now_ms = ex.now_ms()
            return Order(
                order_id=order_id,
                client=client,
                symbol=request.symbol,
                side=request.side,
                qty=request.qty,
                price=request.price,
                status="ACCEPTED",
                region=region,
                accepted_az=az,
                seq=seq,
                idempotency_key=key,
                request_hash=digest,
                simulation_seed=simulation_seed(ex.config.seed, client, request.symbol, key),
                created_ms=now_ms,
                history=(StatusChange("ACCEPTED", now_ms, az, note),),
                updated_ms=now_ms,
            )

        stores = ex.stores[region]
        written = stores.orders.put_new_sequenced(stores.sequences, request.symbol, build)
        if written is None:
            # The id is taken: a replay, or a twin that won the race. The stored order is the original.
            raced = stores.orders.get(order_id)
            if raced is None:  # pragma: no cover - a conditional failure implies the item exists
                raise RegionUnavailable(region)
            return _replay(raced, digest), False
        order = written
    except (BotoCoreError, ClientError) as error:
        log.warning("ingest failed in %s: %s", region, error)
        raise RegionUnavailable(region) from error
    elapsed_ms = (ex.clock() - started) * 1000
    ex.metrics.record_accept(region, ex.clock(), elapsed_ms)
    events.publish(events.ORDER_ACCEPTED, region, {**events.order_data(order), "time_to_accept_ms": round(elapsed_ms, 1)})
    _send_accepted(ex, order)
    return order, True


def route(ex: Exchange, wanted: str) -> tuple[str, str]:
    """The region that takes the order, like Route 53 failover on health checks.

    The wanted region if it is healthy; else the first healthy region (the order then
    notes "rerouted from"); RegionUnavailable when no region can take it.
    """
    if ex.region_up(wanted):
        return wanted, f"accepted in {wanted}"
    if ex.config.reroute:
        for region in ex.config.regions:
            if region != wanted and ex.region_up(region):
                return region, f"rerouted from {wanted} to {region}"
    raise RegionUnavailable(wanted)


def _replay(existing: Order, digest: str) -> Order:
    if existing.request_hash != digest:
        raise IdempotencyConflict(existing)
    return existing


def locate_order(ex: Exchange, order_id: str, region_hint: str | None = None) -> Order | None:
    regions = list(ex.config.regions)
    if region_hint in regions:
        regions.remove(region_hint)
        regions.insert(0, region_hint)
    for region in regions:
        try:
            found = ex.stores[region].orders.get(order_id)
        except (BotoCoreError, ClientError):
            continue
        if found is not None and found.region == region:
            return found
    return None


def cancel_order(ex: Exchange, order: Order) -> bool:
    """Ask the fill worker to cancel; True if the order was still open.

    The cancel travels through the same FIFO group as the order, so it is applied in
    order with the fill: whichever comes first wins, never both.
    """
    region = order.region
    try:
        flagged = ex.stores[region].orders.request_cancel(order.order_id, ex.now_ms())
        if flagged:
            message = {
                "type": "CancelRequested",
                "event_id": event_id("cancel", order.order_id),
                "order_id": order.order_id,
                "symbol": order.symbol,
                "seq": order.seq,
                "region": region,
            }
            ex.queues[region].send(message, group_id=order.symbol, dedup_id=message["event_id"])
    except (BotoCoreError, ClientError) as error:
        raise RegionUnavailable(region) from error
    return flagged


def sweep_outbox(ex: Exchange, older_than_s: float = 2.0, full: bool = True) -> int:
    """Re-send OrderAccepted for open orders whose send was never confirmed. Returns how many.

    Sends this process saw fail are re-sent from memory (`ex.unsent`, a read each, no
    scan). `full` also scans each region's orders for the outbox flag: the sends that a
    process which crashed between its write and its send never made. The flag stays on
    an open order whose send did arrive, so a full sweep may send that one again: the
    same deduplication id, and SimFill skips an order that is already final.
    """
    sent = 0
    cutoff_s = ex.clock() - older_than_s
    with ex._lock:
        due = [(order_id, region) for order_id, (region, failed_s) in ex.unsent.items() if failed_s <= cutoff_s]
    done: set[str] = set()
    for order_id, region in due:
        try:
            order = ex.stores[region].orders.get(order_id)
        except (BotoCoreError, ClientError):
            continue
        if order is None or not order.is_open or order.region != region:
            with ex._lock:
                ex.unsent.pop(order_id, None)
            continue
        if _send_accepted(ex, order, clear_outbox=True):
            sent += 1
            done.add(order_id)
    if not full:
        return sent
    cutoff_ms = int(cutoff_s * 1000)
    for region in ex.config.regions:
        try:
            pending = list(ex.stores[region].orders.outbox_pending(cutoff_ms))
        except (BotoCoreError, ClientError):
            continue
        for order in pending:
            if order.region != region or order.order_id in done:
                continue
            if _send_accepted(ex, order, clear_outbox=True):
                sent += 1
    return sent
