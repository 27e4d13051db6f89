"""The JSON API (`/api/`): one NinjaAPI, the apps' routers, the contract's error shapes."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from faults.api import router as faults_router
from reconcile_panel.api import router as reconcile_router
from trading.api import router as trading_router
from trading.auth import API_AUTH, docs_login_required

log = logging.getLogger(__name__)

api = NinjaAPI(
    title="Exchange failure dashboard API",
    version="1.0",
    description="Orders, the tape, regions, metrics, FIS experiments and reconciliation. "
    "Authenticate with `Authorization: Bearer <token>` (manage.py create_api_token) or a session (with CSRF).",
    auth=API_AUTH,
    urls_namespace="api",
    docs_decorator=docs_login_required,
)


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    for item in exc.errors:
        location = [str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path", "header", "payload")]
        errors.setdefault(".".join(location) or "__all__", []).append(str(item.get("msg", "invalid")))
    return JsonResponse({"errors": errors}, status=400)


@api.exception_handler(AuthenticationError)
def on_auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return JsonResponse({"error": "unauthorized", "detail": "log in or send Authorization: Bearer <token>"}, status=401)


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    codes = {403: "forbidden", 404: "not_found", 405: "method_not_allowed", 409: "conflict"}
    return JsonResponse({"error": codes.get(exc.status_code, "error"), "detail": str(exc)}, status=exc.status_code)


@api.exception_handler(RequestDataTooBig)
def on_body_too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    detail = f"the body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"
    return JsonResponse({"error": "payload_too_large", "detail": detail}, status=413)


@api.exception_handler(SuspiciousOperation)
def on_suspicious_request(request: HttpRequest, exc: SuspiciousOperation) -> HttpResponse:
    return JsonResponse({"error": "bad_request", "detail": str(exc)[:200] or "the request was refused"}, status=400)


@api.exception_handler(Exception)
def on_unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("unexpected API error")
    return JsonResponse({"error": "internal", "detail": "unexpected error; it has been logged"}, status=500)


api.add_router("/", trading_router)
api.add_router("/experiments", faults_router)
api.add_router("/", reconcile_router)
