"""The reconcile worker's memory is bounded by age: settled orders that every region holds
retire after the horizon (in the streams' own time), and a late copy is still judged as if
nothing had retired. Driven with stream records on a virtual clock, as the replicator hands
them to the worker; the reconcile table is a real moto server's."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reconcile_panel.provision import ensure_reconcile_tables
from reconcile_panel.codec import decision_items
from reconcile_panel.reconciler import DUPLICATE_FILL, OVER_LIMIT, Acceptance, Fill, Ledger, reconcile, retire
from reconcile_panel.replication import as_replica
from reconcile_panel.store import ReconcileStore
from reconcile_panel.worker import ReconcileWorker
from tests import test_reconcile_property as prop
from tests.conftest import make_config
from trading.config import ExchangeConfig
from trading.domain import derive_trade_id
from trading.streams import ChangeRecord

EAST, WEST = "us-east-1", "eu-west-1"
HORIZON_S = 60
START_MS = 1_700_000_000_000


def order_item(order_id: str, region: str, accepted_ms: int, updated_ms: int, status: str = "FILLED", filled: str = "0.5", seq: int = 1, client: str = "alice") -> dict[str, Any]:
    return {
        "pk": f"ORDER#{order_id}", "orderId": order_id, "client": client, "symbol": "BTC-USD", "side": "BUY",
        "qty": Decimal("0.5"), "price": Decimal("50010.00"), "status": status, "region": region, "seq": seq,
        "createdAt": accepted_ms, "updatedAt": updated_ms, "filledQty": Decimal(filled), "cancelRequested": False,
    }


def trade_item(order_id: str, region: str, ts_ms: int, qty: str = "0.5", client: str = "alice") -> dict[str, Any]:
    trade_id = derive_trade_id(order_id, region, 0)
    return {
        "pk": f"TRADE#{trade_id}", "tradeId": trade_id, "orderId": order_id, "region": region, "client": client,
        "counterparty": "SIM-MM-1", "symbol": "BTC-USD", "side": "BUY", "qty": Decimal(qty), "price": Decimal("50010.00"),
        "seq": 1, "fillIndex": 0, "timestamp": ts_ms,
    }


class Stream:
    """What the replicator hands the worker: each region's original writes and the replicas it applied."""

    def __init__(self, worker: ReconcileWorker):
        self.worker = worker
        self.now = START_MS
        self.n = 0

    def feed(self, region: str, item: dict[str, Any]) -> None:
        self.n += 1
        table = "orders" if item["pk"].startswith("ORDER#") else "trades"
        self.worker.ingest(ChangeRecord("MODIFY", {"pk": item["pk"]}, item, None, str(self.n), region, table))

    def settled_order(self, order_id: str, region: str = EAST, replicate: bool = True) -> list[dict[str, Any]]:
        """An order accepted, filled and final in `region` (100 ms apart), and its replica elsewhere."""
        accepted = self.now
        items = [order_item(order_id, region, accepted, accepted, status="ACCEPTED", filled="0"), trade_item(order_id, region, accepted + 50), order_item(order_id, region, accepted, accepted + 100)]
        for item in items:
            self.feed(region, item)
        if replicate:
            for other in self.worker.config.regions:
                if other != region:
                    self.feed(other, as_replica(items[-1], region))
                    self.feed(other, as_replica(items[1], region))
        self.now += 100
        return items


def entries(worker: ReconcileWorker) -> int:
    held = worker.retained()
    return held["copies"] + held["fills"] + held["tombstones"] + held["held_in"] + held["written"]


@pytest.fixture
def reconcile_config(aws_resources: ExchangeConfig) -> ExchangeConfig:
    ensure_reconcile_tables(aws_resources)
    return aws_resources


@pytest.fixture
def worker(reconcile_config: ExchangeConfig) -> Iterator[ReconcileWorker]:
    yield ReconcileWorker(reconcile_config, tail=False, limits={}, horizon_s=HORIZON_S)


