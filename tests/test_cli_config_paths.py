"""Where the commands look for their files, run as real processes from a directory that is
not the settings file's: a relative path written in the TOML file is relative to the file's
folder; one from an environment variable or a command-line argument is relative to the
working directory. `--config` works after the sub-command as well as before it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support import ROOT, minimal_outcome

from gateway.control.model import hash_key
from gateway.tools.local_services import free_port

SCRIPT = Path(sys.executable).parent / "speech-gateway"
READY_TIMEOUT_S = 120.0
ADMIN_TOKEN = "config-paths-admin-token"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECH_GATEWAY_")}
    return env | extra


def folders(tmp_path: Path) -> tuple[Path, Path]:
    """The settings file's folder and another one, the working directory."""
    config_dir, cwd = tmp_path / "settings", tmp_path / "elsewhere"
    config_dir.mkdir()
    cwd.mkdir()
    return config_dir, cwd


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextmanager
def serving(args: list[str], cwd: Path, env: dict[str, str], url: str) -> Iterator[Path]:
    """The command running until `url` answers 200; stopped with SIGTERM. Yields its log."""
    log_path = cwd.parent / f"{args[0]}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(SCRIPT), *args], cwd=cwd, env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                assert time.monotonic() < deadline, f"{url} not ready"
                time.sleep(0.2)
            yield log_path
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_emulate_with_the_shipped_config_from_another_directory(tmp_path: Path) -> None:
    """The README's quick start from anywhere: the example file's custom "banking" corpus
    (written relative to config/) is found, while a model cache given as a relative
    environment variable lands in the working directory."""
    _, cwd = folders(tmp_path)
    port = free_port()
    env = clean_env(SPEECH_GATEWAY_EMULATOR__MODEL_CACHE="cache")
    config = str(ROOT / "config" / "gateway.toml")
    args = ["emulate", "--config", config, "--port", str(port), "--workers", "1"]
    status_url = f"http://127.0.0.1:{port}/status"
    with serving(args, cwd, env, status_url), urllib.request.urlopen(status_url) as response:
        status = json.loads(response.read())
    assert status["models"] == ["banking", "base"]
    assert [p.name.split("-")[0] for p in (cwd / "cache").iterdir()] == ["banking"]


def test_serve_config_after_the_command_and_paths_beside_the_file(tmp_path: Path) -> None:
    """`serve --config FILE` from another directory: the pseudonym key the file places at
    `keys/pseudonym.key` is generated beside the file; at debug level the first event says
    which file was read."""
    config_dir, cwd = folders(tmp_path)
    config = config_dir / "gateway.toml"
    config.write_text(
        '[logging]\nlevel = "debug"\nformat = "json"\n'
        '[outcomes]\npath = "store/outcomes.jsonl"\ngenerated_key_path = "keys/pseudonym.key"\n',
        encoding="utf-8",
    )
    port = free_port()
    args = ["serve", "--config", str(config), "--port", str(port)]
    with serving(args, cwd, clean_env(), f"http://127.0.0.1:{port}/readyz") as log_path:
        assert (config_dir / "keys" / "pseudonym.key").is_file()
    assert list(cwd.iterdir()) == []
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line[:1] == "{"]
    first = events[0]
    assert (first["event"], first["level"]) == ("settings_loaded", "debug")
    assert (first["command"], first["config_file"]) == ("serve", str(config))


def test_label_import_reads_the_store_beside_the_file_and_the_labels_from_cwd(
    tmp_path: Path,
) -> None:
    """`label import FILE --config SETTINGS`: FILE (an argument) is found in the working
    directory, the outcome store (written relative in the settings) beside the settings,
    and the labels go beside the outcomes."""
    config_dir, cwd = folders(tmp_path)
    record = minimal_outcome()
    (config_dir / "store").mkdir()
    (config_dir / "store" / "outcomes.jsonl").write_text(record.to_json() + "\n")
    config = config_dir / "gateway.toml"
    config.write_text('[outcomes]\npath = "store/outcomes.jsonl"\n', encoding="utf-8")
    (cwd / "review.csv").write_text(f"record_id,text\n{record.record_id},pay my bill\n")
    args = ["label", "import", "review.csv", "--by", "alice", "--config", str(config)]
    result = run(args, cwd, clean_env())
    assert result.returncode == 0, result.stderr
    assert "1 new" in result.stdout
    (label,) = (config_dir / "store" / "labels.jsonl").read_text().splitlines()
    assert json.loads(label)["text"] == "pay my bill"
    assert sorted(p.name for p in cwd.iterdir()) == ["review.csv"]


def test_config_validate_reads_a_key_file_beside_the_config(tmp_path: Path) -> None:
    """A backend's `key_file` written relative in the settings is read from the settings'
    folder, whatever the working directory; the same relative path given by an environment
    variable is read from the working directory (where it is missing here)."""
    config_dir, cwd = folders(tmp_path)
    (config_dir / "backend.key").write_text("backend-secret-0123\n")
    config = config_dir / "gateway.toml"
    config.write_text(
        "[gateway]\n"
        f'admin_tokens_sha256 = {{ ops = "{hash_key(ADMIN_TOKEN)}" }}\n'
        "[gateway.backends.azure]\n"
        'url = "wss://westus.stt.speech.microsoft.com"\n'
        'key_file = "backend.key"\n',
        encoding="utf-8",
    )
    for args in (
        ["config", "validate", "--config", str(config)],
        ["config", "validate", str(config)],
    ):
        result = run(args, cwd, clean_env())
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"ok: {config}")
    from_env = clean_env(SPEECH_GATEWAY_GATEWAY__BACKENDS__AZURE__KEY_FILE="backend.key")
    result = run(["--config", str(config), "config", "validate"], cwd, from_env)
    assert result.returncode == 2
    assert "gateway.backends.azure.key_file: cannot read secret file" in result.stderr
