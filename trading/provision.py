"""Creates the exchange's AWS resources in every region, idempotently.

Tables (Orders, Trades with Streams on; the per-market sequence counters) and an SQS
FIFO queue per region with a dead-letter queue behind it. Against real AWS (no endpoint
set) the Orders and Trades tables are one DynamoDB Global Table across the regions, and
CloudWatch alarms usable as FIS stop conditions come with them (bootstrap_real_aws).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from trading import aws
from trading.config import ExchangeConfig
from trading.queue import dlq_name, queue_name
from trading.store import TABLE_INDEXES, IndexSpec, table_names

MAX_RECEIVE_COUNT = 5


def plan(config: ExchangeConfig, real_aws: bool | None = None) -> list[str]:
    """What bootstrap() would do; `real_aws` None means: real AWS when no endpoint is set."""
    if real_aws is None:
        real_aws = targets_real_aws(config)
    if real_aws:
        return plan_real_aws(config)
    steps = []
    for region in config.regions:
        for role, name in table_names(config.table_prefix).items():
            streams = " (Streams: NEW_AND_OLD_IMAGES)" if role != "sequences" else ""
            steps.append(f"{region}: DynamoDB table {name}, pk (S), on-demand{streams}{index_words(role)}")
        steps.append(f"{region}: SQS FIFO queue {dlq_name(config.table_prefix, region)}")
        steps.append(
            f"{region}: SQS FIFO queue {queue_name(config.table_prefix, region)} "
            f"(visibility {config.visibility_timeout_s}s, redrive to the DLQ after {MAX_RECEIVE_COUNT} receives)"
        )
    return steps


def index_definition(index: IndexSpec) -> dict[str, Any]:
    return {
        "IndexName": index.name,
        "KeySchema": [{"AttributeName": index.hash_key[0], "KeyType": "HASH"}, {"AttributeName": index.range_key[0], "KeyType": "RANGE"}],
        "Projection": {"ProjectionType": "ALL"},
    }


def index_attributes(indexes: tuple[IndexSpec, ...]) -> list[dict[str, str]]:
    keys = dict.fromkeys(key for index in indexes for key in (index.hash_key, index.range_key))
    return [{"AttributeName": attr, "AttributeType": kind} for attr, kind in keys]


def index_words(role: str) -> str:
    indexes = TABLE_INDEXES.get(role, ())
    return "".join(f", index {i.name} ({i.hash_key[0]}, {i.range_key[0]})" for i in indexes)


def ensure_table(region: str, name: str, streams: bool, indexes: tuple[IndexSpec, ...] = ()) -> bool:
    """Create the table (with its indexes) if it is not there; an existing table gets the
    indexes it lacks, one UpdateTable each (DynamoDB takes one new index per update)."""
    ddb = aws.client("dynamodb", region)
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}, *index_attributes(indexes)],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if streams:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    if indexes:
        kwargs["GlobalSecondaryIndexes"] = [index_definition(index) for index in indexes]
    try:
        ddb.create_table(**kwargs)
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceInUseException":
            ensure_indexes(region, name, indexes)
            return False
        raise
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return True


def ensure_indexes(region: str, name: str, indexes: tuple[IndexSpec, ...]) -> list[str]:
    """Add the indexes an existing table lacks (a table made before they existed). Returns their names."""
    if not indexes:
        return []
    ddb = aws.client("dynamodb", region)
    present = {i["IndexName"] for i in ddb.describe_table(TableName=name)["Table"].get("GlobalSecondaryIndexes", [])}
    added = []
    for index in indexes:
        if index.name in present:
            continue
        ddb.update_table(
            TableName=name,
            AttributeDefinitions=index_attributes((index,)),
            GlobalSecondaryIndexUpdates=[{"Create": index_definition(index)}],
        )
        added.append(index.name)
        _wait_for_index(ddb, name, index.name)
    return added


def _wait_for_index(ddb: Any, table: str, index: str, timeout_s: float = 900) -> None:
    """DynamoDB builds (backfills) one new index at a time: wait until it is ACTIVE."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = ddb.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", [])
        if any(i["IndexName"] == index and i.get("IndexStatus", "ACTIVE") == "ACTIVE" for i in described):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{table}: index {index} not ACTIVE after {timeout_s}s")
        time.sleep(2)  # a deploy step against real AWS; moto answers ACTIVE at once


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


