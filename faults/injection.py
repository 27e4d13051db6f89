"""The active faults and their effects, through the single doors.

Every AWS call passes `FaultPlane.before_send` (registered with trading.aws), so a
throttle, a dead region or added latency reaches every store and queue call, and
botocore's standard-mode retries react as they would on AWS. Region and AZ health are
read by the Exchange (`region_up`, `az_up`); AZ loss and CPU stress act on the
runtime's workers; `partitioned(a, b)` is read by the replicator; the Redis failover
is a callable slot the runtime fills.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Hashable, Protocol

from botocore.awsrequest import AWSResponse

from faults.experiment import (
    AzDown,
    CpuStress,
    Effect,
    IdempotencyOff,
    Latency,
    Partition,
    RedisFailover,
    RegionDown,
    StopTasks,
    Throttle,
    az_region,
    effect_as_dict,
)
from trading import aws
from trading.config import ExchangeConfig

log = logging.getLogger(__name__)

class Runtime(Protocol):
    """What the fault plane needs from the embedded runtime (exchange_ui.runtime)."""

    exchange: Any  # trading.actions.Exchange: the plane sets region_up and az_up on it
    workers: Mapping[str, Any]  # AZ name -> simfill.worker.AzWorker
    config: ExchangeConfig

    def stop_az(self, az: str) -> None: ...

    def start_az(self, az: str) -> None: ...


class _Body:
    """The raw body botocore reads an AWSResponse's content from."""

    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def json_error_response(url: str, status: int, code: str, message: str, service: str) -> AWSResponse:
    """An AWS JSON-protocol error as the service would send it."""
    namespace = {"dynamodb": "com.amazonaws.dynamodb.v20120810#", "sqs": "com.amazonaws.sqs#"}.get(service, "")
    body = json.dumps({"__type": f"{namespace}{code}", "message": message}).encode()
    headers = {
        "x-amzn-RequestId": str(uuid.uuid4()),
        "Content-Type": "application/x-amz-json-1.0",
        "Content-Length": str(len(body)),
        "x-amzn-query-error": f"{code};Sender" if service == "sqs" else "",
    }
    return AWSResponse(url, status, {k: v for k, v in headers.items() if v}, _Body(body))


def throttling_response(url: str, service: str) -> AWSResponse:
    # On-demand tables past their limits answer ThrottlingException (provisioned ones
    # ProvisionedThroughputExceededException); botocore retries both as throttles.
    return json_error_response(url, 400, "ThrottlingException", "Rate of requests exceeds the allowed throughput.", service)


def unavailable_response(url: str, service: str) -> AWSResponse:
    # A 503 rather than a raised EndpointConnectionError: raising from before-send
    # skips the SDK's retries, a 503 is retried with backoff and the call stays bounded.
    return json_error_response(url, 503, "ServiceUnavailable", "The service is unavailable (region outage).", service)


def should_inject(rng: random.Random, percentage: int) -> bool:
    return percentage >= 100 or (percentage > 0 and rng.random() * 100 < percentage)


@dataclass(frozen=True)
class FaultView:
    """The active faults, derived once per change so the request path reads it without a lock."""

    regions_down: frozenset[str] = frozenset()
    azs_down: frozenset[str] = frozenset()
    partitions: frozenset[tuple[str, str]] = frozenset()
    throttles: tuple[Throttle, ...] = ()
    latencies: tuple[Latency, ...] = ()
    cpu: Mapping[str, int] = field(default_factory=dict)
    idempotency_off: bool = False

    @classmethod
    def of(cls, effects: Sequence[Effect]) -> FaultView:
        cpu: dict[str, int] = {}
        for effect in effects:
            if isinstance(effect, CpuStress):
                cpu[effect.az] = max(cpu.get(effect.az, 0), effect.percent)
        return cls(
            regions_down=frozenset(e.region for e in effects if isinstance(e, RegionDown)),
            azs_down=frozenset(e.az for e in effects if isinstance(e, AzDown)),
            # Either way round: partitioned(a, b) looks the pair up sorted.
            partitions=frozenset(tuple(sorted((e.a, e.b))) for e in effects if isinstance(e, Partition)),
            throttles=tuple(e for e in effects if isinstance(e, Throttle)),
            latencies=tuple(e for e in effects if isinstance(e, Latency)),
            cpu=cpu,
            idempotency_off=any(isinstance(e, IdempotencyOff) for e in effects),
        )


