"""`python -m trading.moto_main`: the moto server the project runs, with hot spots
of moto's own fixed. Profiles of a seeded soak (py-spy on the server) found them; the
server answers every call as before.

1. The clock. moto reads "now" through datetime arithmetic (`moto.core.utils.unix_time`:
   `utcnow()` minus `utcfromtimestamp(0)`, about 17 us), and SQS asks for it once per
   message in the queue on every receive and depth query: about 30 % of the server's CPU
   once a backlog built up. `time.time()` is the same number for the current time
   (about 1 us); an explicit datetime still goes the long way.
2. The long poll of a FIFO queue whose message group is in flight. moto waits with
   `Condition.wait_for(lambda: queue.messages)`, which returns at once while any message
   is visible, even one it may not deliver because its group is held by another consumer:
   every other worker of the region then spins for its whole wait time (over half of the
   server's CPU in the soak). Here the wait sleeps until a message is added (moto notifies)
   or 0.1 s passes, and the receive loop looks again, as a real long poll does.
3. A queue's attributes. moto builds every attribute of a queue, the approximate message
   counts included (three passes over every message in the queue, two property reads
   per message), each time anything reads one of them, and SendMessage reads the
   queue's ContentBasedDeduplication that way four times. With 2,000 orders queued in
   the 10,000-order soak that was over a third of the server's CPU (py-spy). Here a
   send, alone or in a batch, skips the counts (it reads none of them; they read 0
   inside a send), and a GetQueueAttributes counts in one pass.
4. Per request, moto's router lists its own package directory (`list_of_moto_modules`:
   a listdir and ~150 isdir calls) to recognise a service name, and werkzeug logs a line
   per request: 9 % and 11 % of the server's CPU in the soak. The module list is read
   once here, and only warnings are logged.
5. A queue's visible messages. Every receive, and every wake-up of a long poll (each
   send wakes them all), lists the visible messages through two properties per message,
   each reading the clock: with a backlog of thousands that is milliseconds per look.
   Here the clock is read once per listing and the messages' own fields compared.
6. DynamoDB's answers. moto 5.2 writes every response through its generic serializer,
   which walks botocore's shape model member by member and looks each member up under
   several candidate names: for an item that is the ten members of AttributeValue for
   every attribute. In the soak's final check (Scans of every table) that was over half
   of the server's CPU (py-spy), and every GetItem, BatchGetItem and stream record pays
   it too. Here an AttributeValue that is a plain dict is written in one pass with the
   serializer's own rules (strings as str, blobs through its base64, nested M and L the
   same way); anything else takes moto's path.
7. Connections. werkzeug's development server answers every request with
   `Connection: close`, so each AWS call opened a TCP connection, and moto started a
   thread to serve it and tore both down after one answer: in the soak, connecting was
   12 % of the exchange process's samples and the socket churn a tenth of the server's.
   werkzeug closes because http.server cannot drain an unread body before the next
   request line. Here a request that states its length (every AWS call does) is read
   whole before moto sees it, so nothing can be left unread, and the connection stays
   open for the client's next call; a chunked or HTTP/1.0 request still closes it.
   Such a request also skips werkzeug's after-response drain (a selector made, polled
   for 10 ms and closed per request), which has nothing left to drain; and the server
   sends without Nagle's delay, which would otherwise hold a response's body until the
   client acknowledged its headers.
8. A FIFO group locked for good. moto's receive and delete are not atomic against each
   other: a batch whose visibility timeout ran out is received again by one task while
   the task that first held it deletes it, and the receive can mark a message "in
   flight" after the delete removed it from the queue. Its group then counts as being
   processed forever and the queue delivers nothing more from it (seen in a 10,000-order
   soak: 5,315 messages visible, none deliverable, for minutes). Real SQS never holds a
   group for a message that is gone; here a group is held only by in-flight messages
   that are still in the queue.
9. TransactWriteItems. moto deep-copies every table a transaction names before it
   starts, to put the copy back if the transaction is cancelled: the cost grows with the
   table (a 10,000-order soak stalled on it), and putting a copy back drops whatever
   other requests wrote to that table meanwhile (a replicated trade, another worker's
   status). Here, under one lock for transactions, every condition is checked first and
   nothing is written unless all hold; a write that fails after that (an invalid update)
   puts back only the items this transaction touched, and says so in the stream.
10. The cyclic collector. A full collection walks every object the server holds, and a
   soak's tables are hundreds of thousands of them: each pass stopped every request for
   100-200 ms, six times in 600 orders; once with `trading.collector` settled.
11. Names. Every request lists its response class's methods (`inspect.getmembers`,
   33 us for DynamoDB's) to find the action's, and converts names from camel case a
   character at a time (4.5 us a name), the same few names each time: an SQS queue's
   attributes, built name by name several times for every message sent or received.
   Both are remembered here (0.07 us a name).
"""

