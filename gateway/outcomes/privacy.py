"""What an outcome record may say about a person: pseudonymous units, text per a setting.

Pseudonyms and transcript hashes are keyed (HMAC-SHA256 with the installation's pseudonym
key), so the same input gives the same output on every replica and after restarts, while
someone holding the records but not the key can neither reverse a pseudonym nor confirm a
guessed transcript by hashing it. The session layer calls them while building records
(`gateway.session.taps`); `load_or_create_key` provides the key of a single node that has
none configured.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Final, Literal, assert_never, get_args

from gateway.errors import ConfigError
from gateway.text.normalize import normalize_words

TextPrivacy = Literal["text", "hash", "none"]
TEXT_PRIVACY_CHOICES: Final[tuple[TextPrivacy, ...]] = get_args(TextPrivacy)
PSEUDONYM_LENGTH: Final = 32  # hex digits: 128 bits, collision-free at any realistic scale
MIN_KEY_LENGTH: Final = 16


def pseudonymise(unit_id: str, key: bytes) -> str:
    """HMAC-SHA256(key, unit_id) as hex, first 32 digits."""
    return _hmac(key, unit_id)[:PSEUDONYM_LENGTH]


def text_digest(text: str, key: bytes) -> str:
    """HMAC-SHA256(key, normalised text) as 64 hex digits; equal for equal normalised words.

    The text is normalised as for WER (`normalize_words`, words joined by single spaces), so
    "Hello, world." and "hello world" give the same digest.
    """
    return _hmac(key, " ".join(normalize_words(text)))


def transcript_fields(
    text: str | None, privacy: TextPrivacy, key: bytes
) -> tuple[str | None, str | None]:
    """The record's (text, text_sha256) for a recognised text under the privacy setting."""
    if text is None:
        return None, None
    match privacy:
        case "text":
            return text, None
        case "hash":
            return None, text_digest(text, key)
        case "none":
            return None, None
        case _:
            assert_never(privacy)


def load_or_create_key(path: Path) -> bytes:
    """The installation's generated key kept at `path`, made on first use.

    For a single node without a configured key. The file holds 64 hex digits (256 random
    bits) and the key is that text, so naming the file as the configured key file (or
    copying its text into the key setting) keeps every pseudonym. The file is created
    mode 0600 and atomically: two processes starting at once end up with the same key.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(key + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.link(temporary, path)  # never replaces a key another process made first
        finally:
            temporary.unlink(missing_ok=True)
    except FileExistsError:
        return _read_key(path)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot create the key file: {exc.strerror}") from exc
    return key.encode()


def _read_key(path: Path) -> bytes:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the key file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"key file is not UTF-8: {exc.reason}") from exc
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(str(path), f"the key must be at least {MIN_KEY_LENGTH} characters")
    return key.encode()


def _hmac(key: bytes, message: str) -> str:
    # An empty key makes the "keyed" hash a plain one that anyone can recompute.
    if not key:
        raise ValueError("the pseudonym key is empty")
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()
