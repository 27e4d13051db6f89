"""`manage.py simfill_worker --region R --az AZ`: one SimFill task as its own process.

What `make run-multi` starts once per region and AZ: long-polls the region's FIFO queue
and fills what it receives (simfill.worker.AzWorker), publishing through the channel
layer (channels-redis when REDIS_URL is set). SIGTERM or Ctrl-C stops it after the
batch in hand; messages it held come back after the visibility timeout.
`manage.py matcher_worker` is the same task with the matching engine.
"""

from __future__ import annotations

import signal
import threading
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from matcher.engines import engine_for
from simfill.placement import matcher_role, stand_in_name
from simfill.worker import AzWorker
from trading import aws, events
from trading.actions import Exchange


class Command(BaseCommand):
    help = "Run one SimFill worker (one region, one AZ) until SIGTERM."
    engine_name = "simfill"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--region", required=True)
        parser.add_argument("--az", required=True)
        parser.add_argument("--wait", type=int, default=2, help="SQS long-poll seconds")
        parser.add_argument("--control", default="", help="run-multi's control directory (CPU stress is read from it)")
        parser.add_argument("--stand-in-for", default="", help="the lost AZ whose task this one runs (ECS-style rescheduling)")

    def handle(self, *args: Any, **options: Any) -> None:
        config = settings.EXCHANGE
        region, az, lost = options["region"], options["az"], options["stand_in_for"]
        if region not in config.regions:
            raise CommandError(f"{region} is not one of EXCHANGE_REGIONS ({', '.join(config.regions)})")
        if az not in config.azs(region) or (lost and lost not in config.azs(region)):
            raise CommandError(f"{lost or az} is not an AZ of {region} ({', '.join(config.azs(region))})")
        if config.endpoint_url:
            aws.use_endpoint(config.endpoint_url)
        sink = None
        if config.redis_url:
            from exchange_ui.push import ChannelLayerSink

            sink = ChannelLayerSink()
            events.add_sink(sink)
        exchange = Exchange(config=config)

        def grid(symbol: str) -> tuple[Decimal, Decimal]:
            market = config.market(symbol)
            if market is None:
                raise KeyError(symbol)
            return market.tick, market.lot

        engine = engine_for(self.engine_name)
        snapshots = None
        role = ""
        if engine.stateful:
            from matcher.book_redis import book_redis_client
            from matcher.snapshots import BookSnapshots

            snapshots = BookSnapshots(
                book_redis_client(config.redis_url), exchange.stores, every_s=config.snapshot_every_s, every_seq=config.snapshot_every_seq
            )
            role = matcher_role(config.azs(region), az, lost)
        name = stand_in_name(lost, az, engine.name) if lost else f"{engine.name}-{az}"
        worker = AzWorker(
            exchange.stores[region],
            exchange.queues[region],
            az,
            grid,
            wait_s=options["wait"],
            engine=engine,
            symbols=config.market_symbols,
            snapshots=snapshots,
            standby=role == "standby",
            name=name,
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: worker.stop())
        if options["control"]:
            from pathlib import Path

            from simfill.remote import follow_cpu_stress

            threading.Thread(
                target=follow_cpu_stress,
                args=(worker, Path(options["control"]), az, worker.stop_event),
                name="follow-stress",
                daemon=True,
            ).start()
        self.stdout.write(f"{engine.name} worker {name} ({region}{', ' + role if role else ''}) running")
        self.stdout.flush()
        worker.run()
        if snapshots is not None:
            snapshots.close(persist=role == "active")  # the books persisted at their last seq
        if sink is not None:
            events.remove_sink(sink)
            sink.close()  # the fills of the last batch reach the pages
        self.stdout.write(f"{engine.name} worker {name} stopped after {worker.applied_count} message(s)")
