"""WebSocket routes."""

from django.urls import path

from trading.consumers import DashboardConsumer, EventsConsumer

websocket_urlpatterns = [
    path("ws/dashboard/", DashboardConsumer.as_asgi()),
    path("ws/events/", EventsConsumer.as_asgi()),
]
