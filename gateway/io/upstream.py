"""Connections to backends, with aiohttp's exceptions translated at this one edge."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from gateway.errors import UpstreamRejected, UpstreamUnavailable
from gateway.protocol.usp import DEFAULT_LIMITS


async def connect_ws(
    http: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str],
    *,
    protocols: tuple[str, ...],
    timeout_s: float,
) -> aiohttp.ClientWebSocketResponse:
    """Open the backend WebSocket or raise UpstreamRejected / UpstreamUnavailable."""
    try:
        async with asyncio.timeout(timeout_s):
            return await http.ws_connect(
                url,
                headers=dict(headers),
                protocols=protocols,
                max_msg_size=DEFAULT_LIMITS.max_text_bytes,
                autoping=True,
            )
    except aiohttp.WSServerHandshakeError as exc:
        if 400 <= exc.status <= 599:
            raise UpstreamRejected(exc.status, f"the backend answered HTTP {exc.status}") from None
        raise UpstreamUnavailable(
            "upstream_handshake", f"the backend's upgrade answer was HTTP {exc.status}"
        ) from None
    except TimeoutError:
        raise UpstreamUnavailable(
            "upstream_timeout", f"no answer from the backend within {timeout_s:g} s"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable("upstream_unreachable", type(exc).__name__) from None
