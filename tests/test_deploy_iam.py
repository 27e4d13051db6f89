"""deploy/iam/*.json against what each Lambda stage really touches.

Each stage's handler runs against the moto server with the stage's own environment
(deploy/zappa_settings.json); a before-send hook on the AWS door records every call as
the IAM action and resource ARN it needs. To those come what runs on the function's
behalf with its role: Lambda's poller for the stage's event sources, the runtime's log
writes, and the cold-start read of the secrets its environment names. Every need must
be granted, and every grant must be needed: each (action, resource) pair a statement
allows, over the project's resources that exist in moto, is one the stage touched.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from trading import aws

ROOT = Path(__file__).resolve().parent.parent
STAGES = json.loads((ROOT / "deploy" / "zappa_settings.json").read_text())
IAM = ROOT / "deploy" / "iam"
ACCOUNT = "123456789012"  # moto's account
SSM_KEY_ID = "0a1b2c3d-ssm-key"  # stands for the id of the KMS key the SecureStrings use

Need = tuple[str, str]  # (IAM action, resource ARN)


def dynamodb_needs(region: str, operation: str, body: dict[str, Any]) -> list[Need]:
    def table(name: str, index: str | None = None) -> str:
        arn = f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{name}"
        return f"{arn}/index/{index}" if index else arn

    if operation == "TransactWriteItems":  # IAM checks each item's own action
        kinds = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}
        return [(f"dynamodb:{kinds[k]}", table(v["TableName"])) for item in body["TransactItems"] for k, v in item.items()]
    if operation == "TransactGetItems":
        return [("dynamodb:GetItem", table(item["Get"]["TableName"])) for item in body["TransactItems"]]
    if operation in ("BatchWriteItem", "BatchGetItem"):
        return [(f"dynamodb:{operation}", table(name)) for name in body["RequestItems"]]
    if "StreamArn" in body:
        return [(f"dynamodb:{operation}", body["StreamArn"])]
    if "TableName" in body:
        return [(f"dynamodb:{operation}", table(body["TableName"], body.get("IndexName")))]
    return [(f"dynamodb:{operation}", "*")]


def needs_of(service: str, region: str, operation: str, request: Any) -> list[Need]:
    raw = request.body or b""
    body = json.loads(raw) if raw and service not in ("apigatewaymanagementapi",) else {}
    if service == "lambda":  # REST: the resource is in the path
        parts = [unquote(p) for p in urlsplit(request.url).path.strip("/").split("/")[1:]]
        if parts[0] == "functions":
            name = parts[1]
            return [(f"lambda:{operation}", name if name.startswith("arn:") else f"arn:aws:lambda:{region}:{ACCOUNT}:function:{name}")]
        if len(parts) > 1 and parts[1]:
            return [(f"lambda:{operation}", f"arn:aws:lambda:{region}:{ACCOUNT}:event-source-mapping:{parts[1]}")]
        return [(f"lambda:{operation}", "*")]
    if service in ("dynamodb", "dynamodbstreams"):
        return dynamodb_needs(region, operation, body)
    if service == "sqs":
        name = body.get("QueueName") or urlsplit(body["QueueUrl"]).path.rsplit("/", 1)[-1]
        return [(f"sqs:{operation}", f"arn:aws:sqs:{region}:{ACCOUNT}:{name}")]
    if service == "ssm":
        needs = [(f"ssm:{operation}", f"arn:aws:ssm:{region}:{ACCOUNT}:parameter{body['Name']}")]
        if body.get("WithDecryption"):  # SSM decrypts with the caller's permission on the key
            needs.append(("kms:Decrypt", f"arn:aws:kms:{region}:{ACCOUNT}:key/{SSM_KEY_ID}"))
        return needs
    if service == "apigatewaymanagementapi":
        url = urlsplit(request.url)
        api_id = url.hostname.split(".", 1)[0]
        stage, _, connection = url.path.lstrip("/").partition("/@connections/")
        return [("execute-api:ManageConnections", f"arn:aws:execute-api:{region}:{ACCOUNT}:{api_id}/{stage}/POST/@connections/{connection}")]
    return [(f"{service}:{operation}", "*")]


class Recorder:
    def __init__(self) -> None:
        self.needs: set[Need] = set()
        self.on = False

    def __call__(self, service: str, region: str, operation: str, request: Any) -> None:
        if self.on:
            self.needs.update(needs_of(service, region, operation, request))

    @contextmanager
    def recording(self) -> Iterator[None]:
        self.on = True
        try:
            yield
        finally:
            self.on = False


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    made = Recorder()
    aws.register_before_send(made)
    yield made
    aws.unregister_before_send(made)


# --- the stages, as deployed --------------------------------------------------------


def function_name(stage: str) -> str:
    return f"{STAGES[stage]['project_name']}-{stage.replace('_', '-')}"  # Zappa's naming


@pytest.fixture
def deployed(moto_server: Any, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Any:
    """A stage's environment and the project's resources in moto, as bootstrap_aws makes them."""
    from reconcile_panel.provision import ensure_reconcile_tables
    from trading.config import ExchangeConfig
    from trading.provision import bootstrap, ensure_connections_table
    from trading.queue import forget_urls

    def deploy(stage: str, position_limit: str = "") -> Any:
        region = STAGES[stage]["aws_region"]
        for name, value in STAGES[stage]["environment_variables"].items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("EXCHANGE_POSITION_LIMIT", position_limit)
        monkeypatch.setenv("AWS_REGION", region)
        config = ExchangeConfig.from_env()
        settings.EXCHANGE = config
        moto_server.reset()
        forget_urls()
        bootstrap(config)
        ensure_reconcile_tables(config)
        for each in config.regions:
            ensure_connections_table(each, config.table_prefix)
        return config

    return deploy


def drive_api(stage: str, config: Any, recorder: Recorder) -> None:
    """Every JSON API call and page, as a trader and an operator, through Django."""
    from django.contrib.auth.models import User
    from django.test import Client

    from exchange_ui.runtime import set_runtime
    from trading.models import ApiToken
    from trading.operators import make_operator

    alice = User.objects.get_or_create(username="alice")[0]
    ops = User.objects.get_or_create(username="ops")[0]
    make_operator(ops)
    trader = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(alice)}"}
    operator = Client()
    operator.force_login(ops)
    client = Client()
    set_runtime(None)  # built on the first request, as in a fresh sandbox
    try:
        with recorder.recording():
            placed = []
            for n, symbol in enumerate(config.market_symbols):
                market = config.market(symbol)
                body = {"symbol": symbol, "side": "BUY", "qty": "0.5000", "price": str(market.reference_price)}
                for _ in range(2):  # the second is a replay
                    response = client.post("/api/orders", data=json.dumps(body), content_type="application/json",
                                           HTTP_IDEMPOTENCY_KEY=f"iam-{n}", **trader)
                    assert response.status_code in (200, 201), response.content
                placed.append(response.json())
            for order in placed:
                assert client.get(f"/api/orders/{order['order_id']}", **trader).status_code == 200
            for order in placed:
                assert client.delete(f"/api/orders/{order['order_id']}", **trader).status_code == 202
            reads = ["/api/orders", "/api/trades", "/api/regions", "/api/metrics"]
            reads += [f"/api/trades?region={r}" for r in config.regions] + [f"/api/trades?executed_in={r}" for r in config.regions]
            for url in reads:
                assert client.get(url, **trader).status_code == 200, url
            for url in ("/api/orders", "/api/reconcile/conflicts", "/api/reconcile/adjustments", "/", "/reconcile/", "/reconcile/tapes/"):
                assert operator.get(url).status_code == 200, url
            for url in ("/api/experiments/templates", "/experiments/"):  # no fault runner runs in a Lambda: 503
                assert operator.get(url).status_code in (200, 503), url
            assert operator.post("/api/history/check").status_code == 200
    finally:
        set_runtime(None)


def drive_simfill(stage: str, config: Any, recorder: Recorder) -> None:
    """The handler on a real FIFO batch of its region's queue: fills and a cancel."""
    from simfill import lambda_handler
    from tests.test_deploy_simfill_handler import LambdaContext, sqs_event
    from trading.actions import Exchange, cancel_order, submit_order

    region = STAGES[stage]["aws_region"]
    exchange = Exchange(config=config)
    symbol = next(m.symbol for m in config.markets if m.home_region == region)
    price = str(config.market(symbol).reference_price)
    orders = [submit_order(exchange, "alice", {"symbol": symbol, "side": "BUY", "qty": "0.5000", "price": price}, f"sf-{n}")[0] for n in range(3)]
    cancel_order(exchange, orders[-1])
    event = sqs_event(exchange, region=region, expected=4)
    lambda_handler.current_runtime.cache_clear()
    try:
        with recorder.recording():
            response = lambda_handler.handler(event, LambdaContext(function_name=function_name(stage)))
    finally:
        lambda_handler.current_runtime.cache_clear()
    assert response == {"batchItemFailures": []}


