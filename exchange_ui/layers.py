"""The Redis pub/sub channel layer, decoding each group message once per process.

channels-redis's `RedisPubSubChannelLayer` receives a group message once per process
and puts the same bytes in the queue of every member socket of that process; each
socket's `receive()` then decodes them again. With 200 sockets on the events group
that was 29 % of the server's CPU in the fan-out benchmark (py-spy; bench/ANALYSIS.md).
Here the decoded message is remembered for the bytes object that carried it, so the
other members of the group get the same dict without decoding it again.

The members share that dict: the consumers only read the messages they receive
(trading/consumers.py copies an event before adding its own `seq`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer

# Group messages still being taken from the members' queues: a few are enough, since
# every member drains its queue within the same turns of the event loop.
RECENT_DECODED = 16


class SharedDecodeRedisPubSubChannelLayer(RedisPubSubChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._decoded: OrderedDict[int, tuple[bytes, Any]] = OrderedDict()
        self._decoded_lock = threading.Lock()

    def deserialize(self, message: bytes) -> Any:
        # Keyed by the bytes object's identity, holding the object itself so that its
        # id cannot be reused by another message while the entry lives.
        key = id(message)
        with self._decoded_lock:
            hit = self._decoded.get(key)
            if hit is not None and hit[0] is message:
                self._decoded.move_to_end(key)
                return hit[1]
        decoded = super().deserialize(message)
        with self._decoded_lock:
            self._decoded[key] = (message, decoded)
            while len(self._decoded) > RECENT_DECODED:
                self._decoded.popitem(last=False)
        return decoded
