"""REST short-audio relay: the request body streams to the backend as it arrives and the
answer streams back; one outcome record per request.

Latency is measured at the gateway: `final_latency_ms` from the last byte of the client's
audio to the first byte of the backend's answer, `total_ms` from the first audio byte.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from gateway.io.state import GatewayState, session_facts
from gateway.logging import get_logger
from gateway.outcomes.privacy import transcript_fields
from gateway.outcomes.record import Kind, Role
from gateway.protocol.usp import RecognitionStatus
from gateway.session.routing import Route
from gateway.session.taps import (
    RoleFacts,
    best_alternative,
    confidence_of,
    elapsed_ms,
    make_record,
    ticks_of,
)
from gateway.text.normalize import normalize_words

log = get_logger(__name__)

CHUNK = 64 * 1024
# Results are small JSON documents; only this much is kept for the outcome record.
MAX_TAPPED_BODY = 256 * 1024
_RESPONSE_HEADERS = ("Content-Type",)


class _BodyClock:
    """Streams the client's body and notes when its first and last bytes arrived."""

    def __init__(self, request: web.Request, limit: int) -> None:
        self._request = request
        self._limit = limit
        self.first: float | None = None
        self.last: float | None = None
        self.size = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._request.content.iter_chunked(CHUNK):
            if self.first is None:
                self.first = time.monotonic()
            self.size += len(chunk)
            if self.size > self._limit:
                raise web.HTTPRequestEntityTooLarge(max_size=self._limit, actual_size=self.size)
            yield chunk
        self.last = time.monotonic()


async def handle_rest(
    request: web.Request, state: GatewayState, route: Route
) -> web.StreamResponse:
    variant = route.variant
    url = variant.backend.http_url(route.path, route.upstream_query(variant))
    headers = route.upstream_headers(variant, request.headers)
    facts = session_facts(state, route, protocol="rest")
    role = RoleFacts(Role.PRIMARY, variant.name, variant.backend.name)
    body = _BodyClock(request, state.settings.max_rest_body_bytes)
    timeout = aiohttp.ClientTimeout(sock_connect=state.settings.connect_timeout_s)
    try:
        async with state.http.post(
            url, data=body.chunks(), headers=headers, timeout=timeout
        ) as upstream:
            answered = time.monotonic()
            response = web.StreamResponse(status=upstream.status)
            for name in _RESPONSE_HEADERS:
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            await response.prepare(request)
            tapped = bytearray()
            async for chunk in upstream.content.iter_chunked(CHUNK):
                if len(tapped) < MAX_TAPPED_BODY:
                    tapped += chunk[: MAX_TAPPED_BODY - len(tapped)]
                await response.write(chunk)
            await response.write_eof()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        error = type(exc).__name__
        log.warning("rest_upstream_unavailable", backend=variant.backend.name, error=error)
        record = make_record(
            facts,
            role,
            Kind.SESSION_FAILURE,
            RecognitionStatus.ERROR.value,
            error_code="upstream_unreachable",
            error_detail=type(exc).__name__,
        )
        state.sink.submit(record)
        return web.json_response({"error": "The speech service is unavailable."}, status=503)
    state.sink.submit(_record(facts, role, upstream.status, bytes(tapped), body, answered))
    return response


def _record(
    facts: Any, role: RoleFacts, status: int, payload: bytes, body: _BodyClock, answered: float
) -> Any:
    latency: dict[str, Any] = {
        "final_latency_ms": elapsed_ms(answered, body.last),
        "total_ms": elapsed_ms(answered, body.first),
    }
    if status != 200:
        return make_record(
            facts,
            role,
            Kind.SESSION_FAILURE,
            RecognitionStatus.ERROR.value,
            error_code=f"upstream_http_{status}",
            error_detail=f"the backend answered HTTP {status}",
            **latency,
        )
    try:
        result = json.loads(payload)
    except ValueError:
        result = {}
    if not isinstance(result, dict):
        result = {}
    best = best_alternative(result)
    display = str(result.get("DisplayText") or best.get("Display") or "")
    text, text_hash = transcript_fields(display or None, facts.text_privacy, facts.privacy_key)
    return make_record(
        facts,
        role,
        Kind.REQUEST,
        str(result.get("RecognitionStatus") or "Unknown")[:64],
        utterance_index=0,
        audio_offset_ms=ticks_of(result.get("Offset")) / 10_000,
        audio_duration_ms=ticks_of(result.get("Duration")) / 10_000,
        text=text,
        text_sha256=text_hash,
        confidence=confidence_of(best),
        word_count=len(normalize_words(display)),
        **latency,
    )