from __future__ import annotations

import copy
import datetime
import functools
import io
import logging
import re
import selectors
import sys
import threading
import time
from types import ModuleType
from typing import Any

from moto.core import utils

_unix_time = utils.unix_time
LONG_POLL_RECHECK_S = 0.1
_unix_time_millis = utils.unix_time_millis


def unix_time(dt: datetime.datetime | None = None) -> float:
    return time.time() if dt is None else _unix_time(dt)


def unix_time_millis(dt: datetime.datetime | None = None) -> float:
    return time.time() * 1000.0 if dt is None else _unix_time_millis(dt)


_camelcase_to_underscores = utils.camelcase_to_underscores
_method_names_from_class = utils.method_names_from_class


@functools.lru_cache(maxsize=4096)
def camelcase_to_underscores(argument: str) -> str:
    """moto's name conversion, a character loop, remembered: the same few names come back
    on every request (an action's name, each attribute of a queue)."""
    return _camelcase_to_underscores(argument)


@functools.lru_cache(maxsize=None)
def method_names_from_class(clazz: object) -> frozenset[str]:
    """A response class's method names, listed once per class rather than per request."""
    return frozenset(_method_names_from_class(clazz))


def install() -> list[str]:
    """Point every loaded moto module that imported the slow clock at the cheap one."""
    import moto.dynamodb.models  # noqa: F401  (the services the exchange uses, loaded now so
    import moto.dynamodb.models.table  # noqa: F401   their imported names can be patched)
    import moto.dynamodbstreams.models  # noqa: F401
    import moto.sqs.models  # noqa: F401

    from moto.sqs.models import Queue

    def wait_for_messages(self: Queue, timeout: int) -> None:
        with self._messages_lock:
            self._messages_lock.wait(timeout=min(float(timeout), LONG_POLL_RECHECK_S))

    Queue.wait_for_messages = wait_for_messages  # type: ignore[method-assign]
    patched = ["moto.sqs.models.Queue.wait_for_messages", *_install_queue_counts(), *_install_attribute_values()]

    patched += _install_keep_alive()
    patched += install_live_pending_groups()
    patched += install_transactions()

    import moto.backends

    modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
    patched.append("moto.backends.list_of_moto_modules")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    for name, module in list(sys.modules.items()):
        if not name.startswith("moto.") or not isinstance(module, ModuleType):
            continue
        for attr, slow, fast in (
            ("unix_time", _unix_time, unix_time),
            ("unix_time_millis", _unix_time_millis, unix_time_millis),
            ("camelcase_to_underscores", _camelcase_to_underscores, camelcase_to_underscores),
            ("method_names_from_class", _method_names_from_class, method_names_from_class),
        ):
            if getattr(module, attr, None) is slow:
                setattr(module, attr, fast)
                patched.append(f"{name}.{attr}")
    return patched


_request = threading.local()  # .sending: inside a SendMessage; .counts: this read's counts; .kept_alive: a kept-alive request
COUNTED = ("approximate_number_of_messages", "approximate_number_of_messages_not_visible", "approximate_number_of_messages_delayed")


