"""Bridges trading.events to the channel layer: events go to one group, in batches.

Every group message is decoded once per member socket by the receiving process, so the
sink coalesces at the publisher: it buffers events and sends the group one
`exchange.events` message carrying the batch, at most once per PUBLISH_INTERVAL_S (sooner
when MAX_BATCH events wait). An event published after a quiet spell goes at once (a
batch of one), so a sparse event (one fill) waits for nothing; a change the operator must
see within the second (backpressure, an experiment's state) cuts the interval short and
goes at once with whatever is buffered before it.

A flusher thread does the sending; it ends after IDLE_EXIT_S with nothing to send and is
started again by the next event; close() (also at interpreter exit) sends what is
buffered and stops it. Workers run in threads; the in-memory channel layer belongs to the
server's event loop, so with a loop the batches are handed to that loop rather than sent
from a second one. Without a loop (a `simfill_worker` process, channels-redis) the
flusher sends from an event loop of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
import weakref
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from trading import events as ev

log = logging.getLogger(__name__)

EVENTS_GROUP = "exchange-events"
PUBLISH_INTERVAL_S = 0.1
MAX_BATCH = 500
IDLE_EXIT_S = 10.0
SEND_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 5.0
# Rare, published on a change, and behind the fault-to-banner goal (<= 1 s): never held back.
URGENT_TYPES = frozenset({ev.BACKPRESSURE, ev.EXPERIMENT_STATE})
_loop_sinks: list[ChannelLayerSink] = []
_open_sinks: weakref.WeakSet[ChannelLayerSink] = weakref.WeakSet()


def batch_message(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "exchange.events", "events": batch}


class ChannelLayerSink:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, interval_s: float = PUBLISH_INTERVAL_S, max_batch: int = MAX_BATCH):
        self.loop = loop
        self.layer = get_channel_layer()
        self.interval_s = interval_s
        self.max_batch = max_batch
        self._loop_thread = threading.get_ident() if loop is not None else None
        self._cond = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._urgent = False
        if loop is not None:
            _loop_sinks.append(self)
        _open_sinks.add(self)

    def __call__(self, event: dict[str, Any]) -> None:
        with self._cond:
            if not self._closed:
                self._pending.append(event)
                waiting = len(self._pending)
                urgent = event.get("type") in URGENT_TYPES
                self._urgent = self._urgent or urgent
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="channel-layer-flusher", daemon=True)
                    self._thread.start()
                elif waiting == 1 or waiting >= self.max_batch or urgent:
                    self._cond.notify()
                return
        self._send_now([event])  # after close(): one message at once, from the caller

    def close(self) -> None:
        """Send what is buffered and stop the flusher; a later event goes at once, a message of its own."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify()
        if thread is None or thread is threading.current_thread():
            return
        if self.loop is not None and self.loop.is_running() and threading.get_ident() == self._loop_thread:
            return  # the flusher hands its last batch to this loop: it cannot be waited for here
        thread.join(CLOSE_TIMEOUT_S)
        if thread.is_alive():
            log.warning("the channel layer flusher did not finish within %ss", CLOSE_TIMEOUT_S)

    def _run(self) -> None:
        own_loop: asyncio.AbstractEventLoop | None = None
        try:
            while True:
                with self._cond:
                    idle_until = time.monotonic() + IDLE_EXIT_S
                    while not self._pending:
                        left = idle_until - time.monotonic()
                        if self._closed or left <= 0:
                            self._thread = None  # under the lock: the next event starts a new flusher
                            return
                        self._cond.wait(left)
                    batch, self._pending = self._pending, []
                    self._urgent = False
                own_loop = self._deliver(batch, own_loop)
                # At most one message per interval, unless a full batch or an urgent event
                # waits, or the sink closes.
                with self._cond:
                    until = time.monotonic() + self.interval_s
                    while not self._closed and not self._urgent and len(self._pending) < self.max_batch:
                        left = until - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
        finally:
            if own_loop is not None:
                own_loop.close()

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        for start in range(0, len(batch), self.max_batch):
            await self.layer.group_send(EVENTS_GROUP, batch_message(batch[start : start + self.max_batch]))

    def _deliver(self, batch: list[dict[str, Any]], own_loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop | None:
        try:
            if self.loop is not None and self.loop.is_running():
                asyncio.run_coroutine_threadsafe(self._send(batch), self.loop).result(SEND_TIMEOUT_S)
            else:
                if own_loop is None or own_loop.is_closed():
                    own_loop = asyncio.new_event_loop()
                own_loop.run_until_complete(self._send(batch))
        except Exception:  # a lost batch must not stop the flusher; a page resynchronises on reconnect
            log.exception("sending %d event(s) to the channel layer failed", len(batch))
        return own_loop

    def _send_now(self, batch: list[dict[str, Any]]) -> None:
        if self.loop is not None and self.loop.is_running():
            if threading.get_ident() == self._loop_thread:
                self.loop.create_task(self._send(batch))
            else:
                asyncio.run_coroutine_threadsafe(self._send(batch), self.loop)
            return
        async_to_sync(self._send)(batch)


@atexit.register
def _close_open_sinks() -> None:
    for sink in list(_open_sinks):
        sink.close()


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
