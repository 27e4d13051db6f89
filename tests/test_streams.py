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
