"""The live dashboard: one static page at `GET /dashboard`, mounted by `add_dashboard_routes`.

The page holds no data and no secret, so it is served without a credential. It asks for an
admin token, keeps it in the tab's sessionStorage, and polls the admin API with it
(`GET /admin/experiments`, then `GET /admin/experiments/{id}/analysis` for each experiment),
sending `Authorization: Bearer`. It renders weights, phase, per-variant live counts, rates,
latency and WER so far, the recommendation, the report's `review` section (reviewed live
traffic: the labelled sample, WER per sample and variant, blind preference rates) and model
health, and says plainly when there is no token, the
token is refused (401), there is no data yet, or the gateway is unreachable. The script polls
with setTimeout after each answer (never overlapping requests) and drops answers that arrive
after the token changed.

The page, its style and its script are the package data files static/dashboard.html,
static/dashboard.css and static/dashboard.js, read once when the route is mounted. The style
and script are inlined into the page as they are in their files, and the
Content-Security-Policy allows exactly that script and style (by hash, computed from the same
text) and requests to this origin, nothing else; the script builds every element with
textContent, so names from experiment configs cannot inject markup.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from importlib.resources import files
from string import Template
from typing import Final

from aiohttp import web

PATH: Final = "/dashboard"
DEFAULT_REFRESH_SECONDS: Final = 5.0
STATIC_FILES: Final = ("dashboard.html", "dashboard.css", "dashboard.js")


def _static_text(name: str) -> str:
    # Through importlib.resources, so the files are found in an installed wheel as well.
    return (files("gateway.server.admin") / "static" / name).read_text(encoding="utf-8")


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


@dataclass(frozen=True, slots=True)
class Dashboard:
    """The page's template (`${style}`, `${script}`, `${refresh_ms}`) and what it inlines."""

    template: str
    style: str
    script: str

    @classmethod
    def load(cls) -> Dashboard:
        """The dashboard from its static files."""
        html, css, js = (_static_text(name) for name in STATIC_FILES)
        return cls(template=html, style=css, script=js)

    @property
    def content_security_policy(self) -> str:
        """Only the page's own inline script and style (by hash: no 'unsafe-inline') and
        requests to this origin; no frames, forms posting elsewhere, plugins or base-URL
        tricks."""
        return "; ".join(
            (
                "default-src 'none'",
                f"script-src {_csp_hash(self.script)}",
                f"style-src {_csp_hash(self.style)}",
                "connect-src 'self'",
                "img-src data:",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            )
        )

    @property
    def headers(self) -> dict[str, str]:
        """The page's response headers: its CSP, and no sniffing, framing, referrer or cache."""
        return {
            "Content-Security-Policy": self.content_security_policy,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }

    def page(self, refresh_seconds: float = DEFAULT_REFRESH_SECONDS) -> str:
        """The dashboard's HTML, polling every `refresh_seconds`."""
        if not 0.5 <= refresh_seconds <= 3600:
            raise ValueError(f"refresh_seconds must be 0.5 to 3600, got {refresh_seconds}")
        # The interval goes into a data attribute, not the script, so the script's hash is
        # fixed. `substitute` fails on a placeholder the template has and this call lacks.
        return Template(self.template).substitute(
            style=self.style, script=self.script, refresh_ms=round(refresh_seconds * 1000)
        )


def add_dashboard_routes(
    app: web.Application, *, refresh_seconds: float = DEFAULT_REFRESH_SECONDS
) -> None:
    """Serve the dashboard page at `GET /dashboard` (the admin API it polls is mounted apart)."""
    dashboard = Dashboard.load()
    body = dashboard.page(refresh_seconds).encode("utf-8")
    headers = dashboard.headers

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)

    app.router.add_get(PATH, serve)
