"""The DynamoDB adapter: one class per table, one method per access pattern.

Django-free (the Lambda workers import it). Items mirror DESIGN.md's data model;
numbers are DynamoDB N (Decimal in and out, never float).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from trading import aws
from trading.domain import FINAL_STATUSES, OPEN_STATUSES, Order, StatusChange, Trade
from trading.limits import ZERO, signed
from trading.names import table_names as table_names  # re-exported: the names are pure (trading.names)

log = logging.getLogger(__name__)
_ser = TypeSerializer()
_de = TypeDeserializer()
# Sends a batch's status writes side by side (OrderStore.finish_many); shared by every
# task of the process, its threads made when first needed.
_FINISH_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="finish")
TRANSACTION_ITEMS = 100  # DynamoDB's limit on one TransactWriteItems


def to_attrs(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in item.items() if v is not None}


def from_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in attrs.items()}


def is_conditional_failure(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    return code in {"ConditionalCheckFailedException", "TransactionCanceledException"}


def is_put_condition_failure(error: ClientError) -> bool:
    """A Put (alone, or first in a transaction) found its item already there.

    A transaction cancelled for another reason (a conflicting transaction, a throttle)
    is not that: the caller must see it and retry, not take the item as written.
    """
    if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
        return True
    reasons = cancellation_reasons(error)
    return bool(reasons) and reasons[0].get("Code") == "ConditionalCheckFailed"


def put_new_counted(ddb: Any, table: str, item: dict[str, Any], count: dict[str, Any] | list[dict[str, Any]]) -> bool:
    """Put `item` if its pk is new and apply `count` (a TransactWriteItems Update, or a list
    of them: a matched trade moves both accounts) with it, in one transaction; False, with
    nothing changed, if the pk was already there."""
    put = {"Put": {"TableName": table, "Item": to_attrs(item), "ConditionExpression": "attribute_not_exists(pk)"}}
    counts = [count] if isinstance(count, dict) else list(count)
    try:
        ddb.transact_write_items(TransactItems=[put, *counts])
    except ClientError as error:
        if is_put_condition_failure(error):
            return False
        raise
    return True


@dataclass(frozen=True)
class IndexSpec:
    """A global secondary index: its name and (attribute, DynamoDB type) keys."""

    name: str
    hash_key: tuple[str, str]
    range_key: tuple[str, str]


# The caller's orders, newest first, from the table itself: a listing that reads the
# mirror alone can miss an order answered 201 a moment ago (read-your-writes).
ORDERS_BY_CLIENT = IndexSpec("by-client", ("client", "S"), ("createdAt", "N"))
# A region's own fills, newest first: the tape's newest window while the mirror trails.
TRADES_BY_REGION = IndexSpec("by-region", ("region", "S"), ("timestamp", "N"))
# The reconcile records of one kind (conflicts, compensations, adjustments), newest first:
# the reconcile pages and API read a page of them, never the whole table.
RECONCILE_BY_TYPE = IndexSpec("by-type", ("recordType", "S"), ("decidedAt", "N"))
# A market's orders in seq order (every region's copies: a seq is one region's number, so
# a read filters by region): what a matcher that takes over reads after its snapshot's seq.
ORDERS_BY_MARKET = IndexSpec("by-market", ("symbol", "S"), ("seq", "N"))
TABLE_INDEXES: dict[str, tuple[IndexSpec, ...]] = {
    "orders": (ORDERS_BY_CLIENT, ORDERS_BY_MARKET),
    "trades": (TRADES_BY_REGION,),
    "reconcile": (RECONCILE_BY_TYPE,),
}
# Pages one newest-first index read follows at most (a filter can make pages short).
INDEX_PAGES = 4
# Where a page of a tape left each executing region's partition of the by-region index:
# (pk, timestamp) of the last trade taken, None once read to its end, absent: not begun.
TapePosition = dict[str, "tuple[str, int] | None"]


def query_newest(ddb: Any, table: str, index: IndexSpec, value: str, limit: int, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """The items of `index` whose hash key is `value`, newest first: up to `limit` of
    them, over at most INDEX_PAGES pages (a FilterExpression in `kwargs` applies after
    each page's Limit). An index read is eventually consistent: on DynamoDB it trails
    its table by a fraction of a second; moto updates it with the write."""
    names = {"#h": index.hash_key[0], **kwargs.pop("ExpressionAttributeNames", {})}
    values = {":h": value, **kwargs.pop("ExpressionAttributeValues", {})}
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": index.name,
        "KeyConditionExpression": "#h = :h",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": to_attrs(values),
        "ScanIndexForward": False,
        "Limit": limit,
        **kwargs,
    }
    found = 0
    for _ in range(INDEX_PAGES):
        page = ddb.query(**request)
        for attrs in page.get("Items", []):
            yield from_attrs(attrs)
            found += 1
            if found >= limit:
                return
        if "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# --- item <-> domain -------------------------------------------------------------


def order_to_item(order: Order) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": f"ORDER#{order.order_id}",
        "orderId": order.order_id,
        "client": order.client,
        "symbol": order.symbol,
        "side": order.side,
        "qty": order.qty,
        "price": order.price,
        "status": order.status,
        "region": order.region,
        "acceptedAz": order.accepted_az,
        "seq": order.seq,
        "idempotencyKey": order.idempotency_key,
        "requestHash": order.request_hash,
        "simulationSeed": order.simulation_seed,
        "createdAt": order.created_ms,
        "updatedAt": order.updated_ms or order.created_ms,
        "filledQty": order.filled_qty,
        "cancelRequested": order.cancel_requested,
        "history": [history_to_item(h) for h in order.history],
    }
    if order.maker_trades:  # absent until it makes a trade as the resting side
        item["makerTrades"] = list(order.maker_trades)
    return item


def history_to_item(change: StatusChange) -> dict[str, Any]:
    return {"status": change.status, "ts": change.ts_ms, "az": change.az, "note": change.note}


def order_from_item(item: dict[str, Any]) -> Order:
    return Order(
        order_id=item["orderId"],
        client=item["client"],
        symbol=item["symbol"],
        side=item["side"],
        qty=Decimal(item["qty"]),
        price=Decimal(item["price"]),
        status=item["status"],
        region=item["region"],
        accepted_az=item.get("acceptedAz", ""),
        seq=int(item["seq"]),
        idempotency_key=item["idempotencyKey"],
        request_hash=item["requestHash"],
        simulation_seed=int(item["simulationSeed"]),
        created_ms=int(item["createdAt"]),
        filled_qty=Decimal(item.get("filledQty", 0)),
        cancel_requested=bool(item.get("cancelRequested", False)),
        history=tuple(
            StatusChange(h["status"], int(h["ts"]), h.get("az", ""), h.get("note", "")) for h in item.get("history", [])
        ),
        updated_ms=int(item.get("updatedAt", item["createdAt"])),
        maker_trades=tuple(str(t) for t in item.get("makerTrades", ())),
    )


def trade_to_item(trade: Trade) -> dict[str, Any]:
    return {
        "pk": f"TRADE#{trade.trade_id}",
        "tradeId": trade.trade_id,
        "orderId": trade.order_id,
        "symbol": trade.symbol,
        "side": trade.side,
        "qty": trade.qty,
        "price": trade.price,
        "buyOrder": trade.buy_order,
        "sellOrder": trade.sell_order,
        "client": trade.client,
        "counterparty": trade.counterparty,
        "region": trade.region,
        "fillAz": trade.fill_az,
        "seq": trade.seq,
        "fillIndex": trade.fill_index,
        "timestamp": trade.ts_ms,
    }


def trade_from_item(item: dict[str, Any]) -> Trade:
    return Trade(
        trade_id=item["tradeId"],
        order_id=item["orderId"],
        symbol=item["symbol"],
        side=item["side"],
        qty=Decimal(item["qty"]),
        price=Decimal(item["price"]),
        buy_order=item["buyOrder"],
        sell_order=item["sellOrder"],
        client=item["client"],
        counterparty=item["counterparty"],
        region=item["region"],
        fill_az=item.get("fillAz", ""),
        seq=int(item["seq"]),
        fill_index=int(item["fillIndex"]),
        ts_ms=int(item["timestamp"]),
    )


# --- tables ----------------------------------------------------------------------


def batch_get_items(ddb: Any, table: str, pks: list[str]) -> list[dict[str, Any]]:
    """The items among `pks` that exist, in the order asked: consistent BatchGetItem calls
    of at most 100 keys, following UnprocessedKeys."""
    found: dict[str, dict[str, Any]] = {}
    unique = list(dict.fromkeys(pks))
    for start in range(0, len(unique), 100):
        request: dict[str, Any] = {table: {"Keys": [to_attrs({"pk": pk}) for pk in unique[start : start + 100]], "ConsistentRead": True}}
        while request:
            response = ddb.batch_get_item(RequestItems=request)
            for attrs in response.get("Responses", {}).get(table, []):
                item = from_attrs(attrs)
                found[str(item["pk"])] = item
            request = response.get("UnprocessedKeys") or {}
    return [found[pk] for pk in unique if pk in found]


def batch_put_items(ddb: Any, table: str, items: list[dict[str, Any]]) -> None:
    """Unconditional puts, 25 per BatchWriteItem call, retrying UnprocessedItems with a
    backoff. Raises RuntimeError when some are still unprocessed after the retries."""
    for start in range(0, len(items), 25):
        pending: dict[str, Any] = {table: [{"PutRequest": {"Item": to_attrs(item)}} for item in items[start : start + 25]]}
        for attempt in range(8):
            pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
            if not pending:
                break
            time.sleep(min(0.05 * 2**attempt, 1.0))
        else:
            raise RuntimeError(f"{sum(len(v) for v in pending.values())} write(s) to {table} left unprocessed")


def scan_pages(ddb: Any, table: str, pk_prefix: str, page_size: int, **kwargs: Any) -> Iterator[list[dict[str, Any]]]:
    """A table's items whose pk starts with `pk_prefix`, one Scan page (of `page_size`
    items read) at a time: a caller that works page by page holds one page at most."""
    kwargs.update(TableName=table, Limit=page_size)
    while True:
        page = ddb.scan(**kwargs)
        items = [from_attrs(attrs) for attrs in page.get("Items", [])]
        yield [item for item in items if str(item.get("pk", "")).startswith(pk_prefix)]
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def scan_items(ddb: Any, table: str, pk_prefix: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item of a table whose pk starts with `pk_prefix`, page by page."""
    kwargs["TableName"] = table
    while True:
        page = ddb.scan(**kwargs)
        for attrs in page.get("Items", []):
            item = from_attrs(attrs)
            if str(item.get("pk", "")).startswith(pk_prefix):
                yield item
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@dataclass(frozen=True)
class OrderStore:
    region: str
    table: str

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.region)

    def get(self, order_id: str) -> Order | None:
        item = self.get_item(order_id)
        return order_from_item(item) if item else None

    def get_item(self, order_id: str) -> dict[str, Any] | None:
        response = self._ddb.get_item(TableName=self.table, Key=to_attrs({"pk": f"ORDER#{order_id}"}), ConsistentRead=True)
        attrs = response.get("Item")
        return from_attrs(attrs) if attrs else None

    def put_new(self, order: Order, outbox_pending: bool = True) -> bool:
        """Write a new order; False if an order with this id exists (a replay or a race)."""
        item = order_to_item(order)
        if outbox_pending:
            item["outboxPending"] = 1
        try:
            self._ddb.put_item(
                TableName=self.table, Item=to_attrs(item), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise
        return True

    def put_new_sequenced(
        self, sequences: SequenceStore, symbol: str, build: Callable[[int], Order], outbox_pending: bool = True
    ) -> Order | None:
        """Take the market's next seq and write the order `build(seq)` makes, in one
        TransactWriteItems: the counter moves only if the order is new, and the order is
        written only with the number it carries. None if the order's id is taken (a
        replay or a twin that won the race): nothing is written, no number is burnt.

        The counter's update is conditional on the value this process last saw, so one
        round trip both numbers and writes. Another writer of the market (a second
        facade, a Lambda container) makes that value stale: the cancelled transaction
        hands back the counter as it is, and the retry carries the next number; a market
        that keeps moving under us falls back to an ADD, which always makes progress. A
        throttled (or 5xx, or dropped) attempt is retried up to aws.ATTEMPTS in all,
        backing off with the market's lock released.

        Requests of one market that arrive while its transaction is in flight wait in the
        market's queue; the next holder of the lock writes them all (up to COMMIT_BATCH)
        in one transaction, numbered in queue order, with one counter claim. Why, and the
        measurements behind it: docs/decisions/0001-sequenced-order-write.md.
        """
        key = (sequences.region, sequences.table, symbol)
        queue = _commit_queue(key)
        me = _Commit(build, self.table, outbox_pending)
        while True:
            with _commit_guard:
                queue.append(me)
            # Taken by another request's commit, it is in that commit's hands until the
            # lock is released: wait for the lock, never past it.
            while me.state in (_QUEUED, _TAKEN):
                with _seq_lock(*key):
                    if me.state == _QUEUED:
                        self._commit_next(sequences, symbol, key, queue)
            if me.state == _DONE:
                if me.error is not None:
                    raise me.error
                return me.order
            if me.state == _WRITE:
                # Numbered by the ADD (the fallback below): written outside the lock, as a
                # plain conditional put with the SDK's retries.
                assert me.order is not None
                return me.order if self.put_new(me.order, outbox_pending) else None
            # Throttled: the SDK's back-off, with the market open to other requests.
            time.sleep(me.wait_s)
            me.state = _QUEUED

    def _commit_next(self, sequences: SequenceStore, symbol: str, key: tuple[str, str, str], queue: deque[_Commit]) -> None:
        """Under the market's lock: write the requests at the front of its queue in one
        transaction. Each leaves done (its order, None if its id is taken, or an error),
        backing off (throttled), or back at the front (a twin of an earlier one in the batch)."""
        with _commit_guard:
            # One orders table per batch (one market's requests always share it).
            batch: list[_Commit] = []
            while queue and len(batch) < COMMIT_BATCH and (not batch or queue[0].table == batch[0].table):
                batch.append(queue.popleft())
            for entry in batch:
                entry.state = _TAKEN
        try:
            self._commit(sequences, symbol, key, queue, batch)
        except BaseException as error:
            for entry in batch:
                if entry.state == _TAKEN:
                    entry.finish(None, error if isinstance(error, Exception) else RuntimeError(str(error)))
            if not isinstance(error, Exception):
                raise

    def _commit(self, sequences: SequenceStore, symbol: str, key: tuple[str, str, str], queue: deque[_Commit], batch: list[_Commit]) -> None:
        # One attempt per call, retried here: the SDK's own retries would back off (up to
        # 1 + 2 + 4 s) holding the market's lock, and a throttling fault would then let only
        # a few orders a second through the whole market.
        once = aws.client("dynamodb", self.region, retries=False)
        stale = 0
        while batch:
            if stale >= SEQ_ATTEMPTS:
                # Other writers keep moving the counter: take numbers from it as before;
                # each request then writes its own order.
                for entry in batch:
                    entry.order, entry.state = entry.build(sequences.add_one(symbol)), _WRITE
                return
            last = _last_seq.get(key)
            if last is None:
                last = sequences.current(symbol)
            orders: list[Order] = []
            for entry in batch:
                order = entry.build(last + 1 + len(orders))
                if any(o.order_id == order.order_id for o in orders):
                    # A twin of an order earlier in this batch (one transaction may not
                    # write an item twice): it goes next, and finds its id taken.
                    rest, batch = batch[len(orders) :], batch[: len(orders)]
                    with _commit_guard:
                        for later in reversed(rest):
                            later.state = _QUEUED
                            queue.appendleft(later)
                    break
                orders.append(order)
            puts = []
            for entry, order in zip(batch, orders):
                item = order_to_item(order)
                if entry.outbox_pending:
                    item["outboxPending"] = 1
                puts.append({"Put": {"TableName": entry.table, "Item": to_attrs(item), "ConditionExpression": "attribute_not_exists(pk)"}})
            try:
                once.transact_write_items(TransactItems=[*puts, sequences.claim(symbol, last, len(orders))])
            except (BotoCoreError, ClientError) as error:
                if aws.retryable(error):
                    for entry in batch:
                        entry.throttled(error)
                    return
                taken, moved = _claim_refused(key, error, len(orders))
                for i in sorted(taken, reverse=True):
                    batch.pop(i).finish(None)
                stale += 1 if moved or not taken else 0
                continue
            _last_seq[key] = last + len(orders)
            for entry, order in zip(batch, orders):
                entry.finish(order)
            return

    def clear_outbox(self, order_id: str) -> None:
        self._ddb.update_item(
            TableName=self.table,
            Key=to_attrs({"pk": f"ORDER#{order_id}"}),
            UpdateExpression="REMOVE outboxPending",
            ConditionExpression="attribute_exists(pk)",
        )

    def get_many(self, order_ids: list[str]) -> list[Order]:
        """The orders among `order_ids` that exist (consistent reads, no scan)."""
        return [order_from_item(item) for item in batch_get_items(self._ddb, self.table, [f"ORDER#{i}" for i in order_ids])]

    def version_pages(self, page_size: int) -> Iterator[list[tuple[str, int, str]]]:
        """(order id, updatedAt, status) of the orders whose home is this region, a Scan
        page at a time, projected to those attributes (what the mirror's sweep compares)."""
        for page in scan_pages(
            self._ddb, self.table, "ORDER#", page_size,
            ProjectionExpression="pk, orderId, updatedAt, createdAt, #s, #r", ExpressionAttributeNames={"#s": "status", "#r": "region"},
        ):
            yield [
                (str(item["orderId"]), int(item.get("updatedAt", item.get("createdAt", 0))), str(item["status"]))
                for item in page
                if item.get("region") == self.region
            ]

    def outbox_pending(self, older_than_ms: int) -> Iterator[Order]:
        """Open orders whose OrderAccepted send is not known to have arrived (a sparse
        attribute, removed when the order is finished or a re-send is confirmed)."""
        for item in scan_items(
            self._ddb,
            self.table,
            "ORDER#",
            FilterExpression="attribute_exists(outboxPending) AND createdAt < :t AND #s IN ("
            + ", ".join(f":o{i}" for i in range(len(OPEN_STATUSES)))
            + ")",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=to_attrs({":t": older_than_ms, **{f":o{i}": s for i, s in enumerate(OPEN_STATUSES)}}),
        ):
            yield order_from_item(item)

    def _finish_update(self, order: Order, change: StatusChange, filled_qty: Decimal) -> dict[str, Any]:
        """The conditional write that sets a final status: only an open order takes it."""
        return {
            "TableName": self.table,
            "Key": to_attrs({"pk": f"ORDER#{order.order_id}"}),
            # A final order needs no OrderAccepted any more: its outbox flag goes with this write.
            "UpdateExpression": (
                "SET #s = :s, filledQty = :f, updatedAt = :t, history = list_append(if_not_exists(history, :empty), :h) "
                "REMOVE outboxPending"
            ),
            "ConditionExpression": "attribute_exists(pk) AND #s IN (" + ", ".join(f":o{i}" for i in range(len(OPEN_STATUSES))) + ")",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": to_attrs(
                {
                    ":s": change.status,
                    ":f": filled_qty,
                    ":t": change.ts_ms,
                    ":h": [history_to_item(change)],
                    ":empty": [],
                    **{f":o{i}": s for i, s in enumerate(OPEN_STATUSES)},
                }
            ),
        }

    def finish(self, order: Order, change: StatusChange, filled_qty: Decimal) -> bool:
        """Set a final status, conditional on the order still being open; False if it was not."""
        try:
            self._ddb.update_item(**self._finish_update(order, change, filled_qty))
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise
        return True

    def finish_many(self, finals: list[tuple[Order, StatusChange, Decimal]]) -> dict[str, bool | None]:
        """`finish` for several orders at once, the writes sent side by side: per order,
        True if its final status was written, False if it was no longer open, None if the
        write failed (throttled past the SDK's retries, say): the caller finishes that one
        alone. The same conditional write per order as `finish`, so nothing is weaker than
        one by one; only the waiting overlaps."""
        if len(finals) < 2:
            return {order.order_id: self._finish_or_none(order, change, qty) for order, change, qty in finals}
        futures = {order.order_id: _FINISH_POOL.submit(self._finish_or_none, order, change, qty) for order, change, qty in finals}
        return {order_id: future.result() for order_id, future in futures.items()}

    def _finish_or_none(self, order: Order, change: StatusChange, filled_qty: Decimal) -> bool | None:
        try:
            return self.finish(order, change, filled_qty)
        except (ClientError, BotoCoreError) as error:
            log.warning("finishing %s failed: %s", order.order_id, str(error)[:200])
            return None

    def request_cancel(self, order_id: str, ts_ms: int) -> bool:
        """Flag an open order for cancellation; False if it is already final or unknown."""
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key=to_attrs({"pk": f"ORDER#{order_id}"}),
                UpdateExpression="SET cancelRequested = :y, updatedAt = :t",
                ConditionExpression="attribute_exists(pk) AND #s IN (" + ", ".join(f":o{i}" for i in range(len(OPEN_STATUSES))) + ")",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=to_attrs({":y": True, ":t": ts_ms, **{f":o{i}": s for i, s in enumerate(OPEN_STATUSES)}}),
            )
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise
        return True

    def scan_all(self) -> Iterator[Order]:
        for item in scan_items(self._ddb, self.table, "ORDER#"):
            yield order_from_item(item)

    def newest_of_client(self, client: str, limit: int) -> list[Order]:
        """The client's newest orders whose home is this region, newest first (the
        by-client index; copies replicated from other regions are left to their homes)."""
        items = query_newest(
            self._ddb, self.table, ORDERS_BY_CLIENT, client, limit,
            FilterExpression="#r = :r", ExpressionAttributeNames={"#r": "region"}, ExpressionAttributeValues={":r": self.region},
        )
        return [order_from_item(item) for item in items]

    def in_market(self, symbol: str, after_seq: int, before_seq: int | None = None) -> Iterator[Order]:
        """This region's orders of a market with `after_seq` < seq (< `before_seq`), in seq
        order, from the by-market index (eventually consistent: on DynamoDB it trails its
        table by a fraction of a second; moto updates it with the write)."""
        if before_seq is not None and before_seq <= after_seq + 1:
            return
        values: dict[str, Any] = {":y": symbol, ":a": after_seq + 1, ":r": self.region}
        if before_seq is None:
            condition = "#y = :y AND #q >= :a"
        else:
            condition = "#y = :y AND #q BETWEEN :a AND :b"
            values[":b"] = before_seq - 1
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": ORDERS_BY_MARKET.name,
            "KeyConditionExpression": condition,
            "FilterExpression": "#r = :r",
            "ExpressionAttributeNames": {"#y": "symbol", "#q": "seq", "#r": "region"},
            "ExpressionAttributeValues": to_attrs(values),
            "ScanIndexForward": True,
        }
        while True:
            page = self._ddb.query(**request)
            for attrs in page.get("Items", []):
                yield order_from_item(from_attrs(attrs))
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def write_update(self, write: OrderWrite) -> dict[str, Any]:
        """The conditional write of an order's state after an engine's execution: only over
        the state it was computed from (its status and filled quantity, in this region), so
        a replay, or a write another execution already made, changes nothing."""
        before = write.before
        values: dict[str, Any] = {
            ":s": write.change.status,
            ":f": write.filled_qty,
            ":t": write.change.ts_ms,
            ":h": [history_to_item(write.change)],
            ":empty": [],
            ":was": before.status,
            ":wasf": before.filled_qty,
            ":r": before.region,
        }
        sets = "SET #s = :s, filledQty = :f, updatedAt = :t, history = list_append(if_not_exists(history, :empty), :h)"
        if write.maker_trades:
            sets += ", makerTrades = list_append(if_not_exists(makerTrades, :empty), :m)"
            values[":m"] = list(write.maker_trades)
        return {
            "TableName": self.table,
            "Key": to_attrs({"pk": f"ORDER#{before.order_id}"}),
            # Seen by the engine: the order needs no OrderAccepted any more.
            "UpdateExpression": sets + " REMOVE outboxPending",
            "ConditionExpression": "attribute_exists(pk) AND #s = :was AND filledQty = :wasf AND #r = :r",
            "ExpressionAttributeNames": {"#s": "status", "#r": "region"},
            "ExpressionAttributeValues": to_attrs(values),
        }


