"""Bridges trading.events to the channel layer: every event goes to one group.

Workers run in threads; the in-memory channel layer belongs to the server's event
loop, so events from other threads are handed to that loop rather than touched from
a second loop. With channels-redis any thread may send.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

EVENTS_GROUP = "exchange-events"
_loop_sinks: list[ChannelLayerSink] = []


class ChannelLayerSink:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop
        self.layer = get_channel_layer()
        self._loop_thread = threading.get_ident() if loop is not None else None
        if loop is not None:
            _loop_sinks.append(self)

    def __call__(self, event: dict[str, Any]) -> None:
        message = {"type": "exchange.event", "event": event}
        if self.loop is not None and self.loop.is_running():
            if threading.get_ident() == self._loop_thread:
                self.loop.create_task(self.layer.group_send(EVENTS_GROUP, message))
            else:
                asyncio.run_coroutine_threadsafe(self.layer.group_send(EVENTS_GROUP, message), self.loop)
            return
        async_to_sync(self.layer.group_send)(EVENTS_GROUP, message)


def broadcast_failover(region: str, az: str) -> None:
    """Tell every socket consumer its connection is gone (closes with 1012)."""
    message = {"type": "exchange.failover", "region": region, "az": az}
    layer = get_channel_layer()
    for sink in _loop_sinks:
        if sink.loop is not None and sink.loop.is_running():
            asyncio.run_coroutine_threadsafe(layer.group_send(EVENTS_GROUP, message), sink.loop)
            return
    async_to_sync(layer.group_send)(EVENTS_GROUP, message)
