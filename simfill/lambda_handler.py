"""SimFill as a plain AWS Lambda handler on the region's SQS FIFO queue.

The same pure engine and store adapters as the local AZ workers (`apply_message`),
without Django: nothing imported here reaches `django` (a test asserts it in a fresh
interpreter). The region comes from `AWS_REGION` (Lambda sets it), the rest of the
configuration from the environment (`ExchangeConfig.from_env`).

Partial batch failures: Powertools' SQS FIFO partial processor applies the batch in
order and, at the first failure, fails that message and every later message of the
same market (its MessageGroupId), so a market's order is never broken; other markets
in the batch carry on. The event source mapping must report item failures
(`FunctionResponseTypes=["ReportBatchItemFailures"]`), which `deploy/callbacks.py`
sets after each deploy.

A message fails when it cannot be read or names no order type we know, or when a store
call fails after botocore's retries (throttling, an outage): it comes back after the
visibility timeout, and after the queue's maxReceiveCount it lands in the DLQ, whose
depth alarm is an FIS stop condition.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from matcher.engines import engine_for
from matcher.protocol import Engine
from simfill.worker import Applied, apply_message, publish_applied
from trading import events
from trading.config import ConfigError, ExchangeConfig
from trading.store import RegionStores

MESSAGE_TYPES = {"OrderAccepted", "CancelRequested"}

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "simfill"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Exchange"), service="simfill")
processor = SqsFifoPartialProcessor(skip_group_on_error=True)
# Report every failed item even when the whole batch failed, rather than raising:
# the effect on a FIFO queue is the same, and the response says which messages failed.
processor.raise_on_entire_batch_failure = False


class PoisonMessage(ValueError):
    """A message this worker can never apply: it goes back, and then to the DLQ."""


@dataclass(frozen=True)
class Runtime:
    config: ExchangeConfig
    region: str
    stores: RegionStores
    az: str
    clock: Callable[[], float]
    engine: Engine

    def market_grid(self, symbol: str) -> tuple[Decimal, Decimal]:
        market = self.config.market(symbol)
        if market is None:
            raise PoisonMessage(f"market {symbol!r} is not configured in {self.region}")
        return market.tick, market.lot


def log_event(event: events.Event) -> None:
    """The Lambda's event sink: one structured log line per event (no channel layer here)."""
    logger.info(event["type"], extra={"event": event})


@lru_cache(maxsize=1)
def current_runtime() -> Runtime:
    """Built on the first invocation (never at import), then reused while the sandbox lives."""
    config = ExchangeConfig.from_env()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
    if region not in config.regions:
        raise ConfigError(f"AWS_REGION {region!r} is not one of EXCHANGE_REGIONS {list(config.regions)}")
    engine = engine_for(config.engine)
    if engine.stateful:
        # Concurrent sandboxes, each with a book of its own, would match one market twice.
        raise ConfigError(f"EXCHANGE_ENGINE={config.engine} keeps a book: it runs as one task per region (manage.py matcher_worker), not as a Lambda")
    events.add_sink(log_event)
    # Lambda does not say which AZ a sandbox runs in; the fills say they came from it.
    az = os.environ.get("EXCHANGE_FILL_AZ") or f"{region}-lambda"
    return Runtime(
        config=config,
        region=region,
        stores=RegionStores.for_region(region, config.table_prefix, counted_symbols=config.position_limits),
        az=az,
        clock=time.time,
        engine=engine,
    )


def parse_body(raw: str) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise PoisonMessage(f"unreadable message body: {raw[:200]!r}") from None
    if not isinstance(body, dict) or body.get("type") not in MESSAGE_TYPES or not body.get("order_id"):
        raise PoisonMessage(f"not an order message: {raw[:200]!r}")
    return body


def apply_record(record: SQSRecord) -> str:
    """Apply one queue message; raising marks it (and its group's later messages) failed."""
    runtime = current_runtime()
    body = parse_body(record.body)
    applied: Applied = apply_message(runtime.stores, body, runtime.az, runtime.clock, runtime.market_grid, engine=runtime.engine)
    publish_applied(applied, runtime.region)
    metrics.add_metric(name=f"Orders{applied.action.capitalize()}", unit=MetricUnit.Count, value=1)
    if applied.trades:
        metrics.add_metric(name="TradesExecuted", unit=MetricUnit.Count, value=len(applied.trades))
    logger.debug("applied", extra={"order_id": applied.order_id, "action": applied.action, "message_id": record.message_id})
    return applied.action


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    runtime = current_runtime()
    metrics.add_dimension(name="region", value=runtime.region)
    response = process_partial_response(event=event, record_handler=apply_record, processor=processor, context=context)
    failed = len(response.get("batchItemFailures", []))
    if failed:
        metrics.add_metric(name="MessagesFailed", unit=MetricUnit.Count, value=failed)
        logger.warning("batch had failures", extra={"failed": failed, "records": len(event.get("Records", []))})
    return dict(response)
