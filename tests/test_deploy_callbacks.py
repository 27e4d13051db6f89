"""The Zappa post-deploy callback against the real moto server's Lambda, SQS and DynamoDB."""

from __future__ import annotations

import io
import json
import zipfile
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from deploy import callbacks
from tests.conftest import aws_calls
from trading import aws
from trading.config import ExchangeConfig
from trading.queue import queue_name
from trading.store import table_names

REGION = "us-east-1"
FUNCTION = "exchange-simfill-us-east-1"


def make_function(name: str, region: str = REGION) -> str:
    """A deployed-looking function in moto (it is never invoked, so the code is a stub zip)."""
    iam = aws.client("iam", region)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    try:
        role_arn = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=json.dumps(policy))["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        role_arn = iam.get_role(RoleName=f"{name}-role")["Role"]["Arn"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(event, context):\n    return {}\n")
    made = aws.client("lambda", region).create_function(
        FunctionName=name,
        Runtime="python3.13",
        Role=role_arn,
        Handler="handler.lambda_handler",
        Code={"ZipFile": buffer.getvalue()},
        Timeout=10,
    )
    return str(made["FunctionArn"])


def queue_arn(config: ExchangeConfig, region: str = REGION) -> str:
    sqs = aws.client("sqs", region)
    url = sqs.get_queue_url(QueueName=queue_name(config.table_prefix, region))["QueueUrl"]
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def mappings(function: str) -> list[dict[str, Any]]:
    return list(aws.client("lambda", REGION).list_event_source_mappings(FunctionName=function)["EventSourceMappings"])


def test_it_sets_report_batch_item_failures_on_the_mapping_zappa_made(aws_resources: ExchangeConfig) -> None:
    make_function(FUNCTION)
    lam = aws.client("lambda", REGION)
    # What Zappa's own SQS event source would have made: no FunctionResponseTypes.
    zappas = lam.create_event_source_mapping(FunctionName=FUNCTION, EventSourceArn=queue_arn(aws_resources), BatchSize=10)
    assert not zappas.get("FunctionResponseTypes")

    first = callbacks.ensure_sqs_source(lam, aws.client("sqs", REGION), FUNCTION, queue_name("exchange", REGION))
    second = callbacks.ensure_sqs_source(lam, aws.client("sqs", REGION), FUNCTION, queue_name("exchange", REGION))

    assert (first["action"], second["action"]) == ("updated", "unchanged")
    [mapping] = mappings(FUNCTION)
    assert mapping["UUID"] == zappas["UUID"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == 10


def test_it_creates_the_fifo_mapping_once_from_the_zappa_callback(aws_resources: ExchangeConfig) -> None:
    make_function(FUNCTION)
    settings = json.loads((callbacks.ROOT / "deploy" / "zappa_settings.json").read_text())
    # The callback's input is Zappa's CLI object; these are the attributes it reads.
    zappa_cli = SimpleNamespace(
        api_stage="simfill_us_east_1",
        stage_config=settings["simfill_us_east_1"],
        aws_region=REGION,
        lambda_name=FUNCTION,
        zappa=SimpleNamespace(boto_session=boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")),
    )

    callbacks.post_deploy(zappa_cli)
    callbacks.post_deploy(zappa_cli)

    [mapping] = mappings(FUNCTION)
    assert mapping["EventSourceArn"] == queue_arn(aws_resources)
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] <= 10
    assert not mapping.get("MaximumBatchingWindowInSeconds")


def test_it_refuses_a_fifo_batch_larger_than_ten(aws_resources: ExchangeConfig) -> None:
    with pytest.raises(ValueError, match="1..10"):
        callbacks.ensure_sqs_source(aws.client("lambda", REGION), aws.client("sqs", REGION), FUNCTION, "q.fifo", 11)


def test_it_wires_the_table_streams_to_the_pusher_once(aws_resources: ExchangeConfig) -> None:
    function = "exchange-ws-us-east-1"
    make_function(function)
    lam, ddb = aws.client("lambda", REGION), aws.client("dynamodb", REGION)
    names = table_names(aws_resources.table_prefix)

    first = [callbacks.ensure_stream_source(lam, ddb, function, names[t]) for t in ("orders", "trades")]
    second = [callbacks.ensure_stream_source(lam, ddb, function, names[t]) for t in ("orders", "trades")]

    assert [d["action"] for d in first] == ["created", "created"]
    assert [d["action"] for d in second] == ["unchanged", "unchanged"]
    found = mappings(function)
    assert sorted(m["EventSourceArn"] for m in found) == sorted(
        ddb.describe_table(TableName=names[t])["Table"]["LatestStreamArn"] for t in ("orders", "trades")
    )


def test_it_names_the_secret_parameters_and_never_copies_a_secret_into_the_environment(aws_resources: ExchangeConfig) -> None:
    function = "exchange-api-us-east-1"
    make_function(function)
    ssm, lam = aws.client("ssm", REGION), aws.client("lambda", REGION)
    ssm.put_parameter(Name="/exchange/django-secret-key", Value="s" * 60, Type="SecureString", Overwrite=True)
    # What an older deploy left behind: the decrypted secret as a plain variable.
    lam.update_function_configuration(FunctionName=function, Environment={"Variables": {"DJANGO_SECRET_KEY": "s" * 60, "KEEP": "1"}})
    names = {"DJANGO_SECRET_KEY": "/exchange/django-secret-key", "DATABASE_URL": "/exchange/database-url"}

    with aws_calls() as calls:
        first = callbacks.apply_secret_parameters(lam, function, names)
        second = callbacks.apply_secret_parameters(lam, function, names)

    assert first == ["DATABASE_URL_PARAM", "DJANGO_SECRET_KEY_PARAM", "DJANGO_SECRET_KEY"] and second == []
    variables = lam.get_function_configuration(FunctionName=function)["Environment"]["Variables"]
    assert variables == {"KEEP": "1", "DJANGO_SECRET_KEY_PARAM": "/exchange/django-secret-key", "DATABASE_URL_PARAM": "/exchange/database-url"}
    assert "s" * 60 not in json.dumps(variables)
    assert "GetParameter" not in calls  # the deployer never reads a secret
