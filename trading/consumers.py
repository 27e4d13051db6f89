"""WebSocket consumers: authenticate, join the events group, relay.

Both sockets coalesce per client: events are buffered and flushed at most once per
the socket's flush interval on average (DESIGN.md: one daphne process delivers a few thousand frames/s, so
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
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from exchange_ui.push import EVENTS_GROUP
from trading.events import RECENT, Viewer, visible_to
from trading.limits import SocketSlots
from trading.fragments import BookLadders, QueuedOrders, coalesce, render_dashboard_frame
from trading.metrics import ROUND_TRIPS, parse_ping

log = logging.getLogger(__name__)

# Each socket sends at most one frame per `flush_interval_s` on average, with up to
# `flush_burst` back to back (a token bucket). The publishers already batch every 100 ms
# (exchange_ui.push). On /ws/events/ (JSON, read by programs) the bucket's rate sits
# above that, so the regular batches and the once-a-second metrics go out as they
# arrive: a plain "one frame, then wait the interval" held the batch after every metrics
# frame for most of an interval, so an event waited for two holds, not one (fan-out at
# 20 sockets: 36 ms of the 91 ms p50 were the socket's hold, measured). The dashboard's
# frames are HTML the browser lays out: those stay at ten a second.
FLUSH_INTERVAL_S = 0.08
FLUSH_BURST = 3
DASHBOARD_FLUSH_INTERVAL_S = 0.1
DASHBOARD_FLUSH_BURST = 2
ENCODED_CACHE = 4096


class EncodedEvents:
    """The JSON text of recently sent events, shared by every socket of the process.

    Every socket sends the same events: encoded once, not once per socket (the encoder
    was a fifth of the process at 200 sockets). Entries hold their event, so an id is
    never reused while cached; events are not changed after they are published."""

    def __init__(self, size: int = ENCODED_CACHE):
        self.size = size
        self._texts: OrderedDict[int, tuple[dict[str, Any], str]] = OrderedDict()

    def text(self, event: dict[str, Any]) -> str:
        hit = self._texts.get(id(event))
        if hit is not None and hit[0] is event:
            return hit[1]
        text = json.dumps(event)
        self._texts[id(event)] = (event, text)
        if len(self._texts) > self.size:
            self._texts.popitem(last=False)
        return text

    def with_seq(self, event: dict[str, Any], seq: int) -> str:
        """`json.dumps({**event, "seq": seq})`, from the cached text."""
        if "seq" in event:
            return json.dumps({**event, "seq": seq})
        text = self.text(event)
        return f'{text[:-1]}, "seq": {seq}}}' if text != "{}" else json.dumps({"seq": seq})

    def batch(self, events: list[dict[str, Any]], seq: int, resync: bool) -> str:
        """`json.dumps({"type": "batch", "seq", "resync", "events"})`, from the cached texts."""
        body = ", ".join(self.text(event) for event in events)
        return f'{{"type": "batch", "seq": {seq}, "resync": {json.dumps(resync)}, "events": [{body}]}}'


ENCODED = EncodedEvents()
MIRROR_SLACK_MS = 5_000
REPLAY_WINDOW_MS = 30_000
MAX_BUFFER = 5000
CLOSE_UNAUTHENTICATED = 4401
# "Service restart" (1012) as an application code: daphne refuses to send 1012 itself
# (only 1000 and 3000-4999), and the page reconnects on it like on any other close.
CLOSE_FAILOVER = 4012
# Too many sockets open: this user's (EXCHANGE_USER_SOCKETS) or the process's (EXCHANGE_MAX_SOCKETS).
CLOSE_TOO_MANY_SOCKETS = 4429


class Sockets:
    """The process's open sockets, counted against the configured caps."""

    def __init__(self) -> None:
        self._slots: tuple[tuple[int, int], SocketSlots] | None = None

    def slots(self) -> SocketSlots:
        config = settings.EXCHANGE
        caps = (config.user_sockets, config.max_sockets)
        held = self._slots
        if held is None or held[0] != caps:  # (new caps only where a test sets them)
            held = self._slots = (caps, SocketSlots(*caps))
        return held[1]


SOCKETS = Sockets()


