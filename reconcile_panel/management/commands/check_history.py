"""check_history: verify the invariants over everything every region recorded.

Exit 0 when they all hold; 1 with each violation and its witnesses. Uses the same
endpoint resolution as every command (AWS_ENDPOINT_URL, else the running embedded
server named in var/aws_endpoint), so it works beside `make run`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.core.management.base import BaseCommand, CommandError

from reconcile_panel.api import exchange_config
from reconcile_panel.history import check
from reconcile_panel.store import load_history


class Command(BaseCommand):
    help = "Verify the exchange's invariants across every region; exit 1 listing the violations."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        config = exchange_config()
        try:
            history = load_history(config)
        except (BotoCoreError, ClientError) as error:
            from trading import aws

            hint = "" if aws.resolve_endpoint() else f" ({aws.endpoint_hint()})"
            raise CommandError(f"cannot read the regions' tables: {error}{hint}") from error
        result = check(history)
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2, sort_keys=True))
        else:
            self._print(result, history.regions)
        if not result["ok"]:
            sys.exit(1)

    def _print(self, result: dict[str, Any], regions: tuple[str, ...]) -> None:
        if result["ok"]:
            self.stdout.write(self.style.SUCCESS(f"check_history: all invariants hold across {', '.join(regions)}"))
            return
        self.stdout.write(self.style.ERROR(f"check_history: {len(result['violations'])} violation(s)"))
        for violation in result["violations"]:
            self.stdout.write(f"- [{violation['rule']}] {violation['detail']}")
            if violation["witnesses"]:
                text = json.dumps(violation["witnesses"], indent=2, sort_keys=True)
                self.stdout.write("  witnesses: " + text.replace("\n", "\n  "))
