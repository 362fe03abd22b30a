"""Tests for gateway.config.settings: defaults, TOML, environment, overrides and their errors."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from gateway.config.settings import CONFIG_ENV, Settings, config_path, load_settings
from gateway.errors import ConfigError

ROOT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "gateway.toml"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No SPEECH_GATEWAY_* variables and a cwd without config/gateway.toml."""
    for name in list(os.environ):
        if name.startswith("SPEECH_GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(*args: Path | None, **overrides: object) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(*args, **overrides)
    return caught.value


def test_defaults() -> None:
    """Without file, environment or overrides the built-in defaults apply."""
    settings = load_settings()
    assert settings.model_dump() == Settings().model_dump()
    emulator = settings.emulator
    assert (emulator.host, emulator.port, emulator.engine) == ("127.0.0.1", 5000, "pocketsphinx")
    assert (emulator.workers, emulator.max_sessions, emulator.custom) == (2, 16, {})
    assert emulator.key is None
    assert emulator.resolved_key() is None
    assert emulator.faults.latency_ms == 0
    assert emulator.faults.failure_rate == 0.0
    assert (settings.logging.level, settings.logging.format) == ("info", "auto")


def test_toml_values(tmp_path: Path) -> None:
    """Values in the TOML file replace the defaults, nested tables included."""
    path = write(
        tmp_path / "s.toml",
        '[logging]\nlevel = "debug"\nformat = "json"\n'
        '[emulator]\nport = 6001\nengine = "instant"\n'
        '[emulator.custom]\nbanking = "corpus.txt"\n'
        "[emulator.faults]\nlatency_ms = 250\n",
    )
    settings = load_settings(path)
    assert (settings.logging.level, settings.logging.format) == ("debug", "json")
    assert (settings.emulator.port, settings.emulator.engine) == (6001, "instant")
    assert settings.emulator.custom == {"banking": tmp_path / "corpus.txt"}
    assert settings.emulator.faults.latency_ms == 250
    assert settings.emulator.host == "127.0.0.1"


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEECH_GATEWAY_<SECTION>__<FIELD> variables beat the file, nested ones too."""
    path = write(
        tmp_path / "s.toml", "[emulator]\nport = 6001\n[emulator.faults]\nlatency_ms = 5\n"
    )
    monkeypatch.setenv("SPEECH_GATEWAY_EMULATOR__PORT", "6002")
    monkeypatch.setenv("SPEECH_GATEWAY_EMULATOR__FAULTS__LATENCY_MS", "75")
    settings = load_settings(path)
    assert settings.emulator.port == 6002
    assert settings.emulator.faults.latency_ms == 75


def test_environment_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment variables apply on top of the defaults when there is no file."""
    monkeypatch.setenv("SPEECH_GATEWAY_LOGGING__LEVEL", "warning")
    assert load_settings().logging.level == "warning"


def test_explicit_overrides_beat_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Explicit (CLI) overrides win over env and file; untouched fields still merge in."""
    path = write(tmp_path / "s.toml", '[emulator]\nport = 6001\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("SPEECH_GATEWAY_EMULATOR__PORT", "6002")
    monkeypatch.setenv("SPEECH_GATEWAY_EMULATOR__WORKERS", "3")
    settings = load_settings(path, emulator={"port": 6003})
    assert settings.emulator.port == 6003
    assert settings.emulator.workers == 3
    assert settings.emulator.host == "0.0.0.0"


def test_config_env_picks_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEECH_GATEWAY_CONFIG names the file when none is given explicitly."""
    path = write(tmp_path / "elsewhere" / "my.toml", "[emulator]\nport = 7007\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    assert config_path(None) == path
    assert load_settings().emulator.port == 7007


def test_explicit_path_beats_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit path wins over SPEECH_GATEWAY_CONFIG."""
    monkeypatch.setenv(CONFIG_ENV, str(write(tmp_path / "env.toml", "[emulator]\nport = 1\n")))
    explicit = write(tmp_path / "explicit.toml", "[emulator]\nport = 2\n")
    assert load_settings(explicit).emulator.port == 2


def test_default_file_in_the_cwd_is_read(tmp_path: Path) -> None:
    """config/gateway.toml under the cwd is read when nothing else names a file."""
    assert config_path(None) is None
    write(tmp_path / "config" / "gateway.toml", "[emulator]\nport = 5055\n")
    assert config_path(None) == Path("config/gateway.toml")
    assert load_settings().emulator.port == 5055


def test_missing_config_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A named file that does not exist is a ConfigError naming it."""
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv(CONFIG_ENV, str(missing))
    error = config_error()
    assert error.field == str(missing)
    assert "cannot read" in str(error)


def test_secret_in_toml_is_refused(tmp_path: Path) -> None:
    """emulator.key written in the file is refused, naming the field and its env variable."""
    path = write(tmp_path / "s.toml", '[emulator]\nkey = "hunter2"\n')
    error = config_error(path)
    assert error.field == "emulator.key"
    assert "SPEECH_GATEWAY_EMULATOR__KEY" in str(error)
    assert "emulator.key_file" in str(error)
    assert "hunter2" not in str(error)


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key comes from SPEECH_GATEWAY_EMULATOR__KEY and is kept secret in reprs."""
    monkeypatch.setenv("SPEECH_GATEWAY_EMULATOR__KEY", "s3cret-key")
    settings = load_settings()
    assert settings.emulator.resolved_key() == "s3cret-key"
    assert "s3cret-key" not in repr(settings)


def test_key_file_is_read(tmp_path: Path) -> None:
    """key_file's content, stripped of surrounding whitespace, is the key."""
    secret = write(tmp_path / "key.txt", "  file-key-123\n")
    path = write(tmp_path / "s.toml", f'[emulator]\nkey_file = "{secret}"\n')
    assert load_settings(path).emulator.resolved_key() == "file-key-123"


def test_redis_password_file_is_read(tmp_path: Path) -> None:
    """The Redis password may come from a mounted file, like every other secret."""
    secret = write(tmp_path / "redis.txt", "redis-pass-456\n")
    path = write(tmp_path / "s.toml", f'[redis]\npassword_file = "{secret}"\n')
    assert load_settings(path).redis.connection().plain_password() == "redis-pass-456"
    assert load_settings().redis.connection().plain_password() is None


def test_redis_section_is_parsed_into_one_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """`[redis]` becomes the frozen value every store takes; its password never shows in a
    repr."""
    path = write(
        Path("s.toml"),
        '[redis]\nurl = "redis://cache:6380/2"\ncluster = true\nprefix = "blue"\n',
    )
    monkeypatch.setenv("SPEECH_GATEWAY_REDIS__PASSWORD", "redis-env-pass-789")
    redis = load_settings(path).redis.connection()
    assert (redis.url, redis.cluster, redis.prefix) == ("redis://cache:6380/2", True, "blue")
    assert redis.plain_password() == "redis-env-pass-789"
    assert "redis-env-pass-789" not in repr(redis)
    with pytest.raises(dataclasses.FrozenInstanceError):
        redis.prefix = "green"  # type: ignore[misc]
    defaults = load_settings().redis.connection()
    assert (defaults.url, defaults.cluster, defaults.prefix) == (
        "redis://127.0.0.1:6379/0",
        False,
        "sgw",
    )


def test_unreadable_redis_password_file_names_the_setting(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml", f'[redis]\npassword_file = "{tmp_path / "absent"}"\n')
    settings = load_settings(path)
    with pytest.raises(ConfigError) as caught:
        settings.redis.connection()
    assert caught.value.field == "redis.password_file"


def test_redis_password_in_the_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml", '[redis]\npassword = "in-the-file"\n')
    error = config_error(path)
    assert error.field == "redis.password"
    assert "SPEECH_GATEWAY_REDIS__PASSWORD" in str(error)
    assert "in-the-file" not in str(error)


MOVED_TO_REDIS = [
    ("redis_url", '"redis://old:6379/0"', "url"),
    ("redis_password_file", '"secrets/redis.password"', "password_file"),
    ("redis_password", '"old-pass"', "password"),
    ("redis_cluster", "true", "cluster"),
    ("redis_prefix", '"old"', "prefix"),
]


@pytest.mark.parametrize(("old", "value", "new"), MOVED_TO_REDIS)
def test_redis_settings_under_outcomes_name_their_new_place(
    tmp_path: Path, old: str, value: str, new: str
) -> None:
    """An old config with the Redis settings under [outcomes] fails, naming [redis]."""
    path = write(tmp_path / "s.toml", f'[outcomes]\nstore = "redis"\n{old} = {value}\n')
    error = config_error(path)
    assert error.field == f"outcomes.{old}"
    assert str(error) == (
        f"outcomes.{old}: moved to [redis] {new} (environment: SPEECH_GATEWAY_REDIS__{new.upper()})"
    )


@pytest.mark.parametrize(("old", "value", "new"), MOVED_TO_REDIS)
def test_redis_variables_under_outcomes_name_their_new_place(
    monkeypatch: pytest.MonkeyPatch, old: str, value: str, new: str
) -> None:
    """The same for the old environment variables, SPEECH_GATEWAY_OUTCOMES__REDIS_*."""
    monkeypatch.setenv(f"SPEECH_GATEWAY_OUTCOMES__{old.upper()}", value.strip('"'))
    error = config_error()
    assert error.field == f"outcomes.{old}"
    assert f"moved to [redis] {new}" in str(error)
    assert f"SPEECH_GATEWAY_REDIS__{new.upper()}" in str(error)


def test_a_moved_setting_is_named_before_other_errors(tmp_path: Path) -> None:
    """However pydantic orders its errors, the move is what the message says."""
    path = write(tmp_path / "s.toml", '[outcomes]\nqueue_size = 0\nredis_url = "redis://x"\n')
    assert config_error(path).field == "outcomes.redis_url"


def test_unreadable_key_file_is_an_error(tmp_path: Path) -> None:
    """A key_file that cannot be read is a ConfigError naming emulator.key_file."""
    path = write(tmp_path / "s.toml", f'[emulator]\nkey_file = "{tmp_path / "absent"}"\n')
    settings = load_settings(path)
    with pytest.raises(ConfigError) as caught:
        settings.emulator.resolved_key()
    assert caught.value.field == "emulator.key_file"


def test_non_utf8_key_file_is_an_error(tmp_path: Path) -> None:
    """A key_file that is not UTF-8 text is a ConfigError, not a decode crash."""
    secret = tmp_path / "key.bin"
    secret.write_bytes(b"\xff\xfe\x00key")
    settings = load_settings(emulator={"key_file": secret})
    with pytest.raises(ConfigError) as caught:
        settings.emulator.resolved_key()
    assert caught.value.field == "emulator.key_file"


def test_empty_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty key (env or file) is a ConfigError rather than a key anyone could sign with."""
    monkeypatch.setenv("SPEECH_GATEWAY_EMULATOR__KEY", "")
    with pytest.raises(ConfigError) as caught:
        load_settings().emulator.resolved_key()
    assert caught.value.field == "emulator.key"
    monkeypatch.delenv("SPEECH_GATEWAY_EMULATOR__KEY")
    blank = write(tmp_path / "blank.txt", "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(emulator={"key_file": blank}).emulator.resolved_key()
    assert caught.value.field == "emulator.key_file"


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("[emulator]\nport = 70000\n", "emulator.port"),
        ('[emulator]\nport = "high"\n', "emulator.port"),
        ("[emulator]\nworkers = 0\n", "emulator.workers"),
        ('[emulator]\nengine = "whisper"\n', "emulator.engine"),
        ("[emulator]\ninstant_utterance_ms = 10\n", "emulator.instant_utterance_ms"),
        ("[emulator.faults]\nfailure_rate = 1.5\n", "emulator.faults.failure_rate"),
        ("[emulator.faults]\nlatency_ms = -1\n", "emulator.faults.latency_ms"),
        ('[logging]\nlevel = "loud"\n', "logging.level"),
        ("[emulator]\nfaults = 3\n", "emulator.faults"),
        ("[emulator.custom]\n'bad id' = \"c.txt\"\n", "emulator.custom"),
    ],
)
def test_invalid_toml_values_name_the_field(tmp_path: Path, toml: str, field: str) -> None:
    """An invalid value is a ConfigError whose field and message name the dotted path."""
    error = config_error(write(tmp_path / "s.toml", toml))
    assert error.field == field
    assert str(error).startswith(f"{field}: ")


def test_invalid_environment_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value from the environment names the same dotted field."""
    monkeypatch.setenv("SPEECH_GATEWAY_EMULATOR__PORT", "not-a-port")
    assert config_error().field == "emulator.port"


def test_invalid_override_names_the_field() -> None:
    """A bad explicit override names the dotted field."""
    assert (
        config_error(emulator={"faults": {"latency_ms": 10**9}}).field
        == "emulator.faults.latency_ms"
    )


def test_unparsable_nested_environment_value_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A complex field's env value that is not JSON is a ConfigError, not a raw SettingsError."""
    monkeypatch.setenv("SPEECH_GATEWAY_EMULATOR__CUSTOM", "banking=corpus.txt")
    error = config_error()
    assert "emulator" in str(error)


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("[emulator]\nbogus = 1\n", "emulator.bogus"),
        ("[emulator.faults]\nlatency = 1\n", "emulator.faults.latency"),
        ("bogus = 1\n", "bogus"),
        ("[server]\nport = 1\n", "server"),
    ],
)
def test_unknown_field_is_an_error(tmp_path: Path, toml: str, field: str) -> None:
    """Unknown keys (typos) are refused and named, not silently ignored."""
    assert config_error(write(tmp_path / "s.toml", toml)).field == field


def test_unknown_environment_field_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An env variable for a field a section lacks is refused too."""
    monkeypatch.setenv("SPEECH_GATEWAY_EMULATOR__PROT", "5001")
    assert config_error().field == "emulator.prot"


@pytest.mark.parametrize(
    "text", ["[emulator\nport = 1\n", "port = = 1\n", "[emulator]\nport = 1\nport = 2\n"]
)
def test_malformed_toml_is_an_error(tmp_path: Path, text: str) -> None:
    """Malformed TOML is a ConfigError naming the file."""
    path = write(tmp_path / "bad.toml", text)
    error = config_error(path)
    assert error.field == str(path)
    assert "invalid TOML" in str(error)


def test_non_utf8_toml_is_an_error(tmp_path: Path) -> None:
    """A config file that is not UTF-8 is a ConfigError naming the file, not a decode crash."""
    path = tmp_path / "latin1.toml"
    path.write_bytes('[emulator]\nhost = "caf\u00e9"\n'.encode("latin-1"))
    assert config_error(path).field == str(path)


def test_repository_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped config/gateway.toml loads (from the repository root, as documented)."""
    monkeypatch.chdir(ROOT_CONFIG.parents[1])
    load_settings(ROOT_CONFIG)


# -- relative paths -----------------------------------------------------------------------

PATH_SETTINGS = """\
[emulator]
key_file = "secrets/emulator.key"
model_cache = "models"
[emulator.custom]
banking = "corpora/banking.txt"
[gateway.backends.azure]
url = "wss://westus.stt.speech.microsoft.com"
key_file = "secrets/azure.key"
management_url = "https://westus.api.cognitive.microsoft.com"
management_key_file = "secrets/azure-management.key"
[gateway.control]
state_path = "state/control.json"
[gateway.audio]
directory = "store/audio"
blob_credential_file = "secrets/blob.key"
[[gateway.experiments]]
id = "ab"
control = "base"
variants = [{name = "base", backend = "azure", weight = 1}]
terms = "lists/terms.txt"
terms_corpus = "lists/corpus.txt"
synonyms = "lists/synonyms.txt"
[gateway.experiments.canary]
dataset = "data/canary"
[outcomes]
path = "store/outcomes.jsonl"
pseudonym_key_file = "secrets/pseudonym.key"
generated_key_path = "store/generated.key"
labels_path = "store/labels.jsonl"
journal_dir = "store/journal"
[redis]
password_file = "secrets/redis.password"
"""


def path_values(settings: Settings) -> dict[str, Path | None]:
    """Every path-valued setting of PATH_SETTINGS, by its dotted name (as documented)."""
    emulator, outcomes, gateway = settings.emulator, settings.outcomes, settings.gateway
    redis = settings.redis
    return {
        "emulator.key_file": emulator.key_file,
        "emulator.custom": emulator.custom["banking"],
        "emulator.model_cache": emulator.model_cache,
        "gateway.backends.<name>.key_file": gateway.backends["azure"].key_file,
        "gateway.backends.<name>.management_key_file": gateway.backends[
            "azure"
        ].management_key_file,
        "gateway.experiments[].canary.dataset": gateway.experiments[0].canary.dataset,
        "gateway.experiments[].terms": gateway.experiments[0].terms,
        "gateway.experiments[].terms_corpus": gateway.experiments[0].terms_corpus,
        "gateway.experiments[].synonyms": gateway.experiments[0].synonyms,
        "gateway.control.state_path": gateway.control.state_path,
        "gateway.audio.directory": gateway.audio.directory,
        "gateway.audio.blob_credential_file": gateway.audio.blob_credential_file,
        "outcomes.path": outcomes.path,
        "outcomes.pseudonym_key_file": outcomes.pseudonym_key_file,
        "outcomes.generated_key_path": outcomes.generated_key_path,
        "outcomes.labels_path": outcomes.labels_path,
        "outcomes.journal_dir": outcomes.journal_dir,
        "redis.password_file": redis.password_file,
    }


def test_every_path_setting_is_covered() -> None:
    """PATH_SETTINGS sets every setting of type path that the reference lists, so the test
    below covers each one (a new path setting must be added to it)."""
    from gateway.tools.config_reference import sections

    documented = {f.name for s in sections() for f in s.fields if "path" in f.type.split()}
    assert documented == set(path_values(load_settings(write(Path("p.toml"), PATH_SETTINGS))))


def test_relative_paths_in_the_file_are_relative_to_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path written in the TOML file is joined to the file's folder, however the
    file was named (here relatively, from another working directory); absolute paths are
    kept."""
    (tmp_path / "work").mkdir()
    config = write(tmp_path / "deploy" / "gateway.toml", PATH_SETTINGS)
    monkeypatch.chdir(tmp_path / "work")
    settings = load_settings(Path("../deploy/gateway.toml"))
    folder = tmp_path / "deploy"
    for name, value in path_values(settings).items():
        assert value is not None, name
        assert value.is_absolute(), name
        assert value.parent.parent == folder or value.parent == folder, (name, value)
    assert settings.emulator.custom["banking"] == folder / "corpora" / "banking.txt"
    assert settings.outcomes.journal_dir == config.parent / "store" / "journal"
    absolute = write(tmp_path / "abs.toml", f'[outcomes]\npath = "{tmp_path / "o.jsonl"}"\n')
    assert load_settings(absolute).outcomes.path == tmp_path / "o.jsonl"


def test_environment_and_argument_paths_stay_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths from environment variables and explicit overrides (the CLI's options) and the
    defaults are not moved: they are relative to the working directory; the file's other
    paths are still resolved against its folder."""
    config = write(tmp_path / "deploy" / "gateway.toml", PATH_SETTINGS)
    monkeypatch.setenv("SPEECH_GATEWAY_OUTCOMES__PATH", "env/outcomes.jsonl")
    monkeypatch.setenv("SPEECH_GATEWAY_EMULATOR__CUSTOM", '{"travel": "env/travel.txt"}')
    settings = load_settings(config, emulator={"model_cache": Path("cli/models")})
    assert settings.outcomes.path == Path("env/outcomes.jsonl")
    assert settings.emulator.model_cache == Path("cli/models")
    assert settings.emulator.custom == {
        "banking": config.parent / "corpora" / "banking.txt",
        "travel": Path("env/travel.txt"),
    }
    assert settings.outcomes.journal_dir == config.parent / "store" / "journal"
    defaults = load_settings(write(tmp_path / "deploy" / "empty.toml", ""))
    assert defaults.outcomes.journal_dir == Path("var/journal")


def test_a_relative_key_file_is_read_beside_the_config(tmp_path: Path) -> None:
    """The secret files are read from where the file says, not from the working directory."""
    config = write(tmp_path / "deploy" / "gateway.toml", '[emulator]\nkey_file = "emu.key"\n')
    write(tmp_path / "deploy" / "emu.key", "emulator-key-123\n")
    assert load_settings(config).emulator.resolved_key() == "emulator-key-123"


def test_the_shipped_config_works_from_any_directory() -> None:
    """config/gateway.toml names the demo corpus and the repository's var/ relative to
    itself, so the quick start does not depend on where it is started."""
    settings = load_settings(ROOT_CONFIG)
    repository = ROOT_CONFIG.parents[1]
    corpus = settings.emulator.custom["banking"]
    assert corpus.resolve() == repository / "data" / "demo" / "banking" / "corpus.txt"
    assert corpus.is_file()
    for stored in (
        settings.emulator.model_cache,
        settings.outcomes.path,
        settings.outcomes.generated_key_path,
        settings.outcomes.journal_dir,
    ):
        assert stored.resolve().is_relative_to(repository / "var"), stored


def test_validate_and_serve_refuse_an_old_redis_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`config validate` and the gateway's start exit 2 with one stderr line naming [redis]."""
    from gateway.cli import main

    old = write(tmp_path / "old.toml", '[outcomes]\nstore = "redis"\nredis_url = "redis://x"\n')
    assert main(["config", "validate", str(old)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "speech-gateway: outcomes.redis_url: moved to [redis] url "
        "(environment: SPEECH_GATEWAY_REDIS__URL)"
    ]
    monkeypatch.setenv("SPEECH_GATEWAY_OUTCOMES__REDIS_PREFIX", "old")
    assert main(["serve"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("speech-gateway: outcomes.redis_prefix: moved to [redis] prefix")


# -- the emulator's Custom Speech lifecycle settings --------------------------------------


def test_model_expiry_dates_and_date_times_are_utc(tmp_path: Path) -> None:
    """A TOML date is midnight UTC; a date-time with an offset is converted to UTC; one
    without is taken as UTC; an unset date stays unset (the emulator's default applies)."""
    from datetime import UTC, datetime

    config = write(
        tmp_path / "gateway.toml",
        """
        [emulator]
        custom = { banking = "corpus.txt" }
        [emulator.model_expiry.banking]
        adaptation = 2027-01-15
        transcription = 2027-07-15T12:00:00+02:00
        [emulator.model_expiry.base]
        transcription = "2028-01-01T06:30:00"
        [emulator.faults]
        fallback_after_s = 2.5
        """,
    )
    emulator = load_settings(config).emulator
    banking, base = emulator.model_expiry["banking"], emulator.model_expiry["base"]
    assert banking.adaptation == datetime(2027, 1, 15, tzinfo=UTC)
    assert banking.transcription == datetime(2027, 7, 15, 10, 0, tzinfo=UTC)
    assert base.adaptation is None
    assert base.transcription == datetime(2028, 1, 1, 6, 30, tzinfo=UTC)
    assert emulator.faults.fallback_after_s == 2.5


def test_model_expiry_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    monkeypatch.setenv("SPEECH_GATEWAY_EMULATOR__CUSTOM", '{"banking": "corpus.txt"}')
    monkeypatch.setenv(
        "SPEECH_GATEWAY_EMULATOR__MODEL_EXPIRY", '{"banking": {"adaptation": "2027-01-15"}}'
    )
    expiry = load_settings().emulator.model_expiry["banking"]
    assert expiry.adaptation == datetime(2027, 1, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("table", "field", "words"),
    [
        ('model_expiry.banking]\nadaptation = "2027-13-01"', "model_expiry.banking.adaptation", ""),
        ('model_expiry.banking]\ntranscription = "soon"', "model_expiry.banking.transcription", ""),
        ("model_expiry.banking]\nexpires = 2027-01-01", "model_expiry.banking.expires", ""),
        ("model_expiry.travel]\nadaptation = 2027-01-01", "model_expiry", "'travel'"),
        ('instant_texts]\ntravel = "x"', "instant_texts", "'travel'"),
        ("faults]\nfallback_after_s = -1", "faults.fallback_after_s", ""),
    ],
)
def test_bad_lifecycle_settings_name_the_field(
    tmp_path: Path, table: str, field: str, words: str
) -> None:
    """Bad dates, unknown keys, models that do not exist and a negative knob are refused,
    naming the setting (and the model)."""
    config = write(
        tmp_path / "gateway.toml",
        f'[emulator]\ncustom = {{ banking = "corpus.txt" }}\n[emulator.{table}\n',
    )
    error = config_error(config)
    assert error.field == f"emulator.{field}"
    assert words in str(error)


def test_instant_texts_by_model(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gateway.toml",
        '[emulator]\ncustom = { banking = "c.txt" }\n'
        'instant_texts = { base = "B", banking = "C" }\n',
    )
    assert load_settings(config).emulator.instant_texts == {"base": "B", "banking": "C"}