def bootstrap(
    config: ExchangeConfig, say: Callable[[str], None] = lambda line: None, real_aws: bool | None = None
) -> None:
    """Create everything, idempotently. Against an endpoint (moto): regional tables and queues.

    Against real AWS (`real_aws`, or None and no endpoint anywhere): bootstrap_real_aws().
    """
    if real_aws is None:
        real_aws = targets_real_aws(config)
    if real_aws:
        bootstrap_real_aws(config, say)
        return
    for region in config.regions:
        names = table_names(config.table_prefix)
        for role, name in names.items():
            created = ensure_table(region, name, streams=role != "sequences", indexes=TABLE_INDEXES.get(role, ()))
            say(f"{region}: table {name} {'created' if created else 'exists'}")
        ensure_region_queues(config, region, say)


# --- real AWS: Global Tables, WebSocket connections, CloudWatch alarms ----------------
#
# moto has no Global Tables and the embedded default needs no alarms, so bootstrap()
# above stays as it is against an endpoint. Against real AWS (no endpoint anywhere),
# bootstrap_real_aws() creates the Orders and Trades tables once in the first region
# and adds the other regions as Global Table replicas (version 2019.11.21), keeps the
# per-market sequence counters and the per-account position counters regional (a
# replicated counter would break seq order; a position counter is its region's view),
# and adds the alarms that FIS experiments use as stop conditions.

GLOBAL_ROLES = ("orders", "trades", "reconcile")
ALARM_QUEUE_AGE_S = 60
ALARM_REPLICATION_LATENCY_MS = 5000
REPLICA_WAIT_S = 900


def connections_table_name(prefix: str) -> str:
    """The WebSocket API's connections (one item per connection id), regional."""
    return f"{prefix}-ws-connections"


def simfill_function_name(prefix: str, region: str) -> str:
    """Zappa names stage simfill_<region with underscores> of project <prefix> like this."""
    return f"{prefix}-simfill-{region}"


def targets_real_aws(config: ExchangeConfig) -> bool:
    return not config.endpoint_url and aws.resolve_endpoint() is None


@dataclass(frozen=True)
class AlarmSpec:
    region: str
    name: str
    namespace: str
    metric: str
    dimensions: tuple[tuple[str, str], ...]
    statistic: str
    comparison: str
    threshold: float
    period_s: int
    evaluation_periods: int
    description: str

    def put_kwargs(self) -> dict[str, Any]:
        return {
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "Namespace": self.namespace,
            "MetricName": self.metric,
            "Dimensions": [{"Name": k, "Value": v} for k, v in self.dimensions],
            "Statistic": self.statistic,
            "ComparisonOperator": self.comparison,
            "Threshold": self.threshold,
            "Period": self.period_s,
            "EvaluationPeriods": self.evaluation_periods,
            "TreatMissingData": "notBreaching",
            "ActionsEnabled": False,  # FIS reads the state; nobody is paged by a game day
        }


