"""Secret files: keys and passwords read from a file named in the settings.

Every `*_file` secret setting (backend keys, the emulator key, the pseudonym key, the Redis
password) is read here, so that a missing or undecodable file is one `ConfigError` naming
the setting, never a traceback, and the secret itself never appears in the message.
"""

from __future__ import annotations

from pathlib import Path

from gateway.errors import ConfigError


def read_secret_file(path: Path, field: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(field, f"cannot read secret file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(field, f"secret file is not UTF-8: {exc.reason}") from exc
