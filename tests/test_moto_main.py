"""The moto server the project runs (`trading/moto_main.py`) answers SQS as moto does:
its patches (clock, FIFO long poll, queue attributes) change the cost, never the answers."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trading.motoserver import MotoServer


@pytest.fixture
def sqs(moto_server: MotoServer) -> Any:
    return boto3.client(
        "sqs", region_name="us-east-1", endpoint_url=moto_server.url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def fifo_queue(sqs: Any, **attributes: str) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}.fifo"
    return str(sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true", **attributes})["QueueUrl"])


def counts(sqs: Any, url: str) -> tuple[int, int, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return tuple(int(got[name]) for name in names)  # type: ignore[return-value]


def test_it_counts_a_queues_messages_as_they_are_sent_received_and_deleted(sqs: Any) -> None:
    url = fifo_queue(sqs)
    for n in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{n}", MessageGroupId="A" if n < 2 else "B", MessageDeduplicationId=f"d{n}")
    sqs.send_message(QueueUrl=url, MessageBody="again", MessageGroupId="A", MessageDeduplicationId="d0")  # a duplicate: dropped
    assert counts(sqs, url) == (3, 0, 0)
    taken = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=30)["Messages"]
    assert [m["Body"] for m in taken] == ["m0"]
    assert counts(sqs, url) == (2, 1, 0)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=taken[0]["ReceiptHandle"])
    assert counts(sqs, url) == (2, 0, 0)
    all_attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert all_attributes["FifoQueue"] == "true" and all_attributes["ApproximateNumberOfMessages"] == "2"


def test_it_still_refuses_a_fifo_send_without_a_deduplication_id(sqs: Any) -> None:
    url = fifo_queue(sqs)
    with pytest.raises(ClientError):
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="A")
    content_based = fifo_queue(sqs, ContentBasedDeduplication="true")
    sqs.send_message(QueueUrl=content_based, MessageBody="x", MessageGroupId="A")
    sqs.send_message(QueueUrl=content_based, MessageBody="x", MessageGroupId="A")  # same body: deduplicated
    assert counts(sqs, content_based) == (1, 0, 0)


def test_a_batch_send_keeps_fifo_order_deduplicates_and_still_validates(sqs: Any) -> None:
    url = fifo_queue(sqs)
    for n in range(300):  # a backlog, ahead of the batch in another group
        sqs.send_message(QueueUrl=url, MessageBody=f"old{n}", MessageGroupId="Z", MessageDeduplicationId=f"old{n}")
    entries = [{"Id": str(n), "MessageBody": f"b{n}", "MessageGroupId": "A", "MessageDeduplicationId": f"b{n}"} for n in range(10)]
    answer = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert len(answer["Successful"]) == 10 and not answer.get("Failed")
    again = sqs.send_message_batch(QueueUrl=url, Entries=entries[:3])  # re-sent: deduplicated
    assert len(again["Successful"]) == 3
    assert counts(sqs, url) == (310, 0, 0)
    got: list[str] = []
    for _ in range(200):
        if len(got) >= 10:
            break
        got += [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)["Messages"] if m["Body"].startswith("b")]
    assert got == [f"b{n}" for n in range(10)]
    with pytest.raises(ClientError):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "x", "MessageBody": "x", "MessageGroupId": "A"}])


def test_a_long_poll_returns_when_a_message_arrives_and_a_held_group_waits(sqs: Any) -> None:
    url = fifo_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="held", MessageGroupId="A", MessageDeduplicationId="h")
    held = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=30)["Messages"]
    sqs.send_message(QueueUrl=url, MessageBody="behind", MessageGroupId="A", MessageDeduplicationId="b")
    got: list[tuple[float, list[str]]] = []

    def poll() -> None:
        started = time.monotonic()
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5)
        got.append((time.monotonic() - started, [m["Body"] for m in response.get("Messages", [])]))

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)
    # Group A is held: "behind" is not delivered; a message of another group arrives and is.
    sqs.send_message(QueueUrl=url, MessageBody="other", MessageGroupId="B", MessageDeduplicationId="o")
    waiter.join(10)
    assert got and got[0][1] == ["other"]
    assert got[0][0] < 2.5  # it came with the message, not at the end of the 5 s wait
    assert held[0]["Body"] == "held"


def test_delayed_and_in_flight_messages_come_back_on_time(sqs: Any) -> None:
    url = str(sqs.create_queue(QueueName=f"t-{uuid.uuid4().hex[:12]}")["QueueUrl"])
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    sqs.send_message(QueueUrl=url, MessageBody="now")
    assert counts(sqs, url) == (1, 0, 1)
    taken = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=1)["Messages"]
    assert [m["Body"] for m in taken] == ["now"]  # the delayed one is not visible yet
    assert counts(sqs, url) == (0, 1, 1)
    time.sleep(1.3)
    assert counts(sqs, url) == (2, 0, 0)  # the delay is over, the visibility timeout too
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in again) == ["later", "now"]


def _dynamodb_serializer(operation: str) -> Any:
    from moto.core.serialize import XFormedAttributePicker, get_serializer_class
    from moto.core.utils import get_service_model

    model = get_service_model("dynamodb")
    return get_serializer_class("dynamodb", model.metadata["protocol"])(
        operation_model=model.operation_model(operation), value_picker=XFormedAttributePicker()
    )


_names = st.text(alphabet="abcXYZ_#", min_size=1, max_size=4)
_scalars = st.one_of(
    st.builds(lambda s: {"S": s}, st.text(max_size=6)),
    st.builds(lambda n: {"N": n}, st.one_of(st.integers(-10**6, 10**6), st.integers().map(str))),
    st.builds(lambda b: {"B": b}, st.one_of(st.binary(max_size=6), st.text(max_size=6))),
    st.builds(lambda b: {"BOOL": b}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda ss: {"SS": ss}, st.lists(st.text(max_size=4), max_size=3)),
    st.builds(lambda ns: {"NS": ns}, st.lists(st.integers(0, 99).map(str), max_size=3)),
    st.builds(lambda bs: {"BS": bs}, st.lists(st.binary(max_size=4), max_size=3)),
)
_attribute_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.builds(lambda m: {"M": m}, st.dictionaries(_names, inner, max_size=3)), st.builds(lambda l: {"L": l}, st.lists(inner, max_size=3))),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item=st.dictionaries(_names, _attribute_values, max_size=5))
def test_it_writes_dynamodb_items_exactly_as_moto_does(item: dict[str, Any]) -> None:
    """The one-pass AttributeValue writes the same bytes as moto's generic serializer,
    for every kind of value, nested or not (GetItem's Item and Scan's Items)."""
    from moto.core.serialize import BaseJSONSerializer

    from trading.moto_main import plain_attribute_values

    generic = BaseJSONSerializer._serialize
    for operation, result in (("GetItem", {"Item": item}), ("Scan", {"Items": [item, item], "Count": 2, "ScannedCount": 2})):
        expected = _dynamodb_serializer(operation).serialize(result)["body"]
        BaseJSONSerializer._serialize = plain_attribute_values(generic)  # type: ignore[method-assign]
        try:
            got = _dynamodb_serializer(operation).serialize(result)["body"]
        finally:
            BaseJSONSerializer._serialize = generic  # type: ignore[method-assign]
        assert json.loads(got) == json.loads(expected)


def test_it_leaves_a_value_it_does_not_know_to_moto() -> None:
    from trading.moto_main import _Unplain, attribute_value

    serializer = _dynamodb_serializer("GetItem")
    with pytest.raises(_Unplain):
        attribute_value(serializer, {"S": "x", "Z": 1})
    with pytest.raises(_Unplain):
        attribute_value(serializer, {"L": ["not a dict"]})
    assert attribute_value(serializer, {"M": {"a": {"N": 5}, "b": {"B": b"\x00"}}}) == {"M": {"a": {"N": "5"}, "b": {"B": "AA=="}}}


@settings(max_examples=200, deadline=None)
@given(name=st.text(alphabet=st.characters(categories=("Lu", "Ll", "Nd", "Zs")), max_size=24))
def test_the_remembered_name_conversion_is_mo_tos_own(name: str) -> None:
    from moto.core import utils

    from trading.moto_main import camelcase_to_underscores

    assert camelcase_to_underscores(name) == utils.camelcase_to_underscores(name)
    assert camelcase_to_underscores(name) == utils.camelcase_to_underscores(name)  # and again, remembered


def test_a_response_class_lists_its_methods_once() -> None:
    from moto.core import utils
    from moto.dynamodb.responses import DynamoHandler
    from moto.sqs.responses import SQSResponse

    from trading.moto_main import method_names_from_class

    for clazz in (DynamoHandler, SQSResponse):
        assert method_names_from_class(clazz) == set(utils.method_names_from_class(clazz))
        assert method_names_from_class(clazz) is method_names_from_class(clazz)
    assert "transact_write_items" in method_names_from_class(DynamoHandler)


def _sqs_call(connection: Any, action: str, body: dict[str, Any], **headers: str) -> Any:
    connection.request(
        "POST",
        "/",
        body=json.dumps(body),
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"AmazonSQS.{action}",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=x",
            **headers,
        },
    )
    response = connection.getresponse()
    return response, json.loads(response.read() or b"{}")


def test_one_connection_serves_many_calls(moto_server: MotoServer) -> None:
    """Calls with a body keep their connection open: the next call on the same socket is
    answered, with nothing of the first body left to be misread as a request line."""
    import http.client
    from urllib.parse import urlparse

    url = urlparse(moto_server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    name = f"k-{uuid.uuid4().hex[:10]}"
    response, created = _sqs_call(connection, "CreateQueue", {"QueueName": name})
    assert response.status == 200 and response.getheader("Connection") != "close"
    socket_before = connection.sock
    for n in range(3):
        response, _ = _sqs_call(connection, "SendMessage", {"QueueUrl": created["QueueUrl"], "MessageBody": f"m{n}" * 500})
        assert response.status == 200
    response, listed = _sqs_call(connection, "ListQueues", {"QueueNamePrefix": name})
    assert listed["QueueUrls"] == [created["QueueUrl"]]
    assert connection.sock is socket_before  # the same connection all along
    # A client that asks to close is closed on.
    response, _ = _sqs_call(connection, "ListQueues", {}, Connection="close")
    assert response.status == 200 and response.getheader("Connection") == "close"
    connection.close()


def test_a_deleted_message_left_marked_in_flight_does_not_hold_its_group() -> None:
    """The race that locked a FIFO group for good (a receive marking a message in flight
    after another task's delete removed it): the group's next message is delivered."""
    from moto.sqs.models import sqs_backends

    from trading.moto_main import install_live_pending_groups

    install_live_pending_groups()
    backend = sqs_backends["123456789012"]["us-east-1"]
    name = f"race-{uuid.uuid4().hex[:8]}.fifo"
    queue = backend.create_queue(name, FifoQueue="true")
    for n in range(2):
        backend.send_message(name, f"m{n}", group_id="BTC-USD", deduplication_id=f"d{n}")
    first = backend.receive_message(name, 1, 0, 30)
    assert [m.body for m in first] == ["m0"]
    assert backend.receive_message(name, 1, 0, 30) == []  # its group is in flight: nothing yet
    held = next(m for m in queue._messages if m.body == "m0")
    backend.delete_message(name, first[0].receipt_handle)
    queue.pending_messages.add(held)  # the racing receive's mark, after the delete
    assert [m.body for m in backend.receive_message(name, 1, 0, 30)] == ["m1"]


@pytest.fixture
def ddb(moto_server: MotoServer) -> Any:
    return boto3.client(
        "dynamodb", region_name="us-east-1", endpoint_url=moto_server.url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def _table(ddb: Any) -> str:
    name = f"tx-{uuid.uuid4().hex[:10]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def _put(table: str, pk: str, condition: bool = True) -> dict[str, Any]:
    put: dict[str, Any] = {"TableName": table, "Item": {"pk": {"S": pk}, "v": {"N": "1"}}}
    if condition:
        put["ConditionExpression"] = "attribute_not_exists(pk)"
    return {"Put": put}


def _add(table: str, pk: str, attribute: str = "n") -> dict[str, Any]:
    return {"Update": {"TableName": table, "Key": {"pk": {"S": pk}}, "UpdateExpression": f"ADD {attribute} :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}}


def test_a_transaction_writes_all_or_nothing(ddb: Any) -> None:
    table = _table(ddb)
    ddb.transact_write_items(TransactItems=[_put(table, "trade-1"), _add(table, "counter")])
    assert ddb.get_item(TableName=table, Key={"pk": {"S": "counter"}})["Item"]["n"] == {"N": "1"}
    # The same trade again: its condition fails, and the counter does not move.
    with pytest.raises(ClientError) as refused:
        ddb.transact_write_items(TransactItems=[_put(table, "trade-1"), _add(table, "counter")])
    assert refused.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in refused.value.response["CancellationReasons"]] == ["ConditionalCheckFailed", "None"]
    assert ddb.get_item(TableName=table, Key={"pk": {"S": "counter"}})["Item"]["n"] == {"N": "1"}
    # One item twice in a transaction is refused as AWS refuses it.
    with pytest.raises(ClientError) as twice:
        ddb.transact_write_items(TransactItems=[_put(table, "x", condition=False), _add(table, "x")])
    assert twice.value.response["Error"]["Code"] == "ValidationException"


def test_a_write_failing_after_the_checks_puts_back_what_the_transaction_wrote(ddb: Any) -> None:
    table = _table(ddb)
    ddb.put_item(TableName=table, Item={"pk": {"S": "text"}, "n": {"S": "not a number"}})
    with pytest.raises(ClientError) as failed:
        # Every condition holds; the ADD to a string fails only when it is applied.
        ddb.transact_write_items(TransactItems=[_put(table, "trade-2"), _add(table, "text")])
    assert failed.value.response["Error"]["Code"] in {"TransactionCanceledException", "ValidationException"}
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "trade-2"}})
    assert ddb.get_item(TableName=table, Key={"pk": {"S": "text"}})["Item"]["n"] == {"S": "not a number"}


def test_a_cancelled_transaction_keeps_the_table_others_write_to() -> None:
    """moto put a copy of the whole table back on a cancelled transaction, dropping what
    other requests wrote to it meanwhile; here the table is the same object throughout."""
    from moto.dynamodb.models import dynamodb_backends

    from trading.moto_main import install_transactions

    install_transactions()
    backend = dynamodb_backends["123456789012"]["us-east-1"]
    name = f"tx-{uuid.uuid4().hex[:10]}"
    backend.create_table(
        name,
        schema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        attr=[{"AttributeName": "pk", "AttributeType": "S"}],
        throughput=None,
        billing_mode="PAY_PER_REQUEST",
        indexes=None,
        global_indexes=None,
        streams=None,
        sse_specification=None,
        tags=[],
        deletion_protection_enabled=False,
        warm_throughput=None,
    )
    backend.put_item(name, {"pk": {"S": "trade-1"}})
    table = backend.tables[name]
    with pytest.raises(Exception, match="Transaction cancelled"):
        backend.transact_write_items([_put(name, "trade-1"), _put(name, "trade-3")])
    assert backend.tables[name] is table
    assert backend.get_item(name, {"pk": {"S": "trade-3"}}) is None


@pytest.mark.parametrize("length", [b"\xb2", b"\xb9\xb2", b"1_0", b" 7 "])
def test_it_answers_a_request_whose_content_length_is_not_plain_ascii_digits(moto_server: MotoServer, length: bytes) -> None:
    import socket
    from urllib.parse import urlparse

    # "²" passes str.isdigit() (headers are read as latin-1) and then fails int(): the
    # request must still get an HTTP answer, not a dropped connection.
    url = urlparse(moto_server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: " + length + b"\r\n\r\n{}")
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(64).startswith(b"HTTP/1.1 ")
