"""What the experiment panel draws, from the runner's snapshots: pure functions over dicts.

A snapshot is ExperimentRunner._snapshot()'s shape (experiment.as_dict() plus the blast
radius and fidelity). `now_ms` comes in as an argument, so a test sees a fixed picture.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FINAL = frozenset({"completed", "stopped", "failed", "cancelled"})
LIVE_ACTION = frozenset({"initiating", "running", "stopping"})


def is_final(snapshot: Mapping[str, Any]) -> bool:
    return snapshot.get("state", {}).get("status") in FINAL


def _pct(value: float, span: float) -> float:
    return round(max(0.0, min(100.0, 100.0 * value / span)), 2) if span > 0 else 0.0


def timeline(snapshot: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """The Gantt: one row per action, its planned window and what actually ran, in percent.

    The scale is the planned duration, stretched to what has elapsed when a run overran it.
    """
    radius = snapshot.get("blast_radius") or {}
    planned = radius.get("schedule") or {}
    origin = snapshot.get("start_time") or snapshot.get("creation_time") or now_ms
    end = snapshot.get("end_time")
    elapsed_ms = (end if end is not None else now_ms) - origin
    span_ms = max(int(radius.get("duration_s", 0)) * 1000, elapsed_ms, 1000)
    rows = []
    for name, action in (snapshot.get("actions") or {}).items():
        plan = planned.get(name, {"start_s": 0, "end_s": action.get("duration_s", 0)})
        status = action.get("state", {}).get("status", "pending")
        started, ended = action.get("start_time"), action.get("end_time")
        row: dict[str, Any] = {
            "name": name,
            "action_id": action.get("action_id", ""),
            "description": action.get("description", ""),
            "status": status,
            "reason": action.get("state", {}).get("reason", ""),
            "plan_left": _pct(plan["start_s"] * 1000, span_ms),
            "plan_width": _pct((plan["end_s"] - plan["start_s"]) * 1000, span_ms),
            "run_left": None,
            "run_width": None,
            "duration_s": action.get("duration_s", 0),
        }
        if started is not None:
            stop = ended if ended is not None else (now_ms if status in LIVE_ACTION else started)
            row["run_left"] = _pct(started - origin, span_ms)
            row["run_width"] = max(_pct(stop - started, span_ms), 0.6)
        rows.append(row)
    return {
        "origin_ms": origin,
        "span_ms": span_ms,
        "now_pct": _pct(now_ms - origin, span_ms),
        "elapsed_s": max(0, round(elapsed_ms / 1000)),
        "planned_s": int(radius.get("duration_s", 0)),
        "rows": rows,
    }


_EXPERIMENT_RANK = {"pending": 0, "initiating": 1, "running": 2, "stopping": 3}
_ACTION_RANK = {"pending": 0, "initiating": 1, "running": 2, "stopping": 3}


def version(snapshot: Mapping[str, Any]) -> int:
    """Grows with every state change (states only move forward): the page never steps back."""
    rank = _EXPERIMENT_RANK.get(snapshot.get("state", {}).get("status", ""), 4)
    actions = sum(_ACTION_RANK.get(a.get("state", {}).get("status", ""), 4) for a in (snapshot.get("actions") or {}).values())
    return 1 + rank * 1000 + actions


def experiment_context(snapshot: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    return {"x": snapshot, "gantt": timeline(snapshot, now_ms), "final": is_final(snapshot), "version": version(snapshot)}


def fault_window(snapshot: Mapping[str, Any]) -> dict[str, Any] | None:
    """When the experiment's actions held faults: what the charts shade. None before any ran."""
    starts = [a["start_time"] for a in (snapshot.get("actions") or {}).values() if a.get("start_time") is not None]
    if not starts:
        return None
    ends = [a.get("end_time") for a in (snapshot.get("actions") or {}).values() if a.get("start_time") is not None]
    open_ended = any(e is None for e in ends) and not is_final(snapshot)
    end = None if open_ended else max([e for e in ends if e is not None] + [snapshot.get("end_time") or 0, min(starts)])
    return {
        "id": snapshot["id"],
        "label": snapshot.get("template_id") or snapshot.get("description") or snapshot["id"],
        "start_ms": min(starts),
        "end_ms": end,
    }


def fault_windows(snapshots: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [w for w in (fault_window(s) for s in snapshots) if w is not None]


def fault_summary(faults: Mapping[str, Any] | None) -> list[str]:
    """The active faults in words, for the banner every page shows."""
    if not faults:
        return []
    found: list[str] = []
    for region in faults.get("regions_down", []):
        found.append(f"region {region} down")
    for az in faults.get("azs_down", []):
        found.append(f"AZ {az} down")
    for pair in faults.get("partitions", []):
        found.append(f"partition {' / '.join(pair)}")
    for throttle in faults.get("throttles", []):
        found.append(f"{throttle.get('service', 'api')} throttled {throttle.get('percentage', '?')}% in {throttle.get('region', '?')}")
    for latency in faults.get("latencies", []):
        found.append(f"+{latency.get('delay_ms', '?')} ms latency in {latency.get('region', '?')}")
    for az, percent in (faults.get("cpu_stress") or {}).items():
        found.append(f"CPU stress {percent}% on {az}")
    for az in faults.get("workers_stopped", []):
        if az not in faults.get("azs_down", []):
            found.append(f"workers in {az} stopped")
    return found
