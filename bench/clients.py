"""The bench's own clients: raw boto3 against moto (the floors), a timed thread pool, a
WebSocket to the server, the exchange config the in-process floors use, a Redis probe."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any


def redis_available(url: str) -> bool:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False



def raw_clients(endpoint: str, region: str = "us-east-1") -> tuple[Any, Any]:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    kw = dict(
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": 4}, max_pool_connections=32),
    )
    return session.client("dynamodb", **kw), session.client("sqs", **kw)


def floor_resources(endpoint: str) -> tuple[Any, Any, str, str]:
    ddb, sqs = raw_clients(endpoint)
    table = f"bench-floor-{uuid.uuid4().hex[:6]}"
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    url = sqs.create_queue(QueueName=f"{table}.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    return ddb, sqs, table, url


def timed_threads(threads: int, total: int, op: Callable[[int], None]) -> tuple[list[float], float]:
    """Run `op(i)` for i in range(total) over `threads` threads; (latencies s, wall s)."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            op(i)
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return latencies, time.perf_counter() - started



def ws_connect(url: str, token: str | None = None, origin: str | None = None) -> Any:
    import websockets

    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return websockets.connect(url, additional_headers=headers, origin=origin, max_size=None, open_timeout=30, ping_interval=None)



def bench_config(**overrides: Any) -> Any:
    from trading.config import ExchangeConfig, Market

    values: dict[str, Any] = {
        "regions": ("us-east-1", "eu-west-1"),
        "markets": (Market(symbol="BTC-USD", home_region="us-east-1"),),
        "engine": "simfill",
        "seed": 1,
        "synthetic_rate": Decimal("0"),
        "azs_per_region": 2,
        "endpoint_url": None,
        "redis_url": None,
        "table_prefix": "exchange",
        "visibility_timeout_s": 5,
    }
    values.update(overrides)
    return ExchangeConfig(**values)

