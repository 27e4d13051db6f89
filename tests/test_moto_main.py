"""The moto server the project runs (`trading/moto_main.py`) answers SQS as moto does:
its patches (clock, FIFO long poll, queue attributes) change the cost, never the answers."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

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
