"""The reconcile table in every region (Streams on, so the replicator carries it).

`trading.provision.bootstrap` creates the Orders, Trades and Sequences tables; call
`ensure_reconcile_tables(config)` beside it (idempotent).
"""

from __future__ import annotations

from collections.abc import Callable

from trading.config import ExchangeConfig
from trading.provision import ensure_table
from trading.store import TABLE_INDEXES


def reconcile_table_name(prefix: str) -> str:
    return f"{prefix}-reconcile"


def ensure_reconcile_tables(config: ExchangeConfig, say: Callable[[str], None] = lambda line: None) -> None:
    name = reconcile_table_name(config.table_prefix)
    for region in config.regions:
        created = ensure_table(region, name, streams=True, indexes=TABLE_INDEXES["reconcile"])
        say(f"{region}: table {name} {'created' if created else 'exists'}")