def records_of(config: ExchangeConfig, order_id: str) -> list[dict[str, Any]]:
    return sorted((i for i in ReconcileStore.for_region(EAST, config.table_prefix).scan_all() if i.get("orderId") == order_id), key=lambda i: str(i["pk"]))


def test_it_stops_growing_under_a_long_stream_of_settled_orders(worker: ReconcileWorker) -> None:
    stream = Stream(worker)
    samples = []
    total = 3000  # ten a second for 300 s of stream time: five horizons
    for n in range(total):
        stream.settled_order(f"O{n:05d}")
        if n % 25 == 24:
            worker.run_once()
            samples.append(entries(worker))
    quarter = len(samples) // 4
    second, last = max(samples[quarter : 2 * quarter]), max(samples[3 * quarter :])
    # A horizon of live orders and a horizon of tombstones: 2 x 60 s x 10/s, plus a step.
    per_order = entries(worker) / max(1, worker.retained()["copies"] + worker.retained()["tombstones"])
    assert worker.retained()["copies"] + worker.retained()["tombstones"] <= 2 * HORIZON_S * 10 + 200, worker.retained()
    assert last <= second * 1.05, (second, last, samples[::10])
    assert worker.retired_total >= total - 2 * HORIZON_S * 10 - 200
    assert per_order < 6, per_order  # each order is a handful of entries, never its history


def test_it_keeps_an_order_a_region_lacks_however_old_and_judges_its_late_copy(worker: ReconcileWorker, reconcile_config: ExchangeConfig) -> None:
    stream = Stream(worker)
    # Accepted and filled in the east; the west never saw it (a long partition).
    lonely = stream.settled_order("OLONELY", EAST, replicate=False)
    for n in range(1500):  # 150 s of stream time: over two horizons
        stream.settled_order(f"O{n:05d}")
        if n % 50 == 49:
            worker.run_once()
    assert worker.retired_total > 800  # the other orders of the first 90 s retired
    assert ("OLONELY", EAST) in worker.copies  # still able to conflict: never retired
    # The client's retry was accepted in the west during the partition; it arrives now.
    late_ms = stream.now
    west = [order_item("OLONELY", WEST, late_ms, late_ms, status="ACCEPTED", filled="0", seq=9), trade_item("OLONELY", WEST, late_ms + 40), order_item("OLONELY", WEST, late_ms, late_ms + 80, seq=9)]
    for item in west:
        stream.feed(WEST, item)
    result = worker.run_once()
    assert result.conflicts == 1 and result.compensations == 1
    (conflict,) = [r for r in records_of(reconcile_config, "OLONELY") if r["recordType"] == "CONFLICT"]
    assert conflict["kind"] == DUPLICATE_FILL and conflict["standingRegion"] == EAST
    assert conflict["compensatedTradeIds"] == [west[1]["tradeId"]]
    # The same records a worker that never retired anything decides over the two copies.
    assert [i["pk"] for i in records_of(reconcile_config, "OLONELY")] == sorted(i["pk"] for i in decision_items(reconcile(full_ledger(lonely + west, worker))))


def full_ledger(items: list[dict[str, Any]], worker: ReconcileWorker) -> Ledger:
    from reconcile_panel.codec import acceptance_from_order_item, fill_from_trade_item

    copies: dict[tuple[str, str], Acceptance] = {}
    fills: list[Fill] = []
    for item in items:
        if item["pk"].startswith("ORDER#"):
            acc = acceptance_from_order_item(item)
            first = copies.get((acc.order_id, acc.region))
            copies[(acc.order_id, acc.region)] = acc if first is None else replace(acc, accept_ms=first.accept_ms, seq=first.seq)
        else:
            fills.append(fill_from_trade_item(item))
    return Ledger(tuple(copies.values()), tuple(fills), worker.reference_prices)


