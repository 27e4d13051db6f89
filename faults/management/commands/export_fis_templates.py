"""Writes the built-in experiment templates as CreateExperimentTemplate JSON for real FIS."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from faults.templates import NotExportable, builtin_templates, export_template


class Command(BaseCommand):
    help = (
        "Write each built-in FIS experiment template to DIR/<id>.json, ready for "
        "`aws fis create-experiment-template --region REGION --cli-input-json file://DIR/<id>.json`. "
        "Simulated-only templates are skipped with the reason."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--role-arn", default=os.environ.get("FIS_ROLE_ARN", ""), help="the IAM role FIS acts with (default: $FIS_ROLE_ARN)")
        parser.add_argument(
            "--alarm-arn",
            action="append",
            default=None,
            help="a CloudWatch alarm ARN as stop condition; repeatable (default: $FIS_STOP_ALARM_ARN)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        role_arn = options["role_arn"]
        if not role_arn:
            raise CommandError("give --role-arn or set FIS_ROLE_ARN: FIS needs an IAM role to run the experiment with")
        alarms = options["alarm_arn"]
        if alarms is None:
            alarms = [a for a in [os.environ.get("FIS_STOP_ALARM_ARN", "")] if a]
        directory: Path = options["directory"]
        directory.mkdir(parents=True, exist_ok=True)
        written = 0
        for template in builtin_templates(settings.EXCHANGE):
            try:
                exported = export_template(template, role_arn, alarms)
            except NotExportable as error:
                if any("roleArn" in p or "stop condition" in p for p in error.problems):
                    raise CommandError("; ".join(error.problems)) from None
                self.stdout.write(f"skipped {template.id}: {error}")
                continue
            path = directory / f"{template.id}.json"
            path.write_text(json.dumps(exported, indent=2, sort_keys=True) + "\n")
            region = template.body.get("region")
            self.stdout.write(f"wrote {path} (fidelity {template.fidelity.level}; create it in {region})")
            written += 1
        self.stdout.write(self.style.SUCCESS(f"{written} templates written to {directory}"))
