"""What the JSON API accepts at its edge, checked in one place for every endpoint.

- A path or query parameter holds no control character (400): PostgreSQL refuses NUL in
  text, and no id, symbol, status or region the API knows contains one.
- A body is at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes (413, exchange_ui/api.py), counted
  as read, so a body sent without Content-Length is held to it too.
- A JSON body nests at most MAX_JSON_DEPTH deep (400), checked before parsing, so neither
  the parser nor anything walking the result recurses without bound.
- An integer parameter is plain ASCII digits: `str.isdigit()` takes "²" (which `int()`
  then refuses) and `int()` itself takes "١٢", "1_0" and " 12".

Pages are held to one rule of these: no NUL in the path or query (a plain 400).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from http import HTTPStatus
from typing import Annotated, Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from pydantic import BeforeValidator, WithJsonSchema

API_PREFIX = "/api/"
MAX_JSON_DEPTH = 32
MAX_DIGITS = 18  # below 2**63: a plain number any store or database column holds

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc: C0, DEL and C1
_PLAIN_DIGITS = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")
# A JSON string (closing quote optional, so a match never fails and the scan stays linear) or a bracket.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]+|\\.)*"?|[\[\]{}]', re.DOTALL)


def has_control_character(text: str) -> bool:
    return _CONTROL.search(text) is not None


def parse_whole_number(raw: str) -> int | None:
    """The value of plain ASCII digits ("0" to 18 nines), else None."""
    return int(raw) if _PLAIN_DIGITS.fullmatch(raw) else None


def _plain_digits_only(value: Any) -> Any:
    if isinstance(value, str) and parse_whole_number(value) is None:
        raise ValueError(f"must be a whole number written in the digits 0-9 (at most {MAX_DIGITS})")
    return value


# A query parameter typed with this is documented as an integer and parsed strictly.
QueryCount = Annotated[int, BeforeValidator(_plain_digits_only), WithJsonSchema({"type": "integer", "minimum": 0})]


class BodyNotJson(ValueError):
    """The request body is not the JSON the endpoint reads; the message says why."""


def json_nesting_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects in `text` nest deeper than `limit` (brackets in strings do not count)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for token in _STRING_OR_BRACKET.finditer(text):
        opened = token.group()
        if opened == "[" or opened == "{":
            depth += 1
            if depth > limit:
                return True
        elif opened == "]" or opened == "}":
            depth -= 1
    return False


def read_json_body(request: HttpRequest, *, decimal_numbers: bool = False, empty: Any = None) -> Any:
    """The request body parsed as JSON (every number a Decimal when `decimal_numbers`).

    Raises RequestDataTooBig (413) over the upload limit and BodyNotJson (400) otherwise.
    """
    raw = request.body
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is not None and len(raw) > limit:
        raise RequestDataTooBig(f"the body is larger than {limit} bytes")
    if not raw:
        return empty
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyNotJson("The body must be UTF-8 JSON.") from None
    if json_nesting_exceeds(text):
        raise BodyNotJson(f"The body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels.")
    try:
        if decimal_numbers:
            # NaN/Infinity are Decimals too; the endpoint's validation refuses them.
            return json.loads(text, parse_float=Decimal, parse_int=Decimal)
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BodyNotJson("The body must be JSON.") from None


def _control_character_error(request: HttpRequest) -> JsonResponse | None:
    if has_control_character(request.path_info):
        return JsonResponse({"error": "invalid_path", "detail": "the path must not contain control characters"}, status=400)
    bad = sorted({name for name, values in request.GET.lists() if has_control_character(name) or any(map(has_control_character, values))})
    if bad:
        return JsonResponse({"errors": {name: ["Must not contain control characters."] for name in bad}}, status=400)
    return None


# The codes an error answered outside a view (no such route, wrong method, Django's own 400/500) gets.
ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def _has_nul(request: HttpRequest) -> bool:
    return "\x00" in request.path_info or any("\x00" in name or any("\x00" in v for v in values) for name, values in request.GET.lists())


class ApiInputMiddleware(MiddlewareMixin):
    """Refuses an API request whose path or query holds a control character (a page's: a NUL),
    before any view, and makes every API error JSON, even one answered outside the API's views."""

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if request.path_info.startswith(API_PREFIX):
            return _control_character_error(request)
        if _has_nul(request):
            # Pages (the admin's object ids among them) would hand it to PostgreSQL: a 500.
            return HttpResponseBadRequest("An address cannot contain a NUL character.", content_type="text/plain")
        return None

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if (
            response.status_code < 400
            or not request.path_info.startswith(API_PREFIX)
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        status = response.status_code
        try:
            reason = HTTPStatus(status).phrase.lower()
        except ValueError:
            reason = "error"
        code = ERROR_CODES.get(status, "internal" if status >= 500 else reason.replace(" ", "_").replace("-", "_"))
        as_json = JsonResponse({"error": code, "detail": "no such API route" if status == 404 else reason}, status=status)
        for header in KEPT_HEADERS:
            if header in response:
                as_json[header] = response[header]
        return as_json
