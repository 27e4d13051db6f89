"""The matcher's ECS task definition and service, one pair per region.

`python -m deploy.matcher.ecs` writes `deploy/matcher/ecs-task-<region>.json` (the input
of `aws ecs register-task-definition --cli-input-json`) and `ecs-service-<region>.json`
(of `aws ecs create-service --cli-input-json`) for every region of EXCHANGE_REGIONS. The
exchange's settings come from the region's `api_<region>` Zappa stage
(deploy/zappa_settings.json), so the task and the API it serves agree on the regions,
markets, table prefix and seed; EXCHANGE_REGIONS and EXCHANGE_MARKETS in the environment
override them. The files in the repository are this command's output for the Zappa stages
(a test keeps them so, and validates them against botocore's ECS model).

What each task is: Fargate, awsvpc, one task per region (desired count 1, never two at
once: a book lives in one process's memory, so a deploy stops the old task before it
starts the new one), subnets in two AZs (ECS starts the replacement of a lost AZ's task
in the other), the region's markets named in its tags. Secrets are SSM parameters the
task reads at start with its own role (DJANGO_SECRET_KEY_PARAM, REDIS_URL_PARAM: the
ElastiCache URL with its AUTH token), never values in the task definition. Logs go to
CloudWatch (awslogs). Placeholders, replaced at deploy time as deploy/README.md shows:
ACCOUNT_ID, IMAGE_TAG, SUBNET_A, SUBNET_B, SECURITY_GROUP.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STAGES = HERE.parent / "zappa_settings.json"
PROJECT = "exchange"
CONTAINER = "matcher"
REPOSITORY = f"{PROJECT}-matcher"
SECRETS = {"DJANGO_SECRET_KEY": "/exchange/django-secret-key", "REDIS_URL": "/exchange/redis-url"}
# The exchange's settings the task shares with the API stage of its region.
SHARED = ("EXCHANGE_REGIONS", "EXCHANGE_MARKETS", "EXCHANGE_TABLE_PREFIX", "EXCHANGE_VISIBILITY_TIMEOUT", "EXCHANGE_SEED")
CPU, MEMORY = "1024", "2048"  # one vCPU: the matcher applies a market's orders one at a time
STOP_TIMEOUT_S = 30  # SIGTERM: the batch in hand finishes and every book is persisted


def task_family(region: str) -> str:
    return f"{PROJECT}-matcher-{region}"


def log_group(region: str) -> str:
    return f"/ecs/{task_family(region)}"


def cluster(region: str) -> str:
    return f"{PROJECT}-{region}"


def home_markets(markets: str, regions: list[str]) -> dict[str, list[str]]:
    """{region: the symbols whose home it is}, from EXCHANGE_MARKETS (`SYMBOL@region`;
    no region: the first)."""
    owned: dict[str, list[str]] = {region: [] for region in regions}
    for entry in (e.strip() for e in markets.split(",")):
        if entry:
            symbol, _, home = entry.partition("@")
            owned.setdefault(home.strip() or regions[0], []).append(symbol.strip().upper())
    return owned


def exchange_environment(region: str, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The exchange's settings for the task in `region`: its API stage's (a region without a
    stage: the first API stage's), then `overrides`."""
    stages = {name: stage for name, stage in json.loads(STAGES.read_text()).items() if name.startswith("api_")}
    stage = stages.get(f"api_{region.replace('-', '_')}") or next(iter(stages.values()))
    shared = {name: value for name, value in stage["environment_variables"].items() if name in SHARED}
    shared.update({name: value for name, value in (overrides or {}).items() if name in SHARED and value})
    return shared


def task_definition(region: str, shared: Mapping[str, str]) -> dict[str, Any]:
    environment = {
        **shared,
        "EXCHANGE_ENGINE": "matcher",
        "EXCHANGE_SYNTHETIC_RATE": "0",
        "AWS_REGION": region,
        "DJANGO_DEBUG": "0",
        "EXCHANGE_VAR_DIR": "/tmp/exchange",
        **{f"{name}_PARAM": parameter for name, parameter in SECRETS.items()},
    }
    regions = shared.get("EXCHANGE_REGIONS", region).split(",")
    markets = home_markets(shared.get("EXCHANGE_MARKETS", "BTC-USD"), regions).get(region, [])
    return {
        "family": task_family(region),
        "taskRoleArn": f"arn:aws:iam::ACCOUNT_ID:role/{PROJECT}-matcher-{region}",
        "executionRoleArn": f"arn:aws:iam::ACCOUNT_ID:role/{PROJECT}-matcher-execution-{region}",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
        "cpu": CPU,
        "memory": MEMORY,
        "containerDefinitions": [
            {
                "name": CONTAINER,
                "image": f"ACCOUNT_ID.dkr.ecr.{region}.amazonaws.com/{REPOSITORY}:IMAGE_TAG",
                "essential": True,
                "environment": [{"name": name, "value": value} for name, value in sorted(environment.items())],
                "stopTimeout": STOP_TIMEOUT_S,
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": log_group(region), "awslogs-region": region, "awslogs-stream-prefix": CONTAINER},
                },
            }
        ],
        "tags": tags(region, markets),
    }


def service(region: str, shared: Mapping[str, str]) -> dict[str, Any]:
    regions = shared.get("EXCHANGE_REGIONS", region).split(",")
    markets = home_markets(shared.get("EXCHANGE_MARKETS", "BTC-USD"), regions).get(region, [])
    return {
        "cluster": cluster(region),
        "serviceName": f"{PROJECT}-matcher",
        "taskDefinition": task_family(region),
        "desiredCount": 1,
        "launchType": "FARGATE",
        "platformVersion": "LATEST",
        # Never two tasks at once: the old one stops (persisting its books) before the new
        # one starts and rebuilds them; a failed deploy rolls back.
        "deploymentConfiguration": {
            "minimumHealthyPercent": 0,
            "maximumPercent": 100,
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        },
        "networkConfiguration": {
            "awsvpcConfiguration": {"subnets": ["SUBNET_A", "SUBNET_B"], "securityGroups": ["SECURITY_GROUP"], "assignPublicIp": "DISABLED"}
        },
        "enableECSManagedTags": True,
        "propagateTags": "SERVICE",
        "tags": tags(region, markets),
    }


def tags(region: str, markets: list[str]) -> list[dict[str, str]]:
    # Tag values allow no commas: the markets are space separated.
    return [
        {"key": "project", "value": PROJECT},
        {"key": "exchange:region", "value": region},
        {"key": "exchange:markets", "value": " ".join(markets) or "none"},
    ]


def render(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def write_all(out: Path, overrides: Mapping[str, str] | None = None) -> list[Path]:
    """Every region's task definition and service under `out`; returns the files written."""
    regions = [r.strip() for r in exchange_environment("", overrides)["EXCHANGE_REGIONS"].split(",") if r.strip()]
    written = []
    for region in regions:
        shared = exchange_environment(region, overrides)
        for kind, document in (("task", task_definition(region, shared)), ("service", service(region, shared))):
            path = out / f"ecs-{kind}-{region}.json"
            path.write_text(render(document))
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the files (default: deploy/matcher)")
    args = parser.parse_args()
    for path in write_all(args.out, os.environ):
        print(path)


if __name__ == "__main__":
    main()
