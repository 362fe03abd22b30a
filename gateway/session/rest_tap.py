"""REST short-audio tap: the one outcome record of a request from what its backend answered.

The server relays the request body and the answer, and hands over what it saw: the answer's
HTTP status, its JSON payload (or the first part of it), and when the client's first and
last audio bytes and the backend's first answer byte arrived. `request_record` turns that
into a `request` record, or a `session_failure` for an HTTP error or a failed recognition
status; `broken_off_record` is the failure of an answer the backend began but did not end.
Latencies are measured at the gateway: `final_latency_ms` from the last audio byte to the
answer, `total_ms` from the first. No I/O.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from gateway.outcomes.privacy import transcript_fields
from gateway.outcomes.record import Kind, OutcomeRecord
from gateway.protocol.usp import RecognitionStatus
from gateway.session.taps import (
    FAILURE_STATUSES,
    RoleFacts,
    SessionFacts,
    best_alternative,
    confidence_of,
    elapsed_ms,
    make_record,
    ticks_of,
)
from gateway.session.turns import TICKS_PER_MS
from gateway.text.normalize import normalize_words


def request_record(
    session: SessionFacts,
    role: RoleFacts,
    http_status: int,
    payload: bytes,
    *,
    first: float | None,
    last: float | None,
    answered: float,
) -> OutcomeRecord:
    """The record of a request the backend answered with `http_status` and `payload`.

    `first` and `last` are when the client's first and last audio bytes arrived (None if
    none did, or the body had not ended), `answered` when the backend's answer began.
    """
    final_latency_ms = elapsed_ms(answered, last)
    total_ms = elapsed_ms(answered, first)
    if http_status != 200:
        return make_record(
            session,
            role,
            Kind.SESSION_FAILURE,
            RecognitionStatus.ERROR.value,
            error_code=f"upstream_http_{http_status}",
            error_detail=f"the backend answered HTTP {http_status}",
            final_latency_ms=final_latency_ms,
            total_ms=total_ms,
        )
    result = _json_object(payload)
    recognition = str(result.get("RecognitionStatus") or "Unknown")[:64]
    if recognition in FAILURE_STATUSES:
        # An HTTP 200 can still carry a failed recognition: a failure, as in a USP session.
        return make_record(
            session,
            role,
            Kind.SESSION_FAILURE,
            recognition,
            error_code=f"upstream_status_{recognition}",
            error_detail="the service answered " + recognition,
            final_latency_ms=final_latency_ms,
            total_ms=total_ms,
        )
    best = best_alternative(result)
    display = str(result.get("DisplayText") or best.get("Display") or "")
    text, text_hash = transcript_fields(display or None, session.text_privacy, session.privacy_key)
    return make_record(
        session,
        role,
        Kind.REQUEST,
        recognition,
        utterance_index=0,
        audio_offset_ms=ticks_of(result.get("Offset")) / TICKS_PER_MS,
        audio_duration_ms=ticks_of(result.get("Duration")) / TICKS_PER_MS,
        text=text,
        text_sha256=text_hash,
        confidence=confidence_of(best),
        word_count=len(normalize_words(display)),
        final_latency_ms=final_latency_ms,
        total_ms=total_ms,
    )


def broken_off_record(
    session: SessionFacts, role: RoleFacts, error_code: str, detail: str
) -> OutcomeRecord:
    """The failure of a request whose answer the backend began but did not finish (the
    connection broke or timed out mid-answer): status Error, no latencies."""
    return make_record(
        session,
        role,
        Kind.SESSION_FAILURE,
        RecognitionStatus.ERROR.value,
        error_code=error_code,
        error_detail=detail,
    )


def decoded(payload: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The answer's bytes as JSON text, at most `limit` of them: gzip and deflate (zlib or
    raw) undone; a coding the tap cannot undo, or a corrupt one, gives b"" (the record's
    status is then Unknown, as for any answer it cannot read)."""
    coding = (content_encoding or "identity").strip().lower()
    if coding == "identity":
        return payload
    if coding not in ("gzip", "x-gzip", "deflate"):
        return b""
    # 47: a zlib or gzip header, detected; -15: raw deflate, which some servers send.
    for wbits in (47, -15) if coding == "deflate" else (47,):
        try:
            return zlib.decompressobj(wbits).decompress(payload, limit)
        except zlib.error:
            continue
    return b""


def _json_object(payload: bytes) -> dict[str, Any]:
    """The payload's JSON object; empty when it is not JSON or not an object (a backend's
    malformed answer still gets its record, with status Unknown)."""
    try:
        result: object = json.loads(payload)
    except ValueError:
        return {}
    return result if isinstance(result, dict) else {}
