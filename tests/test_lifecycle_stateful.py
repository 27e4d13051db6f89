"""The order lifecycle as a state machine against the real moto server.

Rules: submit, replay (same body: the same order; another body: refused), cancel,
fill (a SimFill worker polls once), throttling on and off (the fault plane's
before-send hook, DynamoDB or SQS, some or every call). After every step: an order
the exchange accepted is still there, no order is filled beyond its quantity, a final
status never reopens. At the end, with the fault off: the outbox is swept, the
workers drain, and every accepted order is final with its trades adding up.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError
from botocore.retries import standard
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from faults.experiment import Throttle
from faults.injection import FaultPlane
from simfill.worker import AzWorker
from tests.conftest import wait_for
from trading.actions import Exchange, IdempotencyConflict, RegionUnavailable, cancel_order, submit_order, sweep_outbox
from trading.config import ExchangeConfig
from trading.domain import Order

CLIENTS = ("alice", "bob")
LOT = Decimal("0.0001")
_runs = itertools.count()


class OrderLifecycle(RuleBasedStateMachine):
    config: ExchangeConfig  # set by the test below, once per session's moto state

    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.run = next(_runs)
        self.ex = Exchange(config=self.config)
        grid = lambda symbol: (self.config.market(symbol).tick, self.config.market(symbol).lot)  # noqa: E731
        self.workers = {
            region: AzWorker(self.ex.stores[region], self.ex.queues[region], self.config.azs(region)[0], grid, wait_s=0)
            for region in self.config.regions
        }
        self.plane = FaultPlane(self.config, seed=self.run).install()
        self.fault_on = False
        # (client, key) -> the payload first sent, and the order once the exchange accepted it.
        self.sent: dict[tuple[str, str], dict[str, str]] = {}
        self.accepted: dict[tuple[str, str], Order] = {}
        self.final_seen: dict[str, str] = {}
        self.counter = itertools.count()

    # --- rules ----------------------------------------------------------------------

    @rule(
        target=keys,
        client=st.sampled_from(CLIENTS),
        side=st.sampled_from(("BUY", "SELL")),
        lots=st.integers(1, 5000),
        ticks=st.integers(-300, 300),
        region=st.sampled_from(("us-east-1", "eu-west-1")),
    )
    def submit(self, client: str, side: str, lots: int, ticks: int, region: str) -> tuple[str, str]:
        key = f"run{self.run}-{next(self.counter)}"
        payload = {
            "symbol": "BTC-USD",
            "side": side,
            "qty": str(LOT * lots),
            "price": str(Decimal("50000.00") + Decimal("0.01") * ticks),
            "region": region,
        }
        self.sent[(client, key)] = payload
        self._submit(client, key, payload, expect_created=True)
        return (client, key)

    def _submit(self, client: str, key: str, payload: dict[str, str], expect_created: bool) -> None:
        try:
            order, created = submit_order(self.ex, client, payload, key)
        except RegionUnavailable:
            assert self.fault_on, "refused with no fault active"
            return
        known = self.accepted.get((client, key))
        if known is not None:
            assert not created, "a replay created a second order"
            assert order.order_id == known.order_id and order.seq == known.seq and order.request_hash == known.request_hash
        else:
            # A first attempt refused under the fault may have left nothing, or an order that
            # a retry now finds: either way the key names exactly one order from here on.
            assert created or not expect_created or self.fault_on
        self.accepted[(client, key)] = known or order

    @rule(ref=keys)
    def replay(self, ref: tuple[str, str]) -> None:
        client, key = ref
        self._submit(client, key, self.sent[ref], expect_created=False)

    @rule(ref=keys)
    def replay_with_another_body(self, ref: tuple[str, str]) -> None:
        client, key = ref
        other = {**self.sent[ref], "qty": str(Decimal(self.sent[ref]["qty"]) + LOT)}
        try:
            submit_order(self.ex, client, other, key)
        except IdempotencyConflict as conflict:
            known = self.accepted.get(ref)
            assert known is None or conflict.order.order_id == known.order_id
            return
        except RegionUnavailable:
            assert self.fault_on
            return
        # Only possible when nothing was ever accepted under the key: the new body wins it.
        assert ref not in self.accepted, "a reused key with another body was accepted"
        self.sent[ref] = other
        self._submit(client, key, other, expect_created=False)

    @rule(ref=keys)
    def cancel(self, ref: tuple[str, str]) -> None:
        order = self.accepted.get(ref)
        if order is None:
            return
        try:
            cancel_order(self.ex, order)
        except RegionUnavailable:
            assert self.fault_on

    @rule(region=st.sampled_from(("us-east-1", "eu-west-1")))
    def fill(self, region: str) -> None:
        try:
            self.workers[region].poll_once()
        except (BotoCoreError, ClientError):
            assert self.fault_on, "a worker failed with no fault active"

    @precondition(lambda self: not self.fault_on)
    @rule(
        region=st.sampled_from(("us-east-1", "eu-west-1")),
        service=st.sampled_from(("dynamodb", "sqs")),
        percentage=st.sampled_from((30, 100)),
    )
    def throttle_on(self, region: str, service: str, percentage: int) -> None:
        self.plane.apply("throttle", [Throttle(region=region, service=service, operations=frozenset(), percentage=percentage)])
        self.fault_on = True

    @precondition(lambda self: self.fault_on)
    @rule()
    def throttle_off(self) -> None:
        self.plane.remove("throttle")
        self.fault_on = False

    # --- invariants -----------------------------------------------------------------

    def _stored(self) -> dict[str, Order]:
        found: dict[str, Order] = {}
        for order in self.accepted.values():
            stored = self.ex.stores[order.region].orders.get(order.order_id)
            assert stored is not None, f"accepted order {order.order_id} is lost"
            found[order.order_id] = stored
        return found

    @invariant()
    def nothing_accepted_is_lost_nor_overfilled(self) -> None:
        if self.fault_on:
            return  # reads would be throttled too; checked again once the fault is off
        for order_id, stored in self._stored().items():
            assert stored.filled_qty <= stored.qty, f"{order_id} filled {stored.filled_qty} of {stored.qty}"
            before = self.final_seen.get(order_id)
            if before is not None:
                assert stored.status == before, f"{order_id} went from {before} to {stored.status}"
                continue  # its trades were counted when it became final
            fills = self.ex.stores[stored.region].trades.for_order(order_id, stored.region)
            assert sum((t.qty for t in fills), Decimal(0)) <= stored.qty
            if not stored.is_open:
                self.final_seen[order_id] = stored.status

    def teardown(self) -> None:
        try:
            self.plane.remove("throttle")
            self.fault_on = False
            if self.accepted:
                self._settle()
        finally:
            self.plane.uninstall()

    def _settle(self) -> None:
        def all_final() -> bool:
            sweep_outbox(self.ex, older_than_s=0)
            for worker in self.workers.values():
                worker.poll_once()
            return all(not o.is_open for o in self._stored().values())

        # Messages a throttled worker held come back after the visibility timeout.
        wait_for(all_final, timeout_s=30, interval_s=0.2, message="every accepted order final")
        for order_id, stored in self._stored().items():
            fills = self.ex.stores[stored.region].trades.for_order(order_id, stored.region)
            assert sum((t.qty for t in fills), Decimal(0)) == stored.filled_qty <= stored.qty


def test_it_keeps_the_contract_through_submit_replay_cancel_fill_and_throttling(
    aws_resources: ExchangeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Throttled retries back off as on AWS, on a scale of milliseconds rather than seconds.
    monkeypatch.setitem(standard.ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "throttling_base_scale", 0.01)
    OrderLifecycle.config = aws_resources
    run_state_machine_as_test(
        OrderLifecycle,
        settings=settings(
            max_examples=6,
            stateful_step_count=20,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


def test_it_is_a_real_test_of_the_contract(aws_resources: Any) -> None:
    # The machine's own failure detection: a replay with another body must be refused.
    ex = Exchange(config=aws_resources)
    order, created = submit_order(ex, "alice", {"symbol": "BTC-USD", "side": "BUY", "qty": "0.1000", "price": "50000.00"}, "k1")
    assert created
    with pytest.raises(IdempotencyConflict):
        submit_order(ex, "alice", {"symbol": "BTC-USD", "side": "BUY", "qty": "0.2000", "price": "50000.00"}, "k1")
    again, created = submit_order(ex, "alice", {"symbol": "BTC-USD", "side": "BUY", "qty": "0.1000", "price": "50000.00"}, "k1")
    assert not created and again.order_id == order.order_id

