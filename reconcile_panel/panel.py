"""What the reconcile panel shows, from the reconcile records: pure functions over plain data.

The records come from a region's reconcile table (`ReconcileStore.scan_all`); the rows
use the same shapes as the `trade.conflicted`, `trade.compensated` and `pnl.adjusted`
event payloads (reconcile_panel/events.py), so one partial renders a row whether it was
read at page load or pushed over the socket.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from reconcile_panel.events import adjustment_data, compensation_data, conflict_data
from reconcile_panel.codec import RECORD_ADJUSTMENT, RECORD_COMPENSATION, RECORD_CONFLICT
from reconcile_panel.reconciler import KINDS

RULES = (
    ("order_in_every_region", "Every accepted order is in every region, with one final status"),
    ("no_overfill", "No order is filled beyond its quantity once compensations are netted"),
    ("seq_monotonic", "Sequence numbers are monotonic per market and region"),
    ("regions_identical", "The regions' tables are identical"),
    ("one_decision_per_conflict", "Each conflict has exactly one decision"),
)


@dataclass(frozen=True)
class Filters:
    kind: str = ""
    account: str = ""
    region: str = ""

    @classmethod
    def parse(cls, params: Mapping[str, str], regions: Iterable[str]) -> Filters:
        """Unknown values are dropped, never an error: a filter link from an old page still opens."""
        kind = (params.get("kind") or "").strip()
        region = (params.get("region") or "").strip()
        return cls(
            kind=kind if kind in KINDS else "",
            account=(params.get("account") or "").strip()[:150],
            region=region if region in tuple(regions) else "",
        )

    @property
    def active(self) -> bool:
        return bool(self.kind or self.account or self.region)

    def query(self) -> str:
        from urllib.parse import urlencode

        return urlencode({k: v for k, v in (("kind", self.kind), ("account", self.account), ("region", self.region)) if v})

    def admits_conflict(self, row: Mapping[str, Any]) -> bool:
        return (
            (not self.kind or row["kind"] == self.kind)
            and (not self.account or row["client"] == self.account)
            and (not self.region or self.region in row["regions"])
        )

    def admits_adjustment(self, row: Mapping[str, Any], kind_of: Mapping[str, str]) -> bool:
        return (
            (not self.kind or kind_of.get(row["conflict_id"]) == self.kind)
            and (not self.account or row["account"] == self.account)
            and (not self.region or self.region in row["regions"])
        )


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (-int(r.get("decided_ms") or 0), str(r.get("conflict_id", "")), str(r.get("adjustment_id", ""))))


def split_records(items: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Conflict rows (each with its compensations, by trade id) and adjustment rows, newest first."""
    conflicts: list[dict[str, Any]] = []
    compensations: dict[str, list[dict[str, Any]]] = defaultdict(list)
    adjustments: list[dict[str, Any]] = []
    regions_of: dict[str, list[str]] = {}
    records = list(items)
    for item in records:
        if item.get("recordType") == RECORD_CONFLICT:
            row = conflict_data(item)
            regions_of[row["conflict_id"]] = list(row["regions"])
            conflicts.append(row)
    for item in records:
        kind = item.get("recordType")
        if kind == RECORD_COMPENSATION:
            row = compensation_data(item, regions_of.get(str(item.get("conflictId"))))
            compensations[row["conflict_id"]].append(row)
        elif kind == RECORD_ADJUSTMENT:
            adjustments.append(adjustment_data(item))
    for row in conflicts:
        row["compensations"] = sorted(compensations.get(row["conflict_id"], []), key=lambda c: c["trade_id"])
    return _newest_first(conflicts), _newest_first(adjustments)


def _decimal(text: Any) -> Decimal:
    try:
        return Decimal(str(text))
    except (InvalidOperation, ValueError):
        return Decimal("0")


