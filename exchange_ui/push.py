"""Bridges trading.events to the channel layer: every event goes to one group.

Workers run in threads; the in-memory channel layer belongs to the server's event
loop, so events from other threads are handed to that loop rather than touched from
a second loop. With channels-redis any thread may send.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
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


# How long a failover waits for the channel layer to carry messages again.
LAYER_RECOVERY_S = 10.0
PROBE_TIMEOUT_S = 1.0


async def _layer_answers(layer: Any) -> bool:
    """One round trip through the channel layer, on a channel of its own."""
    try:
        channel = await layer.new_channel("failover-probe.")
    except Exception:
        return False
    receiving = asyncio.ensure_future(layer.receive(channel))
    try:
        await layer.send(channel, {"type": "failover.probe"})
        await asyncio.wait_for(asyncio.shield(receiving), PROBE_TIMEOUT_S)
        return True
    except Exception:
        return False
    finally:
        # The layer unsubscribes a channel whose receiver is cancelled (as when a consumer leaves).
        if receiving.done():
            receiving = asyncio.ensure_future(layer.receive(channel))
            await asyncio.sleep(0)
        receiving.cancel()
        try:
            await receiving
        except (asyncio.CancelledError, Exception):
            pass


async def _fail_over(message: dict[str, Any]) -> None:
    """Close every socket once the channel layer carries messages again.

    The failover has just killed the layer's own Redis connections: a message sent at
    once would be lost in the gap before the layer resubscribes, the sockets would stay
    open, and the events published in that gap would never reach their pages. Waiting
    for a round trip also means the pages reconnect to a layer that delivers again.
    """
    layer = get_channel_layer()
    deadline = time.monotonic() + LAYER_RECOVERY_S
    while not await _layer_answers(layer):
        if time.monotonic() > deadline:
            log.warning("the channel layer did not answer within %ss of the failover; closing the sockets anyway", LAYER_RECOVERY_S)
            break
        await asyncio.sleep(0.1)
    await layer.group_send(EVENTS_GROUP, message)


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("closing the sockets after a failover failed", exc_info=future.exception())


def broadcast_failover(region: str, az: str) -> None:
    """Tell every socket consumer its connection is gone (closes with 4012, service restart)."""
    message = {"type": "exchange.failover", "region": region, "az": az}
    for sink in _loop_sinks:
        if sink.loop is not None and sink.loop.is_running():
            asyncio.run_coroutine_threadsafe(_fail_over(message), sink.loop).add_done_callback(_log_failure)
            return
    async_to_sync(_fail_over)(message)