class FaultPlane:
    """The registry of active faults (thread-safe) and the hooks that make them real."""

    def __init__(
        self,
        config: ExchangeConfig,
        runtime: Runtime | None = None,
        seed: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config
        self.runtime = runtime
        self.sleep = sleep
        # The runtime wires the real CLIENT KILL here: called with (region, az).
        self.redis_failover: Callable[[str, str], None] | None = None
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._active: dict[Hashable, tuple[Effect, ...]] = {}
        self._view = FaultView()
        self._stopped: set[str] = set()  # AZs whose workers the plane stopped
        self._base_stress: dict[str, int] = {}  # AZ -> its task's stress before the plane's
        self.injected: Counter[str] = Counter()
        self._installed = False

    # -- wiring --------------------------------------------------------------------------

    def install(self) -> FaultPlane:
        aws.register_before_send(self.before_send)
        if self.runtime is not None:
            self.runtime.exchange.region_up = self.region_up
            self.runtime.exchange.az_up = self.az_up
            self.runtime.exchange.idempotent = self.idempotent
        self._installed = True
        return self

    def uninstall(self) -> None:
        self.clear()
        aws.unregister_before_send(self.before_send)
        self._installed = False

    # -- health, read by the exchange and the replicator -----------------------------------

    def idempotent(self) -> bool:
        """Does the facade honour Idempotency-Key now (the setting, unless an experiment says off)?"""
        return self.config.idempotency and not self._view.idempotency_off

    def region_up(self, region: str) -> bool:
        return region not in self._view.regions_down

    def az_up(self, az: str) -> bool:
        view = self._view
        return az not in view.azs_down and az_region(self.config, az) not in view.regions_down

    def partitioned(self, a: str, b: str) -> bool:
        view = self._view
        if a == b:
            return False
        return tuple(sorted((a, b))) in view.partitions or a in view.regions_down or b in view.regions_down

    # -- the request path --------------------------------------------------------------------

    def before_send(self, service: str, region: str, operation: str, request: Any) -> AWSResponse | None:
        view = self._view
        url = getattr(request, "url", "") or ""
        if region in view.regions_down:
            self._count("region_down")
            return unavailable_response(url, service)
        for latency in view.latencies:
            if latency.region == region and should_inject(self._rng, latency.percentage):
                self._count("latency")
                self.sleep(latency.delay_ms / 1000)
        for throttle in view.throttles:
            if throttle.region != region or throttle.service != service:
                continue
            if throttle.operations and operation not in throttle.operations:
                continue
            if should_inject(self._rng, throttle.percentage):
                self._count("throttle")
                return throttling_response(url, service)
        return None

    def _count(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1

    # -- the registry ----------------------------------------------------------------------

    def apply(self, key: Hashable, effects: Sequence[Effect]) -> None:
        """Make `effects` active under `key` (an experiment's action); instant ones act now."""
        with self._lock:
            self._active[key] = tuple(effects)
            self._rebuild()
            for effect in effects:
                if isinstance(effect, StopTasks):
                    self._stop_az(effect.az)
        for effect in effects:
            if isinstance(effect, RedisFailover):
                self._failover(effect)
        self.sync()

    def remove(self, key: Hashable) -> None:
        with self._lock:
            if self._active.pop(key, None) is None:
                return
            self._rebuild()
        self.sync()

    def remove_where(self, predicate: Callable[[Hashable], bool]) -> None:
        with self._lock:
            for key in [k for k in self._active if predicate(k)]:
                del self._active[key]
            self._rebuild()
        self.sync()

    def clear(self) -> None:
        self.remove_where(lambda key: True)

    def active(self) -> dict[Hashable, tuple[Effect, ...]]:
        with self._lock:
            return dict(self._active)

    def _rebuild(self) -> None:
        self._view = FaultView.of([e for effects in self._active.values() for e in effects])

    def _failover(self, effect: RedisFailover) -> None:
        slot = self.redis_failover
        if slot is None:
            log.warning("redis failover in %s/%s: no failover hook wired, nothing to drop", effect.region, effect.az)
            return
        slot(effect.region, effect.az)

    # -- workers ----------------------------------------------------------------------------

    def _stop_az(self, az: str) -> None:
        runtime = self.runtime
        if runtime is None or az not in runtime.workers:
            return
        if runtime.workers[az].alive:
            runtime.stop_az(az)
        self._stopped.add(az)

    def sync(self) -> None:
        """Bring the workers in line with the active faults; call it after changes and on every tick.

        A worker stopped by the plane restarts once nothing holds its AZ down and its
        old thread has finished (a restart over a live thread would run two loops).
        """
        runtime = self.runtime
        if runtime is None:
            return
        with self._lock:
            view = self._view
            for az, worker in runtime.workers.items():
                held = not self.az_up(az)
                if held and worker.alive:
                    runtime.stop_az(az)
                    self._stopped.add(az)
                elif not held and az in self._stopped and not _thread_alive(worker):
                    runtime.start_az(az)
                    self._stopped.discard(az)
                # CPU stress: the task burns its own thread (simfill.stress) for the percent.
                percent = view.cpu.get(az, 0)
                if percent:
                    base = self._base_stress.setdefault(az, int(worker.cpu_stress_percent))
                    worker.cpu_stress_percent = max(base, percent)
                elif az in self._base_stress:
                    worker.cpu_stress_percent = self._base_stress.pop(az)
            # A runtime that reschedules a down AZ's task elsewhere does it now (the
            # embedded one; run-multi's supervisor does it from the control files).
            place = getattr(runtime, "place_stand_ins", None)
            if place is not None:
                place()

    def pending_restarts(self) -> list[str]:
        with self._lock:
            return sorted(self._stopped)

    # -- what the UI shows --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        view = self._view
        with self._lock:
            effects = [effect_as_dict(e) for effects in self._active.values() for e in effects]
            injected = dict(self.injected)
            stopped = sorted(self._stopped)
        return {
            "regions_down": sorted(view.regions_down),
            "azs_down": sorted(view.azs_down),
            "partitions": [list(p) for p in sorted(view.partitions)],
            "throttles": [effect_as_dict(t) for t in view.throttles],
            "latencies": [effect_as_dict(t) for t in view.latencies],
            "cpu_stress": dict(view.cpu),
            "idempotency_off": view.idempotency_off,
            "workers_stopped": stopped,
            "effects": effects,
            "injected": injected,
        }


def _thread_alive(worker: Any) -> bool:
    thread = getattr(worker, "thread", None)
    return bool(thread is not None and thread.is_alive())
