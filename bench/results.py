"""What a section records: the required names, percentiles, the Results rows, notes,
tables and charts (written out by bench/report.py)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
REQUIRED = (
    "ingest_throughput_ratio",
    "ingest_p99_ratio",
    "order_to_browser_p99_ms",
    "fanout_p99_ms",
    "fanout_lost_events",
    "fanout_frames_ratio",
    "fault_to_banner_p99_ms",
    "reconcile_10k_s",
    "reconcile_20k_over_10k",
    "browser_long_tasks",
    "simfill_import_s",
    "django_setup_s",
    "matcher_orders_per_s",
    "matcher_over_floor",
    "matcher_bytes_per_resting_order",
    "matcher_snapshot_rebuild_s",
)


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rnd(value: float | None, digits: int = 4) -> float | None:
    if value is None or math.isnan(float(value)) or math.isinf(float(value)):
        return None  # JSON has no NaN: a value that could not be measured is null
    return round(float(value), digits)


@dataclass
class Results:
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    charts: dict[str, list[str]] = field(default_factory=dict)
    tables: dict[str, list[str]] = field(default_factory=dict)

    def add(
        self,
        name: str,
        value: float | None,
        unit: str,
        floor: float | None = None,
        ratio: float | None = None,
        goal: str = "",
        met: bool | None = None,
        samples: int = 0,
        section: str = "",
    ) -> None:
        if ratio is None and value is not None and floor:
            ratio = value / floor
        self.rows.append(
            {
                "name": name,
                "value": rnd(value),
                "unit": unit,
                "floor": rnd(floor),
                "ratio": rnd(ratio),
                "goal": goal,
                "met": met,
                "samples": samples,
                "section": section,
            }
        )

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)

    def missing(self) -> list[str]:
        have = {r["name"] for r in self.rows}
        return [n for n in REQUIRED if n not in have]




def res_dir(res: Results) -> Path:
    return Path(res.notes.get("_out", ["bench"])[0])


def chart(res: Results, section: str, name: str, title: str, groups: list[str], series: dict[str, list[float]], unit: str, goal: float | None = None) -> None:
    from bench.charts import bar_chart

    clean = {k: [None if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in vs] for k, vs in series.items()}
    bar_chart(res_dir(res) / name, title, groups, clean, unit, goal=goal)
    res.charts.setdefault(section, []).append(name)

