"""Who is calling: bearer tokens and sessions for the JSON API, staff checks."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db.models.signals import post_delete, post_save
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render

from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import HttpError
from ninja.security import APIKeyCookie, HttpBearer

from trading.models import ApiToken, hash_token


# How stale a token's "last used" may be. Writing it on every request made each API call
# a SQLite write that queued behind the stream mirror's transactions: a third of an
# order's latency at one client (bench section 1, profiled). To the minute is what the
# admin needs to tell a live token from a forgotten one.
LAST_USED_RESOLUTION = timedelta(minutes=1)

# A token found valid is trusted for this long without a database read: looking it up
# (a new SQLite connection per request thread, then the query) was a third of a plain
# API request's time. Revoking a token or deactivating its user clears this process's
# cache at once (the signals below); another process sees it within the TTL.
TOKEN_CACHE_TTL_S = 2.0
TOKEN_CACHE_MAX = 10_000
_token_cache: dict[str, tuple[float, Any]] = {}
_token_cache_lock = threading.Lock()
# Bumped by every forget: a lookup that read the database before a revocation does not
# put what it read into the cache after it.
_token_generation = 0


def forget_tokens(**_: Any) -> None:
    global _token_generation
    with _token_cache_lock:
        _token_cache.clear()
        _token_generation += 1


post_delete.connect(forget_tokens, sender=ApiToken, dispatch_uid="auth-forget-tokens-on-delete")
post_save.connect(forget_tokens, sender=ApiToken, dispatch_uid="auth-forget-tokens-on-token-save")
post_save.connect(forget_tokens, sender=settings.AUTH_USER_MODEL, dispatch_uid="auth-forget-tokens-on-user-save")
post_delete.connect(forget_tokens, sender=settings.AUTH_USER_MODEL, dispatch_uid="auth-forget-tokens-on-user-delete")


def user_for_token(token: str) -> Any | None:
    if not token or len(token) > 200:
        return None
    digest = hash_token(token)
    now_s = time.monotonic()
    with _token_cache_lock:
        cached = _token_cache.get(digest)
        generation = _token_generation
    if cached is not None and cached[0] > now_s:
        return copy.copy(cached[1])  # each request its own instance: views may annotate it
    found = ApiToken.objects.select_related("user").filter(token_hash=digest).first()
    if found is None or not found.user.is_active:
        return None
    now = timezone.now()
    if found.last_used is None or now - found.last_used >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=found.pk).update(last_used=now)
    with _token_cache_lock:
        if generation == _token_generation:
            if len(_token_cache) >= TOKEN_CACHE_MAX:
                _token_cache.clear()
            _token_cache[digest] = (now_s + TOKEN_CACHE_TTL_S, copy.copy(found.user))
    return found.user


class BearerAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any | None:
        user = user_for_token(token)
        if user is not None:
            request.user = user
        return user


class SessionAuth(APIKeyCookie):
    """A logged-in browser session; CSRF is checked on unsafe methods."""

    param_name = "sessionid"

    def authenticate(self, request: HttpRequest, key: str | None) -> Any | None:
        if request.user.is_authenticated:
            return request.user
        return None


def require_staff(request: HttpRequest) -> None:
    """Raise 403 unless the caller is staff (operator APIs: experiments, reconcile)."""
    if not getattr(request.user, "is_staff", False):
        raise HttpError(403, "staff only")


API_AUTH = [BearerAuth(), SessionAuth()]


def docs_login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The OpenAPI document and docs: a session or a bearer token, like every other page."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer ") and user_for_token(header[7:].strip()) is not None:
            return view(request, *args, **kwargs)
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if request.path.endswith(".json"):
            return JsonResponse({"error": "unauthorized", "detail": "log in or send Authorization: Bearer <token>"}, status=401)
        return redirect_to_login(request.get_full_path())

    return guarded


def staff_page(forbidden_template: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """For operator pages. Anonymous: to the login page. Logged in but not staff: 403
    rendered from `forbidden_template` (each panel says why it is staff-only)."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not request.user.is_staff:
                return render(request, forbidden_template, status=403)
            return view(request, *args, **kwargs)

        return guarded

    return decorate