def _count_messages(queue: Any) -> dict[str, int]:
    visible = not_visible = delayed = 0
    now_ms = time.time() * 1000.0
    for message in list(queue._messages):
        is_visible, is_delayed = now_ms > message.visible_at, now_ms < message.delayed_until
        not_visible += not is_visible
        delayed += is_delayed
        visible += is_visible and not is_delayed
    return {COUNTED[0]: visible, COUNTED[1]: not_visible, COUNTED[2]: delayed}


def visible_messages(self: Any) -> list[Any]:
    """moto's Queue.messages (visible and not delayed), with one clock read."""
    now_ms = time.time() * 1000.0
    return [m for m in self._messages if now_ms > m.visible_at and not now_ms < m.delayed_until]


def _install_queue_counts() -> list[str]:
    from moto.sqs.models import Queue, SQSBackend

    build_attributes = Queue.attributes.fget

    def attributes(self: Any) -> dict[str, Any]:
        if getattr(_request, "sending", False):
            return build_attributes(self)  # type: ignore[misc]
        _request.counts = _count_messages(self)
        try:
            return build_attributes(self)  # type: ignore[misc]
        finally:
            _request.counts = None

    def counted(name: str) -> property:
        def read(self: Any) -> int:
            if getattr(_request, "sending", False):
                return 0
            counts = getattr(_request, "counts", None)
            return counts[name] if counts is not None else _count_messages(self)[name]

        return property(read)

    def sending(send: Any) -> Any:
        def send_uncounted(self: Any, *args: Any, **kwargs: Any) -> Any:
            outer = getattr(_request, "sending", False)  # a batch's sends nest in the batch
            _request.sending = True
            try:
                return send(self, *args, **kwargs)
            finally:
                _request.sending = outer

        return send_uncounted

    Queue.messages = property(visible_messages)  # type: ignore[method-assign,assignment]
    Queue.attributes = property(attributes)  # type: ignore[method-assign,assignment]
    for name in COUNTED:
        setattr(Queue, name, counted(name))
    SQSBackend.send_message = sending(SQSBackend.send_message)  # type: ignore[method-assign]
    # A batch's validation reads ContentBasedDeduplication through the attributes twice per
    # entry before any send starts: the same skip as a single send.
    SQSBackend.send_message_batch = sending(SQSBackend.send_message_batch)  # type: ignore[method-assign]
    return [
        "moto.sqs.models.Queue.messages",
        "moto.sqs.models.Queue.attributes",
        *(f"moto.sqs.models.Queue.{name}" for name in COUNTED),
        "moto.sqs.models.SQSBackend.send_message",
        "moto.sqs.models.SQSBackend.send_message_batch",
    ]


class _Unplain(Exception):
    """An AttributeValue that is not a plain dict of known members: moto's path writes it."""


_STRING = ("S", "N")
_PASS = ("NULL", "BOOL")


def _string(value: Any) -> Any:
    # moto's _serialize_type_string, for the values an AttributeValue can hold.
    return str(value) if value not in [None, {}, []] else value


def attribute_value(serializer: Any, value: Any) -> dict[str, Any]:
    """One AttributeValue as moto's JSON serializer writes it, in one pass."""
    if not isinstance(value, dict):
        raise _Unplain
    out: dict[str, Any] = {}
    for member, inner in value.items():
        if inner is None:
            continue
        if member in _STRING:
            out[member] = _string(inner)
        elif member in _PASS:
            out[member] = inner
        elif member in ("SS", "NS"):
            out[member] = [_string(x) for x in inner]
        elif member == "B":
            out[member] = serializer._base64(inner)
        elif member == "BS":
            out[member] = [serializer._base64(x) for x in inner]
        elif member == "M":
            out[member] = {name: attribute_value(serializer, x) for name, x in inner.items()}
        elif member == "L":
            out[member] = [attribute_value(serializer, x) for x in inner]
        else:
            raise _Unplain
    return out


