"""Timing-safe credential checks: every comparison of a client key, an admin token or an
emulator key goes through `hmac.compare_digest`, on fixed-length digests, and a wrong
credential of the same length as a right one takes exactly the path of a wrong credential
of another length.

`hmac.compare_digest` is replaced by a spy that records its arguments and calls the real
one. Each credential check is driven directly and through a real gateway in this process
(HTTP and WebSocket upgrades, key in a header, the query string or a Bearer token; admin
and labels routes). A scan of the source for `==` on secret-looking names supplements it.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from security_support import (
    ADMIN_TOKEN,
    CONVERSATION,
    WAV,
    WAV_TYPE,
    gateway_settings,
    http_request,
    raw_exchange,
    running_gateway,
)
from support import CLIENT_KEY, EMULATOR_KEY, QA_KEY, ROOT

from gateway.control.model import Client, GatewayConfig, hash_key
from gateway.emulator import auth as emulator_auth
from gateway.server.admin.auth import AdminTokens

REAL_COMPARE = hmac.compare_digest
DIGEST_HEX = 64  # SHA-256 as hex, as the gateway compares client keys and admin tokens


def wrong_like(secret: str) -> list[str]:
    """Wrong credentials: one of the same length (last character changed), shorter, longer."""
    same = secret[:-1] + ("x" if secret[-1] != "x" else "y")
    return [same, secret[: len(secret) // 2], secret + "-and-more"]


@dataclass
class DigestSpy:
    """Stands in for hmac.compare_digest: records every call, then asks the real one."""

    calls: list[tuple[Any, Any]] = field(default_factory=list)

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((a, b))
        return REAL_COMPARE(a, b)

    def take(self) -> list[tuple[Any, Any]]:
        calls, self.calls = self.calls, []
        return calls


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> DigestSpy:
    recorder = DigestSpy()
    monkeypatch.setattr(hmac, "compare_digest", recorder)
    return recorder


def as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


def assert_digest_calls(calls: list[tuple[Any, Any]], offered: str, count: int) -> None:
    """`count` comparisons, each of the offered credential's SHA-256 (hex) with a digest of
    the same length: neither the raw credential nor its length ever reaches a comparison."""
    assert len(calls) == count, calls
    for a, b in calls:
        assert as_bytes(a) == hash_key(offered).encode("ascii")
        assert len(as_bytes(a)) == len(as_bytes(b)) == DIGEST_HEX
        assert offered.encode() not in (as_bytes(a), as_bytes(b))


# -- the checks, driven directly ------------------------------------------------------------

CLIENTS = GatewayConfig(
    clients=(Client("app", hash_key(CLIENT_KEY)), Client("qa", hash_key(QA_KEY), True)),
    experiments=(),
    default_variant=None,
)
OTHER_ADMIN = "another-admin-token-4410aa"
ADMINS = AdminTokens.from_digests({"ops": hash_key(ADMIN_TOKEN), "qa": hash_key(OTHER_ADMIN)})


@pytest.mark.parametrize("offered", [CLIENT_KEY, QA_KEY, *wrong_like(CLIENT_KEY)])
def test_client_keys_are_compared_as_digests_against_every_client(
    spy: DigestSpy, offered: str
) -> None:
    """A client key, right or wrong (same length or not), is compared as its SHA-256 with
    every client's digest: no early exit on a match, no comparison of raw keys."""
    client = CLIENTS.authenticate(offered)
    assert (client.name if client else None) == {CLIENT_KEY: "app", QA_KEY: "qa"}.get(offered)
    assert_digest_calls(spy.take(), offered, count=len(CLIENTS.clients))


@pytest.mark.parametrize("offered", [ADMIN_TOKEN, OTHER_ADMIN, *wrong_like(ADMIN_TOKEN)])
def test_admin_tokens_are_compared_as_digests_against_every_admin(
    spy: DigestSpy, offered: str
) -> None:
    """An admin token, right or wrong (same length or not), is compared as its SHA-256 with
    every admin's digest, all of them every time."""
    name = ADMINS.authenticate(f"Bearer {offered}")
    assert name == {ADMIN_TOKEN: "ops", OTHER_ADMIN: "qa"}.get(offered)
    assert_digest_calls(spy.take(), offered, count=len(ADMINS.tokens))


