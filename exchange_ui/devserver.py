"""The dev server in a child process: `manage.py run_exchange` (or `run_multi`, or daphne on
another ASGI app) on a free port with its own var dir, as `make run` starts it.

The one harness the browser and multi-process tests and `make bench` start the server
with: pick a port, migrate, `prepare()` (users, tokens), launch, wait until it serves,
issue tokens, stop it with Ctrl-C as a user does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from trading.motoserver import free_port

ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "Exchange failure dashboard:"  # what run_exchange prints once it serves


class DevServer:
    """One server process. `env` overrides the inherited environment, `unset` drops names
    from it; `ready_path` (e.g. "/login/") must also answer before the server counts as up."""

    def __init__(
        self,
        *,
        command: str = "run_exchange",
        args: tuple[str, ...] = (),
        app: str | None = None,
        settings: str = "exchange_ui.settings",
        synthetic_rate: str = "0",
        env: Mapping[str, str] | None = None,
        unset: tuple[str, ...] = (),
        var_prefix: str = "exchange-var-",
        log_name: str = "server.log",
        ready_line: str = READY_LINE,
        ready_path: str | None = None,
        manage_timeout_s: float = 120,
    ):
        self.port = free_port()
        self.var = Path(tempfile.mkdtemp(prefix=var_prefix))
        self.command = command
        self.args = args
        self.app = app
        self.ready_line = ready_line
        self.ready_path = ready_path
        self.manage_timeout_s = manage_timeout_s
        self.log_path = self.var / log_name
        self.env = {
            **os.environ,
            "EXCHANGE_VAR_DIR": str(self.var),
            "EXCHANGE_SYNTHETIC_RATE": synthetic_rate,
            "DJANGO_SETTINGS_MODULE": settings,
            **(env or {}),
        }
        for name in unset:
            self.env.pop(name, None)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def manage(self, *args: str) -> str:
        """`manage.py <args>` against this server's var dir and settings; its stdout."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=self.manage_timeout_s
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def token(self, username: str, staff: bool = False) -> str:
        """An API token for `username` (created if new)."""
        args = ["create_api_token", username, "--create"] + (["--staff"] if staff else [])
        return self.manage(*args).strip().splitlines()[-1].strip()

    def prepare(self) -> None:
        """Runs after the migration, before the process starts: users and tokens."""

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def launch(self) -> DevServer:
        """Start the process without waiting for it (the caller may do other work meanwhile)."""
        if self.process is not None:
            return self
        if self.app:
            command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "-v", "0", self.app]
        else:
            self.manage("migrate", "--noinput", "-v", "0")
            self.prepare()
            command = [sys.executable, "manage.py", self.command, "--port", str(self.port), *self.args]
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()  # the child holds its own descriptor
        return self

    def serving(self) -> bool:
        if self.app:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0
        if self.ready_line not in self.read_log():
            return False
        if self.ready_path is None:
            return True
        try:
            urllib.request.urlopen(self.url + self.ready_path, timeout=1).close()
        except OSError:
            return False
        return True

    def start(self, timeout_s: float = 90.0) -> DevServer:
        """Launch and wait until it serves; raise with the log's tail if it exits or never does."""
        self.launch()
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("server exited: " + self.read_log()[-3000:])
            if self.serving():
                return self
            time.sleep(0.2)
        raise RuntimeError("server did not start: " + self.read_log()[-3000:])

    def stop(self, timeout_s: float = 15.0) -> None:
        """Ctrl-C, as a user stops it; killed if it has not exited within `timeout_s`."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running(*servers: DevServer) -> Iterator[tuple[DevServer, ...]]:
    """Start the servers in order; stop every one that started, whatever happens."""
    started: list[DevServer] = []
    try:
        for server in servers:
            started.append(server.start())
        yield servers
    finally:
        for server in started:
            server.stop()
