"""Each region can have its own endpoint, as in AWS: the soak serves each region from its
own moto server, and every client and queue of a region then goes to that server alone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest

from trading import aws
from trading.config import VAR_DIR
from trading.motoserver import MotoServer
from trading.queue import OrderQueue, forget_urls


@pytest.fixture
def second_server(moto_server: MotoServer) -> Iterator[MotoServer]:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    server = MotoServer().start()
    yield server
    aws.use_region_endpoints({})
    forget_urls()
    server.stop()


def queue_names(url: str, region: str) -> list[str]:
    sqs = boto3.client("sqs", region_name=region, endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing")
    return [u.rsplit("/", 1)[-1] for u in sqs.list_queues().get("QueueUrls", [])]


def test_a_regions_calls_go_to_its_own_endpoint(moto_server: MotoServer, second_server: MotoServer) -> None:
    aws.use_region_endpoints({"eu-west-1": second_server.url})
    forget_urls()
    name = f"r-{uuid.uuid4().hex[:10]}.fifo"
    for region in ("us-east-1", "eu-west-1"):
        aws.client("sqs", region).create_queue(QueueName=name, Attributes={"FifoQueue": "true"})
    assert aws.resolve_endpoint("eu-west-1") == second_server.url
    assert aws.resolve_endpoint("us-east-1") == moto_server.url
    assert name in queue_names(second_server.url, "eu-west-1")
    assert name not in queue_names(moto_server.url, "eu-west-1")
    assert name in queue_names(moto_server.url, "us-east-1")

    # A queue's URL is looked up per endpoint: a message sent in eu-west-1 lands on its server.
    OrderQueue("eu-west-1", name).send({"order_id": "o1"}, group_id="g", dedup_id="d1")
    sqs = boto3.client("sqs", region_name="eu-west-1", endpoint_url=second_server.url, aws_access_key_id="testing", aws_secret_access_key="testing")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"] == "1"

    aws.use_region_endpoints({})
    assert aws.resolve_endpoint("eu-west-1") == moto_server.url
