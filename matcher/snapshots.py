"""Book snapshots: the one door to Redis for books (the note: "Snapshots in Redis for fast
book display; persisted periodically to DynamoDB").

After every batch the matcher publishes each touched book: Redis key `book:{region}:{symbol}`
holds JSON `{"symbol","region","seq","ts","bids","asks","state"}` (the depth it was given and
the Book's whole `snapshot()` data). Every `every_s` seconds or `every_seq` seqs, whichever
comes first, the latest state is also persisted to DynamoDB (`SNAP#<symbol>` in the region's
sequences table: regional, never replicated), through the stores and so through the fault
plane. Readers (the book API, a stand-in task rebuilding a book) take Redis first, else the
DynamoDB copy, which is then marked stale.

Redis may go away (an ElastiCache failover; the embedded server restarted): a publish that
fails never fails the batch. A background thread keeps each book's latest payload and
writes it again once Redis answers, and again whenever the server behind the address
changes (a new `run_id`: a promoted replica or a restarted node, whose data may be older
or gone), so a quiet book is republished too. The same thread does the periodic persists,
so the matcher's batch path costs one Redis SET per touched book.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis
from botocore.exceptions import BotoCoreError, ClientError

from matcher.protocol import Depth
from trading.events import publish_depth
from trading.store import RegionStores

log = logging.getLogger(__name__)

SOURCE_REDIS = "redis"
SOURCE_DYNAMODB = "dynamodb"
REDIS_ERRORS = (redis.RedisError, OSError)
TICK_S = 0.25  # the background thread's pace: republish, server check, due persists
SERVER_CHECK_S = 1.0
EVENT_LEVELS = 10  # prices a side in a book.depth event
STALE_UNREACHABLE = "snapshot Redis not answering"
STALE_NOT_REPUBLISHED = "not republished to Redis yet"


def book_key(region: str, symbol: str, namespace: str = "book") -> str:
    return f"{namespace}:{region}:{symbol}"


@dataclass
class _Latest:
    """What this process last published for one (region, symbol)."""

    payload: str
    seq: int
    ts_ms: int
    state: dict[str, Any]
    in_redis: bool
    depth: dict[str, Any]  # the event's data for this payload
    shown: dict[str, Any] | None = None  # the depth of the last payload Redis took
    persisted_seq: int = -1
    persisted_at: float = 0.0


def _rows_from_state(side: list[list[Any]], levels: int, lot: Decimal) -> list[dict[str, Any]]:
    """A snapshot side (best price first, each price's resting orders) as depth rows."""
    rows = []
    for price, orders in side[:levels]:
        left = sum((Decimal(order[3]) for order in orders), Decimal(0))
        rows.append({"price": price, "qty": format(left.quantize(lot), "f"), "orders": len(orders)})
    return rows


def depth_from_state(state: Mapping[str, Any], levels: int) -> dict[str, list[dict[str, Any]]]:
    lot = Decimal(state["lot"])
    return {"bids": _rows_from_state(state["bids"], levels, lot), "asks": _rows_from_state(state["asks"], levels, lot)}


class BookSnapshots:
    def __init__(
        self,
        redis_client: Any,
        stores_for_region: Callable[[str], RegionStores] | Mapping[str, RegionStores],
        every_s: float = 5.0,
        every_seq: int = 500,
        namespace: str = "book",
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
        on_depth: Callable[[str, dict[str, Any]], None] | None = publish_depth,
    ) -> None:
        self.redis = redis_client
        self._stores = stores_for_region.__getitem__ if isinstance(stores_for_region, Mapping) else stores_for_region
        self.every_s = every_s
        self.every_seq = every_seq
        self.namespace = namespace
        self.clock = clock
        # False: no thread; whoever holds it calls tick() (a test driving the clock).
        self.background = background
        # Told each book's depth as the snapshot holds it (book.depth events): what Redis
        # took, or, while it cannot take it, its last copy marked stale.
        self.on_depth = on_depth
        self._latest: dict[tuple[str, str], _Latest] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server_id: str | None = None
        self._generations: dict[str, str] = {}
        self._checked_at = 0.0
        self.redis_up = True
        self.republished = 0  # payloads written again after Redis came back or changed
        self.persisted = 0

    # --- writing ---------------------------------------------------------------------------

    def publish(self, region: str, symbol: str, depth: Depth, state: dict[str, Any], ts_ms: int) -> None:
        """The book after a batch, to Redis now (never raises: Redis may be failing over;
        the payload is written again when it answers), and to DynamoDB when one is due."""
        body = {"symbol": symbol, "region": region, "seq": depth.seq, "ts": ts_ms}
        data = depth.as_data()
        body.update(bids=data["bids"], asks=data["asks"], state=state)
        payload = json.dumps(body, separators=(",", ":"))
        written = self._set(region, symbol, payload)
        key = (region, symbol)
        shown = {
            "symbol": symbol, "region": region, "seq": depth.seq, "ts": ts_ms, "source": SOURCE_REDIS, "stale": False,
            "bids": data["bids"][:EVENT_LEVELS], "asks": data["asks"][:EVENT_LEVELS],
        }
        with self._lock:
            previous = self._latest.get(key)
            entry = _Latest(payload, depth.seq, ts_ms, state, written, shown, shown if written else None)
            if previous is not None:
                entry.persisted_seq, entry.persisted_at = previous.persisted_seq, previous.persisted_at
                if not written:
                    entry.shown = previous.shown
            else:
                entry.persisted_at = self.clock()  # the first persist is due every_s from now (or every_seq)
            self._latest[key] = entry
        self._tell(entry)
        self._ensure_thread()
        if not written or depth.seq - entry.persisted_seq >= self.every_seq:
            self._wake.set()

    def persist(self, region: str, symbol: str, state: dict[str, Any], seq: int, ts_ms: int) -> None:
        """The book's state at `seq` to the region's sequences table now (raises on failure)."""
        blob = zlib.compress(json.dumps(state, separators=(",", ":")).encode(), 6)
        self._stores(region).sequences.put_book_snapshot(symbol, blob, seq, ts_ms)
        self.persisted += 1
        with self._lock:
            entry = self._latest.get((region, symbol))
            if entry is not None and entry.seq >= seq:
                entry.persisted_seq, entry.persisted_at = max(entry.persisted_seq, seq), self.clock()

    def _tell(self, entry: _Latest) -> None:
        if self.on_depth is None:
            return
        if entry.in_redis:
            self.on_depth(entry.depth["region"], entry.depth)
        else:
            # The display reads the snapshot: it keeps what Redis last held, marked stale.
            last = entry.shown or entry.depth
            reason = STALE_UNREACHABLE if not self.redis_up else STALE_NOT_REPUBLISHED
            self.on_depth(last["region"], {**last, "stale": True, "stale_reason": reason})

    def _generation(self, region: str) -> str:
        """The region's tables' id for snapshots (SequenceStore.book_generation), read once:
        every payload carries it, and a payload with another one is a book of other tables."""
        found = self._generations.get(region)
        if found is None:
            found = self._generations[region] = self._stores(region).sequences.book_generation()
        return found

    def _set(self, region: str, symbol: str, payload: str) -> bool:
        try:
            generation = self._generation(region)
        except (BotoCoreError, ClientError) as error:
            log.warning("book snapshots: %s's snapshot id is not readable (%s); writing the book later", region, str(error)[:160])
            return False
        payload = f'{payload[:-1]},"gen":"{generation}"}}'
        try:
            self.redis.set(book_key(region, symbol, self.namespace), payload)
        except REDIS_ERRORS as error:
            if self.redis_up:
                log.warning("book snapshots: Redis is not answering (%s); republishing when it is back", str(error)[:160])
            self.redis_up = False
            return False
        self.redis_up = True
        return True

    # --- the background thread: republish, watch the server, persist --------------------

    def _ensure_thread(self) -> None:
        if not self.background:
            return
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if (self._thread is None or not self._thread.is_alive()) and not self._stop.is_set():
                    self._thread = threading.Thread(target=self._run, name="book-snapshots", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            try:
                self.tick()
            except Exception:  # the next tick tries again
                log.exception("book snapshots: a background round failed")

    def tick(self) -> None:
        """One background round (the thread calls it; a test may call it directly)."""
        self._watch_server()
        with self._lock:
            entries = list(self._latest.items())
        for (region, symbol), entry in entries:
            if not entry.in_redis and self._set(region, symbol, entry.payload):
                with self._lock:
                    current = self._latest.get((region, symbol)) is entry
                    if current:
                        entry.in_redis, entry.shown = True, entry.depth
                self.republished += 1
                if current:
                    self._tell(entry)
        now = self.clock()
        for (region, symbol), entry in entries:
            due = entry.seq != entry.persisted_seq and (
                entry.seq - entry.persisted_seq >= self.every_seq or now - entry.persisted_at >= self.every_s
            )
            if due:
                try:
                    self.persist(region, symbol, entry.state, entry.seq, entry.ts_ms)
                except (BotoCoreError, ClientError, RuntimeError) as error:
                    log.warning("book snapshot %s/%s@%d not persisted yet: %s", region, symbol, entry.seq, str(error)[:160])
                    with self._lock:
                        entry.persisted_at = now  # try again in every_s, not every tick

    def _watch_server(self) -> None:
        """A new server behind the address (restarted, or a replica promoted) may have lost
        what we wrote: write every latest payload again."""
        now = self.clock()
        if now - self._checked_at < SERVER_CHECK_S and self.redis_up:
            return
        self._checked_at = now
        try:
            server_id = str(self.redis.info("server").get("run_id", ""))
        except REDIS_ERRORS:
            was_up, self.redis_up = self.redis_up, False
            self._mark_all_unwritten(tell=was_up)
            return
        self.redis_up = True
        if self._server_id is not None and server_id != self._server_id:
            log.info("book snapshots: a new Redis server answers (run_id %s); republishing every book", server_id[:8])
            self._mark_all_unwritten()
        self._server_id = server_id

    def _mark_all_unwritten(self, tell: bool = False) -> None:
        """Every book must be written again; with `tell`, its display learns it is stale now
        (a quiet book publishes nothing that would say so)."""
        with self._lock:
            entries = list(self._latest.values())
            for entry in entries:
                entry.in_redis = False
        if tell:
            for entry in entries:
                self._tell(entry)

    def close(self, persist: bool = True) -> None:
        """Stop the background thread; with `persist`, store every book not persisted at its latest seq."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        if not persist:
            return
        with self._lock:
            entries = [(key, e) for key, e in self._latest.items() if e.persisted_seq != e.seq]
        for (region, symbol), entry in entries:
            try:
                self.persist(region, symbol, entry.state, entry.seq, entry.ts_ms)
            except (BotoCoreError, ClientError, RuntimeError) as error:
                log.warning("book snapshot %s/%s@%d not persisted at close: %s", region, symbol, entry.seq, str(error)[:160])

    # --- reading ---------------------------------------------------------------------------

    def _from_redis(self, region: str, symbol: str) -> tuple[dict[str, Any] | None, bool]:
        """(the stored payload or None, whether Redis answered)."""
        try:
            raw = self.redis.get(book_key(region, symbol, self.namespace))
        except REDIS_ERRORS:
            return None, False
        if not raw:
            return None, True
        payload = json.loads(raw)
        try:
            if payload.get("gen") != self._generation(region):
                return None, True  # left by an exchange on other tables (a Redis that outlived them)
        except (BotoCoreError, ClientError):
            pass  # the tables cannot say now (the region is down): the copy this process can see
        return payload, True

    def _from_dynamodb(self, region: str, symbol: str) -> tuple[dict[str, Any], int, int] | None:
        found = self._stores(region).sequences.book_snapshot(symbol)
        if found is None:
            return None
        blob, seq, ts_ms = found
        return json.loads(zlib.decompress(blob)), seq, ts_ms

    def latest_state(self, region: str, symbol: str) -> tuple[dict[str, Any], int, str] | None:
        """The newest state of the book: (Book.snapshot() data, seq, "redis" | "dynamodb"),
        or None when neither holds one. A DynamoDB error is raised: a caller rebuilding a
        book must not take "no snapshot" for "could not read it"."""
        payload, _ = self._from_redis(region, symbol)
        if payload is not None:
            return payload["state"], int(payload["seq"]), SOURCE_REDIS
        stored = self._from_dynamodb(region, symbol)
        if stored is None:
            return None
        state, seq, _ = stored
        return state, seq, SOURCE_DYNAMODB

    def depth(self, region: str, symbol: str, levels: int) -> dict[str, Any] | None:
        """The book's top `levels` prices a side, the API's shape plus "source" and "stale"
        (True when the DynamoDB copy is served: Redis did not answer, or has not been
        republished since it lost the book; an empty stale book when Redis did not answer
        and nothing was persisted yet). None when there is no snapshot at all."""
        payload, answered = self._from_redis(region, symbol)
        if payload is not None:
            bids, asks = payload["bids"], payload["asks"]
            state = payload.get("state") or {}
            if (len(bids) < levels and len(state.get("bids", ())) > len(bids)) or (
                len(asks) < levels and len(state.get("asks", ())) > len(asks)
            ):
                rows = depth_from_state(state, levels)
                bids, asks = rows["bids"], rows["asks"]
            return {
                "symbol": symbol, "region": region, "seq": int(payload["seq"]), "ts": int(payload["ts"]),
                "source": SOURCE_REDIS, "stale": False, "bids": bids[:levels], "asks": asks[:levels],
            }
        stored = self._from_dynamodb(region, symbol)
        if stored is None:
            if answered:
                return None
            # Redis is away and nothing was persisted yet: not "no book", an unknown one.
            return {
                "symbol": symbol, "region": region, "seq": 0, "ts": None, "source": "none", "stale": True,
                "stale_reason": STALE_UNREACHABLE, "bids": [], "asks": [],
            }
        state, seq, ts_ms = stored
        rows = depth_from_state(state, levels)
        return {
            "symbol": symbol, "region": region, "seq": seq, "ts": ts_ms, "source": SOURCE_DYNAMODB, "stale": True,
            "stale_reason": STALE_UNREACHABLE if not answered else STALE_NOT_REPUBLISHED,
            "bids": rows["bids"], "asks": rows["asks"],
        }
