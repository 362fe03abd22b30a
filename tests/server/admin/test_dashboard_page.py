"""The dashboard page (no browser): assembled from its static files, with a CSP that fits it.

tests/functional/test_dashboard.py drives the page in headless Chromium.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import re
import tomllib
from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.server.admin.dashboard import (
    DEFAULT_REFRESH_SECONDS,
    PATH,
    STATIC_FILES,
    Dashboard,
    add_dashboard_routes,
)

Client = TestClient[web.Request, web.Application]
PYPROJECT = Path(__file__).parents[3] / "pyproject.toml"
STATIC = "server/admin/static"


def static_text(name: str) -> str:
    """A static file as the installed package holds it (importlib.resources, as in a wheel)."""
    resource = files("gateway.server.admin") / "static" / name
    assert resource.is_file(), name
    return resource.read_text(encoding="utf-8")


def csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def directive(csp: str, name: str) -> str:
    (value,) = [
        part.strip()[len(name) + 1 :] for part in csp.split(";") if part.strip().split()[0] == name
    ]
    return value


@pytest.mark.parametrize("name", [*STATIC_FILES, "openapi.json"])
def test_the_static_files_are_package_data(name: str) -> None:
    """Each file is found through importlib.resources, and pyproject ships it in the wheel."""
    static_text(name)
    with PYPROJECT.open("rb") as config:
        patterns = tomllib.load(config)["tool"]["setuptools"]["package-data"]["gateway"]
    assert any(fnmatch.fnmatch(f"{STATIC}/{name}", pattern) for pattern in patterns), patterns


def test_the_page_is_assembled_from_the_static_files() -> None:
    """The page is dashboard.html with the style, the script and the interval put in."""
    html, css, js = (static_text(name) for name in STATIC_FILES)
    page = Dashboard.load().page(2.5)
    expected = (
        html.replace("${style}", css).replace("${script}", js).replace("${refresh_ms}", "2500")
    )
    assert page == expected
    assert f"<style>{css}</style>" in page
    assert f"<script>{js}</script>" in page
    assert '<body data-refresh-ms="2500">' in page


def test_the_csp_hashes_are_those_of_the_inline_script_and_style() -> None:
    """script-src and style-src allow exactly the page's one inline script and style."""
    dashboard = Dashboard.load()
    page = dashboard.page()
    csp = dashboard.content_security_policy
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.S)
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert directive(csp, "script-src") == csp_hash(script)
    assert directive(csp, "style-src") == csp_hash(style)
    assert directive(csp, "default-src") == "'none'"
    assert "unsafe" not in csp


def test_the_interval_is_configurable_within_bounds() -> None:
    """The refresh interval is a data attribute (0.5 s to 1 h); the script stays the same."""
    dashboard = Dashboard.load()
    assert 'data-refresh-ms="5000"' in dashboard.page()
    assert DEFAULT_REFRESH_SECONDS == 5.0
    assert 'data-refresh-ms="500"' in dashboard.page(0.5)
    assert 'data-refresh-ms="3600000"' in dashboard.page(3600)
    for refused in (0.4, 3601.0):
        with pytest.raises(ValueError, match="refresh_seconds"):
            dashboard.page(refused)


async def test_the_route_serves_the_page_with_its_headers(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    """GET /dashboard answers the page for the mounted interval, with the CSP and no caching."""
    app = web.Application()
    add_dashboard_routes(app, refresh_seconds=1.0)
    client = await aiohttp_client(app)
    response = await client.get(PATH)
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.charset == "utf-8"
    dashboard = Dashboard.load()
    assert await response.read() == dashboard.page(1.0).encode("utf-8")
    for name, value in dashboard.headers.items():
        assert response.headers[name] == value
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
