"""Every page works with no network: it names no asset of another host, and every asset it
names (and the icon browsers ask for by themselves) is served by the server itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.test import Client

from exchange_ui.runtime import Runtime, set_runtime
from faults.runner import set_runner
from trading.operators import make_operator

pytestmark = pytest.mark.django_db

STAFF_PAGES = ["/", "/experiments/", "/reconcile/", "/reconcile/tapes/", "/api/docs", "/admin/", "/admin/trading/order/"]
ATTRIBUTE = re.compile(r"""\b(?:src|href|srcset|action|data-src)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)["']?\s*\)""")


@pytest.fixture
def runtime(aws_resources: Any) -> Iterator[Runtime]:
    built = Runtime.build(aws_resources)
    set_runtime(built)
    set_runner(built.runner)
    yield built
    set_runner(None)
    set_runtime(None)


@pytest.fixture
def ops(runtime: Runtime) -> Client:
    client = Client()
    operator = User.objects.create_user("ops", password="ops-pass-123")
    make_operator(operator)
    client.force_login(operator)
    return client


def references(html: str) -> list[str]:
    return [value.strip() for value in ATTRIBUTE.findall(html) if value.strip()]


def foreign(url: str) -> bool:
    """An address on another host (absolute or protocol-relative)."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "mailto", "javascript"):  # nothing is fetched from a host
        return False
    return bool(parts.netloc) and parts.netloc != "testserver"


def served(client: Client, url: str) -> Any:
    response = client.get(url, follow=True)
    assert response.status_code == 200, f"{url}: {response.status_code}"
    return response


def pages(ops: Client) -> dict[str, str]:
    rendered = {}
    for url in STAFF_PAGES:
        response = ops.get(url)
        assert response.status_code == 200, url
        rendered[url] = response.content.decode()
    login = Client().get("/login/")
    assert login.status_code == 200
    rendered["/login/"] = login.content.decode()
    return rendered


def test_it_names_no_asset_of_another_host_on_any_page(ops: Client) -> None:
    for url, html in pages(ops).items():
        outside = [ref for ref in references(html) if foreign(ref)]
        assert outside == [], f"{url} references {outside}"
        assert "cdn." not in html and "unpkg" not in html, url


def test_it_serves_swagger_ui_from_the_server_itself(ops: Client) -> None:
    html = ops.get("/api/docs").content.decode()
    scripts = [ref for ref in references(html) if ref.endswith(".js")]
    assert any("swagger-ui-bundle" in ref for ref in scripts), scripts
    for ref in scripts:
        assert ref.startswith("/static/"), ref
        assert served(ops, ref).get("Content-Type", "").startswith(("text/javascript", "application/javascript"))


def test_it_serves_every_static_asset_a_page_names_and_the_icon(ops: Client) -> None:
    seen: set[str] = set()
    for url, html in pages(ops).items():
        for ref in references(html):
            path = urlsplit(ref).path
            if not path.startswith("/static/") or path in seen:
                continue
            seen.add(path)
            assert finders.find(path.removeprefix("/static/")), f"{url} names {path}, which no finder has"
            response = served(ops, path)
            if path.endswith(".css"):
                body = b"".join(response.streaming_content) if response.streaming else response.content  # a stylesheet's own url(...)s are assets too
                for inner in CSS_URL.findall(body.decode("utf-8", "replace")):
                    assert not foreign(inner), f"{path} references {inner}"
    assert "/static/favicon.svg" in seen
    # What a browser asks for by itself on every page that names no icon (admin, JSON).
    icon = served(Client(), "/favicon.ico")
    assert icon.redirect_chain and icon["Content-Type"].startswith("image/")
