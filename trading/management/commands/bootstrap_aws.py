"""Create the exchange's tables, streams and queues in every region (idempotent)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from trading import aws
from trading.provision import bootstrap, plan


class Command(BaseCommand):
    help = "Create the DynamoDB tables (Streams on), sequence counters and SQS FIFO queues + DLQs in every region."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--dry-run", action="store_true", help="print the plan, create nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        config = settings.EXCHANGE
        endpoint = aws.resolve_endpoint()
        target = endpoint or "real AWS"
        if options["dry_run"]:
            self.stdout.write(f"plan against {target}:")
            for step in plan(config):
                self.stdout.write(f"  {step}")
            return
        try:
            bootstrap(config, say=lambda line: self.stdout.write(f"  {line}"))
        except Exception as error:  # a clear message, not a traceback
            hint = "" if endpoint else f" ({aws.endpoint_hint()})"
            raise CommandError(f"bootstrap against {target} failed: {error}{hint}") from error
        self.stdout.write(self.style.SUCCESS(f"AWS resources ready in {', '.join(config.regions)} ({target})"))
