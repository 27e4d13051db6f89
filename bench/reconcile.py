"""Section 5: 10k and 20k divergent trades, pure core and worker."""

from __future__ import annotations

import gc
import statistics
import time
from decimal import Decimal
from typing import Any

from bench.clients import bench_config
from bench.results import Results, chart
from bench.sizes import Sizes


def divergent_ledger(n_trades: int) -> Any:
    """n_trades divergent trades: every order accepted and filled in both regions."""
    from reconcile_panel.reconciler import Acceptance, Fill, Ledger

    east, west = "us-east-1", "eu-west-1"
    copies, fills = [], []
    for i in range(n_trades // 2):
        oid = f"O{i:08d}"
        for r, region in enumerate((east, west)):
            copies.append(
                Acceptance(
                    order_id=oid, region=region, client=f"c{i % 50}", symbol="BTC-USD", side="BUY", qty=Decimal("0.5"),
                    price=Decimal("50010"), seq=i, accept_ms=1000 + i * 2 + r, status="FILLED", filled_qty=Decimal("0.5"), updated_ms=1100 + i * 2 + r,
                )
            )
            fills.append(
                Fill(
                    trade_id=f"T{oid}-{region}", order_id=oid, region=region, client=f"c{i % 50}", counterparty="SIM-MM-1", symbol="BTC-USD",
                    side="BUY", qty=Decimal("0.5"), price=Decimal("50010"), seq=i, fill_index=0, ts_ms=2000 + i,
                )
            )
    return Ledger(tuple(copies), tuple(fills), {"BTC-USD": Decimal("50000")}, {"BTC-USD": Decimal("1000000")})


def ledger_records(ledger: Any) -> list[Any]:
    """The same history as stream records, for the worker."""
    from trading.streams import ChangeRecord

    records = []
    for acc in ledger.acceptances:
        item = {
            "pk": f"ORDER#{acc.order_id}", "orderId": acc.order_id, "client": acc.client, "symbol": acc.symbol, "side": acc.side,
            "qty": acc.qty, "price": acc.price, "status": acc.status, "region": acc.region, "seq": acc.seq, "createdAt": acc.accept_ms,
            "updatedAt": acc.updated_ms, "filledQty": acc.filled_qty, "cancelRequested": False, "idempotencyKey": acc.order_id,
            "requestHash": "h", "simulationSeed": 1, "acceptedAz": acc.region + "a", "history": [],
        }
        records.append(ChangeRecord("INSERT", {"pk": item["pk"]}, item, None, "1", acc.region, "orders"))
    for f in ledger.fills:
        item = {
            "pk": f"TRADE#{f.trade_id}", "tradeId": f.trade_id, "orderId": f.order_id, "symbol": f.symbol, "side": f.side, "qty": f.qty,
            "price": f.price, "buyOrder": f.order_id, "sellOrder": f.counterparty, "client": f.client, "counterparty": f.counterparty,
            "region": f.region, "fillAz": f.region + "a", "seq": f.seq, "fillIndex": f.fill_index, "timestamp": f.ts_ms,
        }
        records.append(ChangeRecord("INSERT", {"pk": item["pk"]}, item, None, "1", f.region, "trades"))
    return records


def section_reconcile(res: Results, sizes: Sizes) -> None:
    from reconcile_panel.reconciler import reconcile
    from reconcile_panel.worker import ReconcileWorker, gc_paused

    config = bench_config()
    pure: dict[int, float] = {}
    worker_s: dict[int, float] = {}
    worker_cpu: dict[int, float] = {}
    floor: dict[int, float] = {}
    ledgers = {n: divergent_ledger(n) for n in sizes.reconcile_sizes}
    records = {n: ledger_records(ledger) for n, ledger in ledgers.items()}
    samples: dict[int, list[float]] = {n: [] for n in sizes.reconcile_sizes}
    floors: dict[int, list[float]] = {n: [] for n in sizes.reconcile_sizes}
    wsamples: dict[int, list[float]] = {n: [] for n in sizes.reconcile_sizes}
    wcpu: dict[int, list[float]] = {n: [] for n in sizes.reconcile_sizes}
    # The sizes take turns, round after round: a slow spell on the shared machine then
    # lands on both sizes instead of inflating one side of the 20k/10k ratio.
    for _ in range(sizes.reconcile_repeats):
        for n, ledger in ledgers.items():
            # Each timed block starts with the collector settled: a full collection is due after
            # so many new objects, and without this it lands in whichever block happens to cross
            # the threshold, charged for the previous blocks' objects (0.15-0.3 s at these sizes).
            gc.collect()
            # Floor: the least any reconciler does over the same data, group the fills by order and sort them.
            t0 = time.perf_counter()
            groups: dict[str, list[Any]] = {}
            for fill in ledger.fills:
                groups.setdefault(fill.order_id, []).append(fill)
            for key in sorted(groups):
                groups[key].sort(key=lambda f: (f.ts_ms, f.region))
            floors[n].append(time.perf_counter() - t0)
            del groups
            gc.collect()
            t0 = time.perf_counter()
            with gc_paused():  # as the worker runs it
                decisions = reconcile(ledger)
            samples[n].append(time.perf_counter() - t0)
            assert len(decisions.compensations) >= n // 2
            del decisions
            worker = ReconcileWorker(config, tail=False, limits={"BTC-USD": Decimal("1000000")})
            gc.collect()
            t0, c0 = time.perf_counter(), time.thread_time()
            worker.ingest_batch(records[n])
            worker.decide()
            wsamples[n].append(time.perf_counter() - t0)
            wcpu[n].append(time.thread_time() - c0)  # the CPU this thread got: wall minus the wait for a core
            del worker
    for n in sizes.reconcile_sizes:
        pure[n], worker_s[n], floor[n] = statistics.median(samples[n]), statistics.median(wsamples[n]), statistics.median(floors[n])
        worker_cpu[n] = statistics.median(wcpu[n])
        res.tables.setdefault("5", []).append(
            f"| {n:,} | {1000 * floor[n]:.0f} | {1000 * pure[n]:.0f} | {1000 * worker_s[n]:.0f} | {1000 * worker_cpu[n]:.0f} | {sizes.reconcile_repeats} |"
        )
    small, large = sizes.reconcile_sizes[0], sizes.reconcile_sizes[-1]
    scale = large / small
    res.add("reconcile_10k_s", pure[small], "s", floor=floor[small], samples=sizes.reconcile_repeats, section="5", goal="<= 2 s", met=pure[small] <= 2)
    res.add("reconcile_worker_10k_s", worker_s[small], "s", floor=floor[small], samples=sizes.reconcile_repeats, section="5", goal="<= 2 s", met=worker_s[small] <= 2)
    ratio = pure[large] / pure[small]
    res.add("reconcile_20k_over_10k", ratio, "x", ratio=ratio, samples=sizes.reconcile_repeats, section="5", goal=f"<= {1.1 * scale:.1f}", met=ratio <= 1.1 * scale)
    wratio = worker_s[large] / worker_s[small]
    res.add("reconcile_worker_20k_over_10k", wratio, "x", ratio=wratio, samples=sizes.reconcile_repeats, section="5", goal=f"<= {1.1 * scale:.1f}", met=wratio <= 1.1 * scale)
    labels = [f"{n:,}" for n in sizes.reconcile_sizes]
    chart(
        res, "5", "reconcile.svg", "Reconcile: divergent trades", labels,
        {"floor (group + sort)": [floor[n] for n in sizes.reconcile_sizes], "pure core": [pure[n] for n in sizes.reconcile_sizes], "worker": [worker_s[n] for n in sizes.reconcile_sizes]},
        "s", goal=2,
    )


