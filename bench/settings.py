"""The project's settings with the bench's own channel-layer prefix.

Redis pub/sub channels are shared by every database on a server: a prefix of its own
keeps the bench's 100-200 events/s out of anything else using the same Redis.
"""

from exchange_ui.settings import *  # noqa: F403

if EXCHANGE.redis_url:  # noqa: F405
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = "exchange-bench"  # noqa: F405