@pytest.mark.parametrize("offered", [EMULATOR_KEY, *wrong_like(EMULATOR_KEY)])
@pytest.mark.parametrize("where", ["header", "query"])
def test_the_emulator_compares_key_digests(spy: DigestSpy, offered: str, where: str) -> None:
    """The emulator compares a subscription key, right or wrong (same length or not),
    through compare_digest on digests of one fixed length: the comparison reveals neither
    the key's length nor how much of it matched."""
    carrier = {emulator_auth.KEY_HEADER: offered}
    headers, query = (carrier, {}) if where == "header" else ({}, carrier)
    assert emulator_auth.authorized(EMULATOR_KEY, headers, query) is (offered == EMULATOR_KEY)
    calls = spy.take()
    assert len(calls) == 1, calls
    (a, b), lengths = calls[0], {len(hashlib.sha256().digest()), DIGEST_HEX}
    assert len(as_bytes(a)) == len(as_bytes(b)), calls
    assert len(as_bytes(a)) in lengths, calls
    assert offered.encode() not in (as_bytes(a), as_bytes(b))
    assert EMULATOR_KEY.encode() not in (as_bytes(a), as_bytes(b))


def test_emulator_tokens_are_checked_in_constant_time(spy: DigestSpy) -> None:
    """An emulator token's signature, whatever its length, is checked by compare_digest
    against the expected signature (a fixed-length HMAC); a valid token passes."""
    token = emulator_auth.issue_token(EMULATOR_KEY)
    expiry, _, signature = token.partition(".")
    for offered in (token, *(f"{expiry}.{wrong}" for wrong in wrong_like(signature))):
        valid = emulator_auth.authorized(EMULATOR_KEY, {"Authorization": f"Bearer {offered}"}, {})
        assert valid is (offered == token)
        calls = spy.take()
        assert len(calls) == 1, calls
        expected = calls[0][1]
        assert len(as_bytes(expected)) == len(signature)


# -- the checks, through a real gateway --------------------------------------------------------


async def test_a_real_gateway_checks_every_credential_through_compare_digest(
    spy: DigestSpy, tmp_path: Path
) -> None:
    """Through a gateway in this process: a client key in a header, in the query string or
    as a Bearer token (HTTP and WebSocket upgrade), and an admin token on the admin and
    labels routes; right or wrong, same length or not, each is compared as a digest with
    every configured digest, and a wrong one is refused with 401."""
    # The backend is never reached: the refusals come first, and the right keys' requests
    # find nobody listening (503) — the comparison is what is under test.
    settings = gateway_settings(tmp_path, {"alpha": "http://127.0.0.1:9"}, connect_timeout_s=1)
    async with running_gateway(settings) as port, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{port}"
        for offered in (CLIENT_KEY, *wrong_like(CLIENT_KEY)):
            expected = 503 if offered == CLIENT_KEY else 401
            carriers: list[tuple[dict[str, str], dict[str, str]]] = [
                ({"Ocp-Apim-Subscription-Key": offered}, {}),
                ({}, {"Ocp-Apim-Subscription-Key": offered}),
                ({"Authorization": f"Bearer {offered}"}, {}),
                ({}, {"Authorization": f"Bearer {offered}"}),
            ]
            for headers, query in carriers:
                params = {"language": "en-US", **query}
                post_headers = {**headers, "Content-Type": WAV_TYPE}
                url = f"{base}{CONVERSATION}"
                async with http.post(url, params=params, headers=post_headers, data=WAV) as r:
                    assert r.status == expected, (offered, headers, query)
                assert_digest_calls(spy.take(), offered, count=2)
                if offered != CLIENT_KEY:
                    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                        await http.ws_connect(url, params=params, headers=headers)
                    assert refused.value.status == 401
                    assert_digest_calls(spy.take(), offered, count=2)
        for offered in (ADMIN_TOKEN, *wrong_like(ADMIN_TOKEN)):
            authorization = {"Authorization": f"Bearer {offered}"}
            right = offered == ADMIN_TOKEN
            for method, path, status in (
                ("GET", "/admin/experiments", 200),
                ("GET", "/admin/experiments/ab/analysis", 200),
                ("GET", f"/labels/{'0' * 32}", 404),
                ("POST", "/labels", 422),
            ):
                body = {"record_id": "0" * 32, "text": "x"} if method == "POST" else None
                async with http.request(
                    method, f"{base}{path}", headers=authorization, json=body
                ) as r:
                    assert r.status == (status if right else 401), (offered, path)
                assert_digest_calls(spy.take(), offered, count=1)