def test_it_judges_a_late_conflicting_copy_of_a_retired_order_from_its_tombstone(worker: ReconcileWorker, reconcile_config: ExchangeConfig) -> None:
    stream = Stream(worker)
    first = stream.settled_order("OLATE", EAST)  # held by both regions: it may retire
    for n in range(800):  # 80 s: past the horizon, within the tombstones' one
        stream.settled_order(f"O{n:05d}")
        if n % 50 == 49:
            worker.run_once()
    assert ("OLATE", EAST) not in worker.copies and worker.retained()["tombstones"] > 0
    # A write that says nothing new (the outbox flag's removal) is dropped: no half order again.
    stream.feed(EAST, first[-1])
    assert worker.late_records_dropped == 1 and ("OLATE", EAST) not in worker.copies
    # A copy the west accepted later, its stream read late (it should not exist: every
    # region held the order). It is judged with everything the order knew.
    late_ms = stream.now
    west = [order_item("OLATE", WEST, late_ms, late_ms + 80, seq=4), trade_item("OLATE", WEST, late_ms + 40)]
    for item in west:
        stream.feed(WEST, item)
    result = worker.run_once()
    assert worker.restored_total == 1
    assert result.conflicts == 1 and result.compensations == 1 and result.adjustments == 2
    (conflict,) = [r for r in records_of(reconcile_config, "OLATE") if r["recordType"] == "CONFLICT"]
    assert conflict["standingRegion"] == EAST and conflict["compensatedTradeIds"] == [west[1]["tradeId"]]
    assert [i["pk"] for i in records_of(reconcile_config, "OLATE")] == sorted(i["pk"] for i in decision_items(reconcile(full_ledger(first + west, worker))))


# --- the pure rule ----------------------------------------------------------------------


def copy_of(order_id: str, accept_ms: int, region: str = EAST, status: str = "FILLED", filled: str = "0.6", qty: str = "0.6", seq: int = 1) -> Acceptance:
    return Acceptance(order_id, region, "alice", "BTC-USD", "BUY", Decimal(qty), Decimal("50010"), seq, accept_ms, status, Decimal(filled), False, accept_ms + 10)


def fill_of(order_id: str, ts_ms: int, qty: str = "0.6", region: str = EAST) -> Fill:
    return Fill(derive_trade_id(order_id, region, 0), order_id, region, "alice", "SIM-MM-1", "BTC-USD", "BUY", Decimal(qty), Decimal("50010"), 1, 0, ts_ms)


def test_it_retires_only_what_every_region_holds_past_the_horizon() -> None:
    ledger = Ledger(
        (copy_of("OA", 1_000), copy_of("OB", 1_000), copy_of("OC", 90_000), copy_of("OD", 1_000, status="ACCEPTED", filled="0")),
        (fill_of("OA", 1_005), fill_of("OB", 1_005), fill_of("OC", 90_005)),
    )
    held = {"OA": {WEST}, "OC": {WEST}, "OD": {WEST}}
    done = retire(ledger, now_ms=100_000, horizon_ms=60_000, regions=(EAST, WEST), held_in=held)
    # OB: the west lacks it; OC: too recent; OD: still open.
    assert done.order_ids == ("OA",)
    assert retire(ledger, now_ms=100_000, horizon_ms=60_000, regions=(EAST, WEST), held_in=held, pending={"OA"}).order_ids == ()


def test_it_carries_a_retired_accounts_position_so_a_later_cut_is_decided_the_same() -> None:
    limits = {"BTC-USD": Decimal("1")}
    old = (copy_of("O1", 1_000), copy_of("O2", 2_000, region=WEST, seq=1))
    old_fills = (fill_of("O1", 1_005), fill_of("O2", 2_005, region=WEST, qty="0.6"))
    late = copy_of("O3", 200_000, qty="0.5", filled="0.5", seq=2)
    late_fill = fill_of("O3", 200_005, qty="0.5")
    # The whole history: 0.6 + 0.6 is over the limit of 1 (O2 cut to 0.4), then O3 cut to 0.
    whole = reconcile(Ledger((*old, late), (*old_fills, late_fill), limits=limits))
    held = {"O1": {WEST}, "O2": {EAST}}
    retired = retire(Ledger(old, old_fills, limits=limits), now_ms=100_000, horizon_ms=60_000, regions=(EAST, WEST), held_in=held)
    assert retired.order_ids == ("O1", "O2")
    assert [c.order_id for c in retired.decisions.conflicts] == ["O2"]  # the prefix's own cut comes with it
    opening = retired.openings[("alice", "BTC-USD")]
    assert opening.position == Decimal("1.0") and opening.regions == {EAST, WEST}
    after = reconcile(Ledger((late,), (late_fill,), limits=limits, openings=retired.openings))
    assert sorted(decision_items(after), key=lambda i: i["pk"]) == sorted(
        (i for i in decision_items(whole) if i["orderId"] == "O3"), key=lambda i: i["pk"]
    )
    assert [c.kind for c in after.conflicts] == [OVER_LIMIT]