def plain_attribute_values(generic: Any) -> Any:
    """moto's JSON `_serialize` with the one-pass AttributeValue in front of it."""

    def serialize(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if shape.name == "AttributeValue" and isinstance(value, dict):
            try:
                serialized[self.get_serialized_name(shape, key)] = attribute_value(self, value)
                return
            except _Unplain:
                ...  # not a plain AttributeValue: moto's own path below writes it
        generic(self, serialized, value, shape, key)

    return serialize


def _install_attribute_values() -> list[str]:
    from moto.core.serialize import BaseJSONSerializer

    BaseJSONSerializer._serialize = plain_attribute_values(BaseJSONSerializer._serialize)  # type: ignore[method-assign]
    return ["moto.core.serialize.BaseJSONSerializer._serialize"]


def keeps_alive(handler: Any) -> bool:
    """Whether this request's connection can serve the next one: HTTP/1.1, the client did
    not ask to close, and the body's end is known without reading past it."""
    headers = handler.headers
    if handler.request_version != "HTTP/1.1" or handler.close_connection:
        return False
    if "transfer-encoding" in {k.lower() for k in headers.keys()}:
        return False
    length = headers.get("Content-Length")
    # ASCII digits only: str.isdigit() also takes "²", which int() then refuses.
    return length is None or re.fullmatch(r"[0-9]{1,18}", length.strip()) is not None


class _NothingToDrain:
    """werkzeug's after-response drain, for a request whose body was read whole."""

    def register(self, *args: Any, **kwargs: Any) -> None:
        return None

    def select(self, timeout: float | None = None) -> list[Any]:
        return []

    def close(self) -> None:
        return None


class _DrainSelectors:
    """The `selectors` module as werkzeug.serving sees it."""

    EVENT_READ = selectors.EVENT_READ

    def __getattr__(self, name: str) -> Any:
        return getattr(selectors, name)

    @staticmethod
    def DefaultSelector() -> Any:  # noqa: N802 (the module's name)
        return _NothingToDrain() if getattr(_request, "kept_alive", False) else selectors.DefaultSelector()


def _install_keep_alive() -> list[str]:
    import werkzeug.serving
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    run_wsgi = MotoRequestHandler.run_wsgi
    send_header = MotoRequestHandler.send_header

    def run_wsgi_kept_alive(self: Any) -> None:
        if not keeps_alive(self):
            return run_wsgi(self)  # type: ignore[no-any-return]
        length = int(self.headers.get("Content-Length") or 0)
        connection_rfile = self.rfile
        # The whole body, read before the app runs: werkzeug's after-response drain and
        # an app that stops early then read this copy, never the next request line.
        self.rfile = io.BytesIO(connection_rfile.read(length) if length else b"")
        self.keep_alive = _request.kept_alive = True
        try:
            run_wsgi(self)
        finally:
            self.rfile = connection_rfile
            self.keep_alive = _request.kept_alive = False

    def send_header_kept_alive(self: Any, keyword: str, value: str) -> None:
        if getattr(self, "keep_alive", False) and keyword.lower() == "connection" and value.lower() == "close":
            return
        send_header(self, keyword, value)

    MotoRequestHandler.disable_nagle_algorithm = True
    werkzeug.serving.selectors = _DrainSelectors()  # type: ignore[assignment]
    MotoRequestHandler.run_wsgi = run_wsgi_kept_alive  # type: ignore[method-assign]
    MotoRequestHandler.send_header = send_header_kept_alive  # type: ignore[method-assign]
    return [
        "moto.moto_server.werkzeug_app.MotoRequestHandler.run_wsgi",
        "moto.moto_server.werkzeug_app.MotoRequestHandler.send_header",
        "moto.moto_server.werkzeug_app.MotoRequestHandler.disable_nagle_algorithm",
        "werkzeug.serving.selectors",
    ]


def install_live_pending_groups() -> list[str]:
    from moto.sqs.models import Queue

    def pending_message_groups(self: Any) -> set[str]:
        pending = list(self._pending_messages)
        if not pending:
            return set()
        live = set(self._messages)
        return {m.group_id for m in pending if m.group_id is not None and m in live}

    Queue.pending_message_groups = property(pending_message_groups)  # type: ignore[method-assign,assignment]
    return ["moto.sqs.models.Queue.pending_message_groups"]


_TRANSACTIONS = threading.Lock()


def install_transactions() -> list[str]:
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.models import DynamoDBBackend, get_filter_expression

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        with _TRANSACTIONS:
            ops: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
            errors: list[Any] = []
            targets: set[tuple[str, str]] = set()
            for entry in transact_items:
                if len(entry) > 1:
                    raise TransactWriteSingleOpException
                original_item = None
                try:
                    op_type, op = next(iter(entry.items()))
                    if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                        raise ValueError("Unsupported transaction operation")
                    table = self.get_table(op["TableName"])
                    if op_type == "Put":
                        key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                        if table.range_key_attr is not None:
                            key[table.range_key_attr] = op["Item"][table.range_key_attr]
                    else:
                        key = op["Key"]
                    target = (str(op["TableName"]), str(dict(sorted(key.items()))))
                    if target in targets:
                        raise MultipleTransactionsException()
                    targets.add(target)
                    ops.append((op_type, op, key))
                    current = self.get_item(op["TableName"], key)
                    condition = op.get("ConditionExpression")
                    if condition is not None:
                        check = get_filter_expression(condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues"))
                        if not check.expr(current):
                            if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                                original_item = current.to_json()["Attributes"]
                            raise ConditionalCheckFailed(item=original_item)
                    errors.append((None, None, None))
                except (MultipleTransactionsException, MockValidationException):
                    raise
                except ConditionalCheckFailed as error:
                    errors.append(("ConditionalCheckFailed", str(error.message), original_item))
                except Exception as error:  # moto's own catch-all, kept
                    errors.append((type(error).__name__, str(error), original_item))
            if any(code is not None for code, _, _ in errors):
                raise TransactionCanceledException(errors)
            before = [(op["TableName"], key, copy.deepcopy(self.get_item(op["TableName"], key))) for _, op, key in ops]
            done = 0
            try:
                for op_type, op, key in ops:
                    names, values, condition = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues"), op.get("ConditionExpression")
                    if op_type == "Put":
                        self.put_item(op["TableName"], op["Item"], condition_expression=condition, expression_attribute_names=names, expression_attribute_values=values)
                    elif op_type == "Delete":
                        self.delete_item(op["TableName"], key, condition_expression=condition, expression_attribute_names=names, expression_attribute_values=values)
                    elif op_type == "Update":
                        self.update_item(
                            op["TableName"], key, update_expression=op["UpdateExpression"], condition_expression=condition,
                            expression_attribute_names=names, expression_attribute_values=values,
                        )
                    done += 1
            except Exception as error:
                for table_name, key, old in before[:done]:
                    _put_back(self, table_name, key, old)
                if isinstance(error, (MultipleTransactionsException, MockValidationException)):
                    raise
                raise TransactionCanceledException(
                    [(None, None, None)] * done + [(type(error).__name__, str(error), None)] + [(None, None, None)] * (len(ops) - done - 1)
                ) from error

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    return ["moto.dynamodb.models.DynamoDBBackend.transact_write_items"]


def _put_back(backend: Any, table_name: str, key: dict[str, Any], old: Any) -> None:
    """An item as it was before a transaction that failed part-way; the stream records
    the change back, so a reader of the stream ends where the table does."""
    table = backend.get_table(table_name)
    hash_value, range_value = backend.get_keys_value(table, key)
    now = table.get_item(hash_value, range_value)
    if table.range_key_attr is not None:
        if old is None:
            table.items[hash_value].pop(range_value, None)
        else:
            table.items[hash_value][range_value] = old
    elif old is None:
        table.items.pop(hash_value, None)
    else:
        table.items[hash_value] = old
    if table.stream_shard is not None and (now is not None or old is not None):
        table.stream_shard.add(now, old)


def main(argv: list[str] | None = None) -> None:
    install()
    from moto.server import main as moto_main

    from trading.collector import settle_collector

    settle_collector()
    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
