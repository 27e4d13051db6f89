"""The exchange's own configuration, read from the environment.

Django-free on purpose: the SimFill Lambda handler imports this without booting Django,
and `exchange_ui/settings.py` exposes the same object as `settings.EXCHANGE`. The
dataclasses themselves are plain data in `trading.markets`; import them from here.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

from trading.limits import parse_limits
from trading.markets import ExchangeConfig as _ExchangeConfig
from trading.markets import Market as Market  # re-exported: `from trading.config import ExchangeConfig, Market`

BASE_DIR = Path(__file__).resolve().parent.parent
# Local state: the SQLite mirror, the embedded AWS endpoint, demo logins, logs.
VAR_DIR = Path(os.environ.get("EXCHANGE_VAR_DIR") or BASE_DIR / "var")


class ConfigError(ValueError):
    """A bad value in the environment: raised at start-up, never later."""


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = env_str(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def env_decimal(name: str, default: str) -> Decimal:
    raw = env_str(name, default)
    try:
        value = Decimal(raw)
    except ArithmeticError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, not {raw!r}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name, "1" if default else "0").lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be a boolean (1/0, true/false), not {raw!r}")


def env_list(name: str, default: str) -> list[str]:
    items = [item.strip() for item in env_str(name, default).split(",")]
    items = [item for item in items if item]
    if not items:
        raise ConfigError(f"{name} must name at least one item")
    if len(set(items)) != len(items):
        raise ConfigError(f"{name} names an item twice: {items}")
    return items


def env_secret(name: str) -> str:
    """NAME's value, else the SSM SecureString that NAME_PARAM names, read from SSM in
    this process's region on first use (a deployed function's environment names the
    parameter, never holds the secret). '' when neither is set."""
    value = env_str(name, "")
    parameter = env_str(f"{name}_PARAM", "")
    if value or not parameter:
        return value
    region = env_str("AWS_REGION", env_str("AWS_DEFAULT_REGION", ""))
    if not region:
        raise ConfigError(f"{name}_PARAM names {parameter!r} but neither AWS_REGION nor AWS_DEFAULT_REGION says where")
    from trading import aws  # boto3 only where a parameter is named

    try:
        return aws.secure_parameter(parameter, region)
    except Exception as error:  # a start-up error says which setting and which parameter
        raise ConfigError(f"{name}_PARAM: cannot read SSM parameter {parameter!r} in {region}: {error}") from error


# Reference prices for well-known symbols; anything else trades around 100.
_REFERENCE_PRICES = {
    "BTC-USD": Decimal("50000"),
    "ETH-USD": Decimal("3000"),
    "SOL-USD": Decimal("150"),
}


class ExchangeConfig(_ExchangeConfig):
    """The exchange's configuration: the plain dataclass of `trading.markets` (which the pure
    core takes) with its reader from the environment. Build it from here, so that every
    instance is of this one class (a dataclass equals only an instance of its own class)."""

    @classmethod
    def from_env(cls) -> ExchangeConfig:
        regions = tuple(env_list("EXCHANGE_REGIONS", "us-east-1,eu-west-1"))
        for region in regions:
            if not region.replace("-", "").isalnum() or len(region) > 32:
                raise ConfigError(f"EXCHANGE_REGIONS has a malformed region {region!r}")
        markets = []
        # A market may name its home region: "BTC-USD@eu-west-1". Default: the first region.
        for entry in env_list("EXCHANGE_MARKETS", "BTC-USD"):
            symbol, _, home = entry.partition("@")
            symbol = symbol.strip().upper()
            home = home.strip() or regions[0]
            if home not in regions:
                raise ConfigError(f"market {symbol} names home region {home!r}, not in EXCHANGE_REGIONS")
            if not symbol or len(symbol) > 20 or not symbol.replace("-", "").isalnum():
                raise ConfigError(f"EXCHANGE_MARKETS has a malformed symbol {entry!r}")
            markets.append(
                Market(symbol=symbol, home_region=home, reference_price=_REFERENCE_PRICES.get(symbol, Decimal("100")))
            )
        engine = env_str("EXCHANGE_ENGINE", "simfill")
        if engine not in {"simfill", "matcher"}:
            raise ConfigError(f"EXCHANGE_ENGINE must be 'simfill' or 'matcher', not {engine!r}")
        try:
            position_limits = parse_limits(env_str("EXCHANGE_POSITION_LIMIT", ""), tuple(m.symbol for m in markets))
        except ValueError as bad:
            raise ConfigError(f"EXCHANGE_POSITION_LIMIT: {bad}") from None
        return cls(
            regions=regions,
            markets=tuple(markets),
            engine=engine,
            seed=env_int("EXCHANGE_SEED", 1),
            synthetic_rate=env_decimal("EXCHANGE_SYNTHETIC_RATE", "2"),
            azs_per_region=env_int("EXCHANGE_AZS_PER_REGION", 2, minimum=1),
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
            # An ElastiCache URL carries its AUTH token: a deployed task names the parameter (REDIS_URL_PARAM).
            redis_url=env_secret("REDIS_URL") or None,
            table_prefix=env_str("EXCHANGE_TABLE_PREFIX", "exchange"),
            visibility_timeout_s=env_int("EXCHANGE_VISIBILITY_TIMEOUT", 5, minimum=1),
            reroute=env_bool("EXCHANGE_REROUTE", True),
            idempotency=env_bool("EXCHANGE_IDEMPOTENCY", True),
            position_limits=position_limits,
            max_experiments=env_int("EXCHANGE_MAX_EXPERIMENTS", 4, minimum=1),
            user_order_rate=env_decimal("EXCHANGE_USER_ORDER_RATE", "50"),
            user_order_burst=env_int("EXCHANGE_USER_ORDER_BURST", 200, minimum=1),
            user_sockets=env_int("EXCHANGE_USER_SOCKETS", 32, minimum=1),
            max_sockets=env_int("EXCHANGE_MAX_SOCKETS", 5000, minimum=1),
            reconcile_horizon_s=env_int("EXCHANGE_RECONCILE_HORIZON_S", 300, minimum=1),
            snapshot_every_s=env_int("EXCHANGE_SNAPSHOT_EVERY_S", 5, minimum=1),
            snapshot_every_seq=env_int("EXCHANGE_SNAPSHOT_EVERY_SEQ", 500, minimum=1),
        )
