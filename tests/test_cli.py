"""Tests for gateway.cli: `config validate`, argument errors and the installed entry points."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from support import ROOT

from gateway.cli import main

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No SPEECH_GATEWAY_* variables, a cwd without config/gateway.toml, logging restored."""
    for name in list(os.environ):
        if name.startswith("SPEECH_GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger("aiohttp.access")
    disabled = access.disabled
    try:
        yield tmp_path
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        access.disabled = disabled


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SPEECH_GATEWAY_")}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_validate_accepts_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`config validate FILE` exits 0 and says the file is valid."""
    path = write(tmp_path / "ok.toml", "[emulator]\nport = 5001\n")
    assert main(["config", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ")
    assert str(path) in out


def test_validate_without_a_file_checks_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """With no file anywhere, `config validate` validates the built-in defaults."""
    assert main(["config", "validate"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_validate_uses_the_global_config_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--config FILE config validate` validates that file."""
    path = write(tmp_path / "bad.toml", "[emulator]\nworkers = 0\n")
    assert main(["--config", str(path), "config", "validate"]) == 2
    assert "emulator.workers" in capsys.readouterr().err


def test_validate_rejects_an_invalid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid value exits 2 with one stderr line naming the dotted field."""
    path = write(tmp_path / "bad.toml", "[emulator]\nport = 70000\n")
    assert main(["config", "validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("speech-gateway: emulator.port: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[emulator]\nprot = 5001\n", "emulator.prot"),
        ('[emulator]\nkey = "abc"\n', "SPEECH_GATEWAY_EMULATOR__KEY"),
        ("[emulator\n", "invalid TOML"),
    ],
)
def test_validate_reports_other_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    """Unknown fields, secrets in the file and malformed TOML all exit 2 with a clear line."""
    path = write(tmp_path / "bad.toml", text)
    assert main(["config", "validate", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_validate_reports_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that does not exist exits 2 naming it."""
    missing = tmp_path / "absent.toml"
    assert main(["config", "validate", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_custom_without_equals_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`emulate --custom banking` (no =CORPUS) exits 2 before anything starts."""
    assert main(["emulate", "--custom", "banking"]) == 2
    err = capsys.readouterr().err
    assert "--custom" in err
    assert "ENDPOINT_ID=CORPUS_FILE" in err


@pytest.mark.parametrize("custom", ["=corpus.txt", "banking="])
def test_custom_with_an_empty_side_is_an_error(
    capsys: pytest.CaptureFixture[str], custom: str
) -> None:
    """An empty endpoint id or corpus path in --custom exits 2."""
    assert main(["emulate", "--custom", custom]) == 2
    assert "--custom" in capsys.readouterr().err


def test_emulate_with_invalid_option_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An out-of-range option exits 2 naming the settings field, without starting the server."""
    assert main(["emulate", "--port", "70000"]) == 2
    assert "emulator.port" in capsys.readouterr().err
    assert main(["emulate", "--fallback-after-s", "-1"]) == 2
    assert "emulator.faults.fallback_after_s" in capsys.readouterr().err


def test_unparsable_option_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A non-integer --port is rejected by argparse with exit status 2."""
    with pytest.raises(SystemExit) as caught:
        main(["emulate", "--port", "high"])
    assert caught.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_empty_key_stops_emulate_before_serving(tmp_path: Path) -> None:
    """`emulate` with an empty SPEECH_GATEWAY_EMULATOR__KEY exits 2 instead of serving."""
    env = {**clean_env(), "SPEECH_GATEWAY_EMULATOR__KEY": ""}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "emulate", "--engine", "instant", "--port", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "emulator.key" in result.stderr


def test_python_m_gateway_help(tmp_path: Path) -> None:
    """`python -m gateway --help` prints usage with the sub-commands and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: speech-gateway")
    for command in ("emulate", "demo", "config"):
        assert command in result.stdout


def test_console_script_is_installed(tmp_path: Path) -> None:
    """The `speech-gateway` console script exists in the venv and validates a file."""
    script = VENV_BIN / "speech-gateway"
    assert script.is_file()
    assert os.access(script, os.X_OK)
    path = write(tmp_path / "ok.toml", "[emulator]\nport = 5002\n")
    result = subprocess.run(
        [str(script), "config", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_repository_config_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped config/gateway.toml passes `config validate` from the repository root."""
    monkeypatch.chdir(ROOT)
    assert main(["config", "validate", str(ROOT / "config" / "gateway.toml")]) == 0


# -- --config before or after the sub-command ---------------------------------------------

# Every sub-command that reads settings, with the arguments it needs to get that far.
READS_SETTINGS = {
    "serve": ["serve"],
    "emulate": ["emulate"],
    "label import": ["label", "import", "labels.csv"],
    "analyze": ["analyze", "--experiment", "e"],
    "replay": ["replay", "dataset"],
    "demo": ["demo"],
    "config validate": ["config", "validate"],
}


@pytest.mark.parametrize("command", READS_SETTINGS)
@pytest.mark.parametrize("where", ["before", "after"])
def test_config_option_before_or_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, where: str
) -> None:
    """`--config FILE` is read whether it comes before the sub-command or after it: an
    invalid file stops each command with the field it names (before anything starts)."""
    path = write(tmp_path / "bad.toml", "[emulator]\nworkers = 0\n")
    option = ["--config", str(path)]
    argv = READS_SETTINGS[command]
    assert main(option + argv if where == "before" else argv + option) == 2
    assert "emulator.workers" in capsys.readouterr().err


def test_config_option_given_twice_must_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two different files, before and after the sub-command, are refused; the same file
    twice is fine."""
    first = write(tmp_path / "a.toml", "[emulator]\nport = 5001\n")
    second = write(tmp_path / "b.toml", "[emulator]\nport = 5002\n")
    argv = ["--config", str(first), "config", "validate", "--config", str(second)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--config: given twice" in err
    assert str(first) in err
    assert str(second) in err
    assert main(["--config", str(first), "config", "validate", "--config", str(first)]) == 0
    assert main(["config", "validate", str(first), "--config", str(second)]) == 2
    assert "--config" in capsys.readouterr().err


def test_help_of_a_command_shows_the_config_option(capsys: pytest.CaptureFixture[str]) -> None:
    """`speech-gateway serve --help` lists --config and says where relative paths point."""
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--help"])
    assert caught.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--config FILE" in out
    assert "relative paths in it are relative to its folder" in out


# -- logging.level -------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "shown"), [("debug", True), ("info", False)])
def test_settings_loaded_is_a_debug_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], level: str, shown: bool
) -> None:
    """At `logging.level = "debug"` a command logs which settings file it read (a debug
    event); at `info` it does not."""
    path = write(tmp_path / "c.toml", f'[logging]\nlevel = "{level}"\nformat = "json"\n')
    assert main(["label", "import", "absent.csv", "--by", "alice", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    loaded = [e for e in events if e["event"] == "settings_loaded"]
    if shown:
        (event,) = loaded
        assert (event["level"], event["command"]) == ("debug", "label")
        assert event["config_file"] == str(path)
    else:
        assert loaded == []
    assert "absent.csv" in err  # the command itself still ran and failed on the file


HEAVY = (
    "scipy",
    "numpy.linalg",
    "azure.cognitiveservices.speech",
    "aiohttp",
    "pydantic",
    "duckdb",
    "clickhouse_connect",
    "chdb",
)


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["admin", "--gateway", "http://127.0.0.1:9", "list"]],
    ids=["help", "admin-list"],
)
def test_light_commands_load_no_heavy_package(argv: list[str]) -> None:
    """`--help` and `admin` start fast: they import neither the statistics stack,
    nor the settings (pydantic), nor the Speech SDK, nor aiohttp (docs/benchmarks.md)."""
    code = (
        "import sys\n"
        "from gateway.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SPEECH_GATEWAY_ADMIN_TOKEN": "a-token-for-the-test"},
        cwd=ROOT,
    )
    assert done.stderr.strip().splitlines()[-1] == "loaded:", done.stderr
