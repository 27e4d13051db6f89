"""Creates the exchange's AWS resources in every region, idempotently.

Tables (Orders, Trades with Streams on; the per-market sequence counters) and an SQS
FIFO queue per region with a dead-letter queue behind it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from trading import aws
from trading.config import ExchangeConfig
from trading.queue import dlq_name, queue_name
from trading.store import table_names

MAX_RECEIVE_COUNT = 5


def plan(config: ExchangeConfig) -> list[str]:
    steps = []
    for region in config.regions:
        for role, name in table_names(config.table_prefix).items():
            streams = " (Streams: NEW_AND_OLD_IMAGES)" if role != "sequences" else ""
            steps.append(f"{region}: DynamoDB table {name}, pk (S), on-demand{streams}")
        steps.append(f"{region}: SQS FIFO queue {dlq_name(config.table_prefix, region)}")
        steps.append(
            f"{region}: SQS FIFO queue {queue_name(config.table_prefix, region)} "
            f"(visibility {config.visibility_timeout_s}s, redrive to the DLQ after {MAX_RECEIVE_COUNT} receives)"
        )
    return steps


def ensure_table(region: str, name: str, streams: bool) -> bool:
    ddb = aws.client("dynamodb", region)
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if streams:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    try:
        ddb.create_table(**kwargs)
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceInUseException":
            return False
        raise
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return True


def ensure_queue(region: str, name: str, attributes: dict[str, str]) -> tuple[str, bool]:
    sqs = aws.client("sqs", region)
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes={k: v for k, v in attributes.items() if k != "FifoQueue"})
        return url, False
    except ClientError as error:
        if "NonExistentQueue" not in error.response["Error"]["Code"]:
            raise
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url, True


def bootstrap(config: ExchangeConfig, say: Callable[[str], None] = lambda line: None) -> None:
    for region in config.regions:
        names = table_names(config.table_prefix)
        for role, name in names.items():
            created = ensure_table(region, name, streams=role != "sequences")
            say(f"{region}: table {name} {'created' if created else 'exists'}")
        dlq_url, created = ensure_queue(
            region,
            dlq_name(config.table_prefix, region),
            {"FifoQueue": "true", "MessageRetentionPeriod": "1209600"},
        )
        say(f"{region}: queue {dlq_name(config.table_prefix, region)} {'created' if created else 'exists'}")
        dlq_arn = aws.client("sqs", region).get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        _, created = ensure_queue(
            region,
            queue_name(config.table_prefix, region),
            {
                "FifoQueue": "true",
                "VisibilityTimeout": str(config.visibility_timeout_s),
                "ReceiveMessageWaitTimeSeconds": "20",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}),
            },
        )
        say(f"{region}: queue {queue_name(config.table_prefix, region)} {'created' if created else 'exists'}")