class BufferedEventsConsumer(AsyncWebsocketConsumer):
    batch_mode = True
    flush_interval_s = FLUSH_INTERVAL_S
    flush_burst = FLUSH_BURST

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.username = user.get_username()
        self.is_staff = bool(user.is_staff)
        self.viewer = Viewer(self.username, self.is_staff)
        self.slots = SOCKETS.slots()
        refused = self.slots.acquire(self.username)
        if refused:
            # Accepted first, so the client reads the code and the reason (a close during
            # the handshake reaches it as a bare HTTP 403).
            await self.accept()
            cap = f"{self.slots.per_user} per user" if refused == "user" else f"{self.slots.total} on this server"
            await self.close(code=CLOSE_TOO_MANY_SOCKETS, reason=f"too many sockets open ({cap}); close one and reconnect")
            return
        self.holds_slot = True
        self.buffer: list[dict[str, Any]] = []
        self.overflowed = False
        self.seq = 0
        self.wakeup = asyncio.Event()
        try:
            await self.channel_layer.group_add(EVENTS_GROUP, self.channel_name)
            await self.accept()
        except BaseException:
            self.holds_slot = False  # no disconnect follows a connect that failed
            self.slots.release(self.username)
            raise
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
        for event in missed:
            shown = visible_to(event, self.viewer)
            if shown is not None:
                self.buffer.append(shown)
        if self.buffer:
            self.wakeup.set()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "holds_slot", False):
            self.holds_slot = False
            self.slots.release(self.username)
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
        shown = visible_to(event, self.viewer)
        if shown is None:
            return False
        if len(self.buffer) >= MAX_BUFFER:
            self.buffer.clear()
            self.overflowed = True
        self.buffer.append(shown)
        return True

    async def exchange_failover(self, message: dict[str, Any]) -> None:
        # The connection this socket rides on is gone (Redis failover): close as a
        # restarting service would; the client reconnects and resynchronises.
        await self.close(code=CLOSE_FAILOVER)

    async def flush_loop(self) -> None:
        interval, burst = self.flush_interval_s, float(self.flush_burst)
        tokens, last = burst, time.monotonic()
        while True:
            await self.wakeup.wait()
            now = time.monotonic()
            tokens, last = min(burst, tokens + (now - last) / interval), now
            if tokens < 1:
                # Out of frames for now: what arrives meanwhile joins this frame.
                await asyncio.sleep((1 - tokens) * interval)
                now = time.monotonic()
                tokens, last = min(burst, tokens + (now - last) / interval), now
            self.wakeup.clear()
            batch, self.buffer = self.buffer, []
            overflowed, self.overflowed = self.overflowed, False
            if batch or overflowed:
                tokens -= 1
                try:
                    await self.send_batch(batch, overflowed)
                except Exception:
                    # One frame that cannot be rendered must not silence the socket: the
                    # next frame asks the page to resynchronise from the store instead.
                    log.exception("a frame of %d event(s) could not be sent; the page will resync", len(batch))
                    self.overflowed = True
                    self.wakeup.set()

    async def send_batch(self, batch: list[dict[str, Any]], overflowed: bool) -> None:
        raise NotImplementedError


class DashboardConsumer(BufferedEventsConsumer):
    """/ws/dashboard/: htmx out-of-band fragments for the pages."""

    flush_interval_s = DASHBOARD_FLUSH_INTERVAL_S
    flush_burst = DASHBOARD_FLUSH_BURST

    async def connect(self) -> None:
        self.queued = QueuedOrders()
        self.ladders = BookLadders()
        await super().connect()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The page's only message is its ping: answered at once, out of band of the frames
        # (no sequence number), and the round trip it reports joins every browser's figures.
        ping = parse_ping(text_data)
        if ping is None:
            return
        stamp, reported_ms = ping
        await self.send(text_data=json.dumps({"type": "pong", "t": stamp}))
        if reported_ms is not None:
            ROUND_TRIPS.record_socket(self.channel_name, time.time(), reported_ms)

    async def send_batch(self, batch: list[dict[str, Any]], overflowed: bool) -> None:
        reduced, cut = coalesce(batch)
        # Rows and ladders drawn before, drawn again when their region goes down or comes back.
        again = self.queued.follow(reduced) + self.ladders.follow(reduced)
        self.seq += 1
        frame = render_dashboard_frame(again + reduced, self.seq, resync=overflowed or cut, staff=self.is_staff, down=self.queued.down)
        await self.send(text_data=frame)


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
            await self.send(text_data=ENCODED.batch(batch, self.seq, overflowed))
            return
        if overflowed:
            self.seq += 1
            await self.send(text_data=json.dumps({"type": "resync", "region": "global", "ts": 0, "data": {}, "seq": self.seq}))
        for event in batch:
            self.seq += 1
            await self.send(text_data=ENCODED.with_seq(event, self.seq))
