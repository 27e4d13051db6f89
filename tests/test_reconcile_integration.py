"""Issue 5 against a real moto server: two regions, a partition, divergent fills, heal,
replication drain, reconciliation, then check_history clean and identical tables."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from reconcile_panel.history import check
from reconcile_panel.provision import ensure_reconcile_tables
from reconcile_panel.replication import business_content
from reconcile_panel.replicator import Replicator
from reconcile_panel.scenarios import PartitionPlay
from reconcile_panel.store import load_history, load_tables
from reconcile_panel.worker import ReconcileWorker
from simfill.worker import AzWorker
from reconcile_panel.limits import local_position
from tests.conftest import aws_calls, make_config, order_payload, wait_for
from trading.actions import Exchange, submit_order
from trading.config import ExchangeConfig
from trading.domain import Order

LIMIT = Decimal("1")


class Cluster:
    """The exchange, one fill worker per region, the replicator and the reconcile worker."""

    def __init__(self, ex: Exchange):
        self.ex = ex
        config = ex.config
        ensure_reconcile_tables(config)
        grid = lambda symbol: (config.market(symbol).tick, config.market(symbol).lot)  # noqa: E731
        self.fillers = {r: AzWorker(ex.stores[r], ex.queues[r], config.azs(r)[0], grid, wait_s=0) for r in config.regions}
        self.replicator = Replicator(config)
        self.reconciler = ReconcileWorker(config, partitioned=self.replicator.is_cut, limits={"BTC-USD": LIMIT})

    def settle(self, region: str, order_id: str) -> Order:
        def final() -> Order | None:
            order = self.ex.stores[region].orders.get(order_id)
            if order is not None and not order.is_open:
                return order
            self.fillers[region].poll_once()
            return None

        return wait_for(final, timeout_s=20, interval_s=0, message=f"{order_id} final in {region}")


@pytest.fixture
def config(request: pytest.FixtureRequest) -> ExchangeConfig:
    if request.node.get_closest_marker("unlimited"):
        return make_config()
    # The limit each region's ingest checks against its own position counter.
    return make_config(position_limits={"BTC-USD": LIMIT})


@pytest.fixture
def cluster(exchange: Exchange) -> Cluster:
    return Cluster(exchange)


def tables_by_region(config: Any) -> dict[str, Any]:
    return {
        region: {role: {pk: business_content(item) for pk, item in items.items()} for role, items in roles.items()}
        for region, roles in load_tables(config).items()
    }


def test_it_diverges_under_a_partition_and_converges_after_heal_and_reconcile(cluster: Cluster, published: list[dict[str, Any]]) -> None:
    east, west = cluster.ex.config.regions
    play = PartitionPlay(cluster.ex, cluster.settle, (east, west), limit=LIMIT, tag="it")
    cluster.replicator.drain()

    divergences = play.run(cut=cluster.replicator.paused(east, west))
    assert [(d.kind, d.happened) for d in divergences] == [
        ("duplicate_fill", True),
        ("cancel_fill_race", True),
        ("over_limit", True),
    ]
    # While cut, nothing crossed: the backlog waits in order and the reconciler holds.
    with cluster.replicator.paused(east, west):
        cluster.replicator.drain()
        assert cluster.replicator.backlog_size(east, west) > 0
        assert cluster.replicator.lag_ms(east, west) > 0
        assert cluster.reconciler.run_once().held
    dup_id = divergences[0].order_ids[0]
    assert cluster.ex.stores[west].orders.get(dup_id).region == west  # each region has its own copy
    # Each region's ingest passed its own buy and refused a further one: the local check
    # works, it just cannot see the other region's fills while cut off.
    over = divergences[2]
    assert over.refused_in == (east, west)
    own = {c.region: c.filled_qty for c in over.copies}
    assert {r: position_of(cluster, r, over.client) for r in (east, west)} == own
    assert all(qty <= LIMIT for qty in own.values()) and sum(own.values()) > LIMIT

    cluster.replicator.drain()  # heal: the backlog drains
    assert cluster.replicator.backlog_size(east, west) == cluster.replicator.backlog_size(west, east) == 0
    # Each region's counter now holds the merged fills, counted once.
    merged = sum(own.values())
    for region in (east, west):
        assert position_of(cluster, region, over.client) == merged == local_position(cluster.ex.stores[region], over.client, "BTC-USD")
    result = cluster.reconciler.run_once()
    west_trades = [t for t in cluster.ex.stores[west].trades.scan_all() if t.region == west]
    busted = [t for t in west_trades if t.order_id in {dup_id, divergences[1].order_ids[0]}]
    assert result.conflicts == 3
    assert result.compensations >= len(busted) + 1  # the duplicates' fills and at least one over the limit
    assert result.adjustments == 2 * result.compensations
    cluster.replicator.drain()

    assert check(load_history_with_limit(cluster)) == {"ok": True, "violations": [], "counts": {}}
    tables = tables_by_region(cluster.ex.config)
    assert tables[east] == tables[west]
    assert len(tables[east]["reconcile"]) == result.written
    # Each compensation moved every region's counter back by what it reversed: the
    # account is at most at its limit again, and the counter agrees with the tables.
    compensations = list(cluster.reconciler.store.scan_all("COMPENSATION"))
    after = {region: position_of(cluster, region, over.client) for region in (east, west)}
    assert after[east] == after[west] <= LIMIT < merged
    for region in (east, west):
        assert after[region] == local_position(cluster.ex.stores[region], over.client, "BTC-USD", compensations)
    assert cluster.reconciler.run_once().written == 0
    cluster.replicator.drain()
    for region in (east, west):  # replaying replication and reconciliation counted nothing twice
        assert position_of(cluster, region, over.client) == after[region]

    kinds = [e["type"] for e in published if e["type"] in {"trade.conflicted", "trade.compensated", "pnl.adjusted"}]
    assert kinds.count("trade.conflicted") == 3
    assert any(e["data"]["kind"] == "over_limit" for e in published if e["type"] == "trade.conflicted")
    assert kinds.count("trade.compensated") == result.compensations
    assert kinds.count("pnl.adjusted") == result.adjustments
    conflicted = next(e for e in published if e["type"] == "trade.conflicted" and e["data"]["kind"] == "duplicate_fill")
    assert conflicted["data"]["order_id"] == dup_id
    assert conflicted["data"]["standing_region"] == east
    assert set(conflicted["data"]["regions"]) == {east, west}
    assert isinstance(conflicted["data"]["qty"], str)
    adjusted = next(e for e in published if e["type"] == "pnl.adjusted")
    assert {"trade_ids", "order_id", "client", "regions", "qty", "price", "amount"} <= set(adjusted["data"])
    Decimal(adjusted["data"]["amount"])

    # Replaying the same history decides the same and writes nothing new.
    before = len(published)
    replay = ReconcileWorker(cluster.ex.config, limits={"BTC-USD": LIMIT})
    assert replay.run_once().written == 0
    assert len(published) == before
    assert cluster.replicator.drain() == 0 or tables_by_region(cluster.ex.config) == tables


def position_of(cluster: Cluster, region: str, client: str) -> Decimal:
    return cluster.ex.stores[region].sequences.position(client, "BTC-USD")


def load_history_with_limit(cluster: Cluster) -> Any:
    history = load_history(cluster.ex.config)
    return type(history)(history.regions, history.tables, history.reference_prices, {"BTC-USD": LIMIT})


def test_it_replicates_in_the_background_and_never_echoes_a_replica(cluster: Cluster) -> None:
    east, west = cluster.ex.config.regions
    cluster.replicator.start()
    try:
        order, _ = submit_order(cluster.ex, "alice", order_payload(region=east), "bg-1")
        cluster.settle(east, order.order_id)
        wait_for(
            lambda: (o := cluster.ex.stores[west].orders.get(order.order_id)) is not None and not o.is_open,
            message="the filled order replicated to the other region",
        )
        # The Trades stream is read apart from the Orders stream: its records may land later.
        east_trades = {t.trade_id for t in cluster.ex.stores[east].trades.for_order(order.order_id, east)}
        wait_for(
            lambda: {t.trade_id for t in cluster.ex.stores[west].trades.for_order(order.order_id, east)} == east_trades,
            message="the order's trades replicated to the other region",
        )
        wait_for(lambda: cluster.replicator.replica_records_skipped > 0, message="the replica's own stream record skipped")
    finally:
        cluster.replicator.stop()
    applied_late = cluster.replicator.drain()
    assert cluster.replicator.stats[(west, east)].applied == 0  # nothing was bounced back
    assert applied_late == 0
    assert check(load_history(cluster.ex.config))["ok"]


@pytest.mark.unlimited
def test_it_writes_a_run_of_new_trades_in_one_batch_and_still_converges(cluster: Cluster) -> None:
    east, west = cluster.ex.config.regions
    assert cluster.ex.config.position_limit("BTC-USD") is None
    with cluster.replicator.paused(east, west):
        orders = [submit_order(cluster.ex, "runs", order_payload(qty="2.0000", region=east), f"run-{i}")[0] for i in range(4)]
        for order in orders:
            cluster.settle(east, order.order_id)
        cluster.replicator.drain()
    trades = [t for t in cluster.ex.stores[east].trades.scan_all() if t.order_id in {o.order_id for o in orders}]
    assert len(trades) > 1
    with aws_calls() as calls:
        cluster.replicator.drain()
    assert calls.count("BatchWriteItem") == -(-len(trades) // 25)
    assert "GetItem" not in calls and calls.count("PutItem") == len(orders)  # the orders, one each
    assert cluster.replicator.stats[(east, west)].applied == len(orders) + len(trades)
    tables = tables_by_region(cluster.ex.config)
    assert tables[east]["trades"] == tables[west]["trades"] and tables[east]["orders"] == tables[west]["orders"]
    # A restarted replicator reads the streams from their start: every record is a no-op.
    again = Replicator(cluster.ex.config)
    again.drain()
    assert again.stats[(east, west)].applied == 0 and again.stats[(east, west)].skipped > 0


def test_it_carries_only_the_newest_waiting_version_of_an_item_and_still_converges(cluster: Cluster) -> None:
    east, west = cluster.ex.config.regions
    with cluster.replicator.paused(east, west):
        orders = [submit_order(cluster.ex, "coal", order_payload(qty="0.0100", region=east), f"coal-{i}")[0] for i in range(3)]
        for order in orders:  # each order item is written twice: accepted, final
            cluster.settle(east, order.order_id)
        cluster.replicator.drain()
        waiting = cluster.replicator.backlog_size(east, west)
    trades = [t for t in cluster.ex.stores[east].trades.scan_all() if t.order_id in {o.order_id for o in orders}]
    assert waiting >= 2 * len(orders) + len(trades)

    with aws_calls() as calls:
        cluster.replicator.drain()
    # West's copies are read in batches. A trade moves west's position counter with it
    # (a transaction each); see the next test for a market without a limit.
    assert "GetItem" not in calls and calls.count("PutItem") == len(orders)
    assert calls.count("TransactWriteItems") == len(trades) and "BatchWriteItem" not in calls
    stats = cluster.replicator.stats[(east, west)]
    # Every order item and trade reached west once, at its newest version; the rest passed over.
    assert stats.applied == len(orders) + len(trades)
    assert stats.coalesced == waiting - stats.applied - stats.skipped
    assert stats.coalesced >= len(orders)
    tables = tables_by_region(cluster.ex.config)
    assert tables[east]["orders"] == tables[west]["orders"] and tables[east]["trades"] == tables[west]["trades"]
    for order in orders:
        assert cluster.ex.stores[west].orders.get(order.order_id).status == cluster.ex.stores[east].orders.get(order.order_id).status != "ACCEPTED"
