"""The SQS FIFO adapter: send, receive, delete, and the queue's depth."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from trading import aws
from trading.names import dlq_name as dlq_name  # re-exported: the names are pure (trading.names)
from trading.names import queue_name as queue_name


@dataclass(frozen=True)
class Message:
    body: dict[str, Any]
    receipt_handle: str
    message_id: str
    receive_count: int


_url_lock = threading.Lock()
_urls: dict[tuple[str, str, str | None], str] = {}


@dataclass(frozen=True)
class OrderQueue:
    region: str
    name: str

    @property
    def _sqs(self) -> Any:
        return aws.client("sqs", self.region)

    @property
    def url(self) -> str:
        key = (self.region, self.name, aws.resolve_endpoint(self.region))
        found = _urls.get(key)
        if found:
            return found
        url = self._sqs.get_queue_url(QueueName=self.name)["QueueUrl"]
        with _url_lock:
            _urls[key] = url
        return url

    def send(self, body: dict[str, Any], group_id: str, dedup_id: str) -> str:
        response = self._sqs.send_message(
            QueueUrl=self.url,
            MessageBody=json.dumps(body, separators=(",", ":")),
            MessageGroupId=group_id,
            MessageDeduplicationId=dedup_id,
        )
        return str(response["MessageId"])

    def send_batch(self, messages: list[tuple[dict[str, Any], str, str]]) -> set[int]:
        """Send (body, group id, deduplication id) messages, at most ten, in order, in one
        SendMessageBatch. Returns the indexes SQS refused (the caller re-sends those)."""
        response = self._sqs.send_message_batch(
            QueueUrl=self.url,
            Entries=[
                {
                    "Id": str(index),
                    "MessageBody": json.dumps(body, separators=(",", ":")),
                    "MessageGroupId": group_id,
                    "MessageDeduplicationId": dedup_id,
                }
                for index, (body, group_id, dedup_id) in enumerate(messages)
            ],
        )
        return {int(entry["Id"]) for entry in response.get("Failed", [])}

    def receive(self, max_messages: int = 10, wait_s: int = 20, visibility_timeout: int | None = None) -> list[Message]:
        kwargs: dict[str, Any] = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_s,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount", "MessageGroupId", "SequenceNumber"],
        }
        if visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = visibility_timeout
        response = self._sqs.receive_message(**kwargs)
        messages = []
        for raw in response.get("Messages", []):
            try:
                body = json.loads(raw["Body"])
            except ValueError:
                body = {"type": "Unreadable", "raw": raw["Body"][:200]}
            messages.append(
                Message(
                    body=body,
                    receipt_handle=raw["ReceiptHandle"],
                    message_id=raw["MessageId"],
                    receive_count=int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                )
            )
        return messages

    def delete(self, receipt_handle: str) -> None:
        self._sqs.delete_message(QueueUrl=self.url, ReceiptHandle=receipt_handle)

    def delete_batch(self, receipt_handles: list[str]) -> int:
        """Delete up to 10 messages in one call; returns how many SQS could not delete
        (they come back after the visibility timeout, and applying them again is a no-op)."""
        if not receipt_handles:
            return 0
        entries = [{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(receipt_handles)]
        failed = 0
        for start in range(0, len(entries), 10):
            response = self._sqs.delete_message_batch(QueueUrl=self.url, Entries=entries[start : start + 10])
            failed += len(response.get("Failed", []))
        return failed

    def depth(self) -> tuple[int, int]:
        """(visible, in flight) messages."""
        attrs = self._sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs.get("ApproximateNumberOfMessages", 0)), int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))


def forget_urls() -> None:
    with _url_lock:
        _urls.clear()
