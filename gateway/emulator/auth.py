"""Credentials as the speech service takes them (protocol.md §6).

A subscription key in the `Ocp-Apim-Subscription-Key` header or query parameter (the JS SDK
repeats headers in the query string), or `Authorization: Bearer <token>` (header or query)
with a token from `POST /sts/v1.0/issueToken`. Tokens are stateless: an expiry time signed
with the key, valid ten minutes like the service's. Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

KEY_HEADER = "Ocp-Apim-Subscription-Key"
AUTH_HEADER = "Authorization"
TOKEN_LIFETIME_S = 600
_MAX_DIGITS = 20


def _signature(key: str, expiry: int) -> str:
    digest = hmac.new(key.encode(), str(expiry).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue_token(key: str, now: float | None = None) -> str:
    expiry = int((time.time() if now is None else now) + TOKEN_LIFETIME_S)
    return f"{expiry}.{_signature(key, expiry)}"


def _utf8(text: str) -> bytes:
    # aiohttp decodes non-UTF-8 header bytes as lone surrogates, which plain encode() refuses.
    return text.encode("utf-8", "surrogatepass")


def _digest(text: str) -> bytes:
    return hashlib.sha256(_utf8(text)).digest()


def token_valid(key: str, token: str, now: float | None = None) -> bool:
    expiry_text, _, signature = token.partition(".")
    # ASCII digits only, and few: int() refuses some Unicode digits ("²") and long strings.
    if not (expiry_text.isascii() and expiry_text.isdigit()) or len(expiry_text) > _MAX_DIGITS:
        return False
    expected = _signature(key, int(expiry_text))
    fresh = int(expiry_text) >= (time.time() if now is None else now)
    return hmac.compare_digest(_utf8(signature), expected.encode()) and fresh


def authorized(key: str | None, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    """True when no key is configured (container style) or the request carries a valid one."""
    if key is None:
        return True
    offered = headers.get(KEY_HEADER) or query.get(KEY_HEADER)
    if offered is not None:
        # Digests of equal length: comparing the raw keys would leak the key's length.
        return hmac.compare_digest(_digest(offered), _digest(key))
    bearer = headers.get(AUTH_HEADER) or query.get(AUTH_HEADER) or ""
    scheme, _, token = bearer.partition(" ")
    return scheme.lower() == "bearer" and token_valid(key, token.strip())