@dataclass(frozen=True)
class OrderWrite:
    """An order's new state after an engine's execution (the taker's, or a resting order's
    it traded with), and the state it was computed from (`before`)."""

    before: Order
    change: StatusChange
    filled_qty: Decimal
    maker_trades: tuple[str, ...] = ()

    def applied(self) -> Order:
        order = self.before.with_status(self.change.status, self.change.ts_ms, self.change.az, self.change.note, filled=self.filled_qty)
        return replace(order, maker_trades=order.maker_trades + self.maker_trades) if self.maker_trades else order


class LeaseLost(RuntimeError):
    """Another task took the matcher's lease: this task's writes are fenced off."""


@dataclass(frozen=True)
class TradeStore:
    region: str
    table: str
    # Markets with a position limit: their trades also move the account's position
    # counter in `positions`, in the same transaction. Others are one plain put.
    positions: SequenceStore | None = None
    counted_symbols: frozenset[str] = field(default_factory=frozenset)

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.region)

    def put_once(self, trade: Trade) -> bool:
        """Write a trade under its deterministic id; False if it is already there.

        In a market with a limit, the position counter moves with the trade or not at
        all, so a redelivered message (the trade already there) changes nothing.
        """
        if self.positions is not None and trade.symbol in self.counted_symbols:
            if self._exists(trade.trade_id):
                # A redelivery: the condition below would refuse it too, but moto answers a
                # refused transaction by restoring whole tables, losing concurrent writes.
                return False
            count = self.positions.position_change(trade.client, trade.symbol, signed(trade.side, trade.qty))
            return put_new_counted(self._ddb, self.table, trade_to_item(trade), count)
        try:
            self._ddb.put_item(
                TableName=self.table, Item=to_attrs(trade_to_item(trade)), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise
        return True

    def counts(self, symbol: str) -> bool:
        """Does a trade in this market move a position counter (so it needs put_once)?"""
        return self.positions is not None and symbol in self.counted_symbols

    def put_many_once(self, trades: list[Trade]) -> int:
        """Write the trades that are not there yet: one BatchGetItem for which exist, then
        BatchWriteItem for the rest (25 a call). Returns how many were written.

        For trades of markets without a position counter (`counts` is False): a batch write
        has no condition, so the read is what keeps a trade already written from being
        written again. Only this region's fill writes its trades (their ids carry the
        region and the fill), so nothing can write one between the read and the write.
        """
        if any(self.counts(t.symbol) for t in trades):
            raise ValueError("a trade that moves a position counter goes through put_once")
        pks = [f"TRADE#{t.trade_id}" for t in trades]
        present = {str(item["pk"]) for item in batch_get_items(self._ddb, self.table, pks)}
        missing = [t for t, pk in zip(trades, pks, strict=True) if pk not in present]
        batch_put_items(self._ddb, self.table, [trade_to_item(t) for t in missing])
        return len(missing)

    def _exists(self, trade_id: str) -> bool:
        response = self._ddb.get_item(
            TableName=self.table, Key=to_attrs({"pk": f"TRADE#{trade_id}"}), ConsistentRead=True, ProjectionExpression="pk"
        )
        return "Item" in response

    def for_order(self, order_id: str, region: str, max_fills: int = 8) -> list[Trade]:
        """The trades a region's fill of an order wrote: their ids are derived, so no index."""
        from trading.domain import derive_trade_id

        found: list[Trade] = []
        start = 0
        while True:
            keys = [to_attrs({"pk": f"TRADE#{derive_trade_id(order_id, region, i)}"}) for i in range(start, start + max_fills)]
            response = self._ddb.batch_get_item(RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}})
            page = [trade_from_item(from_attrs(a)) for a in response.get("Responses", {}).get(self.table, [])]
            found += page
            # A taker that swept the matcher's book may have more fills than one read asks for.
            if len(page) < max_fills or start + max_fills >= 1000:
                return sorted(found, key=lambda t: t.fill_index)
            start += max_fills

    def scan_all(self) -> Iterator[Trade]:
        for item in scan_items(self._ddb, self.table, "TRADE#"):
            yield trade_from_item(item)

    def get_many(self, trade_ids: list[str]) -> list[Trade]:
        """The trades among `trade_ids` that exist (consistent reads, no scan)."""
        return [trade_from_item(item) for item in batch_get_items(self._ddb, self.table, [f"TRADE#{i}" for i in trade_ids])]

    def id_pages(self, page_size: int) -> Iterator[list[tuple[str, int]]]:
        """(trade id, timestamp) of the trades this region executed, a Scan page at a time (projected)."""
        for page in scan_pages(
            self._ddb, self.table, "TRADE#", page_size,
            ProjectionExpression="pk, tradeId, #r, #t", ExpressionAttributeNames={"#r": "region", "#t": "timestamp"},
        ):
            yield [(str(item["tradeId"]), int(item.get("timestamp", 0))) for item in page if item.get("region") == self.region]

    def newest_executed_here(self, limit: int, symbol: str | None = None) -> list[Trade]:
        """This region's own fills, newest first (the by-region index)."""
        extra: dict[str, Any] = {}
        if symbol:
            extra = {"FilterExpression": "#y = :y", "ExpressionAttributeNames": {"#y": "symbol"}, "ExpressionAttributeValues": {":y": symbol}}
        return [trade_from_item(item) for item in query_newest(self._ddb, self.table, TRADES_BY_REGION, self.region, limit, **extra)]

    def item_count(self) -> int:
        """How many trades the table holds, as DescribeTable says (on AWS refreshed about every
        six hours; moto counts live): a figure for a page, never a scan."""
        return int(self._ddb.describe_table(TableName=self.table)["Table"].get("ItemCount", 0))

    def tape_page(
        self, executed_in: Sequence[str], limit: int, after: TapePosition | None = None, symbol: str | None = None
    ) -> tuple[list[Trade], TapePosition | None]:
        """A page of the tape as this region's table holds it (its own fills and the replicas
        of the others'), newest first: at most `limit` trades executed in `executed_in`.

        Read from the by-region index, one partition per executing region, each at most
        INDEX_PAGES Query pages of `limit` items, so a page costs a bounded read whatever the
        table holds. `after` is where the previous page left each partition (what this
        returns; None: the newest); the second value is None once every partition is read.
        A partition's trades are taken in index order and merged newest first; a trade is
        only taken while no partition still unread could hold a newer one, so a filtered
        page may come back short (even empty) with a position to go on from.
        """
        windows: dict[str, list[dict[str, Any]]] = {}
        rest: dict[str, tuple[str, int] | None] = {}
        for executing in executed_in:
            if after is not None and executing in after and after[executing] is None:
                continue  # read to its end on an earlier page
            start = None if after is None else after.get(executing)
            request: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": TRADES_BY_REGION.name,
                "KeyConditionExpression": "#r = :r",
                "ExpressionAttributeNames": {"#r": "region"},
                "ExpressionAttributeValues": to_attrs({":r": executing}),
                "ScanIndexForward": False,
                "Limit": limit,
            }
            if symbol:
                request["FilterExpression"] = "#y = :y"
                request["ExpressionAttributeNames"]["#y"] = "symbol"
                request["ExpressionAttributeValues"].update(to_attrs({":y": symbol}))
            if start is not None:
                request["ExclusiveStartKey"] = to_attrs({"pk": start[0], "region": executing, "timestamp": start[1]})
            found: list[dict[str, Any]] = []
            last: dict[str, Any] | None = None
            for _ in range(INDEX_PAGES):
                page = self._ddb.query(**request)
                found.extend(from_attrs(attrs) for attrs in page.get("Items", []))
                last = page.get("LastEvaluatedKey")
                if last is None or len(found) >= limit:
                    break
                request["ExclusiveStartKey"] = last
            windows[executing] = found
            if last is not None:
                key = from_attrs(last)
                rest[executing] = (str(key["pk"]), int(key["timestamp"]))
            else:
                rest[executing] = None
        # No trade older than what a partition still unread may hold: it could be newer.
        frontier = max((position[1] for position in rest.values() if position is not None), default=None)
        heads = {region: 0 for region in windows}
        taken: list[dict[str, Any]] = []
        while len(taken) < limit:
            ready = [(int(windows[r][i]["timestamp"]), r) for r, i in heads.items() if i < len(windows[r])]
            if not ready:
                break
            ts, region = max(ready)
            if frontier is not None and ts < frontier:
                break
            taken.append(windows[region][heads[region]])
            heads[region] += 1
        # Per partition: None once read to its end; absent while nothing of it was taken yet.
        position: TapePosition = {}
        for executing in executed_in:
            window = windows.get(executing)
            if window is None:
                position[executing] = None
                continue
            used = heads[executing]
            if used == len(window):
                position[executing] = rest[executing]
            elif used:
                position[executing] = (str(window[used - 1]["pk"]), int(window[used - 1]["timestamp"]))
            elif after is not None and executing in after:
                position[executing] = after[executing]
        following = None if len(position) == len(executed_in) and all(v is None for v in position.values()) else position
        return [trade_from_item(item) for item in taken], following


