"""Production posture: `check --deploy` clean, no default secret, loud config errors."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

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


def test_it_refuses_to_start_in_production_without_a_real_secret() -> None:
    done = manage("check", DJANGO_DEBUG="0", DJANGO_SECRET_KEY="")
    assert done.returncode != 0
    assert "DJANGO_SECRET_KEY" in done.stderr


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
