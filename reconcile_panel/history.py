"""check_history's rules: a pure function over everything the regions recorded.

`check(history)` takes every region's Orders, Trades and Reconcile items (plain dicts,
loaded by `reconcile_panel.store.load_history`) and returns
`{"ok": bool, "violations": [{"rule", "detail", "witnesses": {...}}]}`, JSON-safe.

Rules:
- order_in_every_region: every accepted order exists in every region, with one final status;
- no_overfill: no order's net filled quantity (its trades in every region minus what
  the compensations reversed) exceeds its quantity; nothing is reversed twice;
- seq_monotonic: per market and region, sequence numbers are never reused by two
  orders and never run backwards against accept time (beyond `seq_skew_ms`: the
  counter is read a moment before the clock);
- regions_identical: the regions' tables hold the same items (replication bookkeeping
  aside);
- one_decision_per_conflict: the reconciler, run over the merged history, finds each
  conflict, and each has exactly one recorded decision that says the same thing;
  no record exists without a conflict behind it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from reconcile_panel.codec import (
    RECORD_ADJUSTMENT,
    RECORD_COMPENSATION,
    RECORD_CONFLICT,
    acceptance_from_order_item,
    conflict_acceptances,
    decision_items,
    fills_from_trade_item,
    maker_order_of,
    record_json,
)
from reconcile_panel.reconciler import FINAL, ZERO, Acceptance, Ledger, reconcile, unsettled_orders
from reconcile_panel.replication import business_content, content_digest, version_ms, writer_of

ROLES = ("orders", "trades", "reconcile")
MAX_PER_RULE = 100

# region -> role ("orders" | "trades" | "reconcile") -> pk -> item
Tables = Mapping[str, Mapping[str, Mapping[str, dict[str, Any]]]]


@dataclass(frozen=True)
class History:
    regions: tuple[str, ...]
    tables: Tables
    reference_prices: Mapping[str, Decimal] = field(default_factory=dict)
    limits: Mapping[str, Decimal] = field(default_factory=dict)
    seq_skew_ms: int = 50


def merged_with_writers(history: History, role: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """One item per key across the regions: the last writer's, as replication would
    settle it; and which region wrote each."""
    out: dict[str, dict[str, Any]] = {}
    ranks: dict[str, tuple[int, str]] = {}
    for region in history.regions:
        for pk, item in history.tables.get(region, {}).get(role, {}).items():
            rank = (version_ms(item), writer_of(item, region))
            if pk not in out or rank > ranks[pk]:
                out[pk] = item
                ranks[pk] = rank
    return out, {pk: rank[1] for pk, rank in ranks.items()}


def merged(history: History, role: str) -> dict[str, dict[str, Any]]:
    return merged_with_writers(history, role)[0]


def ledger_of(history: History) -> Ledger:
    orders, writers = merged_with_writers(history, "orders")
    trades = merged(history, "trades")
    records = merged(history, "reconcile")
    # The surviving copy is the writer's: where it was finished, and where its fills are.
    acceptances = [acceptance_from_order_item(item, writers[pk]) for pk, item in orders.items() if "orderId" in item]
    # Conflict records witness the region copies that last-writer-wins overwrote.
    acceptances += conflict_acceptances(records.values())
    fills = [fill for item in trades.values() if "tradeId" in item for fill in fills_from_trade_item(item)]
    return Ledger(tuple(acceptances), tuple(fills), history.reference_prices, history.limits)


class _Report:
    def __init__(self) -> None:
        self.violations: list[dict[str, Any]] = []
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, rule: str, detail: str, witnesses: dict[str, Any]) -> None:
        self.counts[rule] += 1
        if self.counts[rule] <= MAX_PER_RULE:
            self.violations.append({"rule": rule, "detail": detail, "witnesses": _json(witnesses)})
        elif self.counts[rule] == MAX_PER_RULE + 1:
            self.violations.append({"rule": rule, "detail": "more violations of this rule left out", "witnesses": {}})


def _json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return record_json(value)
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def _strip(item: dict[str, Any] | None) -> dict[str, Any] | None:
    return business_content(item) if item is not None else None


def check(history: History) -> dict[str, Any]:
    report = _Report()
    orders = merged(history, "orders")
    trades = merged(history, "trades")
    records = merged(history, "reconcile")
    trades_by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in trades.values():
        trades_by_order[str(item.get("orderId"))].append(item)
        maker = maker_order_of(item) if "orderId" in item else None
        if maker is not None:
            trades_by_order[maker].append(item)  # a matched trade fills its resting order too
    records_by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in records.values():
        records_by_order[str(item.get("orderId"))].append(item)

    def witnesses(order_id: str, **extra: Any) -> dict[str, Any]:
        order = orders.get(f"ORDER#{order_id}")
        return {
            "order": _strip(order),
            "trades": sorted((_strip(t) or {} for t in trades_by_order.get(order_id, [])), key=lambda t: t.get("tradeId", "")),
            "records": sorted((_strip(r) or {} for r in records_by_order.get(order_id, [])), key=lambda r: r.get("pk", "")),
            **extra,
        }

    _check_orders(history, orders, report, witnesses)
    _check_overfill(orders, trades_by_order, records, report, witnesses)
    _check_sequences(history, orders, records, trades, report)
    _check_identical(history, report)
    _check_decisions(history, records, report, witnesses)
    return {"ok": not report.violations, "violations": report.violations, "counts": dict(report.counts)}


def _check_orders(history: History, orders: dict[str, dict[str, Any]], report: _Report, witnesses: Any) -> None:
    for pk in sorted(orders):
        order_id = str(orders[pk].get("orderId"))
        copies = {r: history.tables.get(r, {}).get("orders", {}).get(pk) for r in history.regions}
        missing = sorted(r for r, item in copies.items() if item is None)
        if missing:
            report.add(
                "order_in_every_region",
                f"order {order_id} is missing in {', '.join(missing)}",
                witnesses(order_id, regions={r: _strip(i) for r, i in copies.items()}),
            )
        statuses = {r: str(item.get("status")) for r, item in copies.items() if item is not None}
        if len(set(statuses.values())) > 1 or any(s not in FINAL for s in statuses.values()):
            report.add(
                "order_in_every_region",
                f"order {order_id} has no single final status: {statuses}",
                witnesses(order_id, statuses=statuses),
            )


def _check_overfill(
    orders: dict[str, dict[str, Any]],
    trades_by_order: dict[str, list[dict[str, Any]]],
    records: dict[str, dict[str, Any]],
    report: _Report,
    witnesses: Any,
) -> None:
    reversed_qty: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for item in records.values():
        if item.get("recordType") == RECORD_COMPENSATION:
            reversed_qty[str(item["tradeId"])] += Decimal(item["reversedQty"])
    # Where copies diverged, the standing copy's quantity is the bound (a retry may
    # have carried another body that the other region could not compare).
    standing_qty: dict[str, Decimal] = {}
    for item in records.values():
        if item.get("recordType") == RECORD_CONFLICT:
            for acc in item.get("acceptances", []):
                if acc.get("region") == item.get("standingRegion"):
                    standing_qty[str(item["orderId"])] = Decimal(acc["qty"])
    for order_id, order_trades in sorted(trades_by_order.items()):
        order = orders.get(f"ORDER#{order_id}")
        for trade in order_trades:
            back = reversed_qty.get(str(trade["tradeId"]), ZERO)
            if back > Decimal(trade["qty"]):
                report.add(
                    "no_overfill",
                    f"trade {trade['tradeId']} of {trade['qty']} is reversed by {format(back, 'f')}",
                    witnesses(order_id),
                )
        if order is None:
            report.add("no_overfill", f"trades name order {order_id}, which no region holds", witnesses(order_id))
            continue
        net = sum((Decimal(t["qty"]) - reversed_qty.get(str(t["tradeId"]), ZERO) for t in order_trades), ZERO)
        if net > standing_qty.get(order_id, Decimal(order["qty"])):
            report.add(
                "no_overfill",
                f"order {order_id} of {order['qty']} is filled {format(net, 'f')} net of compensations",
                witnesses(order_id, net_filled=net),
            )


def _check_sequences(
    history: History,
    orders: dict[str, dict[str, Any]],
    records: dict[str, dict[str, Any]],
    trades: dict[str, dict[str, Any]],
    report: _Report,
) -> None:
    copies: dict[tuple[str, str], Acceptance] = {}
    for item in orders.values():
        if "orderId" in item:
            acc = acceptance_from_order_item(item)
            copies[(acc.order_id, acc.region)] = acc
    for acc in conflict_acceptances(records.values()):
        copies.setdefault((acc.order_id, acc.region), acc)
    by_market: dict[tuple[str, str], list[Acceptance]] = defaultdict(list)
    for acc in copies.values():
        by_market[(acc.symbol, acc.region)].append(acc)
    for (symbol, region), accs in sorted(by_market.items()):
        accs.sort(key=lambda a: (a.seq, a.accept_ms, a.order_id))
        for before, after in zip(accs, accs[1:]):
            if before.seq == after.seq:
                report.add(
                    "seq_monotonic",
                    f"{symbol} in {region}: seq {after.seq} names orders {before.order_id} and {after.order_id}",
                    {"orders": [asdict(before), asdict(after)]},
                )
            elif after.accept_ms + history.seq_skew_ms < before.accept_ms:
                report.add(
                    "seq_monotonic",
                    f"{symbol} in {region}: seq {after.seq} was accepted at {after.accept_ms}, "
                    f"before seq {before.seq} at {before.accept_ms}",
                    {"orders": [asdict(before), asdict(after)]},
                )
    trade_seq: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for item in trades.values():
        trade_seq[(str(item["symbol"]), str(item["region"]), int(item["seq"]))].add(str(item["orderId"]))
    for (symbol, region, seq), order_ids in sorted(trade_seq.items()):
        if len(order_ids) > 1:
            report.add(
                "seq_monotonic",
                f"{symbol} in {region}: trades of seq {seq} belong to {len(order_ids)} orders",
                {"orders": sorted(order_ids)},
            )


def _check_identical(history: History, report: _Report) -> None:
    for role in ROLES:
        keys: set[str] = set()
        for region in history.regions:
            keys.update(history.tables.get(region, {}).get(role, {}))
        for pk in sorted(keys):
            items = {r: history.tables.get(r, {}).get(role, {}).get(pk) for r in history.regions}
            digests = {r: (content_digest(i) if i is not None else None) for r, i in items.items()}
            if len(set(digests.values())) > 1:
                report.add(
                    "regions_identical",
                    f"{role} item {pk} differs between the regions",
                    {"table": role, "pk": pk, "regions": {r: _strip(i) for r, i in items.items()}},
                )


def _check_decisions(history: History, records: dict[str, dict[str, Any]], report: _Report, witnesses: Any) -> None:
    ledger = ledger_of(history)
    expected = {item["pk"]: item for item in decision_items(reconcile(ledger))}
    for pk, item in sorted(expected.items()):
        found = records.get(pk)
        order_id = str(item.get("orderId"))
        if found is None:
            what = "conflict" if item["recordType"] == RECORD_CONFLICT else str(item["recordType"]).lower()
            report.add(
                "one_decision_per_conflict",
                f"{item.get('kind', what)} on order {order_id}: no recorded {what} {pk}",
                witnesses(order_id, expected=item),
            )
        elif _decision_of(found) != _decision_of(item):
            report.add(
                "one_decision_per_conflict",
                f"recorded decision {pk} differs from what the history decides",
                witnesses(order_id, expected=item, recorded=_strip(found)),
            )
    for pk, item in sorted(records.items()):
        if item.get("recordType") in {RECORD_CONFLICT, RECORD_COMPENSATION, RECORD_ADJUSTMENT} and pk not in expected:
            order_id = str(item.get("orderId"))
            report.add(
                "one_decision_per_conflict",
                f"record {pk} decides no conflict the history holds",
                witnesses(order_id, recorded=_strip(item)),
            )
    # A copy that last-writer-wins overwrote before any decision recorded it: its
    # region's fills have no acceptance left, so the conflict would pass unseen.
    orders = merged(history, "orders")
    for order_id in unsettled_orders(ledger):
        order = orders.get(f"ORDER#{order_id}")
        if order is not None and order.get("status") not in FINAL:
            continue  # still in flight: order_in_every_region reports it
        report.add(
            "one_decision_per_conflict",
            f"order {order_id} has fills or copies that no final copy or recorded decision accounts for",
            witnesses(order_id),
        )


def _decision_of(item: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a record decides (its text and time aside)."""
    kind = item.get("recordType")
    if kind == RECORD_CONFLICT:
        return (item.get("kind"), item.get("standingRegion"), tuple(item.get("compensatedTradeIds", [])))
    if kind == RECORD_COMPENSATION:
        return (item.get("tradeId"), item.get("execType"), Decimal(item.get("reversedQty", 0)))
    return (item.get("account"), item.get("tradeId"), Decimal(item.get("amount", 0)))
