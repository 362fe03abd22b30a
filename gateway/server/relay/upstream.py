"""Connections to backends, with aiohttp's exceptions translated at this one edge.

A backend's WebSocket upgrade is dialled so that the client can be given what the backend
answered, as the SDK would get it directly (docs/gateway.md, "Failures, as the SDK sees
them"):

* An answer other than 101 ends the dial at once: a client middleware reads its status,
  headers and, for an error status, up to `MAX_REFUSAL_BODY` bytes of its body, and
  `connect_ws` raises them as an `UpstreamRejected` that the relay passes on. (aiohttp's
  own ws_connect drops the body of a refusal, and follows every redirect, with the
  backend's key in the headers, to wherever its Location points.)
* A redirect that the native SDK follows itself (301, 307, 308 to a ws:// or wss:// URL)
  is followed here, at most `MAX_REDIRECTS` times, while it stays at the dialled backend's
  origin (scheme, host and port), so the backend's key goes nowhere else. Any other
  redirect reaches the client as its bare status, without its Location or body.
* Only the given headers go upstream: aiohttp's default Accept, Accept-Encoding and
  User-Agent are left out, as the SDK does not send them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from gateway.errors import UpstreamRejected, UpstreamUnavailable
from gateway.protocol.usp import DEFAULT_LIMITS

# A refusal's body is passed on up to this size (the SDK shows it in its error details).
MAX_REFUSAL_BODY = 64 * 1024
# Redirects followed within one dial; past them the last one reaches the client.
MAX_REDIRECTS = 5
# What the native SDK follows to a ws:// or wss:// Location (302, 303 it never follows).
FOLLOWED_REDIRECTS = frozenset({301, 307, 308})
# Hop-by-hop headers (RFC 9110 §7.6.1) and the framing the gateway sets itself: never
# passed on with a refusal, nor are the headers a `Connection` header names.
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
# The backend's own addresses and state: they would send the client past the gateway to
# the backend, or store the backend's cookies for the gateway's origin.
WITHHELD_HEADERS = frozenset(
    {"location", "content-location", "refresh", "alt-svc", "set-cookie", "set-cookie2"}
)
# Credentials the gateway sends upstream: their values never come back to the client.
_CREDENTIAL_HEADERS = ("Ocp-Apim-Subscription-Key", "Authorization")
REDACTED = "[redacted]"
_WS_SCHEMES = frozenset({"ws", "wss"})
_SKIPPED_DEFAULT_HEADERS = ("Accept", "Accept-Encoding", "User-Agent")


class _NotUpgraded(Exception):
    """The backend answered the upgrade with another status than 101 (see `_Answer`)."""


@dataclass
class _Answer:
    """A backend's answer to one upgrade request that was not 101."""

    status: int = 0  # 0: no answer (yet)
    reason: str = ""
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: bytearray = field(default_factory=bytearray)

    async def middleware(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """aiohttp's client middleware: a 101 goes on to ws_connect, anything else is kept
        here and ends the request (`_NotUpgraded`) before aiohttp could follow it."""
        response = await handler(request)
        if response.status == 101:
            return response
        # Noted before the body is read: a deadline that strikes meanwhile keeps the status.
        self.status, self.reason = response.status, response.reason or ""
        self.headers = CIMultiDict(response.headers)
        try:
            if _is_error(response.status):
                await _read_into(response, self.body)
        finally:
            response.close()
        raise _NotUpgraded


async def _read_into(response: aiohttp.ClientResponse, body: bytearray) -> None:
    while len(body) < MAX_REFUSAL_BODY:
        chunk = await response.content.read(MAX_REFUSAL_BODY - len(body))
        if not chunk:
            return
        body += chunk


async def connect_ws(
    http: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str],
    *,
    protocols: tuple[str, ...],
    timeout_s: float,
) -> aiohttp.ClientWebSocketResponse:
    """Open the backend WebSocket or raise UpstreamRejected / UpstreamUnavailable."""
    answer = _Answer()
    try:
        async with asyncio.timeout(timeout_s):
            origin = URL(url).origin()
            for _ in range(MAX_REDIRECTS + 1):
                answer = _Answer()
                upstream = await _upgrade(http, url, headers, protocols, answer)
                if upstream is not None:
                    return upstream
                target = _followed(answer, origin)
                if target is None:
                    break
                url = target
    except aiohttp.WSServerHandshakeError as exc:  # a 101 without a valid handshake
        raise UpstreamUnavailable(
            "upstream_handshake", f"the backend's upgrade answer was HTTP {exc.status}"
        ) from None
    except TimeoutError:
        if answer.status == 0:
            raise UpstreamUnavailable(
                "upstream_timeout", f"no answer from the backend within {timeout_s:g} s"
            ) from None
        # The status came in time, its body did not (all of it): pass on what there is.
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable("upstream_unreachable", type(exc).__name__) from None
    raise _rejected(answer, headers)


