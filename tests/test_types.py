"""The pure core stays clean under `mypy --strict` (STYLE.md: types)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = [
    "trading/domain.py",
    "trading/markets.py",
    "trading/names.py",
    "trading/config.py",
    "trading/limits.py",
    "trading/metrics.py",
    "simfill/engine.py",
    "simfill/placement.py",
    "matcher/protocol.py",
    "matcher/book.py",
    "matcher/engines.py",
    "matcher/stream.py",
    "reconcile_panel/reconciler.py",
    "reconcile_panel/replication.py",
    "reconcile_panel/divergence.py",
    "faults/experiment.py",
    "faults/templates.py",
]


def test_it_type_checks_the_pure_core_strictly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports", "--follow-imports=silent",
         "--cache-dir", str(ROOT / "var" / "mypy-cache"), *CORE],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
