"""Global Tables behaviour as pure rules: which write wins, which writes are replicas.

Plain items (dicts of DynamoDB values) in, decisions out. The replicator adapter
reads and writes the tables; everything it decides is decided here.

- Last writer wins on the whole item. An item's version is (updatedAt, writer region);
  items without updatedAt (trades, reconcile records) use `timestamp`, `createdAt`,
  `decidedAt` in that order. The tie-break on an equal timestamp is the writer's
  region name (greater wins), so every region picks the same winner.
- A replica write carries `writerRegion` (the region that wrote the original) and
  `replicaStamp` (a digest of the item's business content). An item whose stamp
  matches its content is an untouched replica: its stream record is never sent on,
  so a write is never re-replicated back. A local update of a replica item changes
  its content, the stamp stops matching, and the update counts as the local region's
  own write (and is replicated, as Global Tables would).
- Applying an item that is already present with the same version and content is a
  no-op: nothing is written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# Attributes that describe the replication, not the business item.
BOOKKEEPING = frozenset({"writerRegion", "replicaStamp", "replicatedFrom", "replicatedAt"})
VERSION_ATTRIBUTES = ("updatedAt", "timestamp", "createdAt", "decidedAt")


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return value


def business_content(item: dict[str, Any]) -> dict[str, Any]:
    """The item without replication bookkeeping: what must be identical in every region."""
    return {k: v for k, v in item.items() if k not in BOOKKEEPING}


def content_digest(item: dict[str, Any]) -> str:
    canonical = json.dumps(_plain(business_content(item)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return content_digest(a) == content_digest(b)


def is_replica(item: dict[str, Any]) -> bool:
    """True if the item is exactly what a replicator wrote (so not a local write)."""
    stamp = item.get("replicaStamp")
    return bool(stamp) and stamp == content_digest(item)


def writer_of(item: dict[str, Any], table_region: str) -> str:
    """Who wrote the item as it now stands in `table_region`'s table."""
    if is_replica(item):
        return str(item.get("writerRegion") or table_region)
    return table_region


def version_ms(item: dict[str, Any]) -> int:
    for name in VERSION_ATTRIBUTES:
        if name in item and item[name] is not None:
            return int(item[name])
    return 0


def version_attribute(item: dict[str, Any]) -> str | None:
    for name in VERSION_ATTRIBUTES:
        if name in item and item[name] is not None:
            return name
    return None


@dataclass(frozen=True, order=True)
class Version:
    ts_ms: int
    writer: str


def version_of(item: dict[str, Any], table_region: str) -> Version:
    return Version(version_ms(item), writer_of(item, table_region))


def as_replica(item: dict[str, Any], writer: str) -> dict[str, Any]:
    """The item as it is written into another region's table."""
    content = business_content(item)
    return {**content, "writerRegion": writer, "replicaStamp": content_digest(content)}


def lww_decision(existing: dict[str, Any] | None, incoming: dict[str, Any], dst_region: str, writer: str) -> str:
    """"apply" or "skip": last writer wins, ties by region name, same content is a no-op.

    `incoming` is the source image, `writer` the region that wrote it. On an equal
    version (the same writer within one millisecond) the replicator applies the
    source's records in stream order, so a different content is the later write.
    """
    if existing is None:
        return "apply"
    mine = version_of(existing, dst_region)
    theirs = Version(version_ms(incoming), writer)
    if theirs > mine:
        return "apply"
    if theirs < mine:
        return "skip"
    return "skip" if same_content(existing, incoming) else "apply"
