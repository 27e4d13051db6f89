"""Small formatting filters for the pages."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from django import template

register = template.Library()


@register.filter
def ms_time(value: Any) -> str:
    """Epoch milliseconds as HH:MM:SS.mmm (UTC)."""
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return ""
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%H:%M:%S.") + f"{ms % 1000:03d}"


@register.filter
def hms(value: Any) -> str:
    """Epoch milliseconds as HH:MM:SS (UTC): the tables' compact time."""
    text = ms_time(value)
    return text.split(".", 1)[0]


@register.filter
def ms_or_dash(value: Any) -> str:
    if value is None or value == "":
        return "–"
    try:
        return f"{float(value):.0f} ms"
    except (TypeError, ValueError):
        return "–"


@register.simple_tag
def now_ms() -> int:
    """The render time, so the page's socket can ask for what it missed since."""
    import time

    return int(time.time() * 1000)


@register.simple_tag
def exchange_engine() -> str:
    """The engine behind the fills (EXCHANGE_ENGINE): the badges name what an order waits for."""
    from django.conf import settings

    return str(settings.EXCHANGE.engine)
