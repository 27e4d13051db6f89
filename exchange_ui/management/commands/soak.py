"""`make soak SEED=<n> ORDERS=<n>`: a seeded game day on the embedded default.

A fresh moto server (a child process) as AWS, the runtime as `make run` builds it
(SimFill tasks per AZ, the fault plane and runner, the replicator and the reconcile
worker), and the seeded synthetic traders' order stream submitted at a steady rate
while every built-in experiment runs on a schedule derived from the seed, overlapping
where the seed says so. A trader refused with 503 retries later with the same
idempotency key, as a client would. Afterwards the faults are gone, the queues drain,
replication and reconciliation settle, and check_history judges what every region
recorded: 0 accepted orders lost, 0 double fills left, regions converged. While the
orders go in, the reconcile worker's retained state is sampled (entries, and bytes of its
structures): over a stream of four horizons or more it must stay flat (RetainedWatch).

Prints the seed, the schedule and the counts; exits 1 when an invariant fails.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from decimal import Decimal
from itertools import islice
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from trading import aws
from trading.collector import settle_collector

log = logging.getLogger(__name__)

# Experiments take part of the window each, so several overlap; all end before the orders do.
SLOT_SHARE = (0.08, 0.22)
MIN_SLOT_S = 3
RETRIES = 6


@dataclass(frozen=True)
class Slot:
    template: str
    start_s: float
    duration_s: int

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def as_dict(self) -> dict[str, Any]:
        return {"template": self.template, "start_s": self.start_s, "duration_s": self.duration_s}


def game_day_schedule(seed: int, window_s: float, template_ids: list[str]) -> list[Slot]:
    """Every template once, at a start and for a duration the seed decides. Pure."""
    rng = random.Random(f"game-day:{seed}")
    order = sorted(template_ids)
    rng.shuffle(order)
    slots = []
    for template in order:
        duration = max(MIN_SLOT_S, round(window_s * rng.uniform(*SLOT_SHARE)))
        latest = max(0.05 * window_s, 0.9 * window_s - duration)
        start = round(rng.uniform(0.05 * window_s, latest), 1)
        slots.append(Slot(template, start, duration))
    return sorted(slots, key=lambda s: (s.start_s, s.template))


def overlaps(schedule: list[Slot]) -> list[tuple[str, str]]:
    return [(a.template, b.template) for i, a in enumerate(schedule) for b in schedule[i + 1 :] if b.start_s < a.end_s]


def tape_digest(trades: list[dict[str, Any]]) -> str:
    """What SimFill decided, independent of where and when: (order, fill index, qty, price)."""
    rows = sorted((str(t["orderId"]), int(t["fillIndex"]), format(Decimal(t["qty"]), "f"), format(Decimal(t["price"]), "f")) for t in trades)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


# Traders are many independent clients: a slow exchange must not slow the stream they
# send, so enough threads submit that each order still leaves on time; the pacing keeps
# the rate. The latency experiment adds 200 ms to every AWS call in a region, and the
# throttling experiment makes an order's writes back off and retry for seconds: with 8
# threads a 10,000-order soak accepted 1.3 orders/s for the minute it throttled.
TRADER_THREADS = 32


class Traders:
    """The synthetic traders' stream, submitted by several threads at a steady total rate."""

    def __init__(self, exchange: Any, intents: list[Any], rate: float, threads: int = TRADER_THREADS):
        self.exchange = exchange
        self.intents = intents
        self.rate = rate
        self.threads = threads
        self.accepted: dict[str, Any] = {}  # order_id -> Order
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._next = 0
        self._retry: list[tuple[float, Any, int]] = []

    def _take(self) -> tuple[Any, int, int] | None:
        """(intent, attempt, its slot in the stream): a retry that is due, else the next order."""
        with self._lock:
            now = time.monotonic()
            for index, (due, intent, attempt) in enumerate(self._retry):
                if due <= now:
                    del self._retry[index]
                    return intent, attempt, -1
            if self._next < len(self.intents):
                intent = self.intents[self._next]
                self._next += 1
                return intent, 0, self._next - 1
            return None

    def progress(self) -> float:
        """The share of the stream sent at least once."""
        with self._lock:
            return self._next / max(1, len(self.intents))

    def _pending(self) -> bool:
        with self._lock:
            return bool(self._retry) or self._next < len(self.intents)

    def run(self, started: float) -> None:
        from trading.actions import IdempotencyConflict, RegionUnavailable, submit_order
        from trading.limits import PositionLimitExceeded

        interval = 1.0 / self.rate
        sent = 0
        while self._pending():
            taken = self._take()
            if taken is None:
                time.sleep(0.05)
                continue
            intent, attempt, slot = taken
            if attempt == 0:
                # Pace first attempts only: the stream keeps its rate whatever the faults do.
                delay = started + slot * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            try:
                order, created = submit_order(self.exchange, intent.client, intent.payload, intent.idempotency_key)
            except RegionUnavailable:
                with self._lock:
                    if attempt + 1 < RETRIES:
                        self.counts["retried"] += 1
                        self._retry.append((time.monotonic() + 1.0 * (attempt + 1), intent, attempt + 1))
                    else:
                        self.counts["refused"] += 1
                continue
            except IdempotencyConflict:
                with self._lock:
                    self.counts["conflict"] += 1
                continue
            except PositionLimitExceeded:
                with self._lock:
                    self.counts["limited"] += 1
                continue
            except Exception:
                log.exception("order %s failed", intent.idempotency_key)
                with self._lock:
                    self.counts["error"] += 1
                continue
            with self._lock:
                self.accepted[order.order_id] = order
                self.counts["accepted" if created else "replayed"] += 1
                if order.history and "rerouted" in order.history[0].note:
                    self.counts["rerouted"] += 1
            sent += 1

    def submit_all(self) -> None:
        started = time.monotonic()
        workers = [threading.Thread(target=self.run, args=(started,), name=f"trader-{n}", daemon=True) for n in range(self.threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()


def rss_mb(pid: int) -> float | None:
    """A process's resident memory in MB, from /proc (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class MemoryWatch:
    """Samples the resident memory of the soak's processes while the orders go in and
    settle: start, peak and end per process. The collector runs full passes ten times less
    often in these processes (trading/collector.py): this is what shows it costs no growth."""

    def __init__(self, pids: dict[str, int], every_s: float = 2.0):
        self.pids = pids
        self.every_s = every_s
        self.samples: dict[str, list[float]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-memory", daemon=True)

    def start(self) -> MemoryWatch:
        self.sample()
        self._thread.start()
        return self

    def sample(self) -> None:
        for name, pid in self.pids.items():
            value = rss_mb(pid)
            if value is not None:
                self.samples[name].append(value)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def stop(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        self._thread.join()
        self.sample()
        return {
            name: {"start": round(values[0], 1), "peak": round(max(values), 1), "end": round(values[-1], 1)}
            for name, values in self.samples.items()
            if values
        }


def deep_size(root: Any) -> int:
    """Bytes of `root` and everything it holds (dicts, sequences, sets, slotted and plain
    objects), each object once: what a structure costs, as sys.getsizeof counts it."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif not isinstance(obj, (str, bytes, int, float, Decimal, bool)) and obj is not None:
            for klass in type(obj).__mro__:
                for name in getattr(klass, "__slots__", ()):
                    if hasattr(obj, name):
                        stack.append(getattr(obj, name))
            if hasattr(obj, "__dict__"):
                stack.append(vars(obj))
    return total


# The reconcile worker is bounded when, once everything has settled and replicated, it holds
# no more orders (live ones and tombstones) than were written in the last two horizons of
# stream time and one retirement step (retiring starts a horizon after an order's last
# write; its tombstone goes a horizon later): a window whatever the run's length, where a
# worker that kept everything would hold every order of the run. A little slack covers
# orders whose copies straddle the window's edge.
BOUND_SLACK = 0.05
RECONCILED = ("recent", "not_everywhere", "ranked_behind", "tombstones")
IN_FLIGHT = ("unsettled", "pending")


class RetainedWatch:
    """Samples what the reconcile worker holds while the orders go in and settle, every
    `every_s`: its entries (copies, fills, tombstones, indexes; `ReconcileWorker.retained`),
    its orders by why they are held (`held_orders`: reconciled ones, bounded by retirement,
    and the ones in flight, the fill backlog), and every `deep_every` samples the bytes of
    its structures (a walk under its lock, so less often). `judge` then holds the settled
    worker to the bound above."""

    def __init__(self, worker: Any, progress: Any, window_s: float, every_s: float = 2.0, deep_every: int = 10):
        self.worker = worker
        self.progress = progress
        # Judged on a stream of at least four horizons: a shorter one only reports its figures.
        self.judged = window_s >= 4 * worker.horizon_ms / 1000
        self.every_s = every_s
        self.deep_every = deep_every
        # (share of the stream sent, entries, bytes, reconciled orders held, orders in flight)
        self.samples: list[tuple[float, int, int | None, int, int]] = []
        self.stream_end = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-retained", daemon=True)

    def start(self) -> RetainedWatch:
        self.sample(deep=True)
        self._thread.start()
        return self

    def sample(self, deep: bool = False) -> None:
        held = self.worker.retained()
        entries = sum(held[k] for k in ("copies", "fills", "tombstones", "held_in", "written", "accounts", "openings"))
        size = self.worker.measured(deep_size) if deep else None
        orders = self.worker.held_orders()
        reconciled = sum(orders.get(k, 0) for k in RECONCILED)
        in_flight = sum(orders.get(k, 0) for k in IN_FLIGHT)
        self.samples.append((self.progress(), entries, size, reconciled, in_flight))

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.every_s):
            n += 1
            self.sample(deep=n % self.deep_every == 0)

    def mark_stream_end(self) -> None:
        self.sample(deep=True)
        self.stream_end = len(self.samples) - 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample(deep=True)

    def judge(self, history: Any) -> dict[str, Any]:
        """The figures, and whether the settled worker keeps to the window (see BOUND_SLACK)."""
        stream = self.samples[: self.stream_end + 1]

        def at(column: int) -> dict[str, Any]:
            rows = [s for s in stream if s[column] is not None] or stream
            middle = min(rows, key=lambda s: abs(s[0] - 0.5))
            return {
                "start": self.samples[0][column], "middle": middle[column], "stream_end": stream[-1][column],
                "settled": self.samples[-1][column], "peak": max((s[column] or 0) for s in self.samples),
            }

        step_ms = self.worker.retire_every_ms
        edge = self.worker.stream_ms - 2 * self.worker.horizon_ms - step_ms
        newest: dict[str, int] = {}
        for region in history.regions:
            for item in history.tables[region]["orders"].values():
                order_id = str(item["orderId"])
                newest[order_id] = max(newest.get(order_id, 0), int(item.get("updatedAt") or item.get("createdAt") or 0))
            for item in history.tables[region]["trades"].values():
                order_id = str(item["orderId"])
                newest[order_id] = max(newest.get(order_id, 0), int(item.get("timestamp") or 0))
        window = sum(1 for ms in newest.values() if ms > edge)
        held = self.worker.retained()
        kept = held["orders"] + held["tombstones"]
        bound = window + max(50, int(BOUND_SLACK * window))
        mb = {k: round((v or 0) / 2**20, 2) for k, v in at(2).items()}
        return {
            "horizon_s": self.worker.horizon_ms / 1000,
            "entries": at(1),
            "mb": mb,
            "reconciled_orders": at(3),
            "orders_in_flight": at(4),
            "orders_of_the_run": len(newest),
            "orders_in_window": window,
            "orders_held_settled": kept,
            "bound": bound,
            "flat": (kept <= bound) if self.judged else None,
            "retired": self.worker.retired_total,
            "late_records_dropped": self.worker.late_records_dropped,
            "restored": self.worker.restored_total,
            "held_back_end": self.worker.held_orders(),
            "samples": len(self.samples),
        }


class Command(BaseCommand):
    help = "A seeded game day: synthetic orders under every built-in experiment, then check_history."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--orders", type=int, default=1000)
        parser.add_argument("--rate", type=float, default=20.0, help="orders/s from the synthetic traders")
        parser.add_argument("--settle-timeout", type=float, default=0.0, help="seconds to wait for the fills and replication after the stream (default: 180 + 0.1 per order)")
        parser.add_argument(
            "--one-moto",
            action="store_true",
            help="serve every region from one moto server, as `make run` does (default: one moto server per region, as each AWS region is its own endpoint)",
        )
        parser.add_argument("--json", dest="json_path", default="", help="also write the report as JSON here")
        parser.add_argument(
            "--reconcile-horizon",
            type=int,
            default=60,
            help="seconds of stream time before the reconcile worker retires a settled order every region holds "
            "(default 60 here, so a 10,000-order run spans several horizons; EXCHANGE_RECONCILE_HORIZON_S defaults to 300)",
        )

    def say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def handle(self, *args: Any, **options: Any) -> None:
        for noisy in ("botocore", "urllib3", "faults", "simfill", "trading", "reconcile_panel", "exchange_ui.runtime"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        settle_timeout = options["settle_timeout"] or 180.0 + 0.1 * options["orders"]
        report = self.game_day(
            options["seed"], options["orders"], options["rate"], settle_timeout, one_moto=options["one_moto"],
            reconcile_horizon_s=options["reconcile_horizon"],
        )
        if options["json_path"]:
            with open(options["json_path"], "w") as out:
                json.dump(report, out, indent=2, sort_keys=True)
        if not report["ok"]:
            self.say(self.style.ERROR("soak: an invariant failed"))
            sys.exit(1)
        self.say(self.style.SUCCESS("soak: every invariant holds"))

    def game_day(
        self, seed: int, orders: int, rate: float, settle_timeout: float, one_moto: bool = False, reconcile_horizon_s: int = 60
    ) -> dict[str, Any]:
        from exchange_ui.runtime import Runtime, set_runtime
        from faults.templates import builtin_templates
        from reconcile_panel.history import check
        from reconcile_panel.provision import ensure_reconcile_tables
        from reconcile_panel.store import load_history
        from trading.config import VAR_DIR
        from trading.motoserver import MotoServer
        from trading.provision import bootstrap
        from trading.queue import forget_urls
        from trading.synthetic import intents

        VAR_DIR.mkdir(parents=True, exist_ok=True)
        call_command("migrate", verbosity=0, interactive=False)
        regions = list(settings.EXCHANGE.regions)
        servers = [MotoServer(log_path=VAR_DIR / f"soak-moto-{n}.log").start() for n in range(1 if one_moto else len(regions))]
        aws.use_endpoint(servers[0].url)
        if not one_moto:
            # moto serves one request at a time per process (one interpreter lock): one server
            # per region, as each AWS region is its own endpoint, lets the two regions' calls
            # run side by side instead of queueing behind each other.
            aws.use_region_endpoints({region: server.url for region, server in zip(regions, servers)})
        forget_urls()
        self.endpoints = {region: servers[0 if one_moto else n].url for n, region in enumerate(regions)}
        config = replace(
            settings.EXCHANGE, seed=seed, synthetic_rate=Decimal(0), endpoint_url=servers[0].url, reconcile_horizon_s=reconcile_horizon_s
        )
        window_s = orders / rate
        template_ids = [t.id for t in builtin_templates(config)]
        schedule = game_day_schedule(seed, window_s, template_ids)
        # The game day may overlap every template at once: its runner's cap admits them all.
        config = replace(config, max_experiments=max(config.max_experiments, len(schedule)))
        self.say(
            f"soak: seed {seed}, {orders} orders at {rate:g}/s over {window_s:.0f} s, regions {', '.join(config.regions)}"
            f" ({'one moto server' if one_moto else 'one moto server per region'})"
        )
        self.say("schedule (seconds into the order stream at the nominal rate; an experiment starts when the stream gets there):")
        for slot in schedule:
            self.say(f"  {slot.start_s:7.1f} -> {slot.end_s:7.1f}  {slot.template}")
        self.say(f"  overlapping: {', '.join('+'.join(p) for p in overlaps(schedule)) or 'none'}")
        runtime = None
        try:
            bootstrap(config, say=lambda line: None)
            ensure_reconcile_tables(config)
            runtime = Runtime.build(config, with_mirror=False)
            set_runtime(runtime)
            runtime.start(synthetic=False)
            stream = list(islice(intents(config, seed), orders))
            settle_collector()  # trading.collector: what is built by now lives for the run
            pids = {"soak process": os.getpid()}
            for region, server in zip(regions, servers):
                if server.process is not None:
                    pids[f"moto {region if not one_moto else '(all regions)'}"] = server.process.pid
            memory = MemoryWatch(pids).start()
            traders = Traders(runtime.exchange, stream, rate)
            retained = RetainedWatch(runtime.reconciler, traders.progress, window_s).start()
            started = time.monotonic()
            experiments = self._run_schedule(runtime, schedule, traders, window_s)
            reporter = threading.Thread(target=self._progress, args=(runtime, traders, started), name="soak-progress", daemon=True)
            reporter.start()
            traders.submit_all()
            for thread in experiments:
                thread.join()
            retained.mark_stream_end()
            submitted_s = time.monotonic() - started
            runtime.runner.stop_all("The game day is over.")
            self.say(f"orders submitted in {submitted_s:.1f} s: {dict(sorted(traders.counts.items()))}")
            settle_s = self._settle(runtime, traders, settle_timeout)
            self.memory_mb = memory.stop()
            retained.stop()
            history = load_history(config)
            self.retained = retained.judge(history)
            result = check(history)
        finally:
            if runtime is not None:
                runtime.stop()
                set_runtime(None)
            aws.use_region_endpoints({})
            aws.use_endpoint(None)
            for server in servers:
                server.stop()
        return self._report(seed, orders, rate, schedule, traders, history, result, submitted_s, settle_s, runtime)

    def _progress(self, runtime: Any, traders: Traders, started: float, every_s: float = 15.0) -> None:
        """A line every `every_s` while the stream runs: how far, how fast, what is queued
        and which faults act, so a long soak is never silent."""
        while traders.progress() < 1.0:
            time.sleep(every_s)
            elapsed = time.monotonic() - started
            with traders._lock:
                accepted = len(traders.accepted)
            metrics = runtime.last_metrics or {}
            faults = sorted({str(e.get("template_id") or e["id"]) for e in runtime.runner.running()})
            self.say(
                f"  {elapsed:6.0f} s  {traders.progress():6.1%} sent  {accepted} accepted ({accepted / max(elapsed, 1e-9):.1f}/s)"
                f"  queued {metrics.get('queued_events', '?')}  awaiting fill {metrics.get('awaiting_fill', '?')}"
                f"  faults: {', '.join(faults) or 'none'}"
            )

    def _run_schedule(self, runtime: Any, schedule: list[Slot], traders: Traders, window_s: float) -> list[threading.Thread]:
        """Start each experiment when the order stream reaches its point in the window: where
        the exchange cannot keep the rate, the schedule stretches with the stream, so the same
        seed puts the same faults over the same orders."""
        self.experiment_log: list[dict[str, Any]] = []

        def run(slot: Slot) -> None:
            while traders.progress() < slot.start_s / window_s:
                time.sleep(0.05)
            try:
                snapshot = runtime.runner.submit({"template": slot.template, "duration": f"PT{slot.duration_s}S"})
                self.experiment_log.append({"template": slot.template, "id": snapshot["id"]})
            except Exception as error:  # a refused template is a finding, not a crash
                self.experiment_log.append({"template": slot.template, "error": str(error)})

        threads = [threading.Thread(target=run, args=(slot,), name=f"game-day-{slot.template}", daemon=True) for slot in schedule]
        for thread in threads:
            thread.start()
        return threads

    def _settle(self, runtime: Any, traders: Traders, timeout_s: float) -> float:
        """Wait until no fault is left, every accepted order is final where it was accepted,
        replication has drained and the reconciler has written its decisions."""
        started = said = time.monotonic()
        deadline = started + timeout_s
        by_region: dict[str, set[str]] = {}
        for order in traders.accepted.values():
            by_region.setdefault(order.region, set()).add(order.order_id)
        while True:
            # While the queues still hold messages, their depth says enough (one cheap call per
            # region): reading thousands of open orders every second took a third of moto's
            # CPU from the workers draining them.
            queued = self._queued(runtime)
            stopped: Any = None
            if queued:
                waiting = f"{queued} message(s) queued"
            else:
                # Then only the orders still open are read again (batched gets, no scan of
                # the table); a missing one is not waited for: check_history reports it as lost.
                open_orders = 0
                for region, ids in by_region.items():
                    still = {o.order_id for o in runtime.exchange.stores[region].orders.get_many(sorted(ids)) if o.region == region and o.is_open}
                    by_region[region] = still
                    open_orders += len(still)
                stopped = runtime.plane.pending_restarts()
                if open_orders == 0 and not stopped:
                    break
                waiting = f"{open_orders} order(s) still open"
            if time.monotonic() - said >= 15.0:
                said = time.monotonic()
                self.say(f"  settling {said - started:5.0f} s  {waiting}")
            if time.monotonic() > deadline:
                self.say(f"settle: {waiting}" + (f", workers stopped: {stopped}" if stopped else ""))
                break
            time.sleep(1.0)
        try:
            runtime.replicator.drain(timeout_s=max(10.0, deadline - time.monotonic()))
            for _ in range(5):
                runtime.reconciler.run_once()
                moved = runtime.replicator.drain(timeout_s=max(10.0, deadline - time.monotonic()))
                if moved == 0:
                    break
            # A live worker retires every tenth of a horizon of stream time; a stream that has
            # stopped brings no more steps, so one is taken here, on the settled facts.
            runtime.reconciler.run_once()
            runtime.reconciler.retire_due(force=True)
        except TimeoutError as error:
            # Not a crash: check_history then shows what did not converge, with witnesses.
            self.say(f"settle: {error}")
        return time.monotonic() - started

    @staticmethod
    def _queued(runtime: Any) -> int:
        """Messages visible or in flight in every region's queue (0 if one cannot be read:
        the orders themselves are checked then)."""
        try:
            return sum(sum(queue.depth()) for queue in runtime.exchange.queues.values())
        except Exception:
            return 0

    def _report(
        self,
        seed: int,
        orders: int,
        rate: float,
        schedule: list[Slot],
        traders: Traders,
        history: Any,
        result: dict[str, Any],
        submitted_s: float,
        settle_s: float,
        runtime: Any,
    ) -> dict[str, Any]:
        rules = Counter(result.get("counts", {}))
        lost = [
            order_id
            for order_id in traders.accepted
            if not any(f"ORDER#{order_id}" in history.tables[r]["orders"] for r in history.regions)
        ]
        trades = {pk: item for r in history.regions for pk, item in history.tables[r]["trades"].items()}
        records = Counter(str(item.get("recordType")) for r in history.regions[:1] for item in history.tables[r]["reconcile"].values())
        counts = {
            "orders_intended": orders,
            "accepted": len(traders.accepted),
            "refused_after_retries": traders.counts["refused"],
            "refused_by_position_limit": traders.counts["limited"],
            "retries": traders.counts["retried"],
            "rerouted": traders.counts["rerouted"],
            "trades": len(trades),
            "accepted_orders_lost": len(lost),
            "double_fills_left": rules["no_overfill"],
            "regions_diverging_items": rules["regions_identical"],
            "orders_missing_or_open_in_a_region": rules["order_in_every_region"],
            "conflicts_recorded": records["CONFLICT"],
            "compensations_recorded": records["COMPENSATION"],
            "adjustments_recorded": records["ADJUSTMENT"],
            "faults_injected": dict(runtime.plane.injected),
        }
        retained = getattr(self, "retained", {})
        ok = bool(result["ok"]) and not lost and retained.get("flat") is not False
        self.say(f"settled in {settle_s:.1f} s; check_history: {'ok' if result['ok'] else 'VIOLATIONS ' + json.dumps(dict(rules))}")
        for name, value in counts.items():
            self.say(f"  {name}: {value}")
        self.say(f"  tape digest (order, fill, qty, price): {tape_digest(list(trades.values()))}")
        memory = getattr(self, "memory_mb", {})
        if memory:
            self.say(
                "  memory (resident MB, start / peak / end of the orders and settling): "
                + "; ".join(f"{name} {m['start']:.0f} / {m['peak']:.0f} / {m['end']:.0f}" for name, m in memory.items())
            )
        if retained:
            entries, mb, done, busy = retained["entries"], retained["mb"], retained["reconciled_orders"], retained["orders_in_flight"]

            def row(f: dict[str, Any], unit: str = "", digits: int = 0) -> str:
                text = " / ".join(f"{f[k]:,.{digits}f}" for k in ("start", "middle", "stream_end", "settled"))
                return f"{text} (peak {f['peak']:,.{digits}f}){unit}"

            self.say(f"  reconcile worker (horizon {retained['horizon_s']:g} s), start / middle / end of the orders / settled:")
            self.say(f"    entries {row(entries)}; structures {row(mb, ' MB', 2)}")
            self.say(f"    orders held: reconciled (settled, in the horizon, or tombstones) {row(done)}; in flight (the fill backlog) {row(busy)}")
            self.say(
                f"    {retained['retired']:,} orders retired, {retained['late_records_dropped']} late records dropped, {retained['restored']} restored;"
                f" held once settled: {', '.join(f'{n:,} {why}' for why, n in sorted(retained['held_back_end'].items())) or 'none'}"
            )
            verdict = {True: "bounded", False: "GROWING", None: "not judged (a stream shorter than four horizons)"}[retained["flat"]]
            self.say(
                f"  reconcile worker memory: {verdict}: it holds {retained['orders_held_settled']:,} of the run's {retained['orders_of_the_run']:,} orders"
                f" once settled; {retained['orders_in_window']:,} were written in the last two horizons (bound {retained['bound']:,})"
            )
        for violation in result["violations"][:20]:
            self.say(f"  - [{violation['rule']}] {violation['detail']}")
        return {
            "seed": seed,
            "orders": orders,
            "rate": rate,
            "ok": ok,
            "endpoints": self.endpoints,
            "memory_mb": getattr(self, "memory_mb", {}),
            "reconcile_retained": retained,
            "schedule": [s.as_dict() for s in schedule],
            "experiments": self.experiment_log,
            "counts": counts,
            "submitted_s": round(submitted_s, 2),
            "settle_s": round(settle_s, 2),
            "tape_digest": tape_digest(list(trades.values())),
            "violations": result["violations"][:50],
            "lost": lost[:50],
        }
