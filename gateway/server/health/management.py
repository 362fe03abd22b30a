"""The Custom Speech management client: which model an endpoint deploys, and its expiry dates.

Two GETs of the Speech to text REST API v3.2 per endpoint: `/endpoints/{id}`, then the
model its `model.self` link names (`/models/{id}` or `/models/base/{id}`). Both go to the
configured management URL with the resource key in `Ocp-Apim-Subscription-Key`: a link's
host is never followed (only its path, checked to be a model of the API), nor is a redirect,
so the key goes nowhere else.

Failures become the gateway's errors: unreachable, too slow, a 5xx or an answer that is not
the expected JSON raise `UpstreamUnavailable`; any other status raises `UpstreamRejected`.
No message carries the key, even when the service echoes it back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from gateway.errors import ConfigError, UpstreamRejected, UpstreamUnavailable
from gateway.health.lifecycle import (
    BAD_ANSWER,
    EndpointInfo,
    endpoint_model_link,
    endpoint_path,
    model_path,
    parse_endpoint,
    parse_model,
)

KEY_HEADER: Final = "Ocp-Apim-Subscription-Key"
MAX_ANSWER_BYTES: Final = 1 << 20  # an endpoint or a model is a few kB
_MAX_MESSAGE: Final = 200  # how much of the service's own error message a detail quotes
_REDACTED: Final = "[redacted]"


class CustomSpeechClient:
    """Reads endpoints and models from one Speech resource's management API."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        key: str | None,
        timeout_s: float = 10.0,
    ) -> None:
        self._http = http
        self._base = _checked_base(base_url)
        self._key = key or None
        if not timeout_s > 0:
            raise ConfigError("timeout_s", f"must be more than 0, not {timeout_s}")
        self._timeout_s = timeout_s

    async def endpoint(self, endpoint_id: str) -> EndpointInfo:
        """The endpoint and the model it deploys now, with the model's expiry dates."""
        answer = await self._get(endpoint_path(endpoint_id))
        model = parse_model(await self._get(model_path(endpoint_model_link(answer))))
        return parse_endpoint(answer, model)

    async def _get(self, path: str) -> object:
        """The JSON answer to GET `path` on the configured host."""
        headers = {"Accept": "application/json"}
        if self._key is not None:
            headers[KEY_HEADER] = self._key
        try:
            async with (
                asyncio.timeout(self._timeout_s),
                self._http.get(self._base + path, headers=headers, allow_redirects=False) as got,
            ):
                status, reason = got.status, got.reason or ""
                body = await _read(got, path)
        except TimeoutError:
            raise UpstreamUnavailable(
                "management_timeout", f"GET {path}: no answer within {self._timeout_s:g} s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(
                "management_unreachable", f"GET {path}: {type(exc).__name__}"
            ) from None
        if 200 <= status <= 299:
            return _json(body, path)
        detail = f"GET {path}: HTTP {status}{_service_message(body, self._redact)}"
        if status >= 500:
            raise UpstreamUnavailable(f"management_http_{status}", detail)
        if 300 <= status <= 399:
            detail += " (a redirect; not followed)"
        raise UpstreamRejected(status, detail, reason=reason)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, _REDACTED) if self._key else text


def _checked_base(base_url: str) -> str:
    """The management URL without a trailing slash: http(s), a host, no credentials in it."""
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:  # e.g. a port beyond 65535 or a broken IPv6 host
        raise ConfigError("management_url", "not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("management_url", "must be an http:// or https:// URL with a host")
    if port == 0 or "@" in parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            "management_url", "must be scheme://host[:port][/path], without user, query or #"
        )
    return base_url.rstrip("/")


async def _read(response: aiohttp.ClientResponse, path: str) -> bytes:
    """The body, refused beyond MAX_ANSWER_BYTES (a broken or hostile service)."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise UpstreamUnavailable(
                BAD_ANSWER, f"GET {path}: the answer exceeds {MAX_ANSWER_BYTES} bytes"
            )
    return bytes(body)


def _json(body: bytes, path: str) -> object:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UpstreamUnavailable(BAD_ANSWER, f"GET {path}: the answer is not JSON") from None


def _service_message(body: bytes, redact: Callable[[str], str]) -> str:
    """` (code: message)` from the API's error answer (`{"code", "message"}`, or the same
    under `error`), else ''."""
    try:
        answer = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ""
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        answer = answer["error"]  # Azure API Management's shape, e.g. for a bad key
    if not isinstance(answer, dict):
        return ""
    parts = [str(answer[name]) for name in ("code", "message") if answer.get(name)]
    text = redact(": ".join(parts)).replace("\n", " ")
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return f" ({text})" if text else ""
