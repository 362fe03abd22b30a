"""Settings: a TOML file, overridden by `SPEECH_GATEWAY_*` environment variables.

Precedence, highest first: explicit arguments (the CLI), environment variables
(`SPEECH_GATEWAY_<SECTION>__<FIELD>`, e.g. `SPEECH_GATEWAY_EMULATOR__PORT=5000`), the TOML
file (`--config`, else `SPEECH_GATEWAY_CONFIG`, else `config/gateway.toml` in the working
directory when it exists), then the defaults below. Secrets (`SecretStr` fields) are refused
in the TOML file: they come from the environment or from a file named by the matching
`*_file` field.

A relative path written in the TOML file is relative to the file's folder
(`relative_to_file`), so a file means the same wherever a command starts; a relative path
from an environment variable, a command-line option or a default is relative to the working
directory.
"""

from __future__ import annotations

import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from gateway.config.gateway import GatewaySettings
from gateway.config.secrets import read_secret_file
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
    """Structured logs (structlog) of every command; they never contain secrets."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="The lowest level logged."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="`auto`: readable console lines on a terminal, JSON lines otherwise.",
    )


class FaultSettings(_Section):
    """Knobs for rehearsals and fault tests; all off by default."""

    latency_ms: int = Field(
        0, ge=0, le=60_000, description="Added before every hypothesis and phrase, in ms."
    )
    failure_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of sessions and REST requests that fail."
    )
    failure_kind: FailureKind = Field(
        "usp",
        description="How a session fails: `http` (a status at the upgrade or POST), `close` "
        "(a WebSocket close code after the first `turn.start`) or `usp` (a status phrase).",
    )
    failure_status: str = Field(
        "Error",
        description="The failure's answer, by `failure_kind`: an HTTP status 400-599, a close "
        "code a server may send, or a RecognitionStatus (" + ", ".join(USP_FAILURE_STATUSES) + ").",
    )
    seed: int | None = Field(None, description="Seed of the failure draw; unset: random.")
    fallback_after_s: float = Field(
        0.0,
        ge=0.0,
        le=365 * 24 * 3600,
        description="This many seconds after the emulator is ready, every custom endpoint "
        "silently falls back to the base model, as an expired Custom Speech model does "
        "(0: never).",
    )

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


class ModelExpirySettings(_Section):
    """The deprecation dates the emulator's Custom Speech API reports for one model; each
    is a date (midnight UTC) or a date and time (without a zone: UTC)."""

    adaptation: datetime | None = Field(
        None,
        description="The last day the model may be adapted (trained on); unset: one year "
        "after the emulator started.",
    )
    transcription: datetime | None = Field(
        None,
        description="The last day the model transcribes; unset: two years after the "
        "emulator started.",
    )

    @field_validator("adaptation", "transcription", mode="before")
    @classmethod
    def _date_is_midnight(cls, value: object) -> object:
        # A TOML date, or a `YYYY-MM-DD` string from the environment, means that day's start.
        if isinstance(value, str) and len(value) == 10:
            try:
                value = date.fromisoformat(value)
            except ValueError:
                return value  # pydantic reports it, naming the field
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime.combine(value, time(), UTC)
        return value

    @field_validator("adaptation", "transcription")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class EmulatorSettings(_Section):
    """The local Azure-compatible speech service, `speech-gateway emulate` (docs/emulator.md)."""

    host: str = Field("127.0.0.1", description="The address to listen on.")
    port: int = Field(5000, ge=0, le=65535, description="The port to listen on (0: a free one).")
    key: SecretStr | None = Field(
        None,
        description="The subscription key clients must send; with neither `key` nor "
        "`key_file`, no auth (like a Speech container).",
    )
    key_file: Path | None = Field(None, description="A file holding `key`.")
    engine: EngineName = Field(
        "pocketsphinx",
        description="`pocketsphinx`: real recognition; `instant`: a scripted transcript at "
        "once, for load tests.",
    )
    instant_text: str = Field(
        "This is a scripted transcript from the instant engine.",
        description="The `instant` engine's transcript.",
    )
    instant_utterance_ms: int = Field(
        3000,
        ge=100,
        le=60_000,
        description="The `instant` engine answers each window of this much audio, in ms.",
    )
    custom: dict[str, Path] = Field(
        default_factory=dict,
        description="Custom endpoints: endpoint id (letters, digits, `-`, `_`) = corpus text "
        "file their language model is built from.",
    )
    model_cache: Path = Field(Path("var/models"), description="Where built custom models are kept.")
    model_expiry: dict[str, ModelExpirySettings] = Field(
        default_factory=dict,
        description="Deprecation dates the Custom Speech API reports, by model (`base` or a "
        "custom endpoint id): `adaptation` and `transcription`, dates or date-times (UTC).",
    )
    instant_texts: dict[str, str] = Field(
        default_factory=dict,
        description="The `instant` engine's transcript by model (`base` or a custom endpoint "
        "id); a model not named answers `instant_text`. Makes a switch of an endpoint's "
        "model visible without real recognition.",
    )
    workers: int = Field(2, ge=1, le=64, description="Recogniser processes.")
    max_sessions: int = Field(
        16,
        ge=1,
        le=100_000,
        description="Concurrent sessions; past it TooManyRequests (WebSocket) or HTTP 429.",
    )
    max_rest_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="The largest REST short-audio body (413 past it)."
    )
    faults: FaultSettings = Field(
        FaultSettings(), description="Fault knobs for rehearsals and fault tests."
    )

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

    @field_validator("model_expiry", "instant_texts")
    @classmethod
    def _known_models(cls, table: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # `custom` is declared first, so it is validated by now (absent if it was invalid).
        known = {"base", *info.data.get("custom", {})}
        for model in table:
            if model not in known:
                raise ValueError(
                    f"{model!r} is neither 'base' nor a custom endpoint id "
                    f"(known: {', '.join(sorted(known))})"
                )
        return table

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

    path: Path = Field(
        Path("var/outcomes.jsonl"), description="The file store's append-only JSON-lines file."
    )
    text_privacy: Literal["text", "hash", "none"] = Field(
        "text",
        description="What records keep of the transcript: `text` itself, `hash` (a keyed hash "
        "of its normalised words) or `none`.",
    )
    pseudonym_key: SecretStr | None = Field(
        None,
        description="Key of the unit-id pseudonyms and transcript hashes, at least 16 "
        "characters; every replica needs the same one.",
    )
    pseudonym_key_file: Path | None = Field(None, description="A file holding `pseudonym_key`.")
    generated_key_path: Path = Field(
        Path("var/pseudonym.key"),
        description="Without a configured key, one is generated once and kept here "
        "(one node only).",
    )
    queue_size: int = Field(
        10_000, ge=1, le=10_000_000, description="Records waiting in memory for the writer."
    )
    labels_path: Path | None = Field(
        None,
        description="The file store's reference transcripts; unset: `labels.jsonl` beside `path`.",
    )
    store: Literal["file", "redis"] = Field(
        "file",
        description="`file`: the JSON-lines file at `path` (one process); `redis`: Redis "
        "Streams in the `[redis]` server, one stream per experiment, shared by every replica.",
    )
    batch_size: int = Field(
        500, ge=1, le=100_000, description="The most records written to Redis in one batch."
    )
    stream_maxlen: int | None = Field(
        None,
        ge=1000,
        description="Keep about this many entries per experiment stream (`MAXLEN ~`); "
        "unset: no limit.",
    )
    retention_s: float | None = Field(
        None,
        gt=0,
        description="Trim stream entries older than this, in seconds (`MINID ~`); unset: "
        "keep them.",
    )
    dedup_window_s: float = Field(
        24 * 3600,
        gt=0,
        description="How long a record id is remembered, so that a redelivered record is "
        "not added twice, in seconds.",
    )
    journal_dir: Path = Field(
        Path("var/journal"),
        description="Where records are spooled while Redis is away; they are delivered in "
        "order when it returns.",
    )
    journal_max_records: int = Field(
        1_000_000,
        ge=1000,
        description="The most undelivered records the journal holds; past it records are "
        "dropped (counted).",
    )
    full_policy: Literal["journal", "drop_newest"] = Field(
        "journal",
        description="When the in-memory queue is full: spool the overflow to the journal, or "
        "drop the newest records (counted and logged either way).",
    )

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


@dataclass(frozen=True)
class RedisConnection:
    """How to reach the shared Redis and name its keys, parsed once from `[redis]` and handed
    to every store. The password stays a `SecretStr`, so no repr or log line shows it."""

    url: str
    prefix: str
    password: SecretStr | None = None
    cluster: bool = False

    def plain_password(self) -> str | None:
        """The password itself, for the Redis client only."""
        return None if self.password is None else self.password.get_secret_value()


class RedisSettings(_Section):
    """The one Redis every Redis-backed store shares: outcome streams, labels and the control
    plane's state and counters. Whether a store uses it is chosen by `outcomes.store` and
    `gateway.control.store`."""

    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="The Redis server, or a node of the cluster; without a password.",
    )
    password: SecretStr | None = Field(None, description="The Redis password.")
    password_file: Path | None = Field(None, description="A file holding `password`.")
    cluster: bool = Field(False, description="`url` is a node of a Redis Cluster.")
    prefix: str = Field(
        "sgw",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Prefix of every Redis key; isolates deployments sharing one Redis.",
    )

    def connection(self) -> RedisConnection:
        """The section parsed into the value the stores take; reads `password_file`."""
        if self.password is not None:
            password: SecretStr | None = self.password
        elif self.password_file is not None:
            password = SecretStr(read_secret_file(self.password_file, "redis.password_file"))
        else:
            password = None
        return RedisConnection(
            url=self.url, password=password, cluster=self.cluster, prefix=self.prefix
        )


# Settings that have left a section, by section: old name -> new dotted place. An old config
# that still sets one fails with a message naming the new place, rather than a bare
# "extra inputs are not permitted".
MOVED_SETTINGS: Mapping[str, Mapping[str, str]] = {
    "outcomes": {
        "redis_url": "redis.url",
        "redis_password": "redis.password",
        "redis_password_file": "redis.password_file",
        "redis_cluster": "redis.cluster",
        "redis_prefix": "redis.prefix",
    },
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPEECH_GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    logging: LoggingSettings = Field(LoggingSettings(), description="Logs.")
    emulator: EmulatorSettings = Field(
        EmulatorSettings(), description="The local speech service (`speech-gateway emulate`)."
    )
    gateway: GatewaySettings = Field(
        GatewaySettings(), description="The gateway (`speech-gateway serve`)."
    )
    outcomes: OutcomeSettings = Field(
        OutcomeSettings(), description="Outcome records: where they go and what they keep."
    )
    redis: RedisSettings = Field(
        RedisSettings(),
        description="The Redis shared by every Redis-backed store (outcomes, labels, control).",
    )

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
            sources.append(_TomlFileSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


class _TomlFileSource(TomlConfigSettingsSource):
    """The TOML file's settings, its relative paths made relative to the file's folder."""

    def _read_file(self, file_path: Path | Any) -> dict[str, Any]:
        data = super()._read_file(file_path)
        # abspath, not Path.absolute: `../x.toml` gives clean paths in messages and logs.
        return relative_to_file(data, Settings, Path(os.path.abspath(file_path)).parent)


def relative_to_file(data: dict[str, Any], model: type[BaseModel], folder: Path) -> dict[str, Any]:
    """`data`, a table of a TOML file read into `model`, with the relative path of every
    path-valued setting (found from the model's types, nested tables, lists and tables of
    tables included) joined to `folder`. Values of the wrong type are left for validation."""
    resolved = dict(data)
    for name, value in data.items():
        info = model.model_fields.get(name)
        if info is not None:
            resolved[name] = _relative_value(value, info.annotation, folder)
    return resolved


def _relative_value(value: Any, annotation: Any, folder: Path) -> Any:
    annotation = _without_none(annotation)
    if annotation is Path:
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str(folder / value)
        return value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return relative_to_file(value, annotation, folder) if isinstance(value, dict) else value
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list and args and isinstance(value, list):
        return [_relative_value(item, args[0], folder) for item in value]
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {key: _relative_value(item, args[1], folder) for key, item in value.items()}
    return value


def _without_none(annotation: Any) -> Any:
    """`X | None` -> `X`; other annotations as they are."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_number(value: str) -> bool:
    # ASCII digits only, and few: int() refuses some Unicode digits ("²") and long strings.
    return value.isascii() and value.isdigit() and len(value) <= 5


