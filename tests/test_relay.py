"""The outbox relay: OrderAccepted sent off the request thread, batched, never lost.

Against the real moto server over HTTP."""

from __future__ import annotations

import threading

from tests.conftest import aws_calls, failing_calls, order_payload
from trading.actions import AcceptedRelay, Exchange, submit_order, sweep_outbox

REGION = "us-east-1"


def queued_order_ids(exchange: Exchange) -> list[str]:
    """Every message in the region's queue, in delivery order (taken off the queue)."""
    queue = exchange.queues[REGION]
    ids: list[str] = []
    for _ in range(50):
        batch = queue.receive(max_messages=10, wait_s=0, visibility_timeout=60)
        if not batch:
            break
        ids += [m.body["order_id"] for m in batch]
        queue.delete_batch([m.receipt_handle for m in batch])
    return ids


def test_a_request_makes_one_call_and_the_relay_sends_the_message(exchange: Exchange) -> None:
    relay = exchange.relay = AcceptedRelay(exchange).start()
    try:
        submit_order(exchange, "alice", order_payload(), "warm")
        relay.flush()
        with aws_calls() as calls:
            order, created = submit_order(exchange, "alice", order_payload(), "key-1")
            request_calls = list(calls)
            assert relay.flush()
        assert created and request_calls[0] == "TransactWriteItems"
        assert calls == ["TransactWriteItems", "SendMessageBatch"]
        assert queued_order_ids(exchange)[-1] == order.order_id
    finally:
        relay.stop()


def test_what_waits_goes_ten_to_a_batch_in_the_order_it_was_written(exchange: Exchange) -> None:
    relay = exchange.relay = AcceptedRelay(exchange)  # not started: the orders wait
    orders = [submit_order(exchange, f"trader-{n % 3}", order_payload(), f"k-{n}")[0] for n in range(25)]
    assert relay.pending() == 25
    assert exchange.queues[REGION].url  # looked up once, before the count
    with aws_calls() as calls:
        relay.start()
        assert relay.flush()
    relay.stop()
    assert calls == ["SendMessageBatch"] * 3 and (relay.batches, relay.messages) == (3, 25)
    assert queued_order_ids(exchange) == [o.order_id for o in sorted(orders, key=lambda o: o.seq)]
    assert not exchange.unsent


def test_a_failed_batch_goes_to_the_sweep_and_nothing_is_lost(exchange: Exchange) -> None:
    relay = exchange.relay = AcceptedRelay(exchange).start()
    try:
        with failing_calls("SendMessageBatch"):
            orders = [submit_order(exchange, "alice", order_payload(), f"k-{n}")[0] for n in range(4)]
            assert relay.flush()
        assert set(exchange.unsent) == {o.order_id for o in orders}
        assert exchange.queues[REGION].depth() == (0, 0)
        assert sweep_outbox(exchange, older_than_s=0, full=False) == 4
        assert not exchange.unsent
        assert sorted(queued_order_ids(exchange)) == sorted(o.order_id for o in orders)
    finally:
        relay.stop()


def test_a_stopped_relay_hands_the_send_back_to_the_request(exchange: Exchange) -> None:
    relay = exchange.relay = AcceptedRelay(exchange).start()
    relay.stop()
    with aws_calls() as calls:
        order, _ = submit_order(exchange, "alice", order_payload(), "key-1")
    assert calls[-1] == "SendMessage"
    assert queued_order_ids(exchange) == [order.order_id]


def test_sends_handed_over_from_many_threads_all_arrive_once(exchange: Exchange) -> None:
    relay = exchange.relay = AcceptedRelay(exchange).start()
    accepted: list[str] = []
    lock = threading.Lock()

    def submit_many(thread: int) -> None:
        for n in range(10):
            order, _ = submit_order(exchange, f"trader-{thread}", order_payload(), f"k-{thread}-{n}")
            with lock:
                accepted.append(order.order_id)

    threads = [threading.Thread(target=submit_many, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert relay.flush()
    relay.stop()
    queued = queued_order_ids(exchange)
    assert sorted(queued) == sorted(accepted) and len(set(queued)) == 40
    assert relay.messages == 40 and relay.batches <= 40
