"""Tests for gateway.emulator.auth: subscription keys and issueToken bearer tokens."""

from __future__ import annotations

import pytest
from support import EMULATOR_KEY

from gateway.emulator.auth import (
    AUTH_HEADER,
    KEY_HEADER,
    TOKEN_LIFETIME_S,
    authorized,
    issue_token,
    token_valid,
)

NOW = 1_700_000_000.0


def bearer(token: str) -> dict[str, str]:
    return {AUTH_HEADER: f"Bearer {token}"}


def test_no_key_authorises_everything() -> None:
    """Without a configured key every request passes, with or without credentials."""
    assert authorized(None, {}, {})
    assert authorized(None, {KEY_HEADER: "anything"}, {})
    assert authorized(None, bearer("garbage"), {})


def test_key_in_header() -> None:
    """The right key in the Ocp-Apim-Subscription-Key header is accepted."""
    assert authorized(EMULATOR_KEY, {KEY_HEADER: EMULATOR_KEY}, {})


def test_key_in_query() -> None:
    """The right key as a query parameter is accepted (the JS SDK repeats headers there)."""
    assert authorized(EMULATOR_KEY, {}, {KEY_HEADER: EMULATOR_KEY})


def test_missing_credentials_are_refused() -> None:
    """A configured key with no key or token offered refuses the request."""
    assert not authorized(EMULATOR_KEY, {}, {})
    assert not authorized(EMULATOR_KEY, {KEY_HEADER: ""}, {})


@pytest.mark.parametrize(
    "offered",
    [
        "wrong-key",
        EMULATOR_KEY[:-1],
        EMULATOR_KEY + "x",
        EMULATOR_KEY.upper(),
        # Same length, one character different: a prefix check or length check would pass it.
        EMULATOR_KEY[:-1] + ("8" if EMULATOR_KEY[-1] != "8" else "7"),
        "x" * len(EMULATOR_KEY),
    ],
)
def test_wrong_key_is_refused(offered: str) -> None:
    """Any key that is not exactly the configured one is refused, in header or query."""
    assert len(EMULATOR_KEY) == len(EMULATOR_KEY[:-1] + "8")
    assert not authorized(EMULATOR_KEY, {KEY_HEADER: offered}, {})
    assert not authorized(EMULATOR_KEY, {}, {KEY_HEADER: offered})


def test_wrong_header_key_is_not_rescued_by_a_token() -> None:
    """An offered key decides alone: a wrong key with a valid token is still refused."""
    headers = {KEY_HEADER: "wrong-key", **bearer(issue_token(EMULATOR_KEY))}
    assert not authorized(EMULATOR_KEY, headers, {})


def test_issued_token_authorises_in_header_and_query() -> None:
    """A token from issue_token works as a Bearer header and as the JS query parameter."""
    token = issue_token(EMULATOR_KEY)
    assert authorized(EMULATOR_KEY, bearer(token), {})
    assert authorized(EMULATOR_KEY, {}, {AUTH_HEADER: f"Bearer {token}"})
    assert authorized(EMULATOR_KEY, {AUTH_HEADER: f"bearer  {token} "}, {})


def test_token_is_valid_for_its_lifetime_only() -> None:
    """A token is valid up to ten minutes after issue and invalid a second later."""
    token = issue_token(EMULATOR_KEY, now=NOW)
    assert token_valid(EMULATOR_KEY, token, now=NOW)
    assert token_valid(EMULATOR_KEY, token, now=NOW + TOKEN_LIFETIME_S)
    assert not token_valid(EMULATOR_KEY, token, now=NOW + TOKEN_LIFETIME_S + 1)
    assert TOKEN_LIFETIME_S == 600


def test_expired_token_is_refused() -> None:
    """A token issued more than ten minutes ago does not authorise a request."""
    token = issue_token(EMULATOR_KEY, now=NOW)
    assert not authorized(EMULATOR_KEY, bearer(token), {})


def test_token_signed_with_another_key_is_refused() -> None:
    """A token issued under a different key is refused."""
    token = issue_token("some-other-key", now=NOW)
    assert not token_valid(EMULATOR_KEY, token, now=NOW)


def test_forged_signature_is_refused() -> None:
    """Changing the expiry or one signature character invalidates the token."""
    token = issue_token(EMULATOR_KEY, now=NOW)
    expiry, _, signature = token.partition(".")
    later = f"{int(expiry) + 3600}.{signature}"
    flipped = f"{expiry}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}"
    assert not token_valid(EMULATOR_KEY, later, now=NOW)
    assert not token_valid(EMULATOR_KEY, flipped, now=NOW)
    assert not authorized(EMULATOR_KEY, bearer(flipped), {})


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "not-a-token",
        "abc.def",
        "-1.abc",
        "1e9.abc",
        "\u00b2\u00b3.abc",  # superscript digits: str.isdigit() is true, int() refuses them
        "\u0661\u0662\u0663.abc",  # Arabic-Indic digits
        "9" * 5000 + ".abc",  # longer than int()'s default digit limit
    ],
)
def test_malformed_token_is_refused(token: str) -> None:
    """Malformed tokens are simply invalid, never an exception."""
    assert not token_valid(EMULATOR_KEY, token, now=NOW)
    assert not authorized(EMULATOR_KEY, bearer(token), {})


@pytest.mark.parametrize(
    "value", ["", "Bearer", "Basic abc", f"Token {issue_token(EMULATOR_KEY)}", "Bearer "]
)
def test_malformed_authorization_header_is_refused(value: str) -> None:
    """An Authorization header without a Bearer token is refused."""
    assert not authorized(EMULATOR_KEY, {AUTH_HEADER: value}, {})


def test_token_has_expiry_and_urlsafe_signature() -> None:
    """Tokens are `<expiry>.<signature>` with a URL-safe unpadded signature."""
    token = issue_token(EMULATOR_KEY, now=NOW)
    expiry, _, signature = token.partition(".")
    assert int(expiry) == int(NOW) + TOKEN_LIFETIME_S
    assert signature
    assert set(signature) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
