"""DynamoDB Streams reader: hands each change record of a table to a callback, in order.

Django-free. The mirror, the replicator and the reconciler all read the tables through
this, as Lambda event sources would on AWS (Lambda polls a stream's shards too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from trading import aws
from trading.store import from_attrs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChangeRecord:
    event_name: str  # INSERT | MODIFY | REMOVE
    keys: dict[str, Any]
    new_image: dict[str, Any] | None
    old_image: dict[str, Any] | None
    sequence_number: str
    region: str
    table: str


def record_from_raw(raw: dict[str, Any], region: str, table: str) -> ChangeRecord:
    body = raw["dynamodb"]
    return ChangeRecord(
        event_name=raw["eventName"],
        keys=from_attrs(body.get("Keys", {})),
        new_image=from_attrs(body["NewImage"]) if "NewImage" in body else None,
        old_image=from_attrs(body["OldImage"]) if "OldImage" in body else None,
        sequence_number=str(body.get("SequenceNumber", "")),
        region=region,
        table=table,
    )


RECORDS_PAGE = 1000  # GetRecords' limit


@dataclass
class StreamTailer:
    region: str
    table: str
    handler: Callable[[list[ChangeRecord]], None]
    poll_interval_s: float = 0.1
    _iterators: dict[str, str | None] = field(default_factory=dict)
    _stream_arn: str | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    records_seen: int = 0
    # New shards appear rarely (moto: never; AWS: every few hours): look every few seconds.
    describe_every_s: float = 5.0
    _described_at: float = -1e9

    def _arn(self) -> str:
        if self._stream_arn is None:
            table = aws.client("dynamodb", self.region).describe_table(TableName=self.table)["Table"]
            self._stream_arn = table["LatestStreamArn"]
        return self._stream_arn

    def _shard_iterators(self) -> dict[str, str | None]:
        now = time.monotonic()
        if self._iterators and now - self._described_at < self.describe_every_s:
            return self._iterators
        self._described_at = now
        streams = aws.client("dynamodbstreams", self.region)
        description = streams.describe_stream(StreamArn=self._arn())["StreamDescription"]
        for shard in description.get("Shards", []):
            shard_id = shard["ShardId"]
            if shard_id not in self._iterators:
                self._iterators[shard_id] = streams.get_shard_iterator(
                    StreamArn=self._arn(), ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
        return self._iterators

    def poll_once(self) -> int:
        """Read what is new on every shard and hand it to the handler. Returns the count.

        A shard is read again at once only after a full page: a shorter one is as far as
        the shard had got, and the next round goes on from there (confirming it with an
        empty read was half of a busy round's GetRecords)."""
        streams = aws.client("dynamodbstreams", self.region)
        count = 0
        for shard_id, iterator in list(self._shard_iterators().items()):
            while iterator:
                response = streams.get_records(ShardIterator=iterator, Limit=RECORDS_PAGE)
                raw = response.get("Records", [])
                if raw:
                    # Advance only once the handler took the batch: a failure re-reads it.
                    self.handler([record_from_raw(r, self.region, self.table) for r in raw])
                    count += len(raw)
                iterator = response.get("NextShardIterator")
                self._iterators[shard_id] = iterator
                if len(raw) < RECORDS_PAGE:
                    break
        self.records_seen += count
        return count

    def drain(self) -> int:
        total = 0
        while True:
            n = self.poll_once()
            total += n
            if n == 0:
                return total

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name=f"stream-{self.region}-{self.table}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                n = self.poll_once()
            except (BotoCoreError, ClientError) as error:
                log.debug("stream %s/%s: %s", self.region, self.table, error)
                n = 0
                self.stop_event.wait(0.5)
            except Exception:
                log.exception("stream handler failed on %s/%s; retrying", self.region, self.table)
                n = 0
                self.stop_event.wait(0.5)
            if n == 0:
                self.stop_event.wait(self.poll_interval_s)
