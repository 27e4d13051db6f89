"""Section 1: POST /api/orders over HTTP vs raw TransactWriteItems + SQS send, 1 and 4 threads;
the API facade alone (`run_exchange --api-only`) and the full server."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Callable

from bench.clients import floor_resources, raw_clients, timed_threads
from bench.results import Results, chart, pct
from bench.server import Server
from bench.sizes import Sizes


INGEST_ROUNDS = 3  # turns per level: floor, facade alone, full server, and again
ALONE_PREFIX = "bench-alone"  # the API facade's own tables and queues: no worker of the full server reads them


def section_ingest(res: Results, sizes: Sizes, endpoint: str, server: Server, token: str, alone: Server | None, alone_token: str) -> None:
    """The floor, the API facade alone (`run_exchange --api-only`, the api_<region> stage:
    it does what the floor does, and no more) and the full server (the same facade with
    SimFill, the stream readers, the mirror and the replicator working on every order in
    the same process and the same moto, on the same 2 cores), interleaved per level."""
    import requests

    ddb, sqs, table, url = floor_resources(endpoint)
    queue = {"url": url}

    from botocore.exceptions import ClientError

    floor_errors = {"n": 0}

    def floor_op(i: int) -> None:
        key = uuid.uuid4().hex
        for _ in range(20):
            try:
                ddb.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": table, "Item": {"pk": {"S": f"ORDER#{key}"}, "qty": {"N": "1"}}, "ConditionExpression": "attribute_not_exists(pk)"}},
                        {"Put": {"TableName": table, "Item": {"pk": {"S": f"IDEM#{key}"}}, "ConditionExpression": "attribute_not_exists(pk)"}},
                    ]
                )
                break
            except ClientError:
                # moto answers 500 to concurrent transactions (DESIGN.md); a client retries.
                floor_errors["n"] += 1
        sqs.send_message(QueueUrl=queue["url"], MessageBody=json.dumps({"order_id": key}), MessageGroupId="BTC-USD", MessageDeduplicationId=key)

    def system_op(target: Server, bearer: str) -> Callable[[int], None]:
        local = threading.local()

        def op(i: int) -> None:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = requests.Session()
            response = session.post(
                target.url + "/api/orders",
                data=json.dumps({"symbol": "BTC-USD", "side": "BUY" if i % 2 else "SELL", "qty": "0.0100", "price": "50000.00"}),
                headers={"Authorization": f"Bearer {bearer}", "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"},
                timeout=30,
            )
            if response.status_code != 201:
                raise RuntimeError(f"POST /api/orders -> {response.status_code} {response.text[:200]}")

        return op

    systems = [("alone", alone, alone_token)] if alone is not None else []
    systems.append(("loaded", server, token))
    ops = {kind: system_op(target, bearer) for kind, target, bearer in systems}
    for kind, op in ops.items():
        timed_threads(1, max(2, sizes.ingest_ops // 10), op)  # each facade's first orders learn its counters and connections
    groups: list[str] = []
    series: dict[str, dict[str, list[float]]] = {"tp": {}, "p99": {}}
    worst: dict[str, dict[str, float]] = {kind: {"tp": math.inf, "p99": 0.0} for kind, _, _ in systems}
    samples = {kind: 0 for kind, _, _ in systems}
    label = {"floor": "floor: TransactWriteItems + SQS", "alone": "API facade alone (--api-only)", "loaded": "full server (fills, streams, replication)"}
    accepted_alone = 0
    for threads in (1, 4):
        n = max(threads, sizes.ingest_ops)
        # A fresh queue per level: moto's FIFO send recounts the queue, so depth is part of the cost.
        queue["url"] = sqs.create_queue(QueueName=f"{table}-t{threads}.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        # In INGEST_ROUNDS short turns, floor then each system, so that a burst of the
        # machine's other load falls on all of them, not on whichever ran through it.
        chunk = max(threads, n // INGEST_ROUNDS)
        f_lat, f_wall = [], 0.0
        s_runs: dict[str, tuple[list[float], float]] = {kind: ([], 0.0) for kind, _, _ in systems}
        for _ in range(max(1, n // chunk)):
            lat, wall = timed_threads(threads, chunk, floor_op)
            f_lat, f_wall = f_lat + lat, f_wall + wall
            for kind, _, _ in systems:
                lat, wall = timed_threads(threads, chunk, ops[kind])
                s_runs[kind] = (s_runs[kind][0] + lat, s_runs[kind][1] + wall)
        n = len(f_lat)
        f_tp, f99 = n / f_wall, pct(f_lat, 99) or 0
        res.add(f"ingest_floor_t{threads}_per_s", f_tp, "orders/s", samples=n, section="1", goal="floor")
        res.add(f"ingest_floor_t{threads}_p99_ms", f99 * 1000, "ms", samples=n, section="1", goal="floor")
        groups.append(f"{threads} thread{'s' if threads > 1 else ''}")
        series["tp"].setdefault("floor", []).append(f_tp)
        series["p99"].setdefault("floor", []).append(f99 * 1000)
        for kind, _, _ in systems:
            s_lat, s_wall = s_runs[kind]
            if kind == "alone":
                accepted_alone += len(s_lat)
            s_tp, s99 = n / s_wall, pct(s_lat, 99) or 0
            tp_ratio, p99_ratio = s_tp / f_tp, s99 / f99 if f99 else math.inf
            worst[kind]["tp"] = min(worst[kind]["tp"], tp_ratio)
            worst[kind]["p99"] = max(worst[kind]["p99"], p99_ratio)
            samples[kind] += n
            name = "system" if kind == "alone" else "loaded"
            res.add(f"ingest_{name}_t{threads}_per_s", s_tp, "orders/s", floor=f_tp, samples=n, section="1", goal=">= 0.5x floor", met=tp_ratio >= 0.5)
            res.add(f"ingest_{name}_t{threads}_p99_ms", s99 * 1000, "ms", floor=f99 * 1000, samples=n, section="1", goal="<= 3x floor", met=p99_ratio <= 3)
            res.tables.setdefault("1", []).append(
                f"| {threads} | {label[kind]} | {f_tp:.1f} | {s_tp:.1f} | {tp_ratio:.2f} | {1000 * (pct(f_lat, 50) or 0):.1f} / {1000 * f99:.1f} | "
                f"{1000 * (pct(s_lat, 50) or 0):.1f} / {1000 * s99:.1f} | {p99_ratio:.2f} | {n} |"
            )
            series["tp"].setdefault(kind, []).append(s_tp)
            series["p99"].setdefault(kind, []).append(s99 * 1000)
    if floor_errors["n"]:
        res.note("1", f"moto answered {floor_errors['n']} floor transaction(s) with HTTP 500 under concurrency (DESIGN.md); the floor retried them, and its latency includes the retries.")
    if alone is not None:
        warm = max(2, sizes.ingest_ops // 10)
        deadline = time.monotonic() + 10
        queued, stored = alone_durability(endpoint)
        while queued < accepted_alone + warm and time.monotonic() < deadline:
            time.sleep(0.2)  # the facade's relay may still hold the last sends
            queued, stored = alone_durability(endpoint)
        res.add("ingest_alone_orders_lost", accepted_alone + warm - min(queued, stored), "orders", samples=accepted_alone + warm, section="1", goal="0: every accepted order stored and queued", met=queued == stored == accepted_alone + warm)
    headline = "alone" if alone is not None else "loaded"
    res.add("ingest_throughput_ratio", worst[headline]["tp"], "x floor", ratio=worst[headline]["tp"], goal=">= 0.5", met=worst[headline]["tp"] >= 0.5, samples=samples[headline], section="1")
    res.add("ingest_p99_ratio", worst[headline]["p99"], "x floor", ratio=worst[headline]["p99"], goal="<= 3", met=worst[headline]["p99"] <= 3, samples=samples[headline], section="1")
    if alone is not None:
        res.add("ingest_loaded_throughput_ratio", worst["loaded"]["tp"], "x floor", ratio=worst["loaded"]["tp"], goal=">= 0.5", met=worst["loaded"]["tp"] >= 0.5, samples=samples["loaded"], section="1")
        res.add("ingest_loaded_p99_ratio", worst["loaded"]["p99"], "x floor", ratio=worst["loaded"]["p99"], goal="<= 3", met=worst["loaded"]["p99"] <= 3, samples=samples["loaded"], section="1")
    chart(res, "1", "ingest_throughput.svg", "Ingest throughput (higher is better)", groups, {label[k]: v for k, v in series["tp"].items()}, "orders/s")
    chart(res, "1", "ingest_p99.svg", "Ingest p99 latency (lower is better)", groups, {label[k]: v for k, v in series["p99"].items()}, "ms")


def alone_durability(endpoint: str) -> tuple[int, int]:
    """(messages queued, orders stored) in the API facade's own tables, over the regions:
    nobody consumes them, so every accepted order must be in both."""
    from django.conf import settings

    from trading.queue import queue_name
    from trading.store import table_names

    queued = stored = 0
    for region in settings.EXCHANGE.regions:
        ddb, sqs = raw_clients(endpoint, region)
        url = sqs.get_queue_url(QueueName=queue_name(ALONE_PREFIX, region))["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        queued += int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
        pages = ddb.get_paginator("scan").paginate(
            TableName=table_names(ALONE_PREFIX)["orders"], Select="COUNT",
            FilterExpression="begins_with(pk, :o)", ExpressionAttributeValues={":o": {"S": "ORDER#"}},
        )
        stored += sum(page["Count"] for page in pages)
    return queued, stored

