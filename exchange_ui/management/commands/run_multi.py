"""`make run-multi`: DESIGN.md's local multi-process topology under one supervisor.

Children: a moto server (AWS), Redis (started only when REDIS_URL's local server is not
answering), daphne serving the app (`run_exchange --remote-workers`, so the fault plane,
the mirror, the sampler and the synthetic traders run there, the channel layer on
channels-redis), and one `simfill_worker` process per region and AZ.

The supervisor restarts a worker that dies, and obeys the daphne process's wishes for
whole AZs through the control files of simfill/remote.py: AZ loss there stops the real
worker processes of that AZ (SIGTERM to their pids) here and starts a stand-in process
for each in a surviving AZ of the region (simfill.placement, as ECS reschedules a
service's tasks); the end of the fault starts the AZ's own workers again and stops the
stand-ins. Ctrl-C (or SIGTERM) stops every child, workers first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand

from simfill.placement import stand_in_hosts, stand_in_name
from simfill.remote import DESIRED, STATUS, read_json, write_json
from trading import aws
from trading.config import BASE_DIR, VAR_DIR
from trading.motoserver import MotoServer

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
POLL_S = 0.2
RESTART_BACKOFF_S = 1.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    last_start: float = 0.0
    region: str = ""
    az: str = ""
    stop_signal: int = signal.SIGTERM

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.argv, cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.last_start = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.alive and self.process is not None else None

    def terminate(self) -> None:
        if self.alive and self.process is not None:
            self.process.send_signal(self.stop_signal)

    def wait(self, timeout_s: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Supervisor:
    control_dir: Path
    workers: dict[str, Child] = field(default_factory=dict)
    # {lost AZ: the process running its task in a surviving AZ}.
    stand_ins: dict[str, Child] = field(default_factory=dict)
    # The argv of a worker process for (region, AZ, the lost AZ it stands in for or ""):
    # how stand-ins are made.
    worker_argv: Any = None
    engine: str = "simfill"
    env: dict[str, str] = field(default_factory=dict)
    others: list[Child] = field(default_factory=list)
    stopping: bool = False

    def publish_status(self, desired: dict[str, Any]) -> None:
        write_json(
            self.control_dir / STATUS,
            {
                az: {
                    "pid": child.pid,
                    "alive": child.alive,
                    "region": child.region,
                    "restarts": child.restarts,
                    "wanted": desired.get(az, "up"),
                    "stand_in": self._stand_in_status(az),
                }
                for az, child in self.workers.items()
            },
        )

    def _stand_in_status(self, az: str) -> dict[str, Any] | None:
        stand_in = self.stand_ins.get(az)
        if stand_in is None:
            return None
        return {"az": stand_in.az, "name": stand_in.name, "pid": stand_in.pid, "alive": stand_in.alive}

    def reconcile_workers(self) -> None:
        """Make the processes match what is wanted: down AZs stopped, their tasks running in
        surviving AZs, the rest running."""
        desired = read_json(self.control_dir / DESIRED)
        for az, child in self.workers.items():
            wanted_up = desired.get(az, "up") != "down"
            if wanted_up and not child.alive and time.monotonic() - child.last_start >= RESTART_BACKOFF_S:
                if child.process is not None:
                    child.restarts += 1
                child.start()
            elif not wanted_up and child.alive:
                child.terminate()
        self.place_stand_ins(desired)
        self.publish_status(desired)

    def place_stand_ins(self, desired: dict[str, Any]) -> None:
        if self.worker_argv is None:
            return
        by_region: dict[str, list[str]] = {}
        for az, child in self.workers.items():
            by_region.setdefault(child.region, []).append(az)
        wanted: dict[str, str] = {}
        for azs in by_region.values():
            wanted.update(stand_in_hosts(azs, [az for az in azs if desired.get(az, "up") == "down"]))
        for lost, stand_in in list(self.stand_ins.items()):
            if wanted.get(lost) != stand_in.az:
                stand_in.terminate()
                stand_in.wait(10)
                del self.stand_ins[lost]
        for lost, host in wanted.items():
            stand_in = self.stand_ins.get(lost)
            if stand_in is None:
                region = self.workers[lost].region
                name = stand_in_name(lost, host, self.engine)
                stand_in = Child(name, self.worker_argv(region, host, lost), self.env, self.control_dir / f"{name}.log", region=region, az=host)
                self.stand_ins[lost] = stand_in
            if not stand_in.alive and time.monotonic() - stand_in.last_start >= RESTART_BACKOFF_S:
                if stand_in.process is not None:
                    stand_in.restarts += 1
                stand_in.start()

    def stop_all(self) -> None:
        self.stopping = True
        everyone = [*self.workers.values(), *self.stand_ins.values()]
        for child in everyone:
            child.terminate()
        for child in everyone:
            child.wait(10)
        for child in reversed(self.others):
            child.terminate()
            child.wait(15)
        self.publish_status({})


def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


class Command(BaseCommand):
    help = "Run the local multi-process topology: moto, Redis, daphne and one SimFill process per AZ."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default="127.0.0.1")

    def say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def handle(self, *args: Any, **options: Any) -> None:
        config = settings.EXCHANGE
        run_dir = VAR_DIR / "run_multi"
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in (DESIRED, STATUS):
            (run_dir / name).unlink(missing_ok=True)
        redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
        supervisor = Supervisor(control_dir=run_dir)
        moto: MotoServer | None = None

        def on_signal(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        for signum in (signal.SIGTERM, signal.SIGINT):  # SIGINT too: a background start inherits it ignored
            signal.signal(signum, on_signal)
        try:
            if not redis_answers(redis_url):
                parsed = urlparse(redis_url)
                if parsed.hostname not in {"127.0.0.1", "localhost"}:
                    raise SystemExit(f"Redis at {redis_url} does not answer, and it is not local to start")
                port = str(parsed.port or 6379)
                redis_child = Child("redis", ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], dict(os.environ), run_dir / "redis.log")
                redis_child.start()
                supervisor.others.append(redis_child)
                deadline = time.monotonic() + 10
                while not redis_answers(redis_url):
                    if time.monotonic() > deadline or not redis_child.alive:
                        raise SystemExit(f"redis-server did not start; see {redis_child.log_path}")
                    time.sleep(0.1)
                self.say(f"Redis: started redis-server on port {port}")
            else:
                self.say(f"Redis: {redis_url} answers")

            endpoint = config.endpoint_url
            if not endpoint:
                moto = MotoServer(log_path=run_dir / "moto.log").start()
                endpoint = moto.url
                aws.write_endpoint_file(endpoint)
            self.say(f"AWS endpoint: {endpoint}")
            env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}

            from trading.mirror import reset_mirror
            from trading.provision import bootstrap

            aws.use_endpoint(endpoint)
            bootstrap(config, say=lambda line: None)
            if moto is not None:
                reset_mirror()

            manage = [sys.executable, str(BASE_DIR / "manage.py")]
            daphne = Child(
                "daphne",
                manage + ["run_exchange", "--host", options["host"], "--port", str(options["port"]), "--remote-workers", str(run_dir)],
                env,
                run_dir / "daphne.log",
                stop_signal=signal.SIGINT,  # run_exchange's Ctrl-C path stops its runtime cleanly
            )
            daphne.start()
            supervisor.others.append(daphne)
            # Under the matcher each AZ runs a matcher task: the region's first AZ's is the
            # active one (or its stand-in while that AZ is down), the others stand by.
            engine = config.engine
            command = "matcher_worker" if engine == "matcher" else "simfill_worker"

            def worker_argv(region: str, az: str, stand_in_for: str = "") -> list[str]:
                argv = manage + [command, "--region", region, "--az", az, "--control", str(run_dir)]
                return argv + (["--stand-in-for", stand_in_for] if stand_in_for else [])

            supervisor.worker_argv, supervisor.env, supervisor.engine = worker_argv, env, engine
            for region in config.regions:
                for az in config.azs(region):
                    supervisor.workers[az] = Child(f"{engine}-{az}", worker_argv(region, az), env, run_dir / f"{engine}-{az}.log", region=region, az=az)
            supervisor.reconcile_workers()
            label = "Matcher tasks" if engine == "matcher" else "SimFill workers"
            self.say(f"{label}: {', '.join(f'{az} (pid {c.pid})' for az, c in supervisor.workers.items())}")

            url = f"http://{options['host']}:{options['port']}/"
            announced = False
            while True:
                if not daphne.alive:
                    raise SystemExit(f"daphne exited ({daphne.process.returncode if daphne.process else '?'}); see {daphne.log_path}")
                supervisor.reconcile_workers()
                if not announced and _answers(url + "login/"):
                    announced = True
                    self.say(self.style.SUCCESS(f"Exchange failure dashboard (multi-process): {url}"))
                    self.say(f"  logs and control files in {run_dir} · demo logins in {VAR_DIR / 'demo-logins.txt'} · Ctrl-C stops everything")
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            pass
        finally:
            self.say("stopping …")
            supervisor.stop_all()
            if moto is not None:
                moto.stop()
                Path(aws.ENDPOINT_FILE).unlink(missing_ok=True)
            self.say("stopped.")


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=0.5)
        return True
    except OSError:
        return False
