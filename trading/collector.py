"""The cyclic collector in the long-running processes (run_exchange, the moto server, the soak).

A full collection walks every object the process holds with every thread stopped. What
start-up built (Django, the SDK's models, moto's backends) lives as long as the process:
frozen, a full pass no longer walks it. What comes later (open sockets, a soak's
tables) still fills the old generation, so full passes also come ten times less often.

Measured: run_exchange at 200 sockets walked ~340,000 objects in 140-200 ms per full
pass, and every socket saw the same events ~350 ms late at once (fan-out p99 ~290 ms;
frozen ~200 ms; and less often ~150 ms). The moto server stopped every request for
100-200 ms six times in 600 orders; once with this.
"""

from __future__ import annotations

import gc

# A full collection after this many collections of the middle generation (CPython: 10).
FULL_COLLECTION_AFTER = 100


def settle_collector() -> None:
    """Call once the process is up."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)