def test_it_holds_an_accounts_later_orders_while_an_earlier_one_may_still_fill() -> None:
    limits = {"BTC-USD": Decimal("1")}
    ledger = Ledger(
        (copy_of("O1", 1_000, status="ACCEPTED", filled="0"), copy_of("O2", 2_000)),
        (fill_of("O2", 2_005),),
        limits=limits,
    )
    held = {"O1": {WEST}, "O2": {WEST}}
    assert retire(ledger, now_ms=100_000, horizon_ms=60_000, regions=(EAST, WEST), held_in=held).order_ids == ()


def test_it_reads_the_horizon_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_RECONCILE_HORIZON_S", "90")
    assert ExchangeConfig.from_env().reconcile_horizon_s == 90
    assert ReconcileWorker(make_config(reconcile_horizon_s=90), tail=False, limits={}).horizon_ms == 90_000


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(prop.op, max_size=12), st.lists(prop.op, min_size=4, max_size=30), st.lists(prop.op, max_size=12), st.integers(0, 3), st.floats(0, 1))
def test_it_decides_the_same_records_with_a_retired_prefix_as_over_the_whole_history(
    before: list[tuple[Any, ...]], during: list[tuple[Any, ...]], after: list[tuple[Any, ...]], key_space: int, cut: float
) -> None:
    model = prop.Model()
    for step in [*before, ("cut",), *during, ("heal",), *after]:
        if step[0] == "submit":
            _, client, n, region, side, qty = step
            model.submit(client, f"k{n % (key_space + 2)}", region, side, qty)
        elif step[0] == "cancel":
            _, client, n, region = step
            model.cancel(client, f"k{n % (key_space + 2)}", region)
        elif step[0] == "process":
            model.process(step[1])
        elif step[0] == "replicate":
            model.replicate(*step[1])
        else:
            model.cut = step[0] == "cut"
    model.settle()
    ledger = model.worker.ledger()
    whole = {i["pk"]: i for i in decision_items(reconcile(ledger))}
    held = {
        str(item["orderId"]): {r for r in prop.CONFIG.regions if pk in model.tables[r]["orders"]}
        for r in prop.CONFIG.regions
        for pk, item in model.tables[r]["orders"].items()
    }
    newest: dict[str, int] = {}
    for c in ledger.acceptances:
        newest[c.order_id] = max(newest.get(c.order_id, 0), c.updated_ms, c.accept_ms)
    for f in ledger.fills:
        newest[f.order_id] = max(newest.get(f.order_id, 0), f.ts_ms)
    times = sorted(newest.values()) or [0]
    now_ms = times[int(cut * (len(times) - 1))]  # the stream's clock somewhere among the orders' last writes
    retired = retire(ledger, now_ms=now_ms, horizon_ms=0, regions=prop.CONFIG.regions, held_in=held)
    gone = set(retired.order_ids)
    known = {c.order_id for c in ledger.acceptances}
    event("no orders" if not known else "retired none" if not gone else "retired some" if len(gone) < len(known) else "retired all")
    rest = Ledger(
        tuple(c for c in ledger.acceptances if c.order_id not in gone),
        tuple(f for f in ledger.fills if f.order_id not in gone),
        ledger.reference_prices,
        ledger.limits,
        retired.openings,
    )
    split = {i["pk"]: i for i in decision_items(retired.decisions)}
    split.update({i["pk"]: i for i in decision_items(reconcile(rest))})
    assert split == whole
