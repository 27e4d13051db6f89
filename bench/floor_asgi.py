"""The fan-out floor: a plain consumer that relays every group message as one frame.

No authentication, no buffering, no coalescing: what one daphne process can push to
the same clients from the same Redis group, for the bench to compare against.
"""

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django  # noqa: E402

django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from exchange_ui.push import EVENTS_GROUP  # noqa: E402


class RelayConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add(EVENTS_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(EVENTS_GROUP, self.channel_name)

    async def exchange_event(self, message: dict) -> None:
        await self.send(text_data=json.dumps(message["event"]))

    async def exchange_events(self, message: dict) -> None:
        for event in message["events"]:
            await self.send(text_data=json.dumps(event))


application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/relay/", RelayConsumer.as_asgi())])})
