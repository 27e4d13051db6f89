"""Section 0: the moto floors (put_item/s, SQS FIFO send+receive+delete/s) and a CPU calibration."""

from __future__ import annotations

from bench.clients import floor_resources, timed_threads
from bench.results import Results
from bench.sizes import Sizes


import time
import uuid


def cpu_calibration_ms(repeats: int = 5) -> float:
    """The median time of a fixed pure-Python loop (a million additions): how fast this
    machine's core was during this run, to compare absolute timings across runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def section_moto(res: Results, sizes: Sizes, endpoint: str) -> None:
    res.add("cpu_calibration_ms", cpu_calibration_ms(), "ms", samples=5, section="0", goal="informational: a million additions in pure Python (lower is a faster core)")
    ddb, sqs, table, url = floor_resources(endpoint)
    n = sizes.floor_ops
    lat, wall = timed_threads(1, n, lambda i: ddb.put_item(TableName=table, Item={"pk": {"S": f"P#{i}"}, "v": {"N": str(i)}}))
    res.add("moto_put_item_per_s", n / wall, "ops/s", samples=n, section="0", goal="informational (DESIGN: 300-450/s)")
    batch = max(1, n // 3)

    def roundtrip() -> None:
        for i in range(batch):
            sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", MessageDeduplicationId=uuid.uuid4().hex)
        got = 0
        while got < batch:
            msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            for m in msgs:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            got += len(msgs)

    t0 = time.perf_counter()
    roundtrip()
    wall = time.perf_counter() - t0
    res.add("moto_sqs_fifo_msgs_per_s", batch / wall, "msgs/s", samples=batch, section="0", goal="informational (DESIGN: ~50/s)")