class ManagementApi:
    """Stands in for API Gateway's @connections endpoint: records each call, answers 200."""

    def __init__(self, recorder: Recorder, region: str) -> None:
        self.recorder, self.region = recorder, region

    def client(self, endpoint: str, region: str) -> Any:
        import boto3
        from botocore.awsrequest import AWSResponse

        from tests.conftest import RawBody

        made = boto3.session.Session().client("apigatewaymanagementapi", endpoint_url=endpoint, region_name=region,
                                              aws_access_key_id="testing", aws_secret_access_key="testing")

        def answer(request: Any, event_name: str = "", **_: Any) -> Any:
            self.recorder("apigatewaymanagementapi", region, event_name.rsplit(".", 1)[-1], request)
            return AWSResponse(request.url, 200, {}, RawBody(b"{}"))

        made.meta.events.register("before-send", answer)
        return made


def drive_ws(stage: str, config: Any, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """$connect (token checked), $default, a Streams batch of each source, $disconnect."""
    from django.contrib.auth.models import User

    from deploy import ws_events
    from simfill.worker import apply_message
    from tests.test_deploy_ws_events import lambda_stream_event
    from trading.actions import Exchange, submit_order
    from trading.models import ApiToken
    from trading.store import table_names

    region = STAGES[stage]["aws_region"]
    exchange = Exchange(config=config)
    symbol = next(m.symbol for m in config.markets if m.home_region == region)
    market = config.market(symbol)
    order, _ = submit_order(exchange, "alice", {"symbol": symbol, "side": "BUY", "qty": "0.5000", "price": str(market.reference_price)}, "ws-1")
    apply_message(exchange.stores[region], {"type": "OrderAccepted", "order_id": order.order_id}, f"{region}a",
                  lambda: 1_800_000_000.0, lambda s: (market.tick, market.lot))
    names = table_names(config.table_prefix)
    batches = [lambda_stream_event(region, names[source]) for source in STAGES[stage]["stream_sources"]]
    token = ApiToken.issue(User.objects.get_or_create(username="alice")[0])
    monkeypatch.setattr(ws_events, "_management_client", ManagementApi(recorder, region).client)
    ws_events.current_store.cache_clear()
    context = {"connectionId": "conn-1", "domainName": f"abc123.execute-api.{region}.amazonaws.com", "stage": "ws"}
    ctx = _context(stage)
    try:
        with recorder.recording():
            for route, kind in (("$connect", "CONNECT"), ("$default", "MESSAGE")):
                event = {"requestContext": {**context, "routeKey": route, "eventType": kind},
                         "headers": {"Authorization": f"Bearer {token}"}}
                assert ws_events.handler(event, ctx)["statusCode"] == 200
            for batch in batches:
                ws_events.handler(batch, ctx)
            event = {"requestContext": {**context, "routeKey": "$disconnect", "eventType": "DISCONNECT"}}
            assert ws_events.handler(event, ctx)["statusCode"] == 200
    finally:
        ws_events.current_store.cache_clear()


def _context(stage: str) -> Any:
    from tests.test_deploy_simfill_handler import LambdaContext

    return LambdaContext(function_name=function_name(stage))


def read_secrets_at_cold_start(stage: str, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """What settings do at cold start with the environment the deploy callback writes."""
    from trading.config import env_secret

    region = STAGES[stage]["aws_region"]
    for name, parameter in STAGES[stage].get("ssm_environment", {}).items():
        aws.client("ssm", region).put_parameter(Name=parameter, Value="x" * 60, Type="SecureString", Overwrite=True)
        monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv(f"{name}_PARAM", parameter)
        aws.forget_parameters()
        with recorder.recording():
            assert env_secret(name) == "x" * 60
    aws.forget_parameters()


def on_behalf_needs(stage: str, config: Any) -> set[Need]:
    """What Lambda does with the function's role: poll its event sources, write its logs."""
    from trading.queue import queue_name
    from trading.store import table_names

    region, settings = STAGES[stage]["aws_region"], STAGES[stage]
    needs: set[Need] = set()
    log_stream = f"arn:aws:logs:{region}:{ACCOUNT}:log-group:/aws/lambda/{function_name(stage)}:log-stream:2026/01/01/[$LATEST]0"
    needs |= {(f"logs:{op}", log_stream) for op in ("CreateLogGroup", "CreateLogStream", "PutLogEvents")}
    if "sqs_batch_size" in settings:  # the SQS FIFO source deploy/callbacks.py maps
        queue = f"arn:aws:sqs:{region}:{ACCOUNT}:{queue_name(config.table_prefix, region)}"
        needs |= {(f"sqs:{op}", queue) for op in ("ReceiveMessage", "DeleteMessage", "GetQueueAttributes")}
    for source in settings.get("stream_sources", []):
        arn = aws.client("dynamodb", region).describe_table(TableName=table_names(config.table_prefix)[source])["Table"]["LatestStreamArn"]
        needs |= {(f"dynamodb:{op}", arn) for op in ("DescribeStream", "GetRecords", "GetShardIterator", "ListStreams")}
    return needs


def project_resources(config: Any) -> set[str]:
    """Every ARN of the project in moto: tables, their indexes and streams, queues, parameters."""
    found = {f"arn:aws:kms:{r}:{ACCOUNT}:key/{SSM_KEY_ID}" for r in config.regions}
    for region in config.regions:
        ddb = aws.client("dynamodb", region)
        for name in ddb.list_tables()["TableNames"]:
            table = ddb.describe_table(TableName=name)["Table"]
            found.add(table["TableArn"])
            found |= {f"{table['TableArn']}/index/{index['IndexName']}" for index in table.get("GlobalSecondaryIndexes", [])}
            if table.get("LatestStreamArn"):
                found.add(table["LatestStreamArn"])
        sqs = aws.client("sqs", region)
        for url in sqs.list_queues().get("QueueUrls", []):
            found.add(f"arn:aws:sqs:{region}:{ACCOUNT}:{url.rsplit('/', 1)[-1]}")
        for parameter in aws.client("ssm", region).describe_parameters().get("Parameters", []):
            found.add(f"arn:aws:ssm:{region}:{ACCOUNT}:parameter{parameter['Name']}")
    return found


# --- the policies -----------------------------------------------------------------


def policy(role: str, region: str) -> list[dict[str, Any]]:
    text = (IAM / f"{role}.json").read_text()
    text = text.replace("ACCOUNT_ID", ACCOUNT).replace("SSM_KEY_ID", SSM_KEY_ID).replace("REGION", region)
    statements = json.loads(text)["Statement"]
    for statement in statements:
        for key in ("Action", "Resource"):
            if isinstance(statement[key], str):
                statement[key] = [statement[key]]
    return statements


def matches(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def granted(statements: list[dict[str, Any]], need: Need) -> bool:
    action, resource = need
    return any(
        s["Effect"] == "Allow" and any(matches(a, action) for a in s["Action"]) and any(matches(r, resource) for r in s["Resource"])
        for s in statements
    )


def unneeded_grants(statements: list[dict[str, Any]], needs: set[Need], resources: set[str]) -> list[Need]:
    """Each (action, resource) a statement allows, over the project's resources it covers
    (or, for a pattern that covers none of them, the needs it covers), that no need asks for."""
    spare = []
    for statement in statements:
        for pattern in statement["Resource"]:
            if pattern == "*":  # only where the action takes no resource (a need then names "*")
                covered = {"*"}
            else:
                covered = {r for r in resources if matches(pattern, r)} or {r for _, r in needs if matches(pattern, r)}
            if not covered:
                spare.append(("|".join(statement["Action"]), pattern))
            for action in statement["Action"]:
                assert "*" not in action, f"{statement.get('Sid')}: a wildcard action {action}"
                spare += [(action, r) for r in sorted(covered) if (action, r) not in needs]
    return spare


# Each stage as deployed, and with a position limit (EXCHANGE_POSITION_LIMIT): the same
# code then also moves the accounts' position counters.
CONFIGURATIONS = ("", "10")


def stage_needs(stage: str, config: Any, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> set[Need]:
    role = stage.split("_", 1)[0]
    if role == "api":
        drive_api(stage, config, recorder)
    elif role == "simfill":
        drive_simfill(stage, config, recorder)
    else:
        drive_ws(stage, config, recorder, monkeypatch)
    read_secrets_at_cold_start(stage, recorder, monkeypatch)
    return recorder.needs | on_behalf_needs(stage, config)


@pytest.mark.django_db
@pytest.mark.parametrize("stage", ["api_us_east_1", "api_eu_west_1", "simfill_us_east_1", "simfill_eu_west_1", "ws_us_east_1", "ws_eu_west_1"])
def test_it_grants_each_stage_what_it_touches_and_nothing_else(
    stage: str, deployed: Any, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs: set[Need] = set()
    resources: set[str] = set()
    for position_limit in CONFIGURATIONS:
        config = deployed(stage, position_limit)
        needs |= stage_needs(stage, config, recorder, monkeypatch)
        resources |= project_resources(config)
    statements = policy(stage.split("_", 1)[0], STAGES[stage]["aws_region"])
    for statement in statements:
        if "kms:Decrypt" in statement["Action"]:  # the key only as SSM uses it
            assert statement.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService") == f"ssm.{STAGES[stage]['aws_region']}.amazonaws.com"
    missing = sorted(n for n in needs if not granted(statements, n))
    assert missing == [], f"{stage} touches what its policy does not grant: {missing}"
    spare = unneeded_grants(statements, needs, resources)
    assert spare == [], f"{stage}'s policy grants what it never touches: {spare}"


# --- the matcher task (ECS): deploy/matcher/ecs-task-<region>.json, deploy/iam/matcher.json ---

MATCHER_TASKS = {region: ROOT / "deploy" / "matcher" / f"ecs-task-{region}.json" for region in ("us-east-1", "eu-west-1")}


@pytest.fixture
def matcher_deployed(moto_server: Any, monkeypatch: pytest.MonkeyPatch, settings: Any, embedded_book_redis: Any, book_redis: Any) -> Any:
    """The task's environment as its task definition sets it (the secrets' values in place
    of the parameters, which read_task_secrets reads), REDIS_URL the embedded test Redis
    standing for ElastiCache, and the project's resources in moto."""
    from reconcile_panel.provision import ensure_reconcile_tables
    from trading.config import ExchangeConfig
    from trading.provision import bootstrap, ensure_connections_table
    from trading.queue import forget_urls

    def deploy(region: str, position_limit: str = "") -> Any:
        container = json.loads(MATCHER_TASKS[region].read_text())["containerDefinitions"][0]
        for entry in container["environment"]:
            if entry["name"].endswith("_PARAM"):
                monkeypatch.delenv(entry["name"], raising=False)
            else:
                monkeypatch.setenv(entry["name"], entry["value"])
        monkeypatch.setenv("DJANGO_SECRET_KEY", "s" * 60)
        monkeypatch.setenv("REDIS_URL", embedded_book_redis.url)
        monkeypatch.setenv("EXCHANGE_VAR_DIR", str(ROOT / "var" / "test-artifacts" / "matcher-task"))
        monkeypatch.setenv("EXCHANGE_POSITION_LIMIT", position_limit)
        config = ExchangeConfig.from_env()
        settings.EXCHANGE = config
        moto_server.reset()
        forget_urls()
        bootstrap(config)
        ensure_reconcile_tables(config)
        for each in config.regions:
            ensure_connections_table(each, config.table_prefix)
        book_redis.flushall()
        return config

    return deploy


def run_matcher_task(argv: list[str], done: Any) -> None:
    """`manage.py matcher_worker ...` in this process, as the container runs it, stopped by
    SIGTERM (as ECS stops a task) once `done()` holds."""
    import os
    import signal
    import threading
    import time

    from django.core.management import call_command

    def stop_when_done() -> None:
        deadline = time.monotonic() + 60
        while not done() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    watcher = threading.Thread(target=stop_when_done, daemon=True)
    watcher.start()
    try:
        call_command("matcher_worker", *argv, "--wait", "1")
    finally:
        watcher.join(70)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert done(), f"the task stopped before its orders were settled: {argv}"


def drive_matcher(region: str, config: Any, recorder: Recorder, redis_lost: Any = None) -> None:
    """The region's task twice: the first AZ's task fills a cross, rests and cancels orders
    and persists its books on SIGTERM; then the task ECS starts in the other AZ stands in,
    rebuilds the books from that snapshot (from DynamoDB after `redis_lost()`, else from
    Redis) and the orders after it, and matches again. Each task is a fresh process: no
    queue URL known yet."""
    from trading.actions import Exchange, cancel_order, submit_order
    from trading.queue import forget_urls

    exchange = Exchange(config=config)
    stores = exchange.stores[region]
    symbol = next(m.symbol for m in config.markets if m.home_region == region)
    price = config.market(symbol).reference_price

    def place(client: str, side: str, qty: str, at: Any, key: str) -> Any:
        return submit_order(exchange, client, {"symbol": symbol, "side": side, "qty": qty, "price": str(at), "region": region}, key)[0]

    def final(*orders: Any) -> Any:
        return lambda: all(not stores.orders.get(o.order_id).is_open for o in orders)

    first, second = config.azs(region)
    resting = place("maker", "SELL", "1.0000", price, f"{region}-m1")
    taker = place("taker", "BUY", "0.4000", price, f"{region}-t1")
    gone = place("maker", "BUY", "0.5000", price / 2, f"{region}-m2")
    cancel_order(exchange, gone)
    forget_urls()
    with recorder.recording():
        run_matcher_task(["--region", region, "--az", first], final(taker, gone))
    later = place("taker", "BUY", "0.6000", price, f"{region}-t2")
    if redis_lost is not None:
        redis_lost()
    forget_urls()
    with recorder.recording():
        run_matcher_task(["--region", region, "--az", second, "--stand-in-for", first], final(later, resting))


def read_task_secrets(region: str, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the task does at start with the parameters its task definition names."""
    from trading.config import ExchangeConfig, env_secret

    container = json.loads(MATCHER_TASKS[region].read_text())["containerDefinitions"][0]
    parameters = {e["name"][: -len("_PARAM")]: e["value"] for e in container["environment"] if e["name"].endswith("_PARAM")}
    assert set(parameters) == {"DJANGO_SECRET_KEY", "REDIS_URL"}
    for name, parameter in parameters.items():
        value = "s" * 60 if name == "DJANGO_SECRET_KEY" else "redis://:token@master.example.cache.amazonaws.com:6379/0"
        aws.client("ssm", region).put_parameter(Name=parameter, Value=value, Type="SecureString", Overwrite=True)
        monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv(f"{name}_PARAM", parameter)
    aws.forget_parameters()
    with recorder.recording():
        assert env_secret("DJANGO_SECRET_KEY") == "s" * 60
        assert ExchangeConfig.from_env().redis_url == "redis://:token@master.example.cache.amazonaws.com:6379/0"
    aws.forget_parameters()


@pytest.mark.django_db
@pytest.mark.parametrize("region", sorted(MATCHER_TASKS))
def test_it_grants_the_matcher_task_what_it_touches_and_nothing_else(
    region: str, matcher_deployed: Any, recorder: Recorder, monkeypatch: pytest.MonkeyPatch, book_redis: Any
) -> None:
    needs: set[Need] = set()
    resources: set[str] = set()
    for position_limit in CONFIGURATIONS:
        config = matcher_deployed(region, position_limit)
        # With a limit, the stand-in also finds the snapshot Redis emptied (a failover).
        drive_matcher(region, config, recorder, redis_lost=book_redis.flushall if position_limit else None)
        read_task_secrets(region, recorder, monkeypatch)
        needs |= recorder.needs
        resources |= project_resources(config)
        recorder.needs = set()
    statements = policy("matcher", region)
    for statement in statements:
        if "kms:Decrypt" in statement["Action"]:
            assert statement.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService") == f"ssm.{region}.amazonaws.com"
    missing = sorted(n for n in needs if not granted(statements, n))
    assert missing == [], f"the matcher task in {region} touches what its policy does not grant: {missing}"
    spare = unneeded_grants(statements, needs, resources)
    assert spare == [], f"the matcher task's policy grants what it never touches: {spare}"


# --- the deployer: what the post-deploy callback calls ------------------------------

# Lambda allows these on "*" only (no resource-level permission); Create is narrowed by
# its lambda:FunctionArn condition.
STAR_ONLY = {"lambda:ListEventSourceMappings", "lambda:CreateEventSourceMapping"}


class RecordedSession:
    """Zappa's boto3 session, as the callback uses it, through the AWS door."""

    def client(self, service: str, region_name: str) -> Any:
        return aws.client(service, region_name)


@pytest.mark.django_db
def test_it_grants_the_deployer_what_the_callback_calls_and_nothing_else(
    deployed: Any, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from deploy import callbacks
    from tests.test_deploy_callbacks import make_function, queue_arn

    config = deployed("api_us_east_1")
    stages = sorted(STAGES)
    for stage in stages:
        region = STAGES[stage]["aws_region"]
        make_function(function_name(stage), region)
        if stage.startswith("simfill"):  # what Zappa's own SQS source makes: updated by the callback
            aws.client("lambda", region).create_event_source_mapping(
                FunctionName=function_name(stage), EventSourceArn=queue_arn(config, region), BatchSize=10)
    for _ in range(2):  # the second run finds everything in place
        for stage in stages:
            cli = SimpleNamespace(api_stage=stage, stage_config=STAGES[stage], aws_region=STAGES[stage]["aws_region"],
                                  lambda_name=function_name(stage), zappa=SimpleNamespace(boto_session=RecordedSession()))
            with recorder.recording():
                callbacks.post_deploy(cli)
    needs = recorder.needs
    statements = policy("deployer", "us-east-1")
    for statement in statements:
        stars = "*" in statement["Resource"]
        assert not stars or set(statement["Action"]) <= STAR_ONLY, f"{statement['Sid']}: * resources for {statement['Action']}"
        if "lambda:CreateEventSourceMapping" in statement["Action"]:
            assert "lambda:FunctionArn" in json.dumps(statement.get("Condition", {})), statement
    assert not any(a.startswith(("ssm:", "kms:")) for s in statements for a in s["Action"]), "the deployer reads no secret"
    missing = sorted(n for n in needs if not granted(statements, n))
    assert missing == [], f"the callback calls what the deployer policy does not grant: {missing}"
    functions = {f"arn:aws:lambda:{STAGES[s]['aws_region']}:{ACCOUNT}:function:{function_name(s)}" for s in stages}
    spare = unneeded_grants(statements, needs, project_resources(config) | functions)
    assert spare == [], f"the deployer policy grants what the callback never calls: {spare}"
