"""The names of the exchange's tables and queues, from the table prefix.

Pure: the stores, the queue, provisioning and the experiment model's inventory all name
the same resources from here.
"""

from __future__ import annotations


def table_names(prefix: str) -> dict[str, str]:
    return {
        "orders": f"{prefix}-orders",
        "trades": f"{prefix}-trades",
        "sequences": f"{prefix}-sequences",
        # Conflicts, compensations and P&L adjustments (reconcile_panel writes them).
        "reconcile": f"{prefix}-reconcile",
    }


def queue_name(prefix: str, region: str) -> str:
    return f"{prefix}-orders-{region}.fifo"


def dlq_name(prefix: str, region: str) -> str:
    return f"{prefix}-orders-dlq-{region}.fifo"
