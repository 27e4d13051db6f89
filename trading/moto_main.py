"""`python -m trading.moto_main`: the moto server the project runs, with two hot spots
of moto's own fixed. Profiles of a seeded soak (py-spy on the server) found them; the
server answers every call as before.

1. The clock. moto reads "now" through datetime arithmetic (`moto.core.utils.unix_time`:
   `utcnow()` minus `utcfromtimestamp(0)`, about 17 us), and SQS asks for it once per
   message in the queue on every receive and depth query: about 30 % of the server's CPU
   once a backlog built up. `time.time()` is the same number for the current time
   (about 1 us); an explicit datetime still goes the long way.
2. The long poll of a FIFO queue whose message group is in flight. moto waits with
   `Condition.wait_for(lambda: queue.messages)`, which returns at once while any message
   is visible, even one it may not deliver because its group is held by another consumer:
   every other worker of the region then spins for its whole wait time (over half of the
   server's CPU in the soak). Here the wait sleeps until a message is added (moto notifies)
   or 0.1 s passes, and the receive loop looks again, as a real long poll does.
"""

from __future__ import annotations

import datetime
import sys
import time
from types import ModuleType

from moto.core import utils

_unix_time = utils.unix_time
LONG_POLL_RECHECK_S = 0.1
_unix_time_millis = utils.unix_time_millis


def unix_time(dt: datetime.datetime | None = None) -> float:
    return time.time() if dt is None else _unix_time(dt)


def unix_time_millis(dt: datetime.datetime | None = None) -> float:
    return time.time() * 1000.0 if dt is None else _unix_time_millis(dt)


def install() -> list[str]:
    """Point every loaded moto module that imported the slow clock at the cheap one."""
    import moto.dynamodb.models  # noqa: F401  (the services the exchange uses, loaded now so
    import moto.dynamodb.models.table  # noqa: F401   their imported names can be patched)
    import moto.dynamodbstreams.models  # noqa: F401
    import moto.sqs.models  # noqa: F401

    from moto.sqs.models import Queue

    def wait_for_messages(self: Queue, timeout: int) -> None:
        with self._messages_lock:
            self._messages_lock.wait(timeout=min(float(timeout), LONG_POLL_RECHECK_S))

    Queue.wait_for_messages = wait_for_messages  # type: ignore[method-assign]
    patched = ["moto.sqs.models.Queue.wait_for_messages"]
    for name, module in list(sys.modules.items()):
        if not name.startswith("moto.") or not isinstance(module, ModuleType):
            continue
        for attr, slow, fast in (("unix_time", _unix_time, unix_time), ("unix_time_millis", _unix_time_millis, unix_time_millis)):
            if getattr(module, attr, None) is slow:
                setattr(module, attr, fast)
                patched.append(f"{name}.{attr}")
    return patched


def main(argv: list[str] | None = None) -> None:
    install()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
