"""`zappa package` for a SimFill stage, in the test run: only the local virtualenv is needed.

The simfill stages set use_precompiled_packages false (their dependencies are pure
Python), so packaging asks no package registry for anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "deploy" / "zappa_settings.json"


def test_it_packages_the_simfill_stage_into_a_self_sufficient_archive(tmp_path: Path, record_property: Any) -> None:
    archive = tmp_path / "simfill.zip"
    env = {**os.environ, "VIRTUAL_ENV": str(ROOT / ".venv"), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    env.pop("AWS_ENDPOINT_URL", None)
    started = time.monotonic()
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "zappa"), "package", "simfill_us_east_1", "-s", str(SETTINGS), "-o", str(archive)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    record_property("zappa_package_s", round(time.monotonic() - started, 1))
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
        settings_py = zipped.read("zappa_settings.py").decode()
        zipped.extractall(tmp_path / "unpacked")
    assert "simfill/lambda_handler.py" in names and "trading/store.py" in names
    assert any(n.startswith("aws_lambda_powertools/") for n in names)
    assert not any(n.startswith(("django/", "playwright/", "moto/", "var/", "tests/")) for n in names)
    assert "simfill" in settings_py
    # The archive alone (no site-packages: -S) imports the handler, as Lambda would.
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import sys, simfill.lambda_handler; print('django' in sys.modules)"],
        cwd=tmp_path / "unpacked", env={"PYTHONPATH": str(tmp_path / "unpacked"), "AWS_REGION": "us-east-1", "PATH": os.environ.get("PATH", "")},
        capture_output=True, text=True, timeout=30, check=True,
    )
    assert probe.stdout.strip() == "False"
