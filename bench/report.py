"""results.json, raw.json and REPORT.md from a run's Results (and, with --only, the last run's other sections)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from bench.results import REQUIRED, Results


SECTIONS = {
    "0": "moto floors",
    "1": "Ingest",
    "2": "Order to browser",
    "3": "Fan-out",
    "4": "Fault to banner",
    "5": "Reconcile",
    "6": "Browser",
    "7": "Cold import",
    "8": "Matcher",
}
TABLE_HEADS = {
    "1": "| threads | system | floor orders/s | system orders/s | ratio | floor p50 / p99 ms | system p50 / p99 ms | p99 ratio | samples each |\n|---|---|---|---|---|---|---|---|---|",
    "2": "| rate | floor p50 / p99 ms (n) | system p50 / p99 ms (n) | p99 ratio |\n|---|---|---|---|",
    "3": "| run | connected | frames/s | events/s delivered | p50 / p99 ms | lost | resync frames |\n|---|---|---|---|---|---|---|",
    "5": "| divergent trades | floor ms | pure core ms | worker ms | worker CPU ms | repeats |\n|---|---|---|---|---|---|",
    "8": "| run | commands | CPU s | of which GC s | orders/s (CPU) | orders/s (wall) | fills | resting at end | ratio to floor |\n|---|---|---|---|---|---|---|---|---|",
}



def merge_previous(res: Results, out: Path, only: set[str]) -> None:
    """With --only, keep the other sections' rows, notes, tables and charts from the last run."""
    raw = out / "raw.json"
    if not raw.exists() or only >= set(SECTIONS):
        return
    previous = json.loads(raw.read_text())
    res.rows = [r for r in previous["rows"] if r["section"] and r["section"] not in only] + res.rows
    for key in ("notes", "tables", "charts"):
        merged = {k: v for k, v in previous.get(key, {}).items() if k not in only and (not k.startswith("_") or not only)}
        merged.update(getattr(res, key))
        setattr(res, key, merged)


def write_report(res: Results, out: Path, started: float, smoke: bool, analysis: str) -> None:
    res.notes.setdefault("_elapsed", [f"{time.time() - started:.0f}"])
    order = list(SECTIONS)
    res.rows.sort(key=lambda r: order.index(r["section"]) if r["section"] in order else len(order))
    (out / "raw.json").write_text(json.dumps({"rows": res.rows, "notes": res.notes, "tables": res.tables, "charts": res.charts}, indent=1) + "\n")
    rows = [r for r in res.rows]
    (out / "results.json").write_text(json.dumps([{k: r[k] for k in ("name", "value", "unit", "floor", "ratio", "goal", "met", "samples")} for r in rows], indent=2) + "\n")
    lines = [
        "# Bench report" + (" (smoke sizes: not a measurement)" if smoke else ""),
        "",
        f"`make bench` on {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, "
        f"load average at start {res.notes.get('_load', ['?'])[0]}, {res.notes.get('_elapsed', [f'{time.time() - started:.0f}'])[0]} s in all. The machine is shared: "
        "every timing is read against a floor measured in the same run (the ratio column), not as an absolute.",
        "",
        "## Goals",
        "",
        "| name | value | unit | floor | ratio | goal | met | samples |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["goal"] and r["goal"] not in {"floor", "informational"} or r["name"] in REQUIRED:
            met = {True: "yes", False: "**MISSED**", None: "-"}[r["met"]]
            lines.append(f"| {r['name']} | {r['value']} | {r['unit']} | {r['floor']} | {r['ratio']} | {r['goal']} | {met} | {r['samples']} |")
    missed = [r["name"] for r in rows if r["met"] is False]
    lines += ["", f"Missed: {', '.join(missed) if missed else 'none'}.", ""]
    if analysis:
        lines += [analysis.strip(), ""]
    for section, title in SECTIONS.items():
        section_rows = [r for r in rows if r["section"] == section]
        if not section_rows and section not in res.notes:
            continue
        lines += [f"## {section}. {title}", ""]
        if section in res.tables:
            lines += [TABLE_HEADS.get(section, ""), *res.tables[section], ""]
        for r in section_rows:
            lines.append(f"- `{r['name']}` = {r['value']} {r['unit']}" + (f" (floor {r['floor']}, ratio {r['ratio']})" if r["floor"] is not None else "") + f", samples {r['samples']}")
        for text in res.notes.get(section, []):
            lines.append(f"- {text}")
        for name in res.charts.get(section, []):
            lines += ["", f"![{name}]({name})"]
        lines.append("")
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")


