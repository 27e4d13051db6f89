"""Section 7: cold import of the SimFill Lambda handler vs django.setup()."""

from __future__ import annotations

import os
import statistics
import subprocess

from bench.results import PY, ROOT, Results, chart
from bench.sizes import Sizes


def import_time(code: str, samples: int) -> list[float]:
    out = []
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "exchange_ui.settings"}
    for _ in range(samples):
        script = f"import time; t0 = time.perf_counter(); {code}; print(time.perf_counter() - t0)"
        done = subprocess.run([PY, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-1500:])
        out.append(float(done.stdout.strip().splitlines()[-1]))
    return out


def section_imports(res: Results, sizes: Sizes) -> None:
    floor = import_time("import boto3", sizes.import_samples)
    simfill = import_time("import simfill.lambda_handler", sizes.import_samples)
    django_s = import_time("import django; django.setup()", sizes.import_samples)
    f, s, d = statistics.median(floor), statistics.median(simfill), statistics.median(django_s)
    res.add("simfill_import_s", s, "s", floor=f, samples=len(simfill), section="7", goal="< django_setup_s (the handler never boots Django)", met=s < d)
    res.add("django_setup_s", d, "s", floor=f, samples=len(django_s), section="7", goal="informational")
    res.add("simfill_import_over_django_setup", s / d, "x", ratio=s / d, samples=len(simfill), section="7", goal="< 1", met=s < d)
    chart(res, "7", "cold_import.svg", "Cold import (median of fresh interpreters)", ["import boto3 (floor)", "simfill.lambda_handler", "django.setup()"], {"s": [f, s, d]}, "s")


