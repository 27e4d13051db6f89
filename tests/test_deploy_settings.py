"""deploy/zappa_settings.json, read by Zappa 0.63's own settings loader, and each stage's handler."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "deploy" / "zappa_settings.json"
STAGES = list(json.loads(SETTINGS.read_text()))
ROLES = ("api", "simfill", "ws")


@pytest.fixture
def zappa_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The loader builds a boto3 session; it must never reach for real credentials.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.chdir(ROOT)


def load_stage(stage: str) -> Any:
    from zappa.cli import ZappaCLI

    cli = ZappaCLI()
    cli.api_stage = stage
    cli.load_settings(str(SETTINGS))
    return cli


def test_it_has_one_stage_per_region_and_role() -> None:
    regions = {s.split("_", 1)[1] for s in STAGES}
    assert {f"{role}_{region}" for role in ROLES for region in regions} == set(STAGES)
    assert regions == {"us_east_1", "eu_west_1"}


@pytest.mark.parametrize("stage", STAGES)
def test_it_loads_every_stage_with_zappas_loader(stage: str, zappa_env: None) -> None:
    cli = load_stage(stage)
    region = stage.split("_", 1)[1].replace("_", "-")
    assert cli.aws_region == region
    assert cli.runtime == "python3.13"
    assert cli.lambda_name == f"exchange-{stage.split('_', 1)[0]}-{region}"
    env = cli.stage_config["environment_variables"]
    assert not any("SECRET" in key for key in env), "secrets come from SSM, never from the file"
    role = stage.split("_", 1)[0]
    if role == "api":
        assert cli.django_settings == "exchange_ui.settings" and env["DJANGO_DEBUG"] == "0"
        assert cli.stage_config["ssm_environment"]["DJANGO_SECRET_KEY"].startswith("/exchange/")
    if role == "simfill":
        assert cli.lambda_handler == "simfill.lambda_handler.handler"
        assert not cli.use_websocket and not cli.use_apigateway
        assert 1 <= cli.stage_config["sqs_batch_size"] <= 10
    if role == "ws":
        assert cli.use_websocket == "deploy.ws_events"
    assert cli.stage_config["callbacks"]["post"] == "deploy.callbacks.post_deploy"


def test_it_gives_no_stage_a_websocket_api_by_accident(zappa_env: None) -> None:
    from zappa.cli import ZappaCLI

    # Zappa turns WebSocket APIs on for every stage if any project file imports zappa.websocket.
    assert ZappaCLI._detect_websocket_usage() is None


@pytest.mark.parametrize("role", ROLES)
def test_it_imports_each_stages_handler(role: str, zappa_env: None) -> None:
    cli = load_stage(f"{role}_us_east_1")
    if cli.django_settings:
        module = importlib.import_module(cli.django_settings)
        assert module.ROOT_URLCONF and module.WSGI_APPLICATION
        assert importlib.import_module("exchange_ui.wsgi").application
        return
    module_name, function = cli.lambda_handler.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module_name), function))
    callback_module, callback = cli.stage_config["callbacks"]["post"].rsplit(".", 1)
    assert callable(getattr(importlib.import_module(callback_module), callback))
