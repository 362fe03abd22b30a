"""Settings: a TOML file, overridden by `SPEECH_GATEWAY_*` environment variables.

Precedence, highest first: explicit arguments (the CLI), environment variables
(`SPEECH_GATEWAY_<SECTION>__<FIELD>`, e.g. `SPEECH_GATEWAY_EMULATOR__PORT=5000`), the TOML
file (`--config`, else `SPEECH_GATEWAY_CONFIG`, else `config/gateway.toml` when it exists),
then the defaults below. Secrets (`SecretStr` fields) are refused in the TOML file: they come
from the environment or from a file named by the matching `*_file` field.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from gateway.control.config import GatewaySettings
from gateway.errors import ConfigError, is_sendable_close_code

DEFAULT_CONFIG = Path("config/gateway.toml")
CONFIG_ENV = "SPEECH_GATEWAY_CONFIG"

FailureKind = Literal["http", "close", "usp"]
# The RecognitionStatus values a scripted USP failure may answer with (protocol.md §3.1).
USP_FAILURE_STATUSES = (
    "Error",
    "TooManyRequests",
    "BadRequest",
    "Forbidden",
    "ServiceUnavailable",
    "NoMatch",
    "InitialSilenceTimeout",
    "BabbleTimeout",
)
EngineName = Literal["pocketsphinx", "instant"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: readable console output on a terminal, JSON lines otherwise.
    format: Literal["auto", "json", "console"] = "auto"


class FaultSettings(_Section):
    """Knobs for rehearsals and fault tests; all off by default."""

    latency_ms: int = Field(0, ge=0, le=60_000, description="added before each result")
    failure_rate: float = Field(0.0, ge=0.0, le=1.0, description="share of sessions that fail")
    failure_kind: FailureKind = "usp"
    # http: the upgrade/POST status; close: the WebSocket close code; usp: a RecognitionStatus.
    failure_status: str = "Error"
    seed: int | None = Field(None, description="seed of the failure draw (None: random)")

    @field_validator("failure_status")
    @classmethod
    def _status_fits_kind(cls, value: str, info: ValidationInfo) -> str:
        match info.data.get("failure_kind"):
            case "http":
                if not _is_number(value) or not 400 <= int(value) <= 599:
                    raise ValueError(f"{value!r} is not an HTTP error status (400-599)")
            case "close":
                if not _is_number(value) or not is_sendable_close_code(int(value)):
                    raise ValueError(f"{value!r} is not a close code a server may send")
            case "usp":
                if value not in USP_FAILURE_STATUSES:
                    known = ", ".join(USP_FAILURE_STATUSES)
                    raise ValueError(f"{value!r} is not one of {known}")
        return value


class EmulatorSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(5000, ge=0, le=65535)
    key: SecretStr | None = None
    key_file: Path | None = None
    engine: EngineName = "pocketsphinx"
    instant_text: str = "This is a scripted transcript from the instant engine."
    instant_utterance_ms: int = Field(3000, ge=100, le=60_000)
    # endpoint id -> corpus text file of a custom model.
    custom: dict[str, Path] = Field(default_factory=dict)
    model_cache: Path = Path("var/models")
    workers: int = Field(2, ge=1, le=64, description="recogniser processes")
    max_sessions: int = Field(16, ge=1, le=100_000)
    max_rest_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    faults: FaultSettings = FaultSettings()

    # A field validator, so that errors are located at `emulator.custom`.
    @field_validator("custom")
    @classmethod
    def _custom_ids(cls, custom: dict[str, Path]) -> dict[str, Path]:
        for endpoint_id in custom:
            if not endpoint_id or not all(c.isalnum() or c in "-_" for c in endpoint_id):
                raise ValueError(
                    f"custom endpoint id {endpoint_id!r} must be letters, digits, - or _"
                )
        return custom

    def resolved_key(self) -> str | None:
        """The key from the environment or from `key_file`; None means no auth."""
        if self.key is not None:
            key, field = self.key.get_secret_value(), "emulator.key"
        elif self.key_file is not None:
            key, field = read_secret_file(self.key_file, "emulator.key_file"), "emulator.key_file"
        else:
            return None
        # An empty key would sign tokens with an empty HMAC key, which anyone can forge.
        if not key:
            raise ConfigError(field, "the key is empty; leave it unset for no auth")
        return key


class OutcomeSettings(_Section):
    """Where outcome records go and what they may contain (docs/outcomes.md)."""

    path: Path = Path("var/outcomes.jsonl")
    # text: the transcript; hash: a keyed hash of its normalised words; none: nothing.
    text_privacy: Literal["text", "hash", "none"] = "text"
    # Key of the unit-id pseudonyms and transcript hashes; every replica needs the same one.
    pseudonym_key: SecretStr | None = None
    pseudonym_key_file: Path | None = None
    # Without a configured key, one is generated once and kept here (single-node use).
    generated_key_path: Path = Path("var/pseudonym.key")
    queue_size: int = Field(10_000, ge=1, le=10_000_000)
    # Reference transcripts of the file store; default: labels.jsonl beside `path`.
    labels_path: Path | None = None
    # "file": the append-only JSONL file above (one process). "redis": Redis Streams, one
    # stream per experiment, shared by every replica (docs/outcomes.md).
    store: Literal["file", "redis"] = "file"
    redis_url: str = "redis://127.0.0.1:6379/0"  # no password here: see redis_password
    redis_password: SecretStr | None = None
    redis_cluster: bool = False
    redis_prefix: str = Field("sgw", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    batch_size: int = Field(500, ge=1, le=100_000)
    stream_maxlen: int | None = Field(None, ge=1000)  # XADD MAXLEN ~ per experiment
    retention_s: float | None = Field(None, gt=0)  # trim entries older than this (MINID)
    dedup_window_s: float = Field(24 * 3600, gt=0)  # how long a record id stays deduplicated
    # While Redis is away records are spooled here, delivered in order when it returns.
    journal_dir: Path = Path("var/journal")
    journal_max_records: int = Field(1_000_000, ge=1000)
    # When the in-memory queue is full: spool the overflow to the journal, or drop the
    # newest records (counted and logged either way).
    full_policy: Literal["journal", "drop_newest"] = "journal"

    def resolved_pseudonym_key(self) -> bytes | None:
        if self.pseudonym_key is not None:
            key = self.pseudonym_key.get_secret_value()
        elif self.pseudonym_key_file is not None:
            key = read_secret_file(self.pseudonym_key_file, "outcomes.pseudonym_key_file")
        else:
            return None
        if len(key) < 16:
            raise ConfigError("outcomes.pseudonym_key", "must be at least 16 characters")
        return key.encode()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPEECH_GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    logging: LoggingSettings = LoggingSettings()
    emulator: EmulatorSettings = EmulatorSettings()
    gateway: GatewaySettings = GatewaySettings()
    outcomes: OutcomeSettings = OutcomeSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def _is_number(value: str) -> bool:
    # ASCII digits only, and few: int() refuses some Unicode digits ("²") and long strings.
    return value.isascii() and value.isdigit() and len(value) <= 5


def read_secret_file(path: Path, field: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(field, f"cannot read secret file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(field, f"secret file is not UTF-8: {exc.reason}") from exc


def config_path(explicit: Path | None) -> Path | None:
    """The TOML file to read: the explicit one, else $SPEECH_GATEWAY_CONFIG, else the default."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load and validate settings; any problem becomes a ConfigError naming the field."""
    toml_path = config_path(path)
    if toml_path is not None:
        _check_toml(toml_path)
    loaded_cls = type(
        "LoadedSettings",
        (Settings,),
        {"model_config": {**Settings.model_config, "toml_file": toml_path}},
    )
    try:
        settings: Settings = loaded_cls(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(field, first["msg"]) from exc
    except SettingsError as exc:
        # e.g. SPEECH_GATEWAY_EMULATOR__CUSTOM=x: a nested env value that is not JSON.
        raise ConfigError("environment", str(exc)) from exc
    return settings


def _check_toml(path: Path) -> None:
    """Fail on unreadable or malformed TOML, and on secrets written into it."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read config file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"config file is not UTF-8: {exc.reason}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"invalid TOML: {exc}") from exc
    for field in _secret_paths(data, ""):
        env = "SPEECH_GATEWAY_" + field.upper().replace(".", "__")
        raise ConfigError(field, f"secrets may not be written in {path}; set {env} or {field}_file")


def _secret_paths(node: Any, prefix: str) -> list[str]:
    """Dotted paths of every secret field set in the TOML data, tables of tables included
    (e.g. gateway.backends.<name>.key)."""
    found: list[str] = []
    if isinstance(node, dict):
        names = _SECRET_FIELD_NAMES
        for name, value in node.items():
            dotted = f"{prefix}{name}"
            if name in names and not isinstance(value, dict | list):
                found.append(dotted)
            found.extend(_secret_paths(value, dotted + "."))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(_secret_paths(item, f"{prefix.rstrip('.')}[{index}]."))
    return found


def _secret_field_names(model: type[BaseModel]) -> set[str]:
    """Names of SecretStr fields anywhere in the settings models (dict values included)."""
    names: set[str] = set()
    for name, info in model.model_fields.items():
        annotation = str(info.annotation)
        if "SecretStr" in annotation:
            names.add(name)
        for nested in _models_in(info.annotation):
            names |= _secret_field_names(nested)
    return names


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


_SECRET_FIELD_NAMES = frozenset(_secret_field_names(Settings))
