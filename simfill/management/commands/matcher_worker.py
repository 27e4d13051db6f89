"""`manage.py matcher_worker --region R --az AZ [--stand-in-for LOST]`: one matcher task.

The Phase 2 twin of `simfill_worker` (the same AzWorker with the matching engine), as
`make run-multi` starts it under EXCHANGE_ENGINE=matcher and as the ECS task runs it. The
region's first AZ's task, or the task standing in for it (`--stand-in-for`), is the
active matcher: it takes the region's matcher lease, rebuilds its books from the latest
snapshot and the orders after it, then consumes; the others stand by.
"""

from __future__ import annotations

from simfill.management.commands.simfill_worker import Command as SimFillWorkerCommand


class Command(SimFillWorkerCommand):
    help = "Run one matcher task (one region, one AZ) until SIGTERM."
    engine_name = "matcher"
