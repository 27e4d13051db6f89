"""The one door to AWS: a cached boto3 client per (service, region).

Clients are built lazily (never at import time, never per call) and are thread-safe.
Every client carries the `before-send` hooks that the fault plane registers, so a
fault injected here reaches every store and queue call in the process, and botocore's
standard-mode retries then behave as they would against real AWS.
"""

from __future__ import annotations

import os
import random
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from trading.config import VAR_DIR

ENDPOINT_FILE = VAR_DIR / "aws_endpoint"

# A hook gets (service, region, operation, request) and returns an AWSResponse to
# short-circuit the call (an injected error), or None to let it through.
BeforeSendHook = Callable[[str, str, str, Any], Any]

_lock = threading.Lock()
_clients: dict[tuple[str, str, bool], Any] = {}
_hooks: list[BeforeSendHook] = []
_endpoint_override: str | None = None
_region_endpoints: dict[str, str] = {}


def endpoint_is_live(url: str, timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/moto-api/data.json", timeout=timeout):
            return True
    except OSError:
        return False


def resolve_endpoint(region: str | None = None) -> str | None:
    """The region's own endpoint if one was set (use_region_endpoints), else
    AWS_ENDPOINT_URL, else the embedded server named in var/aws_endpoint if it is live.

    None means real AWS.
    """
    if region is not None and region in _region_endpoints:
        return _region_endpoints[region]
    if _endpoint_override:
        return _endpoint_override
    env = os.environ.get("AWS_ENDPOINT_URL")
    if env:
        return env
    if ENDPOINT_FILE.exists():
        url = ENDPOINT_FILE.read_text().strip()
        if url and endpoint_is_live(url):
            return url
    return None


def endpoint_hint() -> str:
    """Why no endpoint was found, for an error message a user can act on."""
    if ENDPOINT_FILE.exists():
        return f"{ENDPOINT_FILE} names {ENDPOINT_FILE.read_text().strip()}, which does not answer: is `make run` running?"
    return "no AWS_ENDPOINT_URL and no running `make run`: using real AWS"


def use_endpoint(url: str | None) -> None:
    """Point every client at `url` (the embedded runtime and tests call this once)."""
    global _endpoint_override
    with _lock:
        _endpoint_override = url
        _clients.clear()


def use_region_endpoints(endpoints: dict[str, str]) -> None:
    """Give each named region its own endpoint, as AWS does: the soak runs one moto
    server per region so that one region's load never queues behind the other's.
    An empty dict goes back to the one endpoint."""
    with _lock:
        _region_endpoints.clear()
        _region_endpoints.update(endpoints)
        _clients.clear()


def register_before_send(hook: BeforeSendHook) -> None:
    with _lock:
        if hook not in _hooks:
            _hooks.append(hook)
        _clients.clear()


def unregister_before_send(hook: BeforeSendHook) -> None:
    with _lock:
        if hook in _hooks:
            _hooks.remove(hook)
        _clients.clear()


def _dispatch(service: str, region: str, request: Any, event_name: str = "", **_: Any) -> Any:
    operation = event_name.rsplit(".", 1)[-1]
    for hook in list(_hooks):
        response = hook(service, region, operation, request)
        if response is not None:
            return response
    return None


ATTEMPTS = 4  # the SDK's standard mode, per call
BACKOFF_CAP_S = 20.0
_CONNECTION_ERRORS = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)


def retryable(error: Exception) -> bool:
    """What the SDK's standard mode retries: throttles, 5xx answers, broken connections
    (and a transaction cancelled only because an item was throttled)."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in THROTTLE_CODES:
            return True
        if code == "TransactionCanceledException":
            reasons = [r.get("Code") for r in error.response.get("CancellationReasons") or []]
            return "ThrottlingError" in reasons and all(r in (None, "None", "ThrottlingError") for r in reasons)
        return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500
    return isinstance(error, _CONNECTION_ERRORS)


def backoff_s(retry: int) -> float:
    """The SDK's standard back-off before retry number `retry` (1, 2, ...): full jitter."""
    return random.random() * min(BACKOFF_CAP_S, 2.0 ** (retry - 1))


THROTTLE_CODES = frozenset({"ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded", "Throttling"})
_throttled = 0


def _count_throttle(response: Any = None, **_: Any) -> None:
    """Every throttled attempt the SDK sees (and will retry): the backpressure signal."""
    global _throttled
    if isinstance(response, tuple) and len(response) == 2 and isinstance(response[1], dict):
        if response[1].get("Error", {}).get("Code") in THROTTLE_CODES:
            _throttled += 1
    return None


def throttled_calls() -> int:
    """Throttled AWS attempts since the process started (a counter; read it twice for a rate)."""
    return _throttled


def client(service: str, region: str, retries: bool = True) -> Any:
    """The process's client for a service in a region. `retries=False`: one attempt per
    call, for a caller that retries itself (outside a lock it must not hold while it
    backs off; see `retryable` and `backoff_s`)."""
    key = (service, region, retries)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is not None:
            return found
        endpoint = resolve_endpoint(region)
        kwargs: dict[str, Any] = {
            "region_name": region,
            "config": Config(
                retries={"mode": "standard", "total_max_attempts": ATTEMPTS if retries else 1},
                connect_timeout=2,
                read_timeout=25,
                max_pool_connections=32,
            ),
        }
        if endpoint:
            kwargs["endpoint_url"] = endpoint
            if not os.environ.get("AWS_ACCESS_KEY_ID"):
                # moto accepts any credentials; never reach for real ones against it.
                kwargs["aws_access_key_id"] = "testing"
                kwargs["aws_secret_access_key"] = "testing"
        made = boto3.session.Session().client(service, **kwargs)

        def on_before_send(request: Any, event_name: str = "", **kw: Any) -> Any:
            return _dispatch(service, region, request, event_name=event_name)

        made.meta.events.register("before-send", on_before_send)
        made.meta.events.register("needs-retry", _count_throttle)
        _clients[key] = made
        return made


def write_endpoint_file(url: str) -> Path:
    ENDPOINT_FILE.parent.mkdir(parents=True, exist_ok=True)
    ENDPOINT_FILE.write_text(url + "\n")
    return ENDPOINT_FILE


_parameters: dict[tuple[str, str], str] = {}


def secure_parameter(name: str, region: str) -> str:
    """An SSM SecureString's decrypted value, read once per process (a Lambda's cold
    start) and kept in memory: secrets are read at run time, never copied into a
    function's environment where anyone allowed to read its configuration sees them."""
    key = (name, region)
    if key not in _parameters:
        value = client("ssm", region).get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        with _lock:
            _parameters[key] = value
    return _parameters[key]


def forget_parameters() -> None:
    with _lock:
        _parameters.clear()
