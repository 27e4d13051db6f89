"""WebSocket authentication: a bearer token header, else the session."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async


@database_sync_to_async
def _user_for_token(token: str) -> Any:
    from trading.auth import user_for_token

    return user_for_token(token)


class BearerTokenMiddleware:
    def __init__(self, inner: Any):
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", []))
        raw = headers.get(b"authorization", b"").decode("latin-1")
        if raw.lower().startswith("bearer "):
            user = await _user_for_token(raw[7:].strip())
            if user is not None:
                scope = {**scope, "user": user}
        return await self.inner(scope, receive, send)


def TokenOrSessionAuthMiddleware(inner: Any) -> Any:  # noqa: N802 - reads like the Channels stacks
    # The session stack runs first and sets scope["user"]; a valid token then overrides it.
    return AuthMiddlewareStack(BearerTokenMiddleware(inner))

