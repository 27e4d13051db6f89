"""The exchange's moving parts in one process: the embedded default.

One SimFill task per region and AZ, the Streams readers that feed the mirror, the
outbox sweep, a one-second sampler that pushes metrics and region health, and the
synthetic traders. Views and the fault plane reach them through get_runtime().
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from matcher.engines import engine_for
from simfill.placement import matcher_role, stand_in_hosts, stand_in_name
from simfill.worker import AzWorker
from trading import aws, events
from trading.actions import AcceptedRelay, Exchange, sweep_outbox
from trading.config import ExchangeConfig, env_int
from trading.metrics import METRICS, ROUND_TRIPS, ApiProbe
from trading.store import table_names
from trading.streams import StreamTailer
from trading.synthetic import FILL_TIMEOUT_S, MatcherTraders, SyntheticTraders, top_of

log = logging.getLogger(__name__)

# Backpressure: queued work a worker cannot absorb in about a second, or acceptance
# that has become slow. Either one alone turns the banner on.
BACKPRESSURE_QUEUED = 25
# Acceptance that has become slow: the median of the last 10 s, not a p99 over 30 s,
# which one stalled request on a busy machine would hold up for half a minute.
# EXCHANGE_BACKPRESSURE_ACCEPT_MS moves the bound for a slower (or busier) machine.
BACKPRESSURE_ACCEPT_MS = float(env_int("EXCHANGE_BACKPRESSURE_ACCEPT_MS", 1000, minimum=1))
BACKPRESSURE_WINDOW_S = 10.0
# The flash warning: fills have become slow (time-to-fill p99 of the last 10 s at or
# above this), or clients are timing out and resending. A CPU spike on the fill tasks
# moves these, not time-to-accept. EXCHANGE_FLASH_FILL_MS moves the bound.
FLASH_FILL_MS = float(env_int("EXCHANGE_FLASH_FILL_MS", 1000, minimum=1))
FLASH_WINDOW_S = 10.0
FULL_SWEEP_EVERY_S = 300.0
API_PROBE_EVERY_S = 2.0
FULL_SWEEP_AGE_S = 30.0
# An ElastiCache failover promotes a replica within seconds; the embedded snapshot Redis is
# back (empty) this long after the experiment cuts its power.
BOOK_REDIS_FAILOVER_S = 3.0


@dataclass
class RegionSample:
    visible: int = 0
    in_flight: int = 0
    reachable: bool = True
    error: str = ""


@dataclass
class Runtime:
    config: ExchangeConfig
    exchange: Exchange
    workers: dict[str, AzWorker] = field(default_factory=dict)
    # {lost AZ: the task started in a surviving AZ while it is down} (simfill.placement).
    stand_ins: dict[str, AzWorker] = field(default_factory=dict)
    _placement_lock: threading.Lock = field(default_factory=threading.Lock)
    tailers: list[StreamTailer] = field(default_factory=list)
    synthetic: SyntheticTraders | MatcherTraders | None = None
    samples: dict[str, RegionSample] = field(default_factory=dict)
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    last_metrics: dict[str, Any] = field(default_factory=dict)
    flash_fill_ms: float = FLASH_FILL_MS
    _throttled_at_sample: int = 0
    started: bool = False
    plane: Any = None  # faults.injection.FaultPlane
    runner: Any = None  # faults.runner.ExperimentRunner
    replicator: Any = None  # reconcile_panel.replicator.Replicator
    reconciler: Any = None  # reconcile_panel.worker.ReconcileWorker
    mirror_feed: Any = None  # trading.mirror.MirrorFeed, fed by the replicator's stream reader
    snapshots: Any = None  # matcher.snapshots.BookSnapshots, made on first use (book_snapshots())
    _snapshots_lock: threading.Lock = field(default_factory=threading.Lock)

    # --- composition ---------------------------------------------------------------

    @classmethod
    def build(cls, config: ExchangeConfig, with_mirror: bool = True) -> Runtime:
        exchange = Exchange(config=config)
        runtime = cls(config=config, exchange=exchange)
        for region in config.regions:
            for az in config.azs(region):
                runtime.workers[az] = runtime._make_worker(region, az)
            runtime.samples[region] = RegionSample()
        runtime.synthetic = runtime._make_traders()
        runtime._build_fault_plane()
        if len(config.regions) > 1:
            runtime._build_replication(with_mirror)
        elif with_mirror:
            from trading.mirror import MirrorFeed

            # The stream readers hand their batches to the feed, which retries what fails.
            runtime.mirror_feed = MirrorFeed(exchange)
            names = table_names(config.table_prefix)
            for role in ("orders", "trades"):
                handler = runtime._mirror_and_time_fills if role == "orders" else runtime.mirror_feed
                runtime.tailers.append(StreamTailer(config.regions[0], names[role], handler))
        return runtime

    def _make_traders(self) -> SyntheticTraders | MatcherTraders:
        """The synthetic traders the engine needs. SimFill fills each order alone against
        simulated counterparties: the seeded stream of single orders. The matcher trades
        orders with each other: makers keep a ladder in every book, takers cross the best
        price the book's snapshot shows."""
        if self.config.engine == "matcher":
            return MatcherTraders(
                self.exchange,
                self.config.synthetic_rate,
                self.config.seed,
                book_top=lambda region, symbol: top_of(self.book(symbol, region, 1)),
            )
        return SyntheticTraders(self.exchange, self.config.synthetic_rate, self.config.seed)

    def _build_replication(self, with_mirror: bool) -> None:
        from reconcile_panel.replicator import Replicator
        from reconcile_panel.worker import ReconcileWorker
        from trading.mirror import MirrorFeed

        # Replication stops for a pair the fault plane partitions (or either end is down);
        # the reconciler decides nothing while any pair is cut. One reader per stream (the
        # replicator's) feeds the mirror and the reconciler too.
        self.replicator = Replicator(
            self.config, partitioned=lambda a, b: self.plane.partitioned(a, b), reachable=lambda region: self.plane.region_up(region)
        )
        self.reconciler = ReconcileWorker(self.config, partitioned=self.replicator.is_cut, tail=False)
        self.replicator.listeners.append(self.reconciler.ingest_batch)
        if with_mirror:
            self.mirror_feed = MirrorFeed(self.exchange)
            self.replicator.listeners.append(self.mirror_feed)
        self.replicator.listeners.append(self.observe_fills)

    def observe_fills(self, records: list[Any]) -> None:
        """Time-to-fill from the Orders streams' records (every topology's fills pass there)."""
        try:
            METRICS.record_fills(records, time.time())
        except Exception:  # a metric never holds the stream reader back
            log.exception("time-to-fill: a stream batch could not be read")

    def _mirror_and_time_fills(self, records: list[Any]) -> None:
        self.mirror_feed(records)
        self.observe_fills(records)

    def _build_fault_plane(self) -> None:
        from faults.injection import FaultPlane
        from faults.runner import ExperimentRunner

        self.plane = FaultPlane(self.config, self, seed=self.config.seed)
        self.plane.redis_failover = self.redis_failover
        self.runner = ExperimentRunner(self.plane, self.config, metrics=lambda: self.last_metrics, publish=self._publish_experiment)

    def _publish_experiment(self, kind: str, region: str, data: dict[str, Any]) -> None:
        """experiment.state, then, when a fault began or ended, a sample at once rather than
        at the next tick, so banners and region cards follow the fault within the second."""
        events.publish(kind, region, data)
        if self.started and any(c.get("subject") == "action" and "running" in (c.get("from"), c.get("to")) for c in data.get("changes", [])):
            threading.Thread(target=self._sample_once, name="sample-on-fault", daemon=True).start()

    def _sample_once(self) -> None:
        try:
            self.sample()
        except Exception:
            log.exception("metrics sample after a fault change failed")

    def redis_failover(self, region: str, az: str) -> None:
        """ElastiCache AZ power interrupt, locally: every live connection drops.

        With REDIS_URL the real Redis kills its clients (the channel layer and the book
        snapshots reconnect). Without it, the embedded snapshot Redis this process started
        loses power (killed, its data with it) and a fresh node answers on the same address
        BOOK_REDIS_FAILOVER_S later, as a promoted replica would: the books show "book
        snapshot stale" until the matcher's snapshots republish them. Either way every open
        socket is closed with 4012 (service restart), and the browsers reconnect and
        resynchronise from the store.
        """
        from matcher import book_redis

        server = book_redis.embedded()
        if not self.config.redis_url and server is not None:
            threading.Thread(target=server.restart, args=(BOOK_REDIS_FAILOVER_S,), name="book-redis-failover", daemon=True).start()
        if self.config.redis_url:
            import redis

            client = redis.Redis.from_url(self.config.redis_url)
            try:
                for kind in ("pubsub", "normal"):
                    client.execute_command("CLIENT", "KILL", "TYPE", kind, "SKIPME", "yes")
            finally:
                client.close()
        from exchange_ui.push import broadcast_failover

        broadcast_failover(region, az)

    def book_snapshots(self) -> Any:
        """The process's one BookSnapshots (the matcher's tasks write through it, the book API
        and the page read through it); its Redis is REDIS_URL's, else the embedded one."""
        with self._snapshots_lock:
            if self.snapshots is None:
                from matcher.book_redis import book_redis_client
                from matcher.snapshots import BookSnapshots

                self.snapshots = BookSnapshots(
                    book_redis_client(self.config.redis_url),
                    self.exchange.stores,
                    every_s=self.config.snapshot_every_s,
                    every_seq=self.config.snapshot_every_seq,
                )
            return self.snapshots

    def book(self, symbol: str, region: str, levels: int) -> dict[str, Any]:
        """A market's book in a region as the snapshot holds it (GET /api/book, the ladder):
        `frozen` while the region is down (its matcher is stopped: the book is as it was at
        `seq`); no book at all under SimFill, whose orders never rest."""
        frozen = not self.exchange.region_up(region) or self.samples.get(region, RegionSample()).reachable is False
        empty = {"symbol": symbol, "region": region, "seq": 0, "ts": None, "source": "none", "stale": False, "frozen": frozen, "bids": [], "asks": []}
        if self.config.engine != "matcher":
            return {**empty, "engine": self.config.engine}
        found = self.book_snapshots().depth(region, symbol, levels)
        return {**found, "frozen": frozen} if found is not None else empty

    def _make_worker(self, region: str, az: str, stand_in_for: str = "") -> AzWorker:
        """The task of `az` (or the one standing in for `stand_in_for` there), with an
        engine of its own. Under the matcher, the region's first AZ's task (or its stand-in)
        is the active one, the others standbys (simfill.placement.matcher_role)."""

        def grid(symbol: str) -> tuple[Decimal, Decimal]:
            market = self.config.market(symbol)
            if market is None:
                raise KeyError(symbol)
            return market.tick, market.lot

        engine = engine_for(self.config.engine)
        name = stand_in_name(stand_in_for, az, engine.name) if stand_in_for else f"{engine.name}-{az}"
        return AzWorker(
            self.exchange.stores[region],
            self.exchange.queues[region],
            az,
            grid,
            wait_s=2,
            engine=engine,
            symbols=self.config.market_symbols,
            snapshots=self.book_snapshots() if engine.stateful else None,
            standby=engine.stateful and matcher_role(self.config.azs(region), az, stand_in_for) == "standby",
            name=name,
        )

    def region_of(self, az: str) -> str:
        for region in self.config.regions:
            if az in self.config.azs(region):
                return region
        raise KeyError(az)

    # --- lifecycle -----------------------------------------------------------------

    def start(self, synthetic: bool = True, consumers: bool = True) -> None:
        """Start the process's threads. `consumers=False` is the API facade alone, as the
        api_<region> Lambda stage runs it: ingest, the outbox sweep, the sampler and the
        fault plane, but no SimFill task, stream reader, mirror feed, replicator or
        reconciler (in AWS those are other functions; here another process's)."""
        from faults.runner import set_runner

        self.started = True
        if self.plane is not None:
            self.plane.install()
            self.runner.start()
            set_runner(self.runner)
        # A request answers after its one write; the relay sends OrderAccepted (batched).
        self.exchange.relay = AcceptedRelay(self.exchange).start()
        if consumers:
            self._start_consumers()
        self._spawn("outbox-sweep", self._sweep_loop)
        self._spawn("sampler", self._sample_loop)
        for region in self.config.regions:
            self._spawn(f"api-probe-{region}", lambda region=region: self._probe_loop(region))
        if consumers and synthetic and self.synthetic is not None:
            self.synthetic.start()
            if self.replicator is not None and self.config.synthetic_rate > 0:
                self._spawn("game-day-clients", self._game_day_loop)

    def _start_consumers(self) -> None:
        for worker in self.workers.values():
            worker.start()
        for tailer in self.tailers:
            tailer.start()
        if self.mirror_feed is not None:
            self.mirror_feed.start()
        if self.replicator is not None:
            self.replicator.start()
            self.reconciler.start()

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        relay, self.exchange.relay = self.exchange.relay, None
        if relay is not None:
            relay.stop()  # what it holds is sent (or left to the sweep) before the rest stops
        if self.runner is not None and self.started:
            self.runner.close()
            self.plane.uninstall()
        if self.synthetic is not None:
            self.synthetic.stop()
        for worker in [*self.workers.values(), *self.stand_ins.values()]:
            worker.stop()
        for tailer in self.tailers:
            tailer.stop()
        if self.replicator is not None:
            self.replicator.stop()
            self.reconciler.stop()
        if self.mirror_feed is not None:
            self.mirror_feed.stop()
        if self.snapshots is not None:
            self.snapshots.close()  # every book persisted at its last seq

    def catch_up(self) -> None:
        """Read every stream now and bring the mirror up to date (tests, commands)."""
        for tailer in self.tailers:
            tailer.drain()
        if self.replicator is not None:
            self.replicator.drain()
        if self.mirror_feed is not None:
            self.mirror_feed.apply_pending()

    def stop_az(self, az: str) -> None:
        worker = self.workers.get(az)
        if worker is not None:
            worker.stop()

    def start_az(self, az: str) -> None:
        worker = self.workers.get(az)
        if worker is not None and not worker.alive:
            # A fresh task, as ECS would start: the stopped one may still be unwinding.
            region = self.region_of(az)
            replacement = self._make_worker(region, az)
            replacement.cpu_stress_percent = worker.cpu_stress_percent
            self.workers[az] = replacement
            replacement.start()

    def place_stand_ins(self) -> None:
        """Run each down AZ's task in a surviving AZ of its region, as ECS reschedules.

        Stand-ins follow the placement rule: started when their AZ goes down, moved when
        their host goes down too, stopped when their own AZ is back.
        """
        with self._placement_lock:
            wanted: dict[str, str] = {}
            for region in self.config.regions:
                azs = self.config.azs(region)
                wanted.update(stand_in_hosts(azs, [az for az in azs if not self.exchange.az_up(az)]))
            for lost, worker in list(self.stand_ins.items()):
                if wanted.get(lost) != worker.az:
                    worker.stop()
                    del self.stand_ins[lost]
            for lost, host in wanted.items():
                if lost in self.stand_ins or self.stop_event.is_set():
                    continue
                stand_in = self._make_worker(self.region_of(lost), host, stand_in_for=lost)
                host_worker = self.workers.get(host)
                stand_in.cpu_stress_percent = host_worker.cpu_stress_percent if host_worker is not None else 0
                self.stand_ins[lost] = stand_in
                stand_in.start()
                log.info("AZ %s is down: its %s task runs in %s until it is back", lost, stand_in.engine.name, host)

    def stand_in_views(self) -> list[dict[str, Any]]:
        """The stand-in tasks as the region cards show them, under the AZ that hosts them."""
        views = []
        for lost, worker in sorted(self.stand_ins.items()):
            # CPU stress on the host AZ reaches the tasks it hosts.
            host_worker = self.workers.get(worker.az)
            if host_worker is not None:
                worker.cpu_stress_percent = host_worker.cpu_stress_percent
            views.append(
                {"lost": lost, "host": worker.az, "name": worker.name, "alive": worker.alive, "applied": worker.applied_count}
            )
        return views

    def cut_pairs(self) -> list[tuple[str, str]]:
        """Pairs of healthy regions that cannot replicate: a partition, not an outage."""
        regions = self.config.regions
        return [
            (a, b)
            for i, a in enumerate(regions)
            for b in regions[i + 1 :]
            if self.plane.partitioned(a, b) and self.plane.region_up(a) and self.plane.region_up(b)
        ]

    def _game_day_loop(self) -> None:
        """Clients behave as they do in a real partition, once per partition (partition_play)."""
        played = 0
        was_cut = False
        while not self.stop_event.wait(0.5):
            cut = self.cut_pairs()
            if cut and not was_cut:
                played += 1
                try:
                    results = self.partition_play(cut[0], played).run()
                    log.info("partition game day: %s", ", ".join(f"{d.kind}={'yes' if d.happened else 'no'}" for d in results))
                except Exception:
                    log.exception("partition game-day clients failed")
            was_cut = bool(cut)

    def partition_play(self, pair: tuple[str, str], played: int = 1) -> Any:
        """What the game-day clients do in a partition of `pair` (a PartitionPlay to run).

        A retry fails over to the other region with the same idempotency key (duplicate
        fill), a cancel lands in one region while the retry fills in the other, and, with
        EXCHANGE_POSITION_LIMIT set, an account buys up to its limit in each region (each
        region's ingest lets its own buy through and refuses a further one). The
        reconciler then has real conflicts to decide when the partition heals. Under the
        matcher an order trades only with resting ones: the clients send immediate-or-cancel
        orders through every level of the makers' ladder, so each copy settles with what
        its region's book gave it.
        """
        from reconcile_panel.scenarios import PartitionPlay, wait_until_final

        market = self.config.markets[0]
        makers = self.synthetic.flow if isinstance(self.synthetic, MatcherTraders) else None
        limit = self.config.position_limit(market.symbol)
        return PartitionPlay(
            self.exchange,
            wait_until_final(self.exchange, timeout_s=20, cancel_after_s=2.0 if makers is not None else None),
            pair,
            limit=limit if limit is not None else Decimal("1"),
            symbol=market.symbol,
            # Off the reference price, so the P&L adjustments are not all zero.
            price=str(
                makers.through_price(market.symbol, "BUY")
                if makers is not None
                else (market.reference_price * Decimal("1.001")).quantize(market.tick)
            ),
            tag=f"gameday-s{self.config.seed}-{played}",
        )

    def _sweep_loop(self) -> None:
        # Every 2 s the sends this process saw fail are re-sent (from memory, no scan).
        # A full sweep scans the orders tables for the sends a crashed process never
        # made: once at start, then every FULL_SWEEP_EVERY_S, and only for orders older
        # than FULL_SWEEP_AGE_S (a younger open order is most likely still in its queue).
        last_full = -FULL_SWEEP_EVERY_S
        while not self.stop_event.wait(2.0):
            full = time.monotonic() - last_full >= FULL_SWEEP_EVERY_S
            if not full and not self.exchange.unsent:
                continue
            try:
                sent = sweep_outbox(self.exchange, older_than_s=FULL_SWEEP_AGE_S if full else 2.0, full=full)
                if full:
                    last_full = time.monotonic()
                if sent:
                    log.info("outbox sweep re-sent %d OrderAccepted message(s)", sent)
            except Exception:
                log.exception("outbox sweep failed")

    def _probe_loop(self, region: str) -> None:
        """Each region's API round trip, every API_PROBE_EVERY_S: one GetItem through the fault
        plane (a latency fault lengthens it, an outage fails it), in a thread per region so
        a slow region never delays another's figure or the sampler."""
        stores = self.exchange.stores[region]
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                stores.sequences.probe()
                probe = ApiProbe(round((time.monotonic() - started) * 1000, 1), int(time.time() * 1000))
            except (BotoCoreError, ClientError) as error:
                probe = ApiProbe(None, int(time.time() * 1000), str(error)[:160])
            ROUND_TRIPS.record_api(region, probe)
            self.stop_event.wait(API_PROBE_EVERY_S)

    def _sample_loop(self) -> None:
        # Once a second; sooner when the SDK starts seeing throttles, so the banner follows
        # a throttling fault within a fraction of a second rather than at the next tick.
        last = time.monotonic()
        while not self.stop_event.wait(0.1):
            now = time.monotonic()
            if now - last < 1.0 and aws.throttled_calls() == self._throttled_at_sample:
                continue
            last = now
            try:
                self.sample()
            except Exception:
                log.exception("metrics sample failed")

    # --- observation ---------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        for region in self.config.regions:
            sample = self.samples.setdefault(region, RegionSample())
            if not self.exchange.region_up(region):
                sample.reachable, sample.error = False, "region unreachable"
                continue
            try:
                sample.visible, sample.in_flight = self.exchange.queues[region].depth()
                sample.reachable, sample.error = True, ""
            except (BotoCoreError, ClientError) as error:
                sample.reachable, sample.error = False, str(error)[:160]
        metrics = self.metrics()
        previous_backpressure = self.last_metrics.get("backpressure")
        self.last_metrics = metrics
        events.publish(events.METRICS, "global", metrics)
        for region_view in self.regions():
            events.publish(events.REGION_HEALTH, region_view["region"], region_view)
        if previous_backpressure is not None and previous_backpressure != metrics["backpressure"]:
            events.publish(events.BACKPRESSURE, "global", {"active": metrics["backpressure"], "reason": metrics["backpressure_reason"]})
        return metrics

    def awaiting_fill(self) -> int:
        from trading.models import Order

        return Order.objects.filter(status="ACCEPTED").count()

    def duplicate_orders(self) -> int:
        """Orders that share a client and an idempotency key with another: retries that
        became second orders (only possible while idempotency is off)."""
        from django.db.models import Count

        from trading.models import Order

        return (
            Order.objects.values("client", "idempotency_key")
            .annotate(n=Count("order_id"))
            .filter(n__gt=1)
            .count()
        )

    def metrics(self) -> dict[str, Any]:
        now = time.time()
        p50, p99 = METRICS.accept_percentiles(now)
        queued = sum(s.visible + s.in_flight for s in self.samples.values())
        reasons = []
        if queued >= BACKPRESSURE_QUEUED:
            reasons.append(f"{queued} events queued")
        throttled = aws.throttled_calls()
        if throttled > self._throttled_at_sample:
            reasons.append(f"{throttled - self._throttled_at_sample} AWS call(s) throttled since the last sample")
        self._throttled_at_sample = throttled
        recent_p50, _ = METRICS.accept_percentiles(now, within_s=BACKPRESSURE_WINDOW_S)
        if recent_p50 is not None and recent_p50 >= BACKPRESSURE_ACCEPT_MS:
            reasons.append(f"time-to-accept {recent_p50:.0f} ms (median, last {BACKPRESSURE_WINDOW_S:.0f} s)")
        fill_p50, fill_p99 = METRICS.fill_percentiles(now)
        flash = self.flash_reasons(now)
        return {
            "time_to_accept_p50_ms": p50,
            "time_to_accept_p99_ms": p99,
            "queued_events": queued,
            "awaiting_fill": self.awaiting_fill(),
            "tape_divergence": self.tape_divergence(),
            "replication_backlog": self.replication_backlog(),
            "time_to_fill_p50_ms": fill_p50,
            "time_to_fill_p99_ms": fill_p99,
            "client_retries": METRICS.retries_within(now, FLASH_WINDOW_S),
            "flash_warning": bool(flash),
            "flash_reason": "; ".join(flash),
            "duplicate_orders": self.duplicate_orders(),
            "idempotency": self.exchange.idempotent(),
            "replication_lag_ms": self.replication_lag_ms(),
            **self.mirror_figures(),
            "backpressure": bool(reasons),
            "backpressure_reason": "; ".join(reasons),
            **ROUND_TRIPS.socket_figures(now),
            "per_region": {
                region: {
                    "queued": s.visible,
                    "in_flight": s.in_flight,
                    **ROUND_TRIPS.api_figures(region),
                    **dict(zip(("time_to_accept_p50_ms", "time_to_accept_p99_ms"), METRICS.accept_percentiles(now, region))),
                    **dict(zip(("time_to_fill_p50_ms", "time_to_fill_p99_ms"), METRICS.fill_percentiles(now, region))),
                }
                for region, s in self.samples.items()
            },
        }

    def replication_pairs(self) -> list[dict[str, Any]]:
        return self.replicator.snapshot() if self.replicator is not None else []

    def replication_lag_ms(self, into: str | None = None) -> float | None:
        """The worst lag of the pairs (into one region, or all); None with one region."""
        if self.replicator is None:
            return None
        lags = [
            self.replicator.lag_ms(src, dst)
            for src, dst in self.replicator.pairs
            if into is None or dst == into
        ]
        return round(max(lags), 1) if lags else 0.0

    def mirror_figures(self) -> dict[str, Any]:
        """How far the Django mirror trails the tables, and what it could not take yet
        (None and 0 in a process that feeds no mirror, such as the API facade alone)."""
        feed = self.mirror_feed
        if feed is None or (self.started and feed.thread is None):
            return {"mirror_lag_ms": None, "mirror_retry_list": 0, "mirror_repaired": 0}
        return {"mirror_lag_ms": feed.lag_ms(), "mirror_retry_list": len(feed.retry_list), "mirror_repaired": feed.repaired}

    def flash_reasons(self, now: float) -> list[str]:
        """Why the flash warning is up (empty: it is not): slow fills, client timeouts."""
        reasons = []
        _, recent_p99 = METRICS.fill_percentiles(now, within_s=FLASH_WINDOW_S)
        if recent_p99 is not None and recent_p99 >= self.flash_fill_ms:
            reasons.append(f"time-to-fill p99 {recent_p99:,.0f} ms over the last {FLASH_WINDOW_S:.0f} s")
        retries = METRICS.retries_within(now, FLASH_WINDOW_S)
        if retries:
            reasons.append(f"{retries} client {'retry' if retries == 1 else 'retries'} in {FLASH_WINDOW_S:.0f} s (no fill seen within {FILL_TIMEOUT_S:.0f} s)")
        return reasons

    def tape_divergence(self) -> int:
        """Trades on one region's tape and not on another's, each counted once."""
        if self.replicator is None:
            return 0
        return self.replicator.tapes.total()

    def replication_backlog(self) -> int:
        """Records one region has written that another has not applied yet (every pair's backlog)."""
        if self.replicator is None:
            return 0
        return sum(self.replicator.backlog_size(src, dst) for src, dst in self.replicator.pairs)

    def regions(self) -> list[dict[str, Any]]:
        views = []
        stand_ins = self.stand_in_views()
        for region in self.config.regions:
            sample = self.samples.get(region, RegionSample())
            azs = []
            for az in self.config.azs(region):
                worker = self.workers.get(az)
                alive = bool(worker and worker.alive)
                azs.append(
                    {
                        "az": az,
                        "up": self.exchange.az_up(az),
                        "workers": [
                            {"name": getattr(worker, "name", f"simfill-{az}"), "alive": alive, "applied": worker.applied_count if worker else 0},
                            *(
                                {"name": s["name"], "alive": s["alive"], "applied": s["applied"], "stand_in_for": s["lost"]}
                                for s in stand_ins
                                if s["host"] == az
                            ),
                        ],
                    }
                )
            up = self.exchange.region_up(region) and sample.reachable
            degraded = any(not a["up"] or not all(w["alive"] for w in a["workers"]) for a in azs)
            views.append(
                {
                    "region": region,
                    "status": "down" if not up else ("degraded" if degraded else "healthy"),
                    "azs": azs,
                    "queue_depth": sample.visible,
                    "in_flight": sample.in_flight,
                    "replication_lag_ms": self.replication_lag_ms(into=region),
                    "replication": [p for p in self.replication_pairs() if p["destination"] == region],
                    "error": sample.error,
                    **ROUND_TRIPS.api_figures(region),
                }
            )
        return views


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime; built (not started) on first use, e.g. by a test or a command."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime.build(settings.EXCHANGE)
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    with _lock:
        _runtime = runtime


def get_exchange() -> Exchange:
    return get_runtime().exchange
