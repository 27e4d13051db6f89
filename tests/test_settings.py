"""Production posture: `check --deploy` clean, no default secret, loud config errors."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trading.config import ConfigError, ExchangeConfig

ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60)


def test_it_passes_the_deploy_checks_under_production_settings() -> None:
    done = manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DJANGO_DEBUG="0", DJANGO_SECRET_KEY=secrets.token_urlsafe(60), DJANGO_ALLOWED_HOSTS="exchange.example.com",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_it_refuses_to_start_in_production_without_a_real_secret(tmp_path: Path) -> None:
    done = manage("check", DJANGO_DEBUG="0", DJANGO_SECRET_KEY="", EXCHANGE_VAR_DIR=str(tmp_path))
    assert done.returncode != 0
    assert "DJANGO_SECRET_KEY" in done.stderr


SHOW_POSTURE = "from django.conf import settings; print(settings.DEBUG, settings.SESSION_COOKIE_SECURE, settings.SECRET_KEY)"


def unset(*names: str) -> dict[str, str]:
    """os.environ without the named variables, for a child that must not inherit them."""
    return {k: v for k, v in os.environ.items() if k not in names}


def bare_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """manage.py as a fresh shell runs it: no DJANGO_DEBUG, no secret, unless given."""
    full_env = {**unset("DJANGO_DEBUG", "DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY_PARAM"), **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60)


def test_it_fails_closed_when_nothing_asks_for_the_dev_posture(tmp_path: Path) -> None:
    refused = bare_manage("check", EXCHANGE_VAR_DIR=str(tmp_path))
    assert refused.returncode != 0
    assert "DJANGO_SECRET_KEY" in refused.stderr and "DJANGO_DEBUG" in refused.stderr
    assert "Traceback" not in refused.stderr.splitlines()[-1]
    secret = secrets.token_urlsafe(60)
    production = bare_manage("shell", "-c", SHOW_POSTURE, EXCHANGE_VAR_DIR=str(tmp_path), DJANGO_SECRET_KEY=secret)
    assert production.returncode == 0, production.stderr
    assert production.stdout.split()[-3:] == ["False", "True", secret]
    dev = bare_manage("shell", "-c", SHOW_POSTURE, EXCHANGE_VAR_DIR=str(tmp_path), DJANGO_DEBUG="1")
    assert dev.returncode == 0, dev.stderr
    assert dev.stdout.split()[-3:-1] == ["True", "False"]


def test_it_lets_every_command_beside_make_run_use_the_secret_make_run_wrote(tmp_path: Path) -> None:
    made = tmp_path / "secret_key"
    done = subprocess.run(["make", "-s", str(made), "PYTHON=" + sys.executable], cwd=ROOT,
                          env={**os.environ, "EXCHANGE_VAR_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert made.stat().st_mode & 0o077 == 0, oct(made.stat().st_mode)
    beside = bare_manage("shell", "-c", SHOW_POSTURE, EXCHANGE_VAR_DIR=str(tmp_path))
    assert beside.returncode == 0, beside.stderr
    debug, _, secret = beside.stdout.split()[-3:]
    assert debug == "False" and secret == made.read_text().strip() and len(secret) >= 50


@pytest.mark.parametrize(
    ("name", "value"),
    [("EXCHANGE_SEED", "abc"), ("EXCHANGE_ENGINE", "quantum"), ("EXCHANGE_SYNTHETIC_RATE", "-1"), ("EXCHANGE_MARKETS", "BTC-USD@mars-1")],
)
def test_it_fails_loudly_on_a_bad_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        ExchangeConfig.from_env()
    assert name.split("_", 1)[1].lower()[:4] in str(caught.value).lower() or name in str(caught.value)


def test_it_reads_regions_markets_and_home_regions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_REGIONS", "us-east-1,eu-west-1,ap-south-1")
    monkeypatch.setenv("EXCHANGE_MARKETS", "BTC-USD,ETH-USD@eu-west-1")
    config = ExchangeConfig.from_env()
    assert config.regions == ("us-east-1", "eu-west-1", "ap-south-1")
    assert [(m.symbol, m.home_region) for m in config.markets] == [("BTC-USD", "us-east-1"), ("ETH-USD", "eu-west-1")]
    assert config.azs("eu-west-1") == ("eu-west-1a", "eu-west-1b")


def test_it_reads_its_secrets_from_ssm_at_cold_start_once(moto_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.conftest import aws_calls
    from trading import aws
    from trading.config import env_secret

    moto_server.reset()
    secret = secrets.token_urlsafe(60)
    ssm = aws.client("ssm", "eu-west-1")
    ssm.put_parameter(Name="/exchange/django-secret-key", Value=secret, Type="SecureString", Overwrite=True)
    ssm.put_parameter(Name="/exchange/database-url", Value=f"sqlite://{tmp_path}/lambda.sqlite3", Type="SecureString", Overwrite=True)
    # The deployed function's environment names the parameters and holds no secret.
    lambda_env = {"DJANGO_DEBUG": "0", "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": moto_server.url,
                  "DJANGO_SECRET_KEY_PARAM": "/exchange/django-secret-key", "DATABASE_URL_PARAM": "/exchange/database-url",
                  "EXCHANGE_VAR_DIR": str(tmp_path)}
    shown = bare_manage("shell", "-c", SHOW_POSTURE + "; print(settings.DATABASES['default']['NAME'])", **lambda_env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split()[-4:] == ["False", "True", secret, f"{tmp_path}/lambda.sqlite3"]

    monkeypatch.delenv("DJANGO_SECRET_KEY", raising=False)
    monkeypatch.setenv("DJANGO_SECRET_KEY_PARAM", "/exchange/django-secret-key")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    aws.forget_parameters()
    with aws_calls() as calls:
        assert env_secret("DJANGO_SECRET_KEY") == secret
        assert env_secret("DJANGO_SECRET_KEY") == secret
    assert calls == ["GetParameter"]  # cached for the life of the process
    aws.forget_parameters()

    missing = bare_manage("check", **{**lambda_env, "DJANGO_SECRET_KEY_PARAM": "/exchange/no-such-parameter"})
    assert missing.returncode != 0
    assert "DJANGO_SECRET_KEY_PARAM" in missing.stderr and "/exchange/no-such-parameter" in missing.stderr
