"""A property over seeded partition schedules and order flows, on the pure model.

The model is the exchange with its AWS calls replaced by dicts: each region's tables,
ingest and the SimFill decision as the real code makes them (trading.domain,
trading.store's item mapping, simfill.engine), replication through the real LWW rules
(reconcile_panel.replication), streams fed to the real worker's ingest, and the real
reconciler and check. After heal + reconcile: the regions converge, no order is filled
beyond its quantity, no account beyond its limit, check is clean, and a replay decides
the same and writes nothing.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reconcile_panel.history import History, check
from reconcile_panel.codec import decision_items
from reconcile_panel.reconciler import reconcile
from reconcile_panel.replication import as_replica, business_content, is_replica, lww_decision
from reconcile_panel.worker import ReconcileWorker
from simfill.engine import OrderTerms, decide
from simfill.worker import trades_for
from tests.conftest import make_config
from trading.domain import Order, StatusChange, derive_order_id, simulation_seed
from trading.store import order_to_item, trade_from_item, trade_to_item
from trading.streams import ChangeRecord

CONFIG = make_config()
EAST, WEST = CONFIG.regions
LIMIT = Decimal("1.5")
TICK, LOT = Decimal("0.01"), Decimal("0.0001")
CLIENTS = ("alice", "bob")


class Model:
    def __init__(self) -> None:
        self.now = 1_000
        self.tables: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
            r: {"orders": {}, "trades": {}, "reconcile": {}} for r in CONFIG.regions
        }
        self.backlog = {(a, b): deque() for a in CONFIG.regions for b in CONFIG.regions if a != b}
        self.queues: dict[str, deque[tuple[str, str]]] = {r: deque() for r in CONFIG.regions}
        self.seq = {r: 0 for r in CONFIG.regions}
        self.cut = False
        self.worker = ReconcileWorker(CONFIG, limits={"BTC-USD": LIMIT}, tail=False)

    def tick(self) -> int:
        self.now += 7
        return self.now

    def write(self, region: str, role: str, item: dict[str, Any]) -> None:
        self.tables[region][role][item["pk"]] = item
        self.worker.ingest(ChangeRecord("MODIFY", {"pk": item["pk"]}, item, None, str(self.now), region, role))
        if not is_replica(item):
            for dst in CONFIG.regions:
                if dst != region:
                    self.backlog[(region, dst)].append((role, item, region))

    # --- clients and workers ---------------------------------------------------------

    def position(self, region: str, client: str) -> Decimal:
        return sum(
            (t["qty"] if t["side"] == "BUY" else -t["qty"] for t in self.tables[region]["trades"].values() if t["client"] == client),
            Decimal("0"),
        )

    def submit(self, client: str, key: str, region: str, side: str, qty: Decimal) -> None:
        order_id = derive_order_id(client, key)
        if f"ORDER#{order_id}" in self.tables[region]["orders"]:
            return  # a replay
        signed = qty if side == "BUY" else -qty
        if abs(self.position(region, client) + signed) > LIMIT:
            return  # the region's own limit check refuses it
        self.seq[region] += 1
        now = self.tick()
        order = Order(
            order_id, client, "BTC-USD", side, qty, Decimal("50000.00"), "ACCEPTED", region, f"{region}a",
            self.seq[region], key, f"h-{side}-{qty}", simulation_seed(1, client, "BTC-USD", key), now,
            history=(StatusChange("ACCEPTED", now),), updated_ms=now,
        )
        self.write(region, "orders", order_to_item(order))
        self.queues[region].append(("accept", order_id))

    def cancel(self, client: str, key: str, region: str) -> None:
        item = self.tables[region]["orders"].get(f"ORDER#{derive_order_id(client, key)}")
        if item is None or item["region"] != region or item["status"] != "ACCEPTED":
            return
        self.write(region, "orders", {**business_content(item), "cancelRequested": True, "updatedAt": self.tick()})
        self.queues[region].append(("cancel", item["orderId"]))

    def process(self, region: str) -> bool:
        """apply_message, on the model's tables, with the superseded-copy guard.

        The guard (proposed for simfill.worker.apply_message): if the region's item is
        now another region's copy (last writer wins overwrote it after a heal), this
        region's acceptance is superseded and is not filled here.
        """
        if not self.queues[region]:
            return False
        kind, order_id = self.queues[region].popleft()
        item = self.tables[region]["orders"].get(f"ORDER#{order_id}")
        if item is None or item["status"] != "ACCEPTED" or item["region"] != region:
            return True
        now = self.tick()
        base = business_content(item)
        if kind == "cancel" or item.get("cancelRequested"):
            self.write(region, "orders", {**base, "status": "CANCELLED", "updatedAt": now})
            return True
        outcome = decide(OrderTerms(item["side"], item["qty"], item["price"], TICK, LOT), int(item["simulationSeed"]))
        order = Order(
            order_id, item["client"], item["symbol"], item["side"], item["qty"], item["price"], "ACCEPTED", item["region"],
            item["acceptedAz"], int(item["seq"]), item["idempotencyKey"], item["requestHash"], int(item["simulationSeed"]), int(item["createdAt"]),
        )
        for trade in trades_for(order, outcome, region, f"{region}a", now):
            if f"TRADE#{trade.trade_id}" not in self.tables[region]["trades"]:
                self.write(region, "trades", trade_to_item(trade))
        self.write(region, "orders", {**base, "status": outcome.final_status, "filledQty": outcome.filled_qty, "updatedAt": now})
        return True

    # --- replication ------------------------------------------------------------------

    def replicate(self, src: str, dst: str) -> bool:
        queue = self.backlog[(src, dst)]
        if self.cut or not queue:
            return False
        role, item, writer = queue.popleft()
        existing = self.tables[dst][role].get(item["pk"])
        if lww_decision(existing, item, dst, writer) == "apply":
            self.write(dst, role, as_replica(item, writer))
        return True

    def settle(self) -> None:
        self.cut = False
        while any([self.process(r) for r in CONFIG.regions] + [self.replicate(a, b) for a, b in self.backlog]):
            pass

    def record(self, items: list[dict[str, Any]]) -> int:
        """The worker's conditional puts into the home region's reconcile table."""
        written = 0
        for item in items:
            if item["pk"] not in self.tables[EAST]["reconcile"]:
                self.write(EAST, "reconcile", item)
                written += 1
        return written

    def history(self) -> History:
        return History(CONFIG.regions, self.tables, {"BTC-USD": Decimal("50000")}, {"BTC-USD": LIMIT})


op = st.one_of(
    st.tuples(st.just("submit"), st.sampled_from(CLIENTS), st.integers(0, 5), st.sampled_from(CONFIG.regions),
              st.sampled_from(("BUY", "SELL")), st.sampled_from((Decimal("0.5"), Decimal("1.0")))),
    st.tuples(st.just("cancel"), st.sampled_from(CLIENTS), st.integers(0, 5), st.sampled_from(CONFIG.regions)),
    st.tuples(st.just("process"), st.sampled_from(CONFIG.regions)),
    st.tuples(st.just("replicate"), st.sampled_from(list(Model().backlog))),
    st.tuples(st.just("cut")),
    st.tuples(st.just("heal")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=12), st.lists(op, min_size=4, max_size=30), st.lists(op, max_size=12), st.integers(0, 3))
def test_it_converges_and_reconciles_cleanly_after_any_partition_schedule(
    before: list[tuple[Any, ...]], during: list[tuple[Any, ...]], after: list[tuple[Any, ...]], key_space: int
) -> None:
    model = Model()
    # A partition schedule: some traffic, a cut, traffic (with its own cuts and heals), a heal, more traffic.
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

    model.settle()  # heal; every queue and backlog drains
    decisions = reconcile(model.worker.ledger())
    model.record(decision_items(decisions))
    model.settle()
    for kind in sorted({c.kind for c in decisions.conflicts}):
        event(f"conflict: {kind}")

    result = check(model.history())
    assert result["ok"], result["violations"]
    east, west = (
        {role: {pk: business_content(i) for pk, i in items.items()} for role, items in model.tables[r].items()} for r in (EAST, WEST)
    )
    assert east == west
    reversed_qty = decisions.compensated()
    for client in CLIENTS:
        position = sum(
            ((t["qty"] - reversed_qty.get(t["tradeId"], 0)) * (1 if t["side"] == "BUY" else -1)
             for t in model.tables[EAST]["trades"].values() if t["client"] == client),
            Decimal("0"),
        )
        assert abs(position) <= LIMIT
    standing = {c.order_id: c.acceptances[0].qty for c in decisions.conflicts if c.acceptances and c.kind != "over_limit"}
    for order in model.tables[EAST]["orders"].values():
        trades = [trade_from_item(t) for t in model.tables[EAST]["trades"].values() if t["orderId"] == order["orderId"]]
        bound = standing.get(order["orderId"], order["qty"])
        assert sum((t.qty - reversed_qty.get(t.trade_id, 0) for t in trades), Decimal("0")) <= bound
    # A replay decides the same and writes nothing.
    assert decision_items(reconcile(model.worker.ledger())) == decision_items(decisions)
    assert model.record(decision_items(decisions)) == 0