def alarm_specs(config: ExchangeConfig, replication: bool = True) -> list[AlarmSpec]:
    """The alarms per region, as plain data: FIS stop conditions name them by ARN."""
    prefix = config.table_prefix
    tables = table_names(prefix)
    specs: list[AlarmSpec] = []
    for region in config.regions:
        base = f"{prefix}-{region}"
        specs += [
            AlarmSpec(
                region, f"{base}-dlq-not-empty", "AWS/SQS", "ApproximateNumberOfMessagesVisible",
                (("QueueName", dlq_name(prefix, region)),), "Maximum", "GreaterThanThreshold", 0, 60, 1,
                "an order message was given up on: SimFill failed it maxReceiveCount times",
            ),
            AlarmSpec(
                region, f"{base}-queue-age", "AWS/SQS", "ApproximateAgeOfOldestMessage",
                (("QueueName", queue_name(prefix, region)),), "Maximum", "GreaterThanOrEqualToThreshold",
                ALARM_QUEUE_AGE_S, 60, 3, f"orders wait more than {ALARM_QUEUE_AGE_S}s for a fill",
            ),
            AlarmSpec(
                region, f"{base}-orders-write-throttled", "AWS/DynamoDB", "WriteThrottleEvents",
                (("TableName", tables["orders"]),), "Sum", "GreaterThanThreshold", 0, 60, 3,
                "order writes are throttled for three minutes running",
            ),
            AlarmSpec(
                region, f"{base}-simfill-errors", "AWS/Lambda", "Errors",
                (("FunctionName", simfill_function_name(prefix, region)),), "Sum", "GreaterThanThreshold", 0, 60, 3,
                "the SimFill Lambda fails whole invocations",
            ),
        ]
        if replication:
            for receiver in config.regions:
                if receiver == region:
                    continue
                specs.append(
                    AlarmSpec(
                        region, f"{base}-orders-replication-to-{receiver}", "AWS/DynamoDB", "ReplicationLatency",
                        (("TableName", tables["orders"]), ("ReceivingRegion", receiver)), "Average",
                        "GreaterThanThreshold", ALARM_REPLICATION_LATENCY_MS, 60, 3,
                        f"orders reach {receiver} more than {ALARM_REPLICATION_LATENCY_MS} ms late",
                    )
                )
    return specs


def ensure_alarm(spec: AlarmSpec) -> bool:
    """Create or update one alarm (PutMetricAlarm is an upsert); True if it was new."""
    cloudwatch = aws.client("cloudwatch", spec.region)
    existed = bool(cloudwatch.describe_alarms(AlarmNames=[spec.name]).get("MetricAlarms"))
    cloudwatch.put_metric_alarm(**spec.put_kwargs())
    return not existed


def ensure_alarms(config: ExchangeConfig, replication: bool = True, say: Callable[[str], None] = lambda line: None) -> list[AlarmSpec]:
    specs = alarm_specs(config, replication=replication)
    for spec in specs:
        created = ensure_alarm(spec)
        say(f"{spec.region}: alarm {spec.name} {'created' if created else 'updated'}")
    return specs


def ensure_connections_table(region: str, prefix: str) -> bool:
    """Connections expire on their own (TTL on expiresAt) if a $disconnect is ever lost."""
    name = connections_table_name(prefix)
    created = ensure_table(region, name, streams=False)
    ddb = aws.client("dynamodb", region)
    ttl = ddb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") not in {"ENABLED", "ENABLING"}:
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"})
    return created


def _wait_for_replicas(region: str, name: str, wanted: set[str], timeout_s: float = REPLICA_WAIT_S) -> None:
    ddb = aws.client("dynamodb", region)
    deadline = time.monotonic() + timeout_s
    while True:
        table = ddb.describe_table(TableName=name)["Table"]
        statuses = {r["RegionName"]: r.get("ReplicaStatus") for r in table.get("Replicas", [])}
        if table["TableStatus"] == "ACTIVE" and all(statuses.get(r) == "ACTIVE" for r in wanted):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: replicas {statuses} not ACTIVE after {timeout_s}s")
        time.sleep(5)  # real AWS takes minutes per replica; this is a deploy step, not a test