def account_totals(adjustments: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per account and market: the number of adjustments and their signed sum."""
    sums: dict[tuple[str, str], Decimal] = defaultdict(lambda: Decimal("0"))
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in adjustments:
        key = (str(row["account"]), str(row["symbol"]))
        sums[key] += _decimal(row["amount"])
        counts[key] += 1
    return [
        {"account": a, "symbol": s, "count": counts[(a, s)], "amount": format(sums[(a, s)], "f"), "sign": _sign(sums[(a, s)])}
        for a, s in sorted(sums)
    ]


def _sign(amount: Decimal) -> str:
    return "credit" if amount > 0 else ("debit" if amount < 0 else "flat")


def decorate_adjustments(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        row["sign"] = _sign(_decimal(row["amount"]))
    return rows


@dataclass(frozen=True)
class PanelData:
    conflicts: list[dict[str, Any]]
    adjustments: list[dict[str, Any]]
    totals: list[dict[str, Any]]
    accounts: list[str]
    counts: dict[str, int]


def panel_data(items: Iterable[Mapping[str, Any]], filters: Filters) -> PanelData:
    conflicts, adjustments = split_records(items)
    kind_of = {c["conflict_id"]: c["kind"] for c in conflicts}
    accounts = sorted({c["client"] for c in conflicts} | {a["account"] for a in adjustments})
    shown_conflicts = [c for c in conflicts if filters.admits_conflict(c)]
    shown_adjustments = decorate_adjustments([a for a in adjustments if filters.admits_adjustment(a, kind_of)])
    counts = {kind: sum(1 for c in conflicts if c["kind"] == kind) for kind in KINDS}
    counts["compensations"] = sum(len(c["compensations"]) for c in conflicts)
    counts["adjustments"] = len(adjustments)
    return PanelData(shown_conflicts, shown_adjustments, account_totals(shown_adjustments), accounts, counts)


CONFLICT_COLUMNS = (
    "conflict_id", "kind", "decided_ms", "order_id", "client", "symbol", "regions", "standing_region",
    "standing_trade_ids", "compensated_trade_ids", "compensations", "rule", "detail",
)
ADJUSTMENT_COLUMNS = (
    "adjustment_id", "decided_ms", "account", "symbol", "side", "qty", "price", "reference_price", "amount",
    "order_id", "trade_id", "conflict_id", "compensation_id", "regions",
)


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    text = str(value)
    # A cell that a spreadsheet would run as a formula is quoted as text.
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except (InvalidOperation, ValueError):
        return False
    return True


def conflicts_csv(conflicts: Iterable[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CONFLICT_COLUMNS)
    for row in conflicts:
        comps = [f"{c['exec_type']}:{c['trade_id']}:{c['reversed_qty']}" for c in row.get("compensations", [])]
        writer.writerow([_cell(comps if col == "compensations" else row.get(col, "")) for col in CONFLICT_COLUMNS])
    return out.getvalue()


def adjustments_csv(adjustments: Iterable[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(ADJUSTMENT_COLUMNS)
    for row in adjustments:
        trade = row.get("trade_ids", [""])[0] if row.get("trade_ids") else ""
        writer.writerow([_cell(trade if col == "trade_id" else row.get(col, "")) for col in ADJUSTMENT_COLUMNS])
    return out.getvalue()


def invariant_board(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """check_history's result as one line per rule: ok or not, with its violations."""
    by_rule: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for violation in result.get("violations", []):
        by_rule[str(violation.get("rule"))].append(violation)
    for violations in by_rule.values():
        for violation in violations:
            witnesses = violation.get("witnesses") or {}
            violation["order_ids"] = witness_order_ids(witnesses)
            violation["witnesses_text"] = json.dumps(witnesses, indent=1, sort_keys=True, default=str) if witnesses else ""
    counts = result.get("counts", {})
    board = [
        {"rule": rule, "title": title, "ok": not by_rule.get(rule), "count": counts.get(rule, len(by_rule.get(rule, []))), "violations": by_rule.get(rule, [])}
        for rule, title in RULES
    ]
    known = {rule for rule, _ in RULES}
    for rule in sorted(set(by_rule) - known):  # a rule added to check_history later still shows
        board.append({"rule": rule, "title": rule, "ok": False, "count": counts.get(rule, len(by_rule[rule])), "violations": by_rule[rule]})
    return board


def witness_order_ids(witnesses: Any) -> list[str]:
    """Every order id a violation's witnesses mention, for the links to the admin."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                if key in ("orderId", "order_id") and isinstance(inner, str) and inner not in found:
                    found.append(inner)
                else:
                    walk(inner)
        elif isinstance(value, (list, tuple)):
            for inner in value:
                walk(inner)

    walk(witnesses)
    return found


def side_by_side(tapes: Mapping[str, list[Mapping[str, Any]]], marks: Mapping[str, str], cap: int) -> list[dict[str, Any]]:
    """Two or more regions' tapes, newest first, aligned on trade id, with a divergence gutter.

    Each line is one trade: in which regions' tables it is, and whether that differs
    (`diverged`: present in some regions and not in the others). `marks` names trades the
    reconciler decided about (conflicted / compensated / corrected).
    """
    regions = list(tapes)
    seen: dict[str, dict[str, Any]] = {}
    for region in regions:
        for trade in tapes[region]:
            line = seen.setdefault(str(trade["trade_id"]), {"trade": trade, "present": {}})
            line["present"][region] = True
    lines = sorted(seen.values(), key=lambda line: (-int(line["trade"].get("ts_ms") or 0), str(line["trade"]["trade_id"])))[:cap]
    out = []
    for line in lines:
        trade = line["trade"]
        present = [r for r in regions if line["present"].get(r)]
        out.append(
            {
                "t": trade,
                "cells": [{"region": r, "present": bool(line["present"].get(r))} for r in regions],
                "present": present,
                "missing": [r for r in regions if r not in present],
                "diverged": len(present) != len(regions),
                "mark": marks.get(str(trade["trade_id"]), ""),
            }
        )
    return out


def trade_marks(conflicts: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """trade id -> standing | conflicted | compensated | corrected, from the conflict rows."""
    marks: dict[str, str] = {}
    for row in conflicts:
        for trade_id in row.get("trade_ids", []):
            marks.setdefault(trade_id, "standing" if trade_id in row.get("standing_trade_ids", []) else "conflicted")
        for comp in row.get("compensations", []):
            marks[comp["trade_id"]] = "compensated" if comp["exec_type"] == "H" else "corrected"
    return marks
