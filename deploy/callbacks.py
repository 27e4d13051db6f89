"""Zappa post-deploy callback: what Zappa 0.63 does not configure, done idempotently with boto3.

Zappa calls `post_deploy(zappa_cli)` after `zappa deploy` and `zappa update` of every
stage in deploy/zappa_settings.json. By the stage's role (the name's prefix):

- `simfill_<region>`: the SQS FIFO event source mapping from the region's order queue,
  with `FunctionResponseTypes=["ReportBatchItemFailures"]` (Zappa never sets it) and a
  batch of at most 10 with no batching window (Zappa's own SQS source always sends a
  MaximumBatchingWindowInSeconds; a FIFO source takes none). The queue ARN is looked up,
  so the settings file names no account id.
- `ws_<region>`: DynamoDB Streams mappings from the Orders and Trades tables to the
  pusher (the stream ARNs carry a creation timestamp, so they too are looked up).
- `api_<region>`, `ws_<region>`: each secret in the stage's `ssm_environment` (an SSM
  SecureString) is named in the function's environment as `NAME_PARAM`; the function
  reads and decrypts it at cold start with its own role. The decrypted value is never
  written to the function's configuration (anyone allowed to read that would see it),
  and the deployer needs no access to the secrets at all. Zappa keeps variables it does
  not manage on later updates.

Each step reads first and writes only on a difference: running it twice changes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# Zappa loads this file by path, outside the project's import path.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trading.queue import queue_name  # noqa: E402
from trading.store import table_names  # noqa: E402

REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"
FIFO_MAX_BATCH = 10  # a larger batch needs a batching window, which FIFO sources reject


def stage_role(stage: str) -> str:
    return stage.split("_", 1)[0]


def _mappings(lambda_client: Any, function_name: str, source_arn: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"FunctionName": function_name, "EventSourceArn": source_arn}
    while True:
        page = lambda_client.list_event_source_mappings(**kwargs)
        found += page.get("EventSourceMappings", [])
        if not page.get("NextMarker"):
            return found
        kwargs["Marker"] = page["NextMarker"]


def ensure_sqs_source(
    lambda_client: Any, sqs_client: Any, function_name: str, queue: str, batch_size: int = FIFO_MAX_BATCH
) -> dict[str, Any]:
    """The queue -> function mapping, reporting batch item failures. Returns what it did."""
    if not 1 <= batch_size <= FIFO_MAX_BATCH:
        raise ValueError(f"a FIFO queue source takes a batch of 1..{FIFO_MAX_BATCH}, not {batch_size}")
    url = sqs_client.get_queue_url(QueueName=queue)["QueueUrl"]
    arn = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    existing = _mappings(lambda_client, function_name, arn)
    if not existing:
        made = lambda_client.create_event_source_mapping(
            FunctionName=function_name,
            EventSourceArn=arn,
            BatchSize=batch_size,
            Enabled=True,
            FunctionResponseTypes=[REPORT_BATCH_ITEM_FAILURES],
        )
        return {"source": arn, "uuid": made["UUID"], "action": "created"}
    action = "unchanged"
    for mapping in existing:
        if REPORT_BATCH_ITEM_FAILURES in (mapping.get("FunctionResponseTypes") or []) and mapping.get("BatchSize") == batch_size:
            continue
        lambda_client.update_event_source_mapping(
            UUID=mapping["UUID"], BatchSize=batch_size, FunctionResponseTypes=[REPORT_BATCH_ITEM_FAILURES]
        )
        action = "updated"
    return {"source": arn, "uuid": existing[0]["UUID"], "action": action}


def ensure_stream_source(
    lambda_client: Any, ddb_client: Any, function_name: str, table: str, batch_size: int = 100, window_s: int = 1
) -> dict[str, Any]:
    """The table's stream -> function mapping (the WebSocket pusher), from the latest record on."""
    arn = ddb_client.describe_table(TableName=table)["Table"].get("LatestStreamArn")
    if not arn:
        raise RuntimeError(f"table {table} has no stream: run `manage.py bootstrap_aws` first")
    wanted = {"BatchSize": batch_size, "MaximumBatchingWindowInSeconds": window_s}
    existing = _mappings(lambda_client, function_name, arn)
    if not existing:
        made = lambda_client.create_event_source_mapping(
            FunctionName=function_name,
            EventSourceArn=arn,
            StartingPosition="LATEST",
            Enabled=True,
            MaximumRetryAttempts=2,  # a frame that cannot be pushed is not worth blocking the shard
            **wanted,
        )
        return {"source": arn, "uuid": made["UUID"], "action": "created"}
    action = "unchanged"
    for mapping in existing:
        if all(mapping.get(k) == v for k, v in wanted.items()):
            continue
        lambda_client.update_event_source_mapping(UUID=mapping["UUID"], **wanted)
        action = "updated"
    return {"source": arn, "uuid": existing[0]["UUID"], "action": action}


def apply_secret_parameters(lambda_client: Any, function_name: str, names: dict[str, str]) -> list[str]:
    """Name each secret's SSM parameter in the function's environment (`NAME_PARAM`), which
    the function reads and decrypts at cold start (trading.config.env_secret); a plaintext
    `NAME` an older deploy copied there is removed. Returns the keys that changed."""
    if not names:
        return []
    config = lambda_client.get_function_configuration(FunctionName=function_name)
    variables = dict(config.get("Environment", {}).get("Variables", {}))
    changed = []
    for key, parameter in sorted(names.items()):
        if variables.get(f"{key}_PARAM") != parameter:
            variables[f"{key}_PARAM"] = parameter
            changed.append(f"{key}_PARAM")
        if key in variables:
            del variables[key]
            changed.append(key)
    if changed:
        lambda_client.get_waiter("function_updated_v2").wait(FunctionName=function_name)
        lambda_client.update_function_configuration(FunctionName=function_name, Environment={"Variables": variables})
    return changed


def post_deploy(zappa_cli: Any) -> None:
    """The Zappa `callbacks.post` entry point: gets the ZappaCLI object."""
    stage = zappa_cli.api_stage
    config = zappa_cli.stage_config
    region = zappa_cli.aws_region
    session = zappa_cli.zappa.boto_session
    function_name = zappa_cli.lambda_name
    prefix = config.get("environment_variables", {}).get("EXCHANGE_TABLE_PREFIX", "exchange")
    lambda_client = session.client("lambda", region_name=region)
    role = stage_role(stage)
    if role == "simfill":
        done = ensure_sqs_source(
            lambda_client,
            session.client("sqs", region_name=region),
            function_name,
            queue_name(prefix, region),
            int(config.get("sqs_batch_size", FIFO_MAX_BATCH)),
        )
        print(f"{stage}: SQS source {done['source']} {done['action']} (ReportBatchItemFailures)")
    elif role == "ws":
        ddb = session.client("dynamodb", region_name=region)
        names = table_names(prefix)
        for source in config.get("stream_sources", ["orders", "trades"]):
            done = ensure_stream_source(
                lambda_client,
                ddb,
                function_name,
                names[source],
                int(config.get("stream_batch_size", 100)),
                int(config.get("stream_batching_window_s", 1)),
            )
            print(f"{stage}: stream source {done['source']} {done['action']}")
    if config.get("ssm_environment"):
        changed = apply_secret_parameters(lambda_client, function_name, config["ssm_environment"])
        print(f"{stage}: secret parameters named in the environment: {', '.join(changed) if changed else 'unchanged'}")