def ensure_global_table(config: ExchangeConfig, name: str, say: Callable[[str], None] = lambda line: None) -> list[str]:
    """The table in the first region with Streams on, then each other region as a replica.

    Returns the regions added. A replica region must not already hold a table of that
    name (AWS refuses): delete a regional one made by a local-style bootstrap first.
    """
    home = config.regions[0]
    # An index made on the home table is made on every replica (Global Tables 2019.11.21).
    roles = {table: role for role, table in table_names(config.table_prefix).items()}
    created = ensure_table(home, name, streams=True, indexes=TABLE_INDEXES.get(roles.get(name, ""), ()))
    say(f"{home}: table {name} {'created' if created else 'exists'} (Global Table home)")
    ddb = aws.client("dynamodb", home)
    present = {r["RegionName"] for r in ddb.describe_table(TableName=name)["Table"].get("Replicas", [])}
    added = []
    for region in config.regions[1:]:
        if region in present:
            say(f"{region}: replica of {name} exists")
            continue
        # One replica change at a time: the table must be ACTIVE between updates.
        _wait_for_replicas(home, name, present)
        ddb.update_table(TableName=name, ReplicaUpdates=[{"Create": {"RegionName": region}}])
        present.add(region)
        added.append(region)
        say(f"{region}: replica of {name} requested")
    _wait_for_replicas(home, name, present)
    return added


def bootstrap_real_aws(config: ExchangeConfig, say: Callable[[str], None] = lambda line: None) -> None:
    names = table_names(config.table_prefix)
    for role in GLOBAL_ROLES:
        ensure_global_table(config, names[role], say)
    for region in config.regions:
        created = ensure_table(region, names["sequences"], streams=False)
        say(f"{region}: table {names['sequences']} {'created' if created else 'exists'} (regional)")
        created = ensure_connections_table(region, config.table_prefix)
        say(f"{region}: table {connections_table_name(config.table_prefix)} {'created' if created else 'exists'}")
        ensure_region_queues(config, region, say)
    ensure_alarms(config, replication=len(config.regions) > 1, say=say)


def ensure_region_queues(config: ExchangeConfig, region: str, say: Callable[[str], None] = lambda line: None) -> None:
    """The region's DLQ and its FIFO order queue redriving to it (what bootstrap() makes)."""
    prefix = config.table_prefix
    dlq_url, created = ensure_queue(region, dlq_name(prefix, region), {"FifoQueue": "true", "MessageRetentionPeriod": "1209600"})
    say(f"{region}: queue {dlq_name(prefix, region)} {'created' if created else 'exists'}")
    dlq_arn = aws.client("sqs", region).get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    _, created = ensure_queue(
        region,
        queue_name(prefix, region),
        {
            "FifoQueue": "true",
            "VisibilityTimeout": str(config.visibility_timeout_s),
            "ReceiveMessageWaitTimeSeconds": "20",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}),
        },
    )
    say(f"{region}: queue {queue_name(prefix, region)} {'created' if created else 'exists'}")


def plan_real_aws(config: ExchangeConfig) -> list[str]:
    names = table_names(config.table_prefix)
    home, others = config.regions[0], config.regions[1:]
    steps = []
    for role in GLOBAL_ROLES:
        replicas = f", replicas in {', '.join(others)}" if others else ""
        steps.append(
            f"{home}: DynamoDB Global Table {names[role]}, pk (S), on-demand (Streams: NEW_AND_OLD_IMAGES){replicas}{index_words(role)}"
        )
    for region in config.regions:
        steps.append(f"{region}: DynamoDB table {names['sequences']}, pk (S), on-demand (regional)")
        steps.append(f"{region}: DynamoDB table {connections_table_name(config.table_prefix)}, pk (S), on-demand, TTL expiresAt")
        steps.append(f"{region}: SQS FIFO queue {dlq_name(config.table_prefix, region)}")
        steps.append(
            f"{region}: SQS FIFO queue {queue_name(config.table_prefix, region)} "
            f"(visibility {config.visibility_timeout_s}s, redrive to the DLQ after {MAX_RECEIVE_COUNT} receives)"
        )
    for spec in alarm_specs(config, replication=len(config.regions) > 1):
        steps.append(
            f"{spec.region}: CloudWatch alarm {spec.name} ({spec.namespace} {spec.metric} {spec.statistic} "
            f"{spec.comparison} {spec.threshold:g} for {spec.evaluation_periods}x{spec.period_s}s)"
        )
    return steps
