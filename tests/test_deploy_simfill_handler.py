"""The SimFill Lambda handler, fed real SQS FIFO event payloads built from the real queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from simfill import lambda_handler
from tests.conftest import order_payload
from trading import aws
from trading.actions import submit_order
from trading.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"


@dataclass(frozen=True)
class LambdaContext:
    """The attributes Lambda's context object carries (Powertools' Logger reads them)."""

    function_name: str = "exchange-simfill-us-east-1"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:exchange-simfill-us-east-1"
    memory_limit_in_mb: int = 256
    aws_request_id: str = "4f6c1a5e-0000-4000-8000-000000000001"
    log_group_name: str = "/aws/lambda/exchange-simfill-us-east-1"
    log_stream_name: str = "2026/11/25/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def lambda_env(exchange: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The environment a deployed simfill_us_east_1 stage runs with, against the moto server."""
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("EXCHANGE_REGIONS", ",".join(exchange.config.regions))
    monkeypatch.setenv("EXCHANGE_MARKETS", ",".join(exchange.config.market_symbols))
    monkeypatch.setenv("EXCHANGE_TABLE_PREFIX", exchange.config.table_prefix)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "ExchangeTest")
    lambda_handler.current_runtime.cache_clear()
    yield exchange
    lambda_handler.current_runtime.cache_clear()


def sqs_event(exchange: Any, region: str = REGION, expected: int | None = None) -> dict[str, Any]:
    """Receive what Lambda's poller would, and shape it exactly as Lambda hands it to the function."""
    queue = exchange.queues[region]
    sqs = aws.client("sqs", region)
    arn = sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    raw: list[dict[str, Any]] = []
    for _ in range(5):
        response = sqs.receive_message(
            QueueUrl=queue.url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=30,
            MessageSystemAttributeNames=["All"],
        )
        raw.extend(response.get("Messages", []))
        if expected is None or len(raw) >= expected:
            break
    records = [
        {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {
                "ApproximateReceiveCount": message["Attributes"]["ApproximateReceiveCount"],
                "SentTimestamp": message["Attributes"]["SentTimestamp"],
                "SequenceNumber": message["Attributes"]["SequenceNumber"],
                "MessageGroupId": message["Attributes"]["MessageGroupId"],
                "SenderId": message["Attributes"].get("SenderId", "AIDAEXAMPLE"),
                "MessageDeduplicationId": message["Attributes"]["MessageDeduplicationId"],
                "ApproximateFirstReceiveTimestamp": message["Attributes"]["ApproximateFirstReceiveTimestamp"],
            },
            "messageAttributes": {},
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": arn,
            "awsRegion": region,
        }
        for message in raw
    ]
    return {"Records": records}


def failed_ids(response: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def test_it_fills_the_orders_of_a_real_fifo_batch(lambda_env: Any) -> None:
    exchange = lambda_env
    orders = [submit_order(exchange, "alice", order_payload(qty=f"0.{n}000"), f"key-{n}")[0] for n in range(1, 4)]
    event = sqs_event(exchange, expected=3)
    assert [json.loads(r["body"])["order_id"] for r in event["Records"]] == [o.order_id for o in orders]

    response = lambda_handler.handler(event, LambdaContext())

    assert response == {"batchItemFailures": []}
    stores = exchange.stores[REGION]
    for order in orders:
        done = stores.orders.get(order.order_id)
        assert done is not None and done.status in {"FILLED", "CANCELLED"}, done
        assert done.history[-1].az == f"{REGION}-lambda"
    trades = list(stores.trades.scan_all())
    assert {t.order_id for t in trades} <= {o.order_id for o in orders}
    assert trades, "the seeded outcomes of these three orders include at least one fill"


def test_it_is_idempotent_on_redelivery(lambda_env: Any, published: list[dict[str, Any]]) -> None:
    exchange = lambda_env
    order, _ = submit_order(exchange, "alice", order_payload(), "key-1")
    event = sqs_event(exchange, expected=1)

    first = lambda_handler.handler(event, LambdaContext())
    stores = exchange.stores[REGION]
    after_first = stores.orders.get(order.order_id)
    trades_first = sorted(t.trade_id for t in stores.trades.scan_all())
    events_first = len(published)

    # Lambda redelivers the same records (the visibility timeout ran out before the delete).
    redelivered = json.loads(json.dumps(event))
    for record in redelivered["Records"]:
        record["attributes"]["ApproximateReceiveCount"] = "2"
    second = lambda_handler.handler(redelivered, LambdaContext())

    assert first == second == {"batchItemFailures": []}
    assert stores.orders.get(order.order_id) == after_first
    assert sorted(t.trade_id for t in stores.trades.scan_all()) == trades_first
    assert len(published) == events_first, "a redelivery publishes nothing new"


def test_it_fails_a_poisoned_message_and_the_rest_of_its_group_only(lambda_env: Any) -> None:
    exchange = lambda_env
    queue = exchange.queues[REGION]
    before, _ = submit_order(exchange, "alice", order_payload(), "key-1")
    queue.send({"type": "OrderAccepted"}, group_id="BTC-USD", dedup_id="poison-1")  # no order id
    after, _ = submit_order(exchange, "alice", order_payload(side="SELL"), "key-2")
    other_market, _ = submit_order(exchange, "alice", order_payload(symbol="ETH-USD", price="3000.00"), "key-3")
    event = sqs_event(exchange, expected=4)
    assert len(event["Records"]) == 4
    by_order = {json.loads(r["body"]).get("order_id"): r["messageId"] for r in event["Records"]}

    response = lambda_handler.handler(event, LambdaContext())

    assert failed_ids(response) == [by_order[None], by_order[after.order_id]]
    stores = exchange.stores[REGION]
    assert stores.orders.get(before.order_id).status != "ACCEPTED"  # type: ignore[union-attr]
    assert stores.orders.get(after.order_id).status == "ACCEPTED"  # type: ignore[union-attr]
    assert stores.orders.get(other_market.order_id).status != "ACCEPTED"  # type: ignore[union-attr]


def test_it_refuses_to_run_the_matcher_as_a_lambda(lambda_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_ENGINE", "matcher")
    lambda_handler.current_runtime.cache_clear()
    # Each concurrent sandbox would hold a book of its own and match one market twice.
    with pytest.raises(ConfigError, match="matcher_worker"):
        lambda_handler.current_runtime()
    lambda_handler.current_runtime.cache_clear()


def test_it_fails_an_unreadable_body() -> None:
    with pytest.raises(lambda_handler.PoisonMessage):
        lambda_handler.parse_body("{not json")
    with pytest.raises(lambda_handler.PoisonMessage):
        lambda_handler.parse_body(json.dumps({"type": "Surprise", "order_id": "x"}))


def test_it_imports_without_django(record_property: Any) -> None:
    code = (
        "import json, sys, time\n"
        "started = time.perf_counter()\n"
        "import simfill.lambda_handler\n"
        "elapsed = time.perf_counter() - started\n"
        "print(json.dumps({'import_s': round(elapsed, 3),"
        " 'django': sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')),"
        " 'channels': 'channels' in sys.modules}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    record_property("simfill_lambda_import_s", report["import_s"])
    print(f"simfill.lambda_handler imports in {report['import_s']} s without Django")
    assert report["django"] == []
    assert report["channels"] is False
    assert report["import_s"] < 10
