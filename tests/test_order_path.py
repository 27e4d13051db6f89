"""The Phase 1 order path against a real moto server over HTTP."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from typing import Any

import pytest

from simfill.worker import AzWorker, apply_message
from matcher.engines import engine_for
from tests.conftest import aws_calls, both_engines, failing_calls, order_payload
from trading import aws, events
from trading.actions import Exchange, IdempotencyConflict, submit_order, sweep_outbox
from trading.domain import ValidationErrors

REGION = "us-east-1"


def grid(config: Any) -> Any:
    return lambda symbol: (config.market(symbol).tick, config.market(symbol).lot)


def worker_for(exchange: Exchange, az: str = "us-east-1a") -> AzWorker:
    return AzWorker(exchange.stores[REGION], exchange.queues[REGION], az, grid(exchange.config), wait_s=1)


def drain(worker: AzWorker, expected: int) -> int:
    applied = 0
    for _ in range(expected + 20):
        applied += worker.poll_once()
        if applied >= expected:
            break
    return applied


def count_orders(exchange: Exchange) -> int:
    return sum(len(list(exchange.stores[r].orders.scan_all())) for r in exchange.config.regions)


def test_it_accepts_an_order_and_fills_it_through_the_queue(exchange: Exchange, published: list[dict[str, Any]]) -> None:
    order, created = submit_order(exchange, "alice", order_payload(), "key-1")
    assert created and order.status == "ACCEPTED" and order.seq == 1
    assert order.accepted_az in exchange.config.azs(REGION)
    assert drain(worker_for(exchange), 1) == 1
    stored = exchange.stores[REGION].orders.get(order.order_id)
    assert stored is not None and stored.status in {"FILLED", "CANCELLED"}
    trades = exchange.stores[REGION].trades.for_order(order.order_id, REGION)
    assert sum((t.qty for t in trades), Decimal(0)) == stored.filled_qty <= order.qty
    kinds = [e["type"] for e in published]
    assert kinds[0] == "order.accepted"
    assert kinds[-1] == "order.status" and kinds.count("trade.executed") == len(trades)


@both_engines
def test_its_events_have_one_shape_whichever_engine_fills(exchange: Exchange, published: list[dict[str, Any]]) -> None:
    engine = engine_for(exchange.config.engine)
    worker = AzWorker(exchange.stores[REGION], exchange.queues[REGION], "us-east-1a", grid(exchange.config), wait_s=1, engine=engine, symbols=("BTC-USD",))
    worker.prepare()
    maker, _ = submit_order(exchange, "bob", order_payload(side="SELL", qty="1.0000"), "shape-1")
    assert drain(worker, 1) == 1
    taker, _ = submit_order(exchange, "alice", order_payload(qty="0.4000"), "shape-2")
    assert drain(worker, 1) == 1
    order_fields = set(events.order_data(taker))
    trade_fields = {"trade_id", "order_id", "symbol", "side", "qty", "price", "buy_order", "sell_order", "client", "region", "fill_az", "seq", "ts_ms"}
    assert all(set(e) == {"type", "region", "ts", "data"} for e in published)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for event in published:
        by_kind.setdefault(event["type"], []).append(event["data"])
    assert set(by_kind) - {"book.depth"} == {"order.accepted", "order.status", "trade.executed"}
    assert all(set(d) == order_fields | {"time_to_accept_ms"} for d in by_kind["order.accepted"])
    assert all(set(d) == order_fields for d in by_kind["order.status"])
    assert {d["status"] for d in by_kind["order.status"]} <= {"OPEN", "FILLED", "CANCELLED"}
    assert all(set(d) == trade_fields for d in by_kind["trade.executed"])
    fills = [d for d in by_kind["trade.executed"] if d["order_id"] == taker.order_id]
    assert fills and all(d["buy_order"] == taker.order_id for d in fills)
    if engine.stateful:  # the trade is between the two orders, at the resting order's price
        assert [(d["sell_order"], d["qty"], d["price"]) for d in fills] == [(maker.order_id, "0.4000", "50000.00")]
        assert [(d["client"], d["status"]) for d in by_kind["order.status"]] == [("bob", "OPEN"), ("bob", "OPEN"), ("alice", "FILLED")]
    else:  # against simulated counterparties
        assert all(d["sell_order"].startswith("SIM-MM-") for d in fills)


@both_engines
def test_it_returns_the_original_order_on_replay(exchange: Exchange) -> None:
    first, created = submit_order(exchange, "alice", order_payload(), "key-1")
    again, created_again = submit_order(exchange, "alice", order_payload(), "key-1")
    assert created and not created_again
    assert again.order_id == first.order_id and again.seq == first.seq
    assert count_orders(exchange) == 1
    visible, in_flight = exchange.queues[REGION].depth()
    assert visible + in_flight == 1


@both_engines
def test_it_refuses_a_reused_key_with_another_body(exchange: Exchange) -> None:
    submit_order(exchange, "alice", order_payload(), "key-1")
    with pytest.raises(IdempotencyConflict):
        submit_order(exchange, "alice", order_payload(qty="0.7"), "key-1")
    assert count_orders(exchange) == 1


@both_engines
def test_it_writes_nothing_for_invalid_input(exchange: Exchange) -> None:
    with pytest.raises(ValidationErrors):
        submit_order(exchange, "alice", order_payload(qty="-3"), "key-1")
    assert count_orders(exchange) == 0
    assert exchange.queues[REGION].depth() == (0, 0)


def test_it_allocates_monotonic_sequence_numbers_under_concurrent_submits(exchange: Exchange) -> None:
    seqs: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def submit_many(thread: int) -> None:
        try:
            for n in range(8):
                order, _ = submit_order(exchange, f"trader-{thread}", order_payload(), f"k-{thread}-{n}")
                with lock:
                    seqs.append(order.seq)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=submit_many, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(seqs) == 32 and len(set(seqs)) == 32
    assert sorted(seqs) == list(range(1, 33))
    # Each trader's own orders got increasing numbers, in the order it sent them.
    stored = sorted(exchange.stores[REGION].orders.scan_all(), key=lambda o: o.created_ms)
    for trader in range(4):
        mine = [o.seq for o in sorted(stored, key=lambda o: o.idempotency_key) if o.client == f"trader-{trader}"]
        by_key = sorted((int(o.idempotency_key.rsplit("-", 1)[1]), o.seq) for o in stored if o.client == f"trader-{trader}")
        assert [s for _, s in by_key] == sorted(s for _, s in by_key), mine


def test_the_accept_time_is_read_while_the_seq_is_claimed(exchange: Exchange) -> None:
    """A request that waits for the market's lock (behind a slow or throttled claim) must
    take its accept time once it has the lock, not before: otherwise a later seq can carry
    an earlier time than the seq before it (check_history's seq_monotonic; seen in a soak)."""
    from trading.store import _seq_lock

    stores = exchange.stores[REGION]
    lock = _seq_lock(REGION, stores.sequences.table, "BTC-USD")
    readings: list[tuple[int, bool]] = []
    ticks = iter(range(1, 10_000))

    def clock() -> float:
        now = 1_800_000_000 + next(ticks)  # a second apart: each reading is told apart by its ms
        readings.append((now * 1000, lock.locked()))
        return float(now)

    exchange.clock = clock
    order, created = submit_order(exchange, "alice", order_payload(), "key-1")
    assert created
    assert (order.created_ms, True) in readings and (order.created_ms, False) not in readings


def test_a_throttled_claim_backs_off_without_holding_the_market(exchange: Exchange, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's retries backed off holding the market's lock: under a throttling fault
    one throttled request held every other order of the market for up to seconds."""
    from faults.injection import throttling_response

    submit_order(exchange, "alice", order_payload(), "warm")
    backing_off = threading.Event()
    resume = threading.Event()
    throttled: list[int] = []

    def throttle_first(service: str, region: str, operation: str, request: Any) -> Any:
        if operation == "TransactWriteItems" and not throttled:
            throttled.append(1)
            return throttling_response(request.url, service)
        return None

    def backoff(retry: int) -> float:
        backing_off.set()
        resume.wait(10)
        return 0.0

    monkeypatch.setattr(aws, "backoff_s", backoff)
    slow: dict[str, Any] = {}
    aws.register_before_send(throttle_first)
    try:
        waiting = threading.Thread(target=lambda: slow.update(order=submit_order(exchange, "bob", order_payload(), "slow")[0]))
        waiting.start()
        assert backing_off.wait(10), "the throttled claim never backed off"
        # While it backs off, the market takes another order.
        quick, created = submit_order(exchange, "carol", order_payload(), "quick")
        assert created
        resume.set()
        waiting.join(10)
    finally:
        resume.set()
        aws.unregister_before_send(throttle_first)
    assert quick.seq < slow["order"].seq
    assert quick.created_ms <= slow["order"].created_ms
    assert {o.seq for o in exchange.stores[REGION].orders.scan_all()} == {1, quick.seq, slow["order"].seq}


def test_a_claim_throttled_every_time_is_refused_with_nothing_written(exchange: Exchange, monkeypatch: pytest.MonkeyPatch) -> None:
    from faults.injection import throttling_response
    from trading.actions import RegionUnavailable

    monkeypatch.setattr(aws, "backoff_s", lambda retry: 0.0)
    before = aws.throttled_calls()

    def throttle(service: str, region: str, operation: str, request: Any) -> Any:
        return throttling_response(request.url, service) if operation == "TransactWriteItems" else None

    with aws_calls() as calls:  # registered first: it sees the calls the throttle answers
        aws.register_before_send(throttle)
        try:
            with pytest.raises(RegionUnavailable):
                submit_order(exchange, "alice", order_payload(), "key-1")
        finally:
            aws.unregister_before_send(throttle)
    assert calls.count("TransactWriteItems") == aws.ATTEMPTS
    assert aws.throttled_calls() - before == aws.ATTEMPTS  # each one is the backpressure signal
    assert count_orders(exchange) == 0


class HeldCommit:
    """A before-send hook that holds the market's next transaction (its leader keeps the
    lock) until released, and records how many orders each transaction carried."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()
        self.sizes: list[int] = []
        self.throttle_next = 0
        self._held = False

    def __call__(self, service: str, region: str, operation: str, request: Any) -> Any:
        from faults.injection import throttling_response

        if operation != "TransactWriteItems":
            return None
        items = json.loads(request.body)["TransactItems"]
        puts = sum(1 for item in items if "Put" in item)
        if not self._held:
            self._held = True
            self.holding.set()
            assert self.release.wait(10), "the test never released the held commit"
        elif self.throttle_next and puts > 1:
            self.throttle_next -= 1
            self.sizes.append(-puts)
            return throttling_response(request.url, service)
        self.sizes.append(puts)
        return None


def queued(exchange: Exchange, symbol: str = "BTC-USD") -> int:
    from trading.store import _commit_queue

    return len(_commit_queue((REGION, exchange.stores[REGION].sequences.table, symbol)))


def submit_in_thread(exchange: Exchange, client: str, key: str, into: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            into[(client, key, threading.get_ident())] = submit_order(exchange, client, order_payload(), key)
        except Exception as error:  # surfaced by the assertions
            into[(client, key, threading.get_ident())] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def behind_a_held_commit(exchange: Exchange, requests: list[tuple[str, str]], hold: HeldCommit | None = None) -> tuple[dict[Any, Any], HeldCommit]:
    """Hold alice's "first" request's transaction (its leader keeps the market's lock),
    queue `requests` behind it one at a time, in order, then let the commit go. Returns
    every request's (order, created) and the hook's record."""
    hold = hold or HeldCommit()
    results: dict[Any, Any] = {}
    aws.register_before_send(hold)
    try:
        first = submit_in_thread(exchange, "alice", "first", results)
        assert hold.holding.wait(10)
        later = []
        for n, (client, key) in enumerate(requests, 1):
            later.append(submit_in_thread(exchange, client, key, results))
            wait_until(lambda: queued(exchange) == n)  # queued in this order
        hold.release.set()
        for thread in [first, *later]:
            thread.join(10)
    finally:
        hold.release.set()
        aws.unregister_before_send(hold)
    assert not [r for r in results.values() if isinstance(r, Exception)]
    return results, hold


def test_orders_that_arrive_during_a_commit_go_together_in_the_next(exchange: Exchange) -> None:
    """Group commit: while one transaction is in flight, the market's next orders queue,
    and the next one writes them all, numbered in queue order, with one counter claim."""
    submit_order(exchange, "alice", order_payload(), "warm")  # seq 1; the process learns the counter
    results, hold = behind_a_held_commit(exchange, [(f"trader-{i}", f"k-{i}") for i in range(6)])
    assert hold.sizes == [1, 6]  # the held one alone, then the six in one transaction
    orders = {client: order for (client, _, _), (order, created) in results.items() if created}
    assert orders["alice"].seq == 2
    assert [orders[f"trader-{i}"].seq for i in range(6)] == [3, 4, 5, 6, 7, 8]
    by_seq = sorted(exchange.stores[REGION].orders.scan_all(), key=lambda o: o.seq)
    assert [o.seq for o in by_seq] == list(range(1, 9))
    assert [o.created_ms for o in by_seq] == sorted(o.created_ms for o in by_seq)
    assert exchange.stores[REGION].sequences.current("BTC-USD") == 8


def test_a_replay_and_a_twin_in_one_batch_write_once_and_burn_no_number(exchange: Exchange) -> None:
    old, _ = submit_order(exchange, "alice", order_payload(), "old")  # seq 1
    results, _ = behind_a_held_commit(exchange, [("alice", "old"), ("bob", "twin"), ("bob", "twin"), ("carol", "new")])
    replay = [order for (client, key, _), (order, created) in results.items() if key == "old"]
    assert replay == [old]
    twins = sorted(((created, order) for (_, key, _), (order, created) in results.items() if key == "twin"), key=lambda t: t[0])
    assert [created for created, _ in twins] == [False, True]
    assert twins[0][1].order_id == twins[1][1].order_id and twins[0][1].seq == twins[1][1].seq
    stored = sorted(o.seq for o in exchange.stores[REGION].orders.scan_all())
    assert stored == [1, 2, 3, 4]  # old, first, the twin once, new: no number burnt
    assert exchange.stores[REGION].sequences.current("BTC-USD") == 4


def test_a_request_taken_by_another_commit_waits_for_it_and_leaves_nothing_queued(exchange: Exchange, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request can be taken into another request's commit between queueing itself and
    looking at its state: it must wait for that commit's lock, not queue itself again."""
    from trading import store

    submit_order(exchange, "alice", order_payload(), "warm")
    key = (REGION, exchange.stores[REGION].sequences.table, "BTC-USD")
    entries: list[Any] = []

    class SlowToLook(store._Commit):
        """The second request looks at its state only once another commit has taken it."""

        def __init__(self, *args: Any) -> None:
            self._owner, self._looked, self._state = threading.get_ident(), False, ""
            entries.append(self)
            super().__init__(*args)

        @property  # type: ignore[override]
        def state(self) -> str:
            if threading.get_ident() == self._owner and not self._looked and len(entries) > 1 and self is entries[1]:
                self._looked = True
                wait_until(lambda: self._state != store._QUEUED)
            return self._state

        @state.setter
        def state(self, value: str) -> None:
            self._state = value

    monkeypatch.setattr(store, "_Commit", SlowToLook)
    hold = HeldCommit()
    results: dict[Any, Any] = {}
    aws.register_before_send(hold)
    try:
        first = submit_in_thread(exchange, "alice", "first", results)
        assert hold.holding.wait(10)
        second = submit_in_thread(exchange, "bob", "second", results)
        wait_until(lambda: len(entries) == 2)
        third = submit_in_thread(exchange, "carol", "third", results)  # leads the next commit, taking the second
        wait_until(lambda: len(entries) == 3)
        hold.release.set()
        for thread in (first, second, third):
            thread.join(10)
    finally:
        hold.release.set()
        aws.unregister_before_send(hold)
    assert not [r for r in results.values() if isinstance(r, Exception)]
    assert all(created for _, created in results.values())
    assert hold.sizes == [1, 2]
    assert len(store._commit_queues[key]) == 0  # nobody left behind to be written again
    assert sorted(o.seq for o in exchange.stores[REGION].orders.scan_all()) == [1, 2, 3, 4]


def test_a_throttled_batch_backs_off_and_every_order_lands_once(exchange: Exchange, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aws, "backoff_s", lambda retry: 0.01)
    submit_order(exchange, "alice", order_payload(), "warm")
    hold = HeldCommit()
    hold.throttle_next = 1
    behind_a_held_commit(exchange, [(f"trader-{i}", f"k-{i}") for i in range(4)], hold)
    assert hold.sizes[:2] == [1, -4]  # the batch of four was throttled once, as a whole
    assert sum(size for size in hold.sizes if size > 0) == 5
    assert sorted(o.seq for o in exchange.stores[REGION].orders.scan_all()) == list(range(1, 7))
    assert exchange.stores[REGION].sequences.current("BTC-USD") == 6


def test_a_new_order_is_one_write_and_one_send(exchange: Exchange) -> None:
    submit_order(exchange, "alice", order_payload(), "warm")  # the process learns the counter
    with aws_calls() as calls:
        order, created = submit_order(exchange, "alice", order_payload(), "key-1")
    assert created and order.seq == 2
    assert calls == ["TransactWriteItems", "SendMessage"]
    stored = exchange.stores[REGION].orders.get(order.order_id)
    assert stored is not None and stored.seq == 2


def test_a_replay_burns_no_sequence_number(exchange: Exchange) -> None:
    first, _ = submit_order(exchange, "alice", order_payload(), "key-1")
    submit_order(exchange, "alice", order_payload(), "key-1")
    second, _ = submit_order(exchange, "alice", order_payload(), "key-2")
    assert (first.seq, second.seq) == (1, 2)


def test_another_writer_of_the_counter_costs_a_retry_not_a_duplicate(exchange: Exchange) -> None:
    sequences = exchange.stores[REGION].sequences
    first, _ = submit_order(exchange, "alice", order_payload(), "key-1")
    # Another facade (a second process, a Lambda container) takes numbers meanwhile.
    taken = [sequences.add_one("BTC-USD") for _ in range(3)]
    with aws_calls() as calls:
        second, created = submit_order(exchange, "alice", order_payload(), "key-2")
    assert taken == [2, 3, 4]
    assert created and second.seq == 5
    # The stale claim is refused, the refusal shows the counter, the retry takes the next.
    assert calls == ["TransactWriteItems", "TransactWriteItems", "SendMessage"]
    assert sequences.current("BTC-USD") == 5
    stored = {o.seq for o in exchange.stores[REGION].orders.scan_all()}
    assert stored == {first.seq, second.seq}


def test_a_counter_that_keeps_moving_falls_back_to_the_atomic_add(exchange: Exchange) -> None:
    sequences = exchange.stores[REGION].sequences
    submit_order(exchange, "alice", order_payload(), "key-1")

    def race(service: str, region: str, operation: str, request: Any) -> None:
        if operation == "TransactWriteItems":
            aws.unregister_before_send(race)
            try:
                sequences.add_one("BTC-USD")  # every claim finds the counter moved again
            finally:
                aws.register_before_send(race)

    aws.register_before_send(race)
    try:
        with aws_calls() as calls:
            order, created = submit_order(exchange, "alice", order_payload(), "key-2")
    finally:
        aws.unregister_before_send(race)
    assert created
    assert calls.count("TransactWriteItems") == 4 and calls[-3:] == ["UpdateItem", "PutItem", "SendMessage"]
    assert order.seq == sequences.current("BTC-USD")
    seqs = [o.seq for o in exchange.stores[REGION].orders.scan_all()]
    assert len(seqs) == len(set(seqs)) == 2


def test_it_finishes_a_fill_exactly_once_after_a_crash_between_the_steps(exchange: Exchange) -> None:
    order, _ = submit_order(exchange, "alice", order_payload(qty="1.0000"), "crash-1")
    message = exchange.queues[REGION].receive(wait_s=1)[0]
    stores = exchange.stores[REGION]

    def crash(_: Any) -> None:
        raise RuntimeError("worker died after writing the trades")

    with pytest.raises(RuntimeError):
        apply_message(stores, message.body, "us-east-1a", lambda: 1000.0, grid(exchange.config), before_finish=crash)
    assert stores.orders.get(order.order_id).status == "ACCEPTED"
    written = stores.trades.for_order(order.order_id, REGION)

    # The message was never deleted: it comes back after the visibility timeout.
    redelivered = exchange.queues[REGION].receive(wait_s=5)
    assert [m.body["order_id"] for m in redelivered] == [order.order_id]
    result = apply_message(stores, redelivered[0].body, "us-east-1b", lambda: 1001.0, grid(exchange.config))
    final = stores.orders.get(order.order_id)
    assert final.status in {"FILLED", "CANCELLED"}
    after = stores.trades.for_order(order.order_id, REGION)
    assert [t.trade_id for t in after] == [t.trade_id for t in written]  # no second set of trades
    assert sum((t.qty for t in after), Decimal(0)) == final.filled_qty
    assert [h.status for h in final.history] == ["ACCEPTED", final.status]
    assert result.action in {"filled", "cancelled"}


def test_it_applies_a_redelivered_message_once(exchange: Exchange, published: list[dict[str, Any]]) -> None:
    order, _ = submit_order(exchange, "alice", order_payload(), "dup-1")
    body = exchange.queues[REGION].receive(wait_s=1)[0].body
    stores = exchange.stores[REGION]
    first = apply_message(stores, body, "us-east-1a", lambda: 1000.0, grid(exchange.config))
    second = apply_message(stores, body, "us-east-1b", lambda: 1002.0, grid(exchange.config))
    assert first.action in {"filled", "cancelled"} and second.action == "skipped"
    final = stores.orders.get(order.order_id)
    assert len(final.history) == 2
    assert final.updated_ms == 1000_000


def test_it_resends_an_accepted_order_whose_send_failed(exchange: Exchange) -> None:
    with failing_calls("SendMessage"):
        order, created = submit_order(exchange, "alice", order_payload(), "outbox-1")
    assert created  # accepted: the write committed even though the send failed
    assert exchange.queues[REGION].depth() == (0, 0)
    assert [o.order_id for o in exchange.stores[REGION].orders.outbox_pending(order.created_ms + 1)] == [order.order_id]

    later = Exchange(config=exchange.config, clock=lambda: order.created_ms / 1000 + 10)
    assert sweep_outbox(later) == 1
    assert sweep_outbox(later) == 0  # the flag is cleared once the send is confirmed
    assert drain(worker_for(exchange), 1) == 1
    assert exchange.stores[REGION].orders.get(order.order_id).status in {"FILLED", "CANCELLED"}


def test_it_resends_a_failed_send_from_memory_without_a_scan(exchange: Exchange) -> None:
    with failing_calls("SendMessage"):
        failed, _ = submit_order(exchange, "alice", order_payload(), "outbox-mem-1")
    sent_fine, _ = submit_order(exchange, "alice", order_payload(), "outbox-mem-2")
    assert set(exchange.unsent) == {failed.order_id}
    with aws_calls() as calls:
        assert sweep_outbox(exchange, older_than_s=0, full=False) == 1
    assert "Scan" not in calls
    assert exchange.unsent == {}
    assert sweep_outbox(exchange, older_than_s=0, full=False) == 0
    assert drain(worker_for(exchange), 2) == 2
    # Finishing an order removes its outbox flag: a full sweep sends nothing again.
    for order in (failed, sent_fine):
        stored = exchange.stores[REGION].orders.get_item(order.order_id)
        assert stored is not None and "outboxPending" not in stored
    assert list(exchange.stores[REGION].orders.outbox_pending(failed.created_ms + 60_000)) == []
    assert sweep_outbox(exchange, older_than_s=0) == 0


def test_an_accepted_order_keeps_its_outbox_flag_until_it_is_final(exchange: Exchange) -> None:
    order, _ = submit_order(exchange, "alice", order_payload(), "outbox-open-1")
    # One write on the request path: the flag is not cleared after the send.
    assert [o.order_id for o in exchange.stores[REGION].orders.outbox_pending(order.created_ms + 1)] == [order.order_id]
    assert drain(worker_for(exchange), 1) == 1
    assert list(exchange.stores[REGION].orders.outbox_pending(order.created_ms + 1)) == []


def test_it_gives_the_same_fills_whatever_traffic_interleaves(exchange: Exchange) -> None:
    def fills_for(prefix: str, noise: int) -> list[tuple[str, str]]:
        for n in range(noise):
            submit_order(exchange, "noise", order_payload(), f"{prefix}-noise-{n}")
        order, _ = submit_order(exchange, "alice", order_payload(qty="2.0000"), "same-key")
        drain(worker_for(exchange), noise + 1)
        return [(str(t.qty), str(t.price)) for t in exchange.stores[REGION].trades.for_order(order.order_id, REGION)]

    first = fills_for("a", 0)
    # A fresh exchange state with other traffic first: the same order fills the same way.
    from tests.conftest import make_config
    from trading.provision import bootstrap

    import urllib.request

    urllib.request.urlopen(urllib.request.Request(aws.resolve_endpoint() + "/moto-api/reset", method="POST"))
    from trading.queue import forget_urls

    forget_urls()
    bootstrap(make_config())
    assert fills_for("b", 3) == first


def test_it_reads_a_batchs_orders_in_one_call_and_deletes_what_it_applied_in_one(exchange: Exchange) -> None:
    orders = [submit_order(exchange, "alice", order_payload(qty="0.0100"), f"batch-{i}")[0] for i in range(6)]
    worker = worker_for(exchange)
    messages = exchange.queues[REGION].receive(max_messages=10, wait_s=1)
    assert len(messages) == len(orders)
    with aws_calls() as calls:
        assert worker.process(messages) == len(orders)
    trades = [t for o in orders for t in exchange.stores[REGION].trades.for_order(o.order_id, REGION)]
    assert trades  # the seeds fill some of these orders
    # One read for the orders; every trade and every final status in one transaction;
    # one delete.
    assert calls == ["BatchGetItem", "TransactWriteItems", "DeleteMessageBatch"]
    assert exchange.stores[REGION].trades.put_many_once(trades) == 0  # a redelivery writes none again
    for order in orders:
        stored = exchange.stores[REGION].orders.get(order.order_id)
        fills = exchange.stores[REGION].trades.for_order(order.order_id, REGION)
        assert stored.status != "ACCEPTED" and sum((t.qty for t in fills), Decimal(0)) == stored.filled_qty
    assert exchange.queues[REGION].depth() == (0, 0)


def assert_fills_add_up(exchange: Exchange, orders: list[Any]) -> None:
    """Every order is final and its fills, none written twice, add up to what it filled."""
    for order in orders:
        stored = exchange.stores[REGION].orders.get(order.order_id)
        fills = exchange.stores[REGION].trades.for_order(order.order_id, REGION)
        assert stored.status != "ACCEPTED" and sum((t.qty for t in fills), Decimal(0)) == stored.filled_qty
        assert len({t.trade_id for t in fills}) == len(fills)


def test_a_task_stopped_part_way_deletes_only_what_it_applied(exchange: Exchange) -> None:
    orders = [submit_order(exchange, "alice", order_payload(qty="0.0100"), f"stop-{i}")[0] for i in range(4)]
    worker = worker_for(exchange)
    worker.stress.slice_s, worker.cpu_stress_percent = 0.01, 100  # a stressed task applies one message at a time, nothing planned ahead
    messages = exchange.queues[REGION].receive(max_messages=10, wait_s=1, visibility_timeout=1)
    worker.on_applied = lambda applied: worker.stop() if worker.applied_count == 2 else None
    assert worker.process(messages) == 2
    status = [exchange.stores[REGION].orders.get(o.order_id).status for o in orders]
    assert [s != "ACCEPTED" for s in status] == [True, True, False, False]
    # The two it did not apply come back after the visibility timeout, for another task.
    other = worker_for(exchange, "us-east-1b")
    assert drain(other, 2) == 2
    assert_fills_add_up(exchange, orders)


def test_a_task_stopped_after_its_batchs_statuses_were_written_still_publishes_them(exchange: Exchange) -> None:
    """A planned batch's trades and statuses are written before the first is published:
    a stop after that publishes and deletes the rest rather than leave them to come back
    as no-ops whose fill no browser would ever be told of."""
    orders = [submit_order(exchange, "alice", order_payload(qty="0.0100"), f"stop-late-{i}")[0] for i in range(4)]
    worker = worker_for(exchange)
    published: list[str] = []
    messages = exchange.queues[REGION].receive(max_messages=10, wait_s=1, visibility_timeout=1)

    def on_applied(applied: Any) -> None:
        published.append(applied.order_id)
        if worker.applied_count == 2:
            worker.stop()

    worker.on_applied = on_applied
    assert worker.process(messages) == 4
    assert published == [o.order_id for o in orders]
    assert exchange.queues[REGION].depth() == (0, 0)
    assert_fills_add_up(exchange, orders)


def test_a_raced_order_in_a_batch_refuses_only_itself(exchange: Exchange, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another task finished one order of the batch after this task read it (a redelivery
    raced it): that order's status write is refused and the order skipped, the others
    are finished, and nothing is written twice."""
    from trading.store import OrderStore

    orders = [submit_order(exchange, "alice", order_payload(qty="0.0100"), f"raced-{i}")[0] for i in range(3)]
    worker = worker_for(exchange)
    messages = exchange.queues[REGION].receive(max_messages=10, wait_s=1)
    stale = exchange.stores[REGION].orders.get_many([o.order_id for o in orders])
    raced = apply_message(exchange.stores[REGION], messages[0].body, "us-east-1b", lambda: orders[0].created_ms / 1000, grid(exchange.config))
    assert raced.action in {"filled", "cancelled"}
    monkeypatch.setattr(OrderStore, "get_many", lambda self, ids: [o for o in stale if o.order_id in ids])
    applied: list[str] = []
    worker.on_applied = lambda a: applied.append(a.action)
    with aws_calls() as calls:
        assert worker.process(messages) == 3
    # The batch's transaction is refused as a whole (one order is no longer open, its trades
    # are there), so nothing of it is written; the long way then refuses only that order.
    assert calls.count("TransactWriteItems") == 1 and calls.count("UpdateItem") == 3
    assert applied[0] == "skipped" and all(a in {"filled", "cancelled"} for a in applied[1:])
    assert_fills_add_up(exchange, orders)


def test_a_batch_whose_transaction_fails_is_written_the_long_way_exactly_once(exchange: Exchange) -> None:
    orders = [submit_order(exchange, "alice", order_payload(qty="0.0100"), f"long-{i}")[0] for i in range(5)]
    worker = worker_for(exchange)
    messages = exchange.queues[REGION].receive(max_messages=10, wait_s=1)
    with aws_calls() as calls, failing_calls("TransactWriteItems"):
        assert worker.process(messages) == len(orders)
    assert calls.count("TransactWriteItems") == 1  # one try, no SDK retries: the long way retries
    assert calls.count("UpdateItem") == len(orders)
    assert_fills_add_up(exchange, orders)
    assert exchange.queues[REGION].depth() == (0, 0)


def test_a_batch_too_large_for_one_transaction_is_written_the_long_way(exchange: Exchange, monkeypatch: pytest.MonkeyPatch) -> None:
    from trading import store

    monkeypatch.setattr(store, "TRANSACTION_ITEMS", 3)
    orders = [submit_order(exchange, "alice", order_payload(qty="0.0100"), f"large-{i}")[0] for i in range(4)]
    worker = worker_for(exchange)
    messages = exchange.queues[REGION].receive(max_messages=10, wait_s=1)
    with aws_calls() as calls:
        assert worker.process(messages) == len(orders)
    assert "TransactWriteItems" not in calls and calls.count("UpdateItem") == len(orders)
    assert_fills_add_up(exchange, orders)


def test_a_batchs_status_writes_are_sent_side_by_side_the_long_way(exchange: Exchange) -> None:
    """On the long way (the batch's transaction refused), the status writes of a planned
    batch overlap: the first waits (up to 5 s) for a second to be sent while it is in
    flight, which cannot happen one after another."""
    orders = [submit_order(exchange, "alice", order_payload(qty="0.0100"), f"overlap-{i}")[0] for i in range(4)]
    worker = worker_for(exchange)
    messages = exchange.queues[REGION].receive(max_messages=10, wait_s=1)
    sent = threading.Condition()
    count = [0]
    first_met_another: list[bool] = []

    def meet(service: str, region: str, operation: str, request: Any) -> None:
        if operation != "UpdateItem":
            return
        with sent:
            count[0] += 1
            sent.notify_all()
            if count[0] == 1:
                first_met_another.append(sent.wait_for(lambda: count[0] >= 2, timeout=5))

    aws.register_before_send(meet)
    try:
        with failing_calls("TransactWriteItems"):
            assert worker.process(messages) == len(orders)
    finally:
        aws.unregister_before_send(meet)
    assert first_met_another == [True] and count[0] == len(orders)
    assert_fills_add_up(exchange, orders)
