"""The stream reader against the real moto server: it reads every record once, in order,
and reads a shard again at once only after a full page."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import aws_calls, order_payload
from trading import streams
from trading.actions import Exchange, submit_order
from trading.store import table_names
from trading.streams import ChangeRecord, StreamTailer

REGION = "us-east-1"


def tailer_for(exchange: Exchange, seen: list[ChangeRecord]) -> StreamTailer:
    return StreamTailer(REGION, table_names(exchange.config.table_prefix)["orders"], seen.extend)


def test_a_round_reads_a_short_page_once_and_the_next_round_goes_on(exchange: Exchange) -> None:
    seen: list[ChangeRecord] = []
    tailer = tailer_for(exchange, seen)
    assert tailer.poll_once() == 0  # learns the shards
    ids = [submit_order(exchange, "alice", order_payload(), f"k-{n}")[0].order_id for n in range(3)]
    with aws_calls() as calls:
        assert tailer.poll_once() == 3
    assert calls == ["GetRecords"]  # three records, fewer than a page: no second read
    later = submit_order(exchange, "alice", order_payload(), "k-late")[0].order_id
    with aws_calls() as calls:
        assert tailer.poll_once() == 1
    assert calls == ["GetRecords"]
    assert [r.new_image["orderId"] for r in seen if r.new_image] == [*ids, later]
    assert tailer.poll_once() == 0


def test_a_full_page_is_followed_at_once(exchange: Exchange, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "RECORDS_PAGE", 2)
    seen: list[ChangeRecord] = []
    tailer = tailer_for(exchange, seen)
    tailer.poll_once()
    ids = [submit_order(exchange, "alice", order_payload(), f"k-{n}")[0].order_id for n in range(5)]
    with aws_calls() as calls:
        assert tailer.poll_once() == 5
    assert calls == ["GetRecords"] * 3  # pages of 2, 2 and 1
    assert [r.new_image["orderId"] for r in seen if r.new_image] == ids


def test_drain_reads_until_a_round_finds_nothing(exchange: Exchange) -> None:
    seen: list[Any] = []
    tailer = tailer_for(exchange, seen)
    for n in range(4):
        submit_order(exchange, "alice", order_payload(), f"k-{n}")
    assert tailer.drain() == 4 and len(seen) == 4
    assert tailer.drain() == 0


class ScriptedStream:
    """Stands for a StreamTailer: each read finds `per_read` records."""

    def __init__(self, per_read: int):
        self.per_read = per_read
        self.reads = 0

    def poll_once(self) -> int:
        self.reads += 1
        return self.per_read


def test_the_replicator_reads_a_quiet_stream_less_often_and_a_woken_one_at_once(monkeypatch: Any) -> None:
    from reconcile_panel.replicator import IDLE_POLL_MAX_S, Replicator
    from tests.conftest import make_config

    now = [1000.0]
    replicator = Replicator(make_config(), clock=lambda: now[0])
    busy, quiet = ScriptedStream(3), ScriptedStream(0)
    replicator.tailers = [busy, quiet]  # type: ignore[list-item]
    monkeypatch.setattr(replicator, "deliver", lambda: 0)

    def rounds(n: int) -> None:
        for _ in range(n):
            replicator.pump(every_stream=False)
            now[0] += 0.1

    rounds(40)  # 4 s of rounds 0.1 s apart
    assert busy.reads == 40
    # The quiet one rests 0.2, 0.4, 0.8, then 1.6 s (IDLE_POLL_MAX_S): read at 0, 0.2, 0.6, 1.4, 3.0 s.
    assert IDLE_POLL_MAX_S == 1.6 and quiet.reads == 5
    quiet.per_read = 2  # records arrive: read once its rest is over, then every round
    rounds(20)
    assert quiet.reads >= 5 + 20 - int(IDLE_POLL_MAX_S / 0.1)
    last = quiet.reads
    rounds(3)
    assert quiet.reads == last + 3
    # drain() and a plain pump() read every stream, resting or not.
    quiet.per_read = 0
    rounds(1)
    before = quiet.reads
    replicator.pump()
    assert quiet.reads == before + 1