@dataclass(frozen=True)
class SequenceStore:
    region: str
    table: str

    def current(self, symbol: str) -> int:
        """The market's last allocated seq (0 before the first)."""
        response = aws.client("dynamodb", self.region).get_item(
            TableName=self.table, Key=to_attrs({"pk": f"SEQ#{symbol}"}), ConsistentRead=True
        )
        return sequence_of(from_attrs(response["Item"]) if "Item" in response else None)

    def probe(self) -> None:
        """The region's health probe: one GetItem of a key that is never written, one attempt
        (no SDK retries), so its round trip is the endpoint's, faults included."""
        aws.client("dynamodb", self.region, retries=False).get_item(TableName=self.table, Key=to_attrs({"pk": "PROBE#health"}))

    def claim(self, symbol: str, last: int, count: int = 1) -> dict[str, Any]:
        """The TransactWriteItems Update that moves the counter from `last` to `last + count`."""
        values = {":next": last + count} if last == 0 else {":next": last + count, ":last": last}
        return {
            "Update": {
                "TableName": self.table,
                "Key": to_attrs({"pk": f"SEQ#{symbol}"}),
                "UpdateExpression": "SET seq = :next",
                "ConditionExpression": "attribute_not_exists(seq)" if last == 0 else "seq = :last",
                "ExpressionAttributeValues": to_attrs(values),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def add_one(self, symbol: str) -> int:
        """ADD 1 to the counter (the caller holds the market's lock: see _seq_lock)."""
        response = aws.client("dynamodb", self.region).update_item(
            TableName=self.table,
            Key=to_attrs({"pk": f"SEQ#{symbol}"}),
            UpdateExpression="ADD seq :one",
            ExpressionAttributeValues=to_attrs({":one": 1}),
            ReturnValues="UPDATED_NEW",
        )
        return int(from_attrs(response["Attributes"])["seq"])

    # The position counters live here too: this table is regional (never replicated),
    # and the counter is this region's view of the account: its own fills and the
    # other regions' fills that replication has brought in so far.

    def position(self, client: str, symbol: str) -> Decimal:
        """The net filled quantity (BUY +, SELL -) of `client` in `symbol`, as this region counts it."""
        response = aws.client("dynamodb", self.region).get_item(
            TableName=self.table, Key=to_attrs({"pk": position_pk(client, symbol)}), ConsistentRead=True
        )
        attrs = response.get("Item")
        return Decimal(from_attrs(attrs).get("position", ZERO)) if attrs else ZERO

    def position_change(self, client: str, symbol: str, delta: Decimal) -> dict[str, Any]:
        """The TransactWriteItems Update that adds `delta` to the counter (made on first use)."""
        return {
            "Update": {
                "TableName": self.table,
                "Key": to_attrs({"pk": position_pk(client, symbol)}),
                "UpdateExpression": "ADD #p :d SET #c = :c, #s = :s",
                "ExpressionAttributeNames": {"#p": "position", "#c": "client", "#s": "symbol"},
                "ExpressionAttributeValues": to_attrs({":d": delta, ":c": client, ":s": symbol}),
            }
        }

    # The matcher's lease: one task at a time applies a region's books. Taking it moves the
    # epoch on; every write of a book's execution checks it in the same transaction, so a
    # task that lost the lease (stopped, partitioned, still unwinding) writes nothing more.

    def take_lease(self, name: str, owner: str, ts_ms: int) -> int:
        """Take the lease `name` from whoever holds it; the new epoch."""
        response = aws.client("dynamodb", self.region).update_item(
            TableName=self.table,
            Key=to_attrs({"pk": f"LEASE#{name}"}),
            UpdateExpression="ADD epoch :one SET #o = :o, takenAt = :t",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues=to_attrs({":one": 1, ":o": owner, ":t": ts_ms}),
            ReturnValues="UPDATED_NEW",
        )
        return int(from_attrs(response["Attributes"])["epoch"])

    def lease(self, name: str) -> tuple[int, str]:
        """(epoch, owner) of the lease (0, "" before anyone took it)."""
        response = aws.client("dynamodb", self.region).get_item(
            TableName=self.table, Key=to_attrs({"pk": f"LEASE#{name}"}), ConsistentRead=True
        )
        item = from_attrs(response["Item"]) if "Item" in response else {}
        return int(item.get("epoch", 0)), str(item.get("owner", ""))

    def lease_check(self, name: str, epoch: int) -> dict[str, Any]:
        """The TransactWriteItems ConditionCheck that the lease is still at `epoch`."""
        return {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": to_attrs({"pk": f"LEASE#{name}"}),
                "ConditionExpression": "epoch = :e",
                "ExpressionAttributeValues": to_attrs({":e": epoch}),
            }
        }

    # The matcher's book snapshots live here as well (regional, like the book itself):
    # `SNAP#<symbol>` holds the latest one (the book's state, zlib-compressed JSON); a
    # state larger than one item allows is split over `SNAP#<symbol>#<seq>#<n>` parts,
    # written before the head that names them.

    def put_book_snapshot(self, symbol: str, blob: bytes, seq: int, ts_ms: int) -> bool:
        """Store the book's state at `seq` unless a later seq is stored already (a stale
        task's write never goes back in time; the same seq again is a harmless repeat)."""
        ddb = aws.client("dynamodb", self.region)
        head: dict[str, Any] = {"pk": snapshot_pk(symbol), "seq": seq, "ts_ms": ts_ms, "bytes": len(blob)}
        parts = [blob[i : i + SNAPSHOT_PART_BYTES] for i in range(0, len(blob), SNAPSHOT_PART_BYTES)] or [b""]
        if len(parts) == 1:
            head["state"] = parts[0]
        else:
            batch_put_items(ddb, self.table, [{"pk": snapshot_part_pk(symbol, seq, n), "state": part} for n, part in enumerate(parts)])
            head["parts"] = len(parts)
        try:
            response = ddb.put_item(
                TableName=self.table,
                Item=to_attrs(head),
                ConditionExpression="attribute_not_exists(pk) OR seq <= :seq",
                ExpressionAttributeValues=to_attrs({":seq": seq}),
                ReturnValues="ALL_OLD",
            )
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise
        old = from_attrs(response.get("Attributes") or {})
        if old.get("parts") and int(old["seq"]) != seq:
            self._delete_parts(symbol, int(old["seq"]), int(old["parts"]))
        return True

    def _delete_parts(self, symbol: str, seq: int, parts: int) -> None:
        ddb = aws.client("dynamodb", self.region)
        try:
            for n in range(parts):
                ddb.delete_item(TableName=self.table, Key=to_attrs({"pk": snapshot_part_pk(symbol, seq, n)}))
        except (BotoCoreError, ClientError) as error:  # left over: harmless, never read again
            log.warning("old snapshot parts of %s@%d not deleted: %s", symbol, seq, str(error)[:160])

    def book_generation(self) -> str:
        """This region's tables' own id for book snapshots, made on first use: a snapshot
        cache (Redis) that outlives the tables (a local Redis across fresh moto runs) holds
        books of another exchange, and a reader tells them apart by it."""
        ddb = aws.client("dynamodb", self.region)
        key = to_attrs({"pk": "SNAPGEN"})
        response = ddb.get_item(TableName=self.table, Key=key, ConsistentRead=True)
        if "Item" in response:
            return str(from_attrs(response["Item"])["generation"])
        made = uuid.uuid4().hex
        try:
            ddb.put_item(
                TableName=self.table, Item=to_attrs({"pk": "SNAPGEN", "generation": made}), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as error:
            if not is_conditional_failure(error):
                raise
            response = ddb.get_item(TableName=self.table, Key=key, ConsistentRead=True)  # another process made it first
            return str(from_attrs(response["Item"])["generation"])
        return made

    def book_snapshot(self, symbol: str) -> tuple[bytes, int, int] | None:
        """The latest stored state of the book: (blob, seq, ts_ms), or None."""
        ddb = aws.client("dynamodb", self.region)
        for _ in range(3):  # a head replaced between our two reads: read the new one
            response = ddb.get_item(TableName=self.table, Key=to_attrs({"pk": snapshot_pk(symbol)}), ConsistentRead=True)
            if "Item" not in response:
                return None
            head = from_attrs(response["Item"])
            seq, ts_ms = int(head["seq"]), int(head["ts_ms"])
            if "parts" not in head:
                return bytes(head.get("state") or b""), seq, ts_ms
            pks = [snapshot_part_pk(symbol, seq, n) for n in range(int(head["parts"]))]
            found = batch_get_items(ddb, self.table, pks)
            if len(found) == len(pks):
                return b"".join(bytes(item["state"]) for item in found), seq, ts_ms
        return None


# An item holds 400 KB at most; a part stays well under it.
SNAPSHOT_PART_BYTES = 300_000


def snapshot_pk(symbol: str) -> str:
    return f"SNAP#{symbol}"


def snapshot_part_pk(symbol: str, seq: int, n: int) -> str:
    return f"SNAP#{symbol}#{seq}#{n}"


@dataclass(frozen=True)
class Fence:
    """The lease a task's writes are conditional on."""

    name: str
    epoch: int


def position_pk(client: str, symbol: str) -> str:
    # The symbol first: it never holds "#", so no client name can make two keys collide.
    return f"POS#{symbol}#{client}"


# One process allocates one number of a market's counter at a time (other counters go
# on meanwhile: another region's, another market's). Its threads would otherwise only
# race each other's conditional claims; and moto applies concurrent UpdateItem ADDs
# without a lock, handing two callers the same number (measured: 11 duplicates in 400
# over 4 threads), which DynamoDB never does.
_seq_locks: dict[tuple[str, str, str], threading.Lock] = {}
_seq_locks_guard = threading.Lock()
# The counter value this process last wrote or was shown, per (region, table, market).
_last_seq: dict[tuple[str, str, str], int] = {}
SEQ_ATTEMPTS = 4
# Orders of one market written in one transaction at most (DynamoDB allows 100 actions):
# one commit's round trip stays short while the next batch gathers behind it.
COMMIT_BATCH = 25
_QUEUED, _TAKEN, _BACKOFF, _WRITE, _DONE = "queued", "taken", "backoff", "write", "done"


class _Commit:
    """One request waiting in its market's commit queue."""

    __slots__ = ("build", "table", "outbox_pending", "state", "order", "error", "retries", "wait_s")

    def __init__(self, build: Callable[[int], Order], table: str, outbox_pending: bool):
        self.build = build
        self.table = table
        self.outbox_pending = outbox_pending
        self.state = _QUEUED
        self.order: Order | None = None
        self.error: Exception | None = None
        self.retries = 0
        self.wait_s = 0.0

    def finish(self, order: Order | None, error: Exception | None = None) -> None:
        self.order, self.error, self.state = order, error, _DONE

    def throttled(self, error: Exception) -> None:
        self.retries += 1
        if self.retries < aws.ATTEMPTS:
            self.wait_s, self.state = aws.backoff_s(self.retries), _BACKOFF
        else:
            self.finish(None, error)


_commit_queues: dict[tuple[str, str, str], deque[_Commit]] = {}
_commit_guard = threading.Lock()  # the queues' contents; held only to move entries


def _commit_queue(key: tuple[str, str, str]) -> deque[_Commit]:
    with _commit_guard:
        return _commit_queues.setdefault(key, deque())


def _seq_lock(region: str, table: str, symbol: str) -> threading.Lock:
    with _seq_locks_guard:
        return _seq_locks.setdefault((region, table, symbol), threading.Lock())


def _claim_refused(key: tuple[str, str, str], error: BotoCoreError | ClientError, puts: int) -> tuple[set[int], bool]:
    """Read a cancelled [order puts..., counter claim] transaction: which puts found
    their order's id taken, and whether the counter moved (or another transaction held
    an item: try again). Anything else is raised. The counter's reason carries its item
    as it is (ALL_OLD), whatever the orders' fate: the next try starts from it."""
    reasons = cancellation_reasons(error) if isinstance(error, ClientError) else []
    if len(reasons) != puts + 1:
        raise error
    codes = [r.get("Code") for r in reasons]
    counter = codes[-1]
    if counter == "ConditionalCheckFailed":
        _last_seq[key] = sequence_of(reasons[-1].get("Item"))
    elif counter not in (None, "None"):
        _last_seq.pop(key, None)  # a conflicting transaction: read it again
    if set(codes) - {None, "None", "ConditionalCheckFailed", "TransactionConflict"}:
        raise error
    taken = {i for i, code in enumerate(codes[:-1]) if code == "ConditionalCheckFailed"}
    moved = counter not in (None, "None") or "TransactionConflict" in codes[:-1]
    return taken, moved


def sequence_of(item: dict[str, Any] | None) -> int:
    """A SEQ# item's counter, as a plain item or in AttributeValue form (0 if absent)."""
    if not item or "seq" not in item:
        return 0
    value = item["seq"]
    return int(value["N"] if isinstance(value, dict) else value)


def cancellation_reasons(error: ClientError) -> list[dict[str, Any]]:
    """A cancelled transaction's reasons, one per item (empty for any other error)."""
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return []
    return list(error.response.get("CancellationReasons") or [])


@dataclass(frozen=True)
class RegionStores:
    region: str
    orders: OrderStore
    trades: TradeStore
    sequences: SequenceStore

    @classmethod
    def for_region(cls, region: str, prefix: str, counted_symbols: Iterable[str] = ()) -> RegionStores:
        """`counted_symbols`: the markets with a position limit, whose trades move the counters."""
        names = table_names(prefix)
        sequences = SequenceStore(region, names["sequences"])
        return cls(
            region=region,
            orders=OrderStore(region, names["orders"]),
            trades=TradeStore(region, names["trades"], positions=sequences, counted_symbols=frozenset(counted_symbols)),
            sequences=sequences,
        )


    def commit_fills(self, fills: Sequence[tuple[Order, StatusChange, Decimal, Sequence[Trade]]]) -> bool:
        """A batch's trades and final statuses in one TransactWriteItems: each trade only
        if it is not there yet, each status only if its order is still open. True if all
        were written. False if the transaction was refused, failed or would be too large:
        then nothing was written, and the caller goes the long way (put_many_once, then
        finish_many), which sorts out per order what refused it (a redelivery, a race)."""
        items = [
            {"Put": {"TableName": self.trades.table, "Item": to_attrs(trade_to_item(t)), "ConditionExpression": "attribute_not_exists(pk)"}}
            for *_, trades in fills
            for t in trades
        ]
        items += [{"Update": self.orders._finish_update(order, change, qty)} for order, change, qty, _ in fills]
        if not items or len(items) > TRANSACTION_ITEMS:
            return False
        try:
            # No SDK retries: a throttled try goes the long way, which retries as usual.
            aws.client("dynamodb", self.region, retries=False).transact_write_items(TransactItems=items)
        except (BotoCoreError, ClientError) as error:
            log.debug("a batch's fills in one transaction: %s; one by one instead", str(error)[:200])
            return False
        return True


    def commit_execution(
        self, trades: Sequence[Trade], writes: Sequence[OrderWrite], positions: Mapping[tuple[str, str], Decimal], fence: Fence | None
    ) -> bool:
        """An engine's execution in one TransactWriteItems: its trades (each only if absent),
        every touched order's new state (each only over the state it was computed from),
        the position counters it moves, and the lease check. True if written; False if an
        order or trade refused (a replay, a race: the caller writes it the long way, which
        sorts out per item what is already there) or it is too large for one transaction.
        LeaseLost if another task holds the lease."""
        items: list[dict[str, Any]] = [
            {"Put": {"TableName": self.trades.table, "Item": to_attrs(trade_to_item(t)), "ConditionExpression": "attribute_not_exists(pk)"}}
            for t in trades
        ]
        items += [{"Update": self.orders.write_update(w)} for w in writes]
        items += [self.sequences.position_change(client, symbol, delta) for (client, symbol), delta in positions.items() if delta]
        if fence is not None:
            items.append(self.sequences.lease_check(fence.name, fence.epoch))
        if len(items) > TRANSACTION_ITEMS:
            return False
        return self._transact(items, fence)

    def _transact(self, items: list[dict[str, Any]], fence: Fence | None) -> bool:
        """One transaction, retried on conflicts with other transactions; False if one of
        its conditions refused (other than the lease's: LeaseLost)."""
        ddb = aws.client("dynamodb", self.region)
        for attempt in range(SEQ_ATTEMPTS):
            try:
                ddb.transact_write_items(TransactItems=items)
                return True
            except ClientError as error:
                reasons = [r.get("Code") for r in cancellation_reasons(error)]
                if not reasons:
                    raise
                if fence is not None and reasons[-1] == "ConditionalCheckFailed":
                    raise LeaseLost(f"the {fence.name} lease of {self.region} moved past epoch {fence.epoch}") from error
                if "ConditionalCheckFailed" in reasons:
                    return False
                if "TransactionConflict" not in reasons:
                    raise
                time.sleep(aws.backoff_s(attempt + 1))
        raise RuntimeError(f"a transaction in {self.region} kept conflicting with others")

    def write_execution_long_way(
        self, trades: Sequence[Trade], writes: Sequence[OrderWrite], positions_of: Mapping[str, Mapping[tuple[str, str], Decimal]], fence: Fence | None
    ) -> dict[str, bool]:
        """An execution item by item, in order: the trades (a trade that moves a counter moves
        its taker's with it, as put_once does), then each order's state with the counters of
        its client that it moves (`positions_of[order_id]`), each under the lease check.
        Returns, per order, whether its write went in (False: it was already there)."""
        for trade in trades:
            if self.trades.counts(trade.symbol):
                self.trades.put_once(trade)
            else:
                self.trades.put_many_once([trade])
        written: dict[str, bool] = {}
        for write in writes:
            items: list[dict[str, Any]] = [{"Update": self.orders.write_update(write)}]
            items += [
                self.sequences.position_change(client, symbol, delta)
                for (client, symbol), delta in positions_of.get(write.before.order_id, {}).items()
                if delta
            ]
            if fence is not None:
                items.append(self.sequences.lease_check(fence.name, fence.epoch))
            written[write.before.order_id] = self._transact(items, fence)
        return written


def is_final(status: str) -> bool:
    return status in FINAL_STATUSES
