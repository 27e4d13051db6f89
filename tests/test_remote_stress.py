"""CPU stress reaches SimFill worker processes (run-multi) through the control directory."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

from faults.experiment import CpuStress
from faults.injection import FaultPlane
from simfill.remote import RemoteAzWorker, WorkerControl, follow_cpu_stress
from tests.conftest import make_config, wait_for


def test_it_forwards_cpu_stress_to_the_worker_process_and_back(tmp_path: Path) -> None:
    config = make_config()
    control = WorkerControl(tmp_path)
    workers = {az: RemoteAzWorker(control, az) for region in config.regions for az in config.azs(region)}
    runtime = SimpleNamespace(exchange=SimpleNamespace(), workers=workers, config=config, stop_az=lambda az: None, start_az=lambda az: None)
    plane = FaultPlane(config, runtime, seed=1)

    # The worker process's side: an AzWorker-like object following the control file.
    in_process = SimpleNamespace(cpu_stress_percent=0)
    stop = threading.Event()
    follower = threading.Thread(target=follow_cpu_stress, args=(in_process, tmp_path, "us-east-1a", stop, 0.05), daemon=True)
    follower.start()
    try:
        plane.apply("spike", [CpuStress("us-east-1a", 100)])
        wait_for(lambda: in_process.cpu_stress_percent == 100, message="the worker process stressed")
        assert control.cpu_stress("us-east-1b") == 0  # only the stressed AZ
        plane.remove("spike")
        wait_for(lambda: in_process.cpu_stress_percent == 0, message="the worker process back to normal")
    finally:
        stop.set()
        follower.join(2)
