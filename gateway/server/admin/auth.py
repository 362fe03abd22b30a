"""Admin authentication: named bearer tokens, known by their SHA-256, for every admin route.

`gateway.admin_tokens_sha256` maps a name to the SHA-256 of its token (`AdminTokens`); a
request's `Authorization: Bearer <token>` is hashed and compared with every digest in
constant time, and the matching name is what the audit and the labels record. Client keys
are never admin credentials. Refusals carry a `WWW-Authenticate` challenge (401).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from gateway.control.model import hash_key
from gateway.errors import ConfigError

ADMIN_TOKENS_FIELD: Final = "gateway.admin_tokens_sha256"
NEEDS_TOKEN: Final = "an admin token is required: Authorization: Bearer <token>"  # noqa: S105
CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="speech-gateway admin"'}

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_EMPTY_DIGEST = hash_key("")


@dataclass(frozen=True, slots=True)
class AdminToken:
    """An admin credential, known by its name and the SHA-256 of its token."""

    name: str
    token_sha256: str  # 64 lower-case hex digits; the token itself is never stored


@dataclass(frozen=True, slots=True)
class AdminTokens:
    """The admin credentials the labels API accepts."""

    tokens: tuple[AdminToken, ...] = ()

    @classmethod
    def from_digests(
        cls, digests: Mapping[str, str], field: str = ADMIN_TOKENS_FIELD
    ) -> AdminTokens:
        """Validate name -> SHA-256 pairs; ConfigError naming `field.<name>` if one is bad."""
        tokens: list[AdminToken] = []
        seen: set[str] = set()
        for name, digest in digests.items():
            at = f"{field}.{name}"
            if not _NAME.fullmatch(name):
                raise ConfigError(at, f"{name!r}: use 1-64 letters, digits, '.', '-' or '_'")
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                raise ConfigError(at, "must be 64 lower-case hex digits (SHA-256 of the token)")
            if digest == _EMPTY_DIGEST:
                raise ConfigError(at, "is the digest of the empty token")
            if digest in seen:
                raise ConfigError(at, "the same token digest as another admin")
            seen.add(digest)
            tokens.append(AdminToken(name, digest))
        return cls(tuple(tokens))

    def authenticate(self, authorization: str | None) -> str | None:
        """The name of the admin whose token the `Authorization` header carries, or None.

        Every digest is compared in constant time and the loop never stops early, so the
        time taken does not reveal which admin, or how much of a digest, matched.
        """
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        offered = hash_key(token).encode("ascii")
        found: str | None = None
        for admin in self.tokens:
            if hmac.compare_digest(offered, admin.token_sha256.encode("ascii")):
                found = admin.name
        return found


ADMIN_TOKENS: Final = web.AppKey("admin_tokens", AdminTokens)


def admin_name(request: web.Request) -> str | None:
    """The name of the admin whose token the request carries, or None."""
    return request.app[ADMIN_TOKENS].authenticate(request.headers.get("Authorization"))


def error_response(status: int, reason: str) -> web.Response:
    """A JSON error answer; a 401 carries the bearer challenge."""
    headers = CHALLENGE if status == 401 else None
    return web.json_response({"error": reason}, status=status, headers=headers)
