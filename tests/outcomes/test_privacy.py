"""Tests for gateway.outcomes.privacy: keyed pseudonyms, text privacy, the generated key."""

from __future__ import annotations

import hashlib
import hmac
import re
import stat
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.outcomes.privacy import (
    TEXT_PRIVACY_CHOICES,
    TextPrivacy,
    load_or_create_key,
    pseudonymise,
    text_digest,
    transcript_fields,
)

KEY = b"installation-key"
# Vectors computed with `printf %s ... | openssl dgst -sha256 -hmac installation-key`.
DEVICE_42 = "261857d4e1cd0ede0b5ae9048abbf6d9"
HELLO_WORLD = "c722e5e91274f2f4a9965e36cd28fd996e5078efce6076e014840f0b863dcbdf"


def test_pseudonym_matches_the_reference_vector() -> None:
    """A pseudonym is the first 32 hex digits of HMAC-SHA256(key, unit id)."""
    assert pseudonymise("device-42", KEY) == DEVICE_42


def test_pseudonym_is_stable_and_keyed() -> None:
    """The same unit and key give the same pseudonym; another key or unit, another one."""
    first = pseudonymise("user-7", KEY)
    assert pseudonymise("user-7", KEY) == first
    assert pseudonymise("user-7", b"another-key") != first
    assert pseudonymise("user-8", KEY) != first
    assert len(first) == 32
    assert int(first, 16) >= 0


def test_pseudonym_of_non_ascii_unit_is_utf8_based() -> None:
    """Unit ids are hashed as UTF-8, so non-ASCII ids work and agree across replicas."""
    expected = hmac.new(KEY, "zoë".encode(), hashlib.sha256).hexdigest()[:32]
    assert pseudonymise("zoë", KEY) == expected


def test_empty_key_is_refused() -> None:
    """An empty key would make the hashes recomputable by anyone, so it raises."""
    with pytest.raises(ValueError, match="empty"):
        pseudonymise("user-7", b"")
    with pytest.raises(ValueError, match="empty"):
        transcript_fields("hello", "hash", b"")


def test_choices_are_the_literal_values() -> None:
    """TEXT_PRIVACY_CHOICES lists the three settings."""
    assert TEXT_PRIVACY_CHOICES == ("text", "hash", "none")


def test_text_setting_keeps_the_text_verbatim() -> None:
    """privacy="text" stores the text as recognised and no hash."""
    assert transcript_fields("Hello, World.", "text", KEY) == ("Hello, World.", None)


def test_hash_setting_gives_the_keyed_digest_of_normalised_words() -> None:
    """privacy="hash" stores no text and HMAC-SHA256 of the normalised words."""
    assert transcript_fields("Hello, world.", "hash", KEY) == (None, HELLO_WORLD)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Hello, world.", "hello world"),
        ("HELLO   world!", "hello world"),
        ("I have 2 cats.", "i have two cats"),
        ("It costs $5", "it costs five dollars"),
    ],
)
def test_hash_ignores_what_normalisation_ignores(a: str, b: str) -> None:
    """Texts that normalise to the same words hash alike."""
    assert text_digest(a, KEY) == text_digest(b, KEY)


def test_hash_differs_for_other_words_or_keys() -> None:
    """Other words, or another key, give another digest."""
    assert text_digest("hello world", KEY) != text_digest("hello word", KEY)
    assert text_digest("hello world", KEY) != text_digest("hello world", b"other")
    assert text_digest("hello world", KEY) != hashlib.sha256(b"hello world").hexdigest()


def test_none_setting_stores_nothing() -> None:
    """privacy="none" stores neither text nor hash."""
    assert transcript_fields("Hello, world.", "none", KEY) == (None, None)


@pytest.mark.parametrize("privacy", TEXT_PRIVACY_CHOICES)
def test_no_text_gives_nothing_whatever_the_setting(privacy: TextPrivacy) -> None:
    """A result without text (None) records neither text nor hash."""
    assert transcript_fields(None, privacy, KEY) == (None, None)


def test_empty_text_is_hashed_like_any_text() -> None:
    """An empty transcript is kept as empty text, or hashed like any other text."""
    assert transcript_fields("", "text", KEY) == ("", None)
    assert transcript_fields("", "hash", KEY) == (None, text_digest("", KEY))


def test_generated_key_is_created_once_and_kept(tmp_path: Path) -> None:
    """The first call creates a private 64-hex-digit key file; later calls return that key."""
    path = tmp_path / "var" / "pseudonym.key"
    key = load_or_create_key(path)
    assert re.fullmatch(rb"[0-9a-f]{64}", key)
    assert path.read_text() == key.decode() + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["pseudonym.key"]


def test_an_existing_key_file_is_used_as_text(tmp_path: Path) -> None:
    """A key file written by an operator is read, stripped, as the key."""
    path = tmp_path / "pseudonym.key"
    path.write_text("  operator-chosen-key-0123\n")
    assert load_or_create_key(path) == b"operator-chosen-key-0123"


def test_a_short_key_file_is_refused(tmp_path: Path) -> None:
    """A key file with fewer than 16 characters raises ConfigError naming the file."""
    path = tmp_path / "pseudonym.key"
    path.write_text("short\n")
    with pytest.raises(ConfigError, match=r"pseudonym\.key: the key must be at least 16"):
        load_or_create_key(path)


def test_an_unusable_key_path_is_a_config_error(tmp_path: Path) -> None:
    """When the key file can be neither read nor created, ConfigError names it."""
    blocker = tmp_path / "var"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"var/pseudonym\.key: cannot read the key file"):
        load_or_create_key(blocker / "pseudonym.key")


def test_a_key_file_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    """A failure to create the key file (here: a too long name) raises ConfigError."""
    path = tmp_path / ("k" * 245)  # a valid name, but its temporary sibling's is too long
    with pytest.raises(ConfigError, match="cannot create the key file"):
        load_or_create_key(path)
    assert list(tmp_path.iterdir()) == []
