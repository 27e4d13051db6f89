"""`make run`: the embedded default in one command.

Starts a moto server (a child process) as AWS unless AWS_ENDPOINT_URL names one,
creates the resources, starts daphne serving Django + Channels with the SimFill tasks,
the Streams mirror, the outbox sweep, the sampler and the synthetic traders in the same
process, and prints how to log in. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from trading import aws, events
from trading.collector import settle_collector
from trading.config import VAR_DIR
from trading.motoserver import MotoServer
from trading.operators import make_operator

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.001
LOGINS_FILE = VAR_DIR / "demo-logins.txt"
DEMO_USERS = (("alice", False), ("ops", True))


def ensure_demo_users() -> list[tuple[str, str, bool]]:
    """Create the demo trader and operator on first run; their passwords live in var/."""
    users = get_user_model()
    saved: dict[str, str] = {}
    if LOGINS_FILE.exists():
        for line in LOGINS_FILE.read_text().splitlines():
            name, _, password = line.partition(" ")
            if name and password:
                saved[name] = password
    logins = []
    for name, staff in DEMO_USERS:
        user = users.objects.filter(username=name).first()
        if user is None or name not in saved:
            password = secrets.token_urlsafe(9)
            if user is None:
                user = users.objects.create_user(username=name, password=password, is_staff=staff)
            else:
                user.set_password(password)
                user.save()
            saved[name] = password
        if staff:
            make_operator(user)
        logins.append((name, saved[name], staff))
    LOGINS_FILE.parent.mkdir(parents=True, exist_ok=True)
    LOGINS_FILE.write_text("".join(f"{n} {p}\n" for n, p in saved.items()))
    os.chmod(LOGINS_FILE, 0o600)
    return logins


class Command(BaseCommand):
    help = "Run the embedded exchange: moto as AWS, SimFill workers, the live dashboard on daphne."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument(
            "--remote-workers", default="", metavar="DIR",
            help="the SimFill workers are processes run by `run_multi`; DIR holds its control files (simfill/remote.py)",
        )
        parser.add_argument(
            "--api-only", action="store_true",
            help="serve the API facade alone, as the api_<region> Lambda stage does: orders are written and "
            "queued, but no SimFill task, stream reader, mirror or replicator runs in this process "
            "(another process on the same AWS endpoint fills them)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Importing daphne.server installs the asyncio reactor: do it before anything else touches twisted.
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        from exchange_ui.push import ChannelLayerSink
        from exchange_ui.runtime import Runtime, set_runtime
        from trading.mirror import reset_mirror
        from trading.provision import bootstrap

        # The request threads wait on AWS calls while the fill, replication and mirror
        # threads compute: hand the interpreter over every 1 ms instead of 5 ms, so a
        # request thread whose answer has arrived is not kept waiting behind them
        # (bench section 1: ingest at 1 / 4 clients, 15-18 -> 19-20 and 31-33 -> 37-38 orders/s).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        config = settings.EXCHANGE
        moto: MotoServer | None = None
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        if config.endpoint_url:
            endpoint = config.endpoint_url
            self.stdout.write(f"AWS endpoint: {endpoint} (AWS_ENDPOINT_URL)")
        else:
            self.stdout.write("starting the embedded moto server (AWS) …")
            moto = MotoServer(log_path=VAR_DIR / "moto.log").start()
            endpoint = moto.url
            aws.write_endpoint_file(endpoint)
            self.stdout.write(f"AWS endpoint: {endpoint} (written to var/aws_endpoint)")
        aws.use_endpoint(endpoint)
        try:
            bootstrap(config, say=lambda line: None)
            self.stdout.write(f"AWS resources ready in {', '.join(config.regions)}")
            if moto is not None:
                reset_mirror()  # a fresh exchange: the mirror is rebuilt from its Streams
            logins = ensure_demo_users()
            runtime = Runtime.build(config)
            if options["remote_workers"]:
                from simfill.remote import attach_remote_workers

                attach_remote_workers(runtime, Path(options["remote_workers"]))
            set_runtime(runtime)

            def on_ready() -> None:
                events.add_sink(ChannelLayerSink(asyncio.get_event_loop()))
                runtime.start(synthetic=True, consumers=not options["api_only"])
                settle_collector()  # trading.collector: full collections off the event loop
                url = f"http://{options['host']}:{options['port']}/"
                self.stdout.write("")
                self.stdout.write(self.style.SUCCESS(f"Exchange failure dashboard: {url}"))
                if options["api_only"]:
                    self.stdout.write("  API facade only: orders are written and queued; no worker fills them here")
                for name, password, staff in logins:
                    role = "operator (staff)" if staff else "trader"
                    self.stdout.write(f"  log in as {name} / {password}   ({role})")
                self.stdout.write(
                    f"  regions {', '.join(config.regions)} · markets {', '.join(config.market_symbols)} · "
                    f"synthetic traders {config.synthetic_rate}/s · seed {config.seed}"
                )
                self.stdout.write("  API token: .venv/bin/python manage.py create_api_token alice · Ctrl-C stops everything")

            from exchange_ui.asgi import application

            server = Server(
                application=application,
                endpoints=build_endpoint_description_strings(host=options["host"], port=options["port"]),
                ready_callable=on_ready,
                signal_handlers=True,
                verbosity=0,
                websocket_handshake_timeout=10,
            )
            server.run()
        finally:
            self.stdout.write("stopping …")
            try:
                from exchange_ui.runtime import get_runtime

                get_runtime().stop()
            except Exception:
                log.exception("stopping the runtime failed; stopping the rest anyway")
            if moto is not None:
                moto.stop()
                Path(aws.ENDPOINT_FILE).unlink(missing_ok=True)
            self.stdout.write("stopped.")
