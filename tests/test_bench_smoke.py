"""`make bench` at smoke sizes, so it cannot rot: every section runs, results.json has
the contract's shape and every required name. Nothing here asserts a timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import REQUIRED

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {"name", "value", "unit", "floor", "ratio", "goal", "met", "samples"}

pytestmark = pytest.mark.browser  # the tape section drives Debian's chromium


def test_it_runs_every_section_at_smoke_size_and_writes_the_results(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert isinstance(results, list) and results
    for row in results:
        assert set(row) == FIELDS, row
        assert isinstance(row["name"], str) and isinstance(row["unit"], str) and isinstance(row["goal"], str)
        assert row["met"] in (True, False, None)
        assert isinstance(row["samples"], int) and row["samples"] >= 0
        for number in ("value", "floor", "ratio"):
            assert row[number] is None or isinstance(row[number], (int, float)), row
    names = {row["name"] for row in results}
    assert not set(REQUIRED) - names, set(REQUIRED) - names
    # Every section ran: a section that raised leaves its note in the report.
    report = (tmp_path / "REPORT.md").read_text()
    assert "the section failed" not in report, report
    assert "## 1. Ingest" in report and "## 7. Cold import" in report
    assert list(tmp_path.glob("*.svg")), "no charts written"
    measured = {row["name"] for row in results if row["value"] is not None}
    assert {"ingest_throughput_ratio", "reconcile_10k_s", "simfill_import_s", "django_setup_s"} <= measured
    by_name = {row["name"]: row for row in results}
    # The API facade alone (`run_exchange --api-only`) wrote and queued every order it
    # accepted, and nothing in that process consumed them.
    assert by_name["ingest_alone_orders_lost"]["value"] == 0 and by_name["ingest_alone_orders_lost"]["met"] is True
    assert "API facade alone (--api-only)" in report and "full server (fills, streams, replication)" in report
