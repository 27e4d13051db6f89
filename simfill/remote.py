"""SimFill workers as separate processes (`make run-multi`): the control files between the
daphne process (where the fault plane runs) and the supervisor (which owns the pids).

The protocol is two small JSON files in one directory, each replaced atomically:

- `desired.json`, written by the daphne process: {az: "up" | "down"}. AZ loss writes
  "down"; the end of the fault writes "up". The supervisor polls it every 0.2 s.
- `workers.json`, written by the supervisor: {az: {"pid": int | null, "alive": bool,
  "region": str, "restarts": int, "wanted": "up" | "down", "stand_in": null | {"az",
  "pid", "alive", "name"}}}. The daphne process reads it to show the worker dots;
  tests read it to see the pids stop and come back.

A worker the supervisor finds dead while its AZ is wanted "up" is restarted (a crash);
one wanted "down" is stopped with SIGTERM and stays stopped until it is wanted again,
while a stand-in process runs its task in a surviving AZ of the region
(simfill.placement).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

DESIRED = "desired.json"
STATUS = "workers.json"
# {az: percent}: CPU stress, written by the daphne process, followed by each worker process.
STRESS = "stress.json"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(data, sort_keys=True))
    os.replace(partial, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class WorkerControl:
    """The daphne side: ask for AZs up or down; read what the supervisor reports."""

    def __init__(self, directory: Path, cache_s: float = 0.3):
        self.directory = Path(directory)
        self.cache_s = cache_s
        self._status: dict[str, Any] = {}
        self._read_at = 0.0

    def want(self, az: str, up: bool) -> None:
        desired = read_json(self.directory / DESIRED)
        desired[az] = "up" if up else "down"
        write_json(self.directory / DESIRED, desired)
        self._read_at = 0.0

    def set_cpu_stress(self, az: str, percent: int) -> None:
        stress = read_json(self.directory / STRESS)
        if stress.get(az, 0) == percent:
            return
        stress[az] = percent
        write_json(self.directory / STRESS, stress)

    def cpu_stress(self, az: str) -> int:
        try:
            return int(read_json(self.directory / STRESS).get(az, 0))
        except (TypeError, ValueError):
            return 0

    def status(self) -> dict[str, Any]:
        if time.monotonic() - self._read_at > self.cache_s:
            self._status = read_json(self.directory / STATUS)
            self._read_at = time.monotonic()
        return self._status

    def alive(self, az: str) -> bool:
        return bool(self.status().get(az, {}).get("alive"))

    def stand_in_views(self) -> list[dict[str, Any]]:
        """The supervisor's stand-in processes, shaped as Runtime.stand_in_views."""
        views = []
        for lost, entry in sorted(self.status().items()):
            stand_in = entry.get("stand_in") if isinstance(entry, dict) else None
            if isinstance(stand_in, dict):
                views.append(
                    {"lost": lost, "host": stand_in.get("az", ""), "name": stand_in.get("name", ""), "alive": bool(stand_in.get("alive")), "applied": 0}
                )
        return views


class _ProcessHandle:
    """Looks like a worker's thread to the fault plane: alive while the process runs."""

    def __init__(self, control: WorkerControl, az: str):
        self.control, self.az = control, az

    def is_alive(self) -> bool:
        return self.control.alive(self.az)


class RemoteAzWorker:
    """Stands in for simfill.worker.AzWorker in the daphne process; the real one is a process."""

    def __init__(self, control: WorkerControl, az: str, engine: str = "simfill"):
        self.control = control
        self.az = az
        self.name = f"{engine}-{az}"
        self.thread = _ProcessHandle(control, az)
        self.applied_count = 0
        self.last_error = ""

    @property
    def cpu_stress_percent(self) -> int:
        return self.control.cpu_stress(self.az)

    @cpu_stress_percent.setter
    def cpu_stress_percent(self, percent: int) -> None:
        # CPU stress reaches the worker process through the control directory; the
        # process burns its own CPU (simfill.stress).
        self.control.set_cpu_stress(self.az, int(percent))

    def cpu_time_s(self) -> float | None:
        return None  # another process's thread

    @property
    def alive(self) -> bool:
        return self.control.alive(self.az) and self.control.status().get(self.az, {}).get("wanted", "up") == "up"

    def start(self) -> None:
        self.control.want(self.az, up=True)

    def stop(self) -> None:
        self.control.want(self.az, up=False)


def attach_remote_workers(runtime: Any, directory: Path) -> WorkerControl:
    """Point the runtime's AZ workers (and the fault plane through it) at the supervisor."""
    control = WorkerControl(directory)
    for az in list(runtime.workers):
        runtime.workers[az] = RemoteAzWorker(control, az, runtime.config.engine)
    # An AZ coming back is the supervisor's job, not a fresh thread in this process.
    runtime.start_az = lambda az: control.want(az, up=True)
    runtime.stop_az = lambda az: control.want(az, up=False)
    # The supervisor runs the stand-ins as processes; none as threads here.
    runtime.place_stand_ins = lambda: None
    runtime.stand_in_views = control.stand_in_views
    return control


def follow_cpu_stress(worker: Any, directory: Path, az: str, stop: Any, interval_s: float = 0.5) -> None:
    """In a worker process: keep `worker.cpu_stress_percent` equal to what the control file says."""
    control = WorkerControl(directory)
    while not stop.wait(interval_s):
        worker.cpu_stress_percent = control.cpu_stress(az)