def config_path(explicit: Path | None) -> Path | None:
    """The TOML file to read: the explicit one, else $SPEECH_GATEWAY_CONFIG, else the default
    (`config/gateway.toml` in the working directory) if it exists, else None (defaults only).
    """
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
        errors = exc.errors()
        moved = next(filter(None, map(_moved_setting, errors)), None)
        if moved is not None:
            raise moved from exc
        first = errors[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(field, first["msg"]) from exc
    except SettingsError as exc:
        # e.g. SPEECH_GATEWAY_EMULATOR__CUSTOM=x: a nested env value that is not JSON.
        raise ConfigError("environment", str(exc)) from exc
    return settings


def _moved_setting(error: ErrorDetails) -> ConfigError | None:
    """The error for a setting that has moved (see MOVED_SETTINGS), from the validation error
    of its old name, wherever it was set (TOML file, environment or override)."""
    if error["type"] != "extra_forbidden" or len(error["loc"]) != 2:
        return None
    section, name = (str(part) for part in error["loc"])
    new = MOVED_SETTINGS.get(section, {}).get(name)
    if new is None:
        return None
    table, field = new.rsplit(".", 1)
    env = "SPEECH_GATEWAY_" + new.upper().replace(".", "__")
    return ConfigError(f"{section}.{name}", f"moved to [{table}] {field} (environment: {env})")


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