async def _upgrade(
    http: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str],
    protocols: tuple[str, ...],
    answer: _Answer,
) -> aiohttp.ClientWebSocketResponse | None:
    """One upgrade request: the WebSocket, or None with `answer` filled in.

    A session of its own carries the middleware and the header policy; it shares the
    gateway's connection pool, so it costs no connector, and closing it leaves the
    WebSocket open (the pool, not the session, owns the connection).
    """
    async with aiohttp.ClientSession(
        connector=http.connector,
        connector_owner=False,
        timeout=http.timeout,
        auto_decompress=False,
        skip_auto_headers=_SKIPPED_DEFAULT_HEADERS,
        middlewares=(answer.middleware,),
    ) as session:
        try:
            return await session.ws_connect(
                url,
                headers=dict(headers),
                protocols=protocols,
                max_msg_size=DEFAULT_LIMITS.max_text_bytes,
                autoping=True,
            )
        except _NotUpgraded:
            return None


def _followed(answer: _Answer, origin: URL) -> str | None:
    """Where a redirect the SDK would follow leads, if it stays at `origin`; else None."""
    if answer.status not in FOLLOWED_REDIRECTS:
        return None
    location = answer.headers.get("Location", "")
    try:
        target = URL(location)
    except ValueError:
        return None
    if not target.is_absolute() or target.scheme not in _WS_SCHEMES:
        return None  # the native SDK fails on these too ("URL scheme is invalid")
    return str(target) if target.origin() == origin else None


def _rejected(answer: _Answer, sent: Mapping[str, str]) -> UpstreamRejected | UpstreamUnavailable:
    """What the client is given of `answer`: the status, the headers it may see and, for an
    error status, the body; every credential the gateway sent upstream redacted."""
    status = answer.status
    if not 200 <= status <= 599:
        return UpstreamUnavailable(
            "upstream_handshake", f"the backend's upgrade answer was HTTP {status}"
        )
    secrets = _secrets(sent)
    with_body = _is_error(status)
    body = _redact_bytes(bytes(answer.body), secrets) if with_body else b""
    withheld = _withheld(answer.headers)
    relayed = tuple(
        (name, _redact(value, secrets))
        for name, value in answer.headers.items()
        if name.lower() not in withheld and (with_body or not name.lower().startswith("content-"))
    )
    if 300 <= status <= 399:
        detail = f"the backend redirected the upgrade (HTTP {status}); not followed"
    else:
        detail = f"the backend answered HTTP {status}"
    return UpstreamRejected(
        status, detail, reason=_redact(answer.reason, secrets), headers=relayed, body=body
    )


def _is_error(status: int) -> bool:
    return 400 <= status <= 599


def _withheld(headers: CIMultiDict[str]) -> frozenset[str]:
    named = {
        token.strip().lower()
        for value in headers.getall("Connection", ())
        for token in value.split(",")
    }
    return HOP_BY_HOP_HEADERS | WITHHELD_HEADERS | named


def _secrets(sent: Mapping[str, str]) -> tuple[str, ...]:
    found: list[str] = []
    for name in _CREDENTIAL_HEADERS:
        value = sent.get(name, "")
        found += [value, value.partition(" ")[2]]
    return tuple(sorted({s.strip() for s in found if len(s.strip()) >= 4}, key=len, reverse=True))


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def _redact_bytes(body: bytes, secrets: tuple[str, ...]) -> bytes:
    for secret in secrets:
        body = body.replace(secret.encode(), REDACTED.encode())
    return body
