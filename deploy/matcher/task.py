"""The matcher container's entrypoint: `python -m deploy.matcher.task`.

Runs `manage.py matcher_worker --region $AWS_REGION --az AZ` in this process. AZ is
$MATCHER_AZ when set, else the AZ Fargate placed the task in (the task metadata
endpoint, `$ECS_CONTAINER_METADATA_URI_V4/task`). The service runs one task per region,
in either of two subnets: placed in the region's first AZ it is that AZ's task; placed in
another it stands in for the first (`--stand-in-for`), as ECS reschedules a task whose AZ
was lost. Either way it is the region's active matcher: it takes the matcher lease,
rebuilds each book from the latest snapshot and the orders after it, then consumes.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Sequence


class PlacementError(SystemExit):
    """The task cannot say which exchange AZ it runs in: it stops at once, saying why."""


def worker_argv(region: str, azs: Sequence[str], placed_az: str) -> list[str]:
    """The worker's arguments for a task placed in `placed_az` (pure)."""
    if placed_az not in azs:
        raise PlacementError(
            f"the task runs in {placed_az!r}, not one of {region}'s exchange AZs ({', '.join(azs)}): "
            "put the service's subnets in those AZs, or set EXCHANGE_AZS_PER_REGION"
        )
    argv = ["matcher_worker", "--region", region, "--az", placed_az]
    if placed_az != azs[0]:
        argv += ["--stand-in-for", azs[0]]
    return argv


def metadata_az(environ: dict[str, str] | os._Environ[str] = os.environ, timeout_s: float = 2.0) -> str:
    """The AZ of this ECS task, from the task metadata endpoint (v4)."""
    base = environ.get("ECS_CONTAINER_METADATA_URI_V4", "")
    if not base:
        raise PlacementError("neither MATCHER_AZ nor ECS_CONTAINER_METADATA_URI_V4 is set: which AZ is this task in?")
    with urllib.request.urlopen(f"{base}/task", timeout=timeout_s) as answer:  # noqa: S310 (the agent's link-local URL)
        return str(json.load(answer)["AvailabilityZone"])


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange_ui.settings")
    from trading.config import ExchangeConfig

    region = os.environ.get("AWS_REGION", "")
    if not region:
        raise PlacementError("AWS_REGION is not set")
    config = ExchangeConfig.from_env()
    argv = worker_argv(region, config.azs(region), os.environ.get("MATCHER_AZ") or metadata_az())
    print(f"matcher task: manage.py {' '.join(argv)}", flush=True)

    from django.core.management import execute_from_command_line

    execute_from_command_line([sys.argv[0], *argv])


if __name__ == "__main__":
    main()
