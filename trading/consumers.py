"""WebSocket consumers: authenticate, join the events group, relay.

Both sockets coalesce per client: events are buffered and flushed at most every
FLUSH_INTERVAL_S (DESIGN.md: one daphne process delivers a few thousand frames/s, so
the browser never gets one frame per event). The publisher batches too (one group
message per 100 ms, exchange_ui.push), so the process decodes a batch per member, not
every event per member. Every frame carries a per-connection
sequence number; a client that sees a gap, or reconnects, re-fetches a snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer

from exchange_ui.push import EVENTS_GROUP
from trading.events import RECENT, visible_to
from trading.fragments import coalesce, render_dashboard_frame

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.1
MIRROR_SLACK_MS = 5_000
REPLAY_WINDOW_MS = 30_000
MAX_BUFFER = 5000
CLOSE_UNAUTHENTICATED = 4401
# "Service restart" (1012) as an application code: daphne refuses to send 1012 itself
# (only 1000 and 3000-4999), and the page reconnects on it like on any other close.
CLOSE_FAILOVER = 4012


class BufferedEventsConsumer(AsyncWebsocketConsumer):
    batch_mode = True

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.username = user.get_username()
        self.is_staff = bool(user.is_staff)
        self.buffer: list[dict[str, Any]] = []
        self.overflowed = False
        self.seq = 0
        self.wakeup = asyncio.Event()
        await self.channel_layer.group_add(EVENTS_GROUP, self.channel_name)
        await self.accept()
        self.replay_missed()
        self.flusher = asyncio.create_task(self.flush_loop())

    def replay_missed(self) -> None:
        """Queue what was published since the page rendered (`?since=<ms>`), if asked."""
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        try:
            since = int(query.get("since", ["0"])[0])
        except ValueError:
            return
        if since <= 0:
            return
        # The mirror trails the tables: replay from a little before the render, and
        # never more than REPLAY_WINDOW_MS (a reconnect resynchronises from the store).
        floor = int(time.time() * 1000) - REPLAY_WINDOW_MS
        missed = RECENT.since(max(since - MIRROR_SLACK_MS, floor))
        self.buffer.extend(e for e in missed if visible_to(e, self.username, self.is_staff))
        if self.buffer:
            self.wakeup.set()

    async def disconnect(self, code: int) -> None:
        flusher = getattr(self, "flusher", None)
        if flusher is not None:
            flusher.cancel()
        if hasattr(self, "buffer"):
            await self.channel_layer.group_discard(EVENTS_GROUP, self.channel_name)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections before every handler, a hop to the sync
        # thread and back per message per socket. The group's handlers never touch the
        # database, and with 200 sockets that hop was a fifth of the process (py-spy).
        kind = message.get("type")
        if kind == "exchange.events":
            await self.exchange_events(message)
        elif kind == "exchange.event":
            await self.exchange_event(message)
        else:
            await super().dispatch(message)

    async def exchange_events(self, message: dict[str, Any]) -> None:
        """A publisher's batch (exchange_ui.push.ChannelLayerSink): each event as if sent alone."""
        queued = False
        for event in message["events"]:
            queued = self.queue(event) or queued
        if queued:
            self.wakeup.set()

    async def exchange_event(self, message: dict[str, Any]) -> None:
        """One event per group message, from a publisher that does not batch."""
        if self.queue(message["event"]):
            self.wakeup.set()

    def queue(self, event: dict[str, Any]) -> bool:
        if not visible_to(event, self.username, self.is_staff):
            return False
        if len(self.buffer) >= MAX_BUFFER:
            self.buffer.clear()
            self.overflowed = True
        self.buffer.append(event)
        return True

    async def exchange_failover(self, message: dict[str, Any]) -> None:
        # The connection this socket rides on is gone (Redis failover): close as a
        # restarting service would; the client reconnects and resynchronises.
        await self.close(code=CLOSE_FAILOVER)

    async def flush_loop(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            batch, self.buffer = self.buffer, []
            overflowed, self.overflowed = self.overflowed, False
            if batch or overflowed:
                try:
                    await self.send_batch(batch, overflowed)
                except Exception:
                    # One frame that cannot be rendered must not silence the socket: the
                    # next frame asks the page to resynchronise from the store instead.
                    log.exception("a frame of %d event(s) could not be sent; the page will resync", len(batch))
                    self.overflowed = True
                    self.wakeup.set()
            await asyncio.sleep(FLUSH_INTERVAL_S)

    async def send_batch(self, batch: list[dict[str, Any]], overflowed: bool) -> None:
        raise NotImplementedError


class DashboardConsumer(BufferedEventsConsumer):
    """/ws/dashboard/: htmx out-of-band fragments for the pages."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        return  # the dashboard socket is push-only

    async def send_batch(self, batch: list[dict[str, Any]], overflowed: bool) -> None:
        reduced, cut = coalesce(batch)
        self.seq += 1
        await self.send(text_data=render_dashboard_frame(reduced, self.seq, resync=overflowed or cut, staff=self.is_staff))


class EventsConsumer(BufferedEventsConsumer):
    """/ws/events/: the contract's JSON frames, one event per frame.

    `?batch=1` asks for coalesced frames instead: {"type": "batch", "seq", "events": [...]}.
    """

    async def connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.batch_mode = query.get("batch", ["0"])[0] in {"1", "true"}
        await super().connect()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data and text_data.strip() == "ping":
            await self.send(text_data=json.dumps({"type": "pong", "seq": self.seq}))

    async def send_batch(self, batch: list[dict[str, Any]], overflowed: bool) -> None:
        if self.batch_mode:
            self.seq += 1
            await self.send(text_data=json.dumps({"type": "batch", "seq": self.seq, "resync": overflowed, "events": batch}))
            return
        if overflowed:
            self.seq += 1
            await self.send(text_data=json.dumps({"type": "resync", "region": "global", "ts": 0, "data": {}, "seq": self.seq}))
        for event in batch:
            self.seq += 1
            await self.send(text_data=json.dumps({**event, "seq": self.seq}))