async def test_credentials_of_non_utf8_bytes_are_just_wrong(spy: DigestSpy, tmp_path: Path) -> None:
    """A client key or an admin token holding bytes that are not UTF-8 (aiohttp hands them
    over as lone surrogates) is hashed and compared like any wrong credential: 401, not a
    500 from encoding it."""
    settings = gateway_settings(tmp_path, {"alpha": "http://127.0.0.1:9"})
    raw_key = CLIENT_KEY.encode()[:-1] + b"\xff"
    async with running_gateway(settings) as port:
        key = [("Ocp-Apim-Subscription-Key", raw_key), ("Content-Type", WAV_TYPE)]
        request = http_request("POST", f"{CONVERSATION}?language=en-US", key, WAV)
        assert (await raw_exchange(port, request)).status == 401
        assert len(spy.take()) == 2
        bearer = [("Authorization", b"Bearer " + ADMIN_TOKEN.encode()[:-1] + b"\xfe")]
        answer = await raw_exchange(port, http_request("GET", "/admin/experiments", bearer))
        assert answer.status == 401
        assert len(spy.take()) == 1


# -- a scan of the source, as a supplement -------------------------------------------------------

SECRET_NAME = re.compile(r"key|token|secret|passw|digest|signature|credential|bearer", re.I)
# Comparisons that match the pattern but involve no secret a client could probe.
ALLOWED = {
    # A header name or a dict key of a report, not a credential.
    ("gateway/protocol/usp.py", "key.lower() == wanted"),
    ("gateway/protocol/usp.py", "key == 'path'"),
    ("gateway/protocol/usp.py", "key == 'x-requestid'"),
    ("gateway/analysis/report.py", "key == phase"),
    # Configuration checks against the public digest of the empty string, at start-up.
    ("gateway/config/gateway_config.py", "client.key_sha256 == _EMPTY_KEY_DIGEST"),
    ("gateway/server/admin/auth.py", "digest == _EMPTY_DIGEST"),
}


def secret_comparisons() -> list[tuple[str, str]]:
    """Every ==/!= in the gateway's source with a secret-looking name on either side."""
    found = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            names = [
                n.id if isinstance(n, ast.Name) else n.attr
                for operand in (node.left, *node.comparators)
                for n in ast.walk(operand)
                if isinstance(n, ast.Name | ast.Attribute)
            ]
            if any(SECRET_NAME.search(name) for name in names):
                found.append((str(path.relative_to(ROOT)), ast.unparse(node)))
    return found


def test_no_secret_is_compared_with_equals() -> None:
    """No `==` or `!=` on a key, token, digest or signature anywhere in the gateway's source
    (besides the reviewed comparisons above), and no `from hmac import compare_digest` that
    would escape the spy."""
    # In a fresh thread: CPython 3.11's ast.parse can fail with "AST constructor recursion
    # depth mismatch" in a thread whose recursion counter an earlier failure left skewed.
    with ThreadPoolExecutor(1) as pool:
        found = pool.submit(secret_comparisons).result()
    unexpected = [hit for hit in found if hit not in ALLOWED]
    assert not unexpected, unexpected
    for path in (ROOT / "gateway").rglob("*.py"):
        assert "from hmac import" not in path.read_text(encoding="utf-8"), path
