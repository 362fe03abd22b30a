"""Helpers shared by the tests: paths, keys, WAV building."""

from __future__ import annotations

import wave
from pathlib import Path

from gateway.outcomes.record import OutcomeRecord

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
EMULATOR_KEY = "emulator-test-key-0123456789"
DOMAINS = {
    "banking": DATA / "demo" / "banking",
    "travel": DATA / "heldout" / "travel",
    "healthcare": DATA / "heldout" / "healthcare",
}


def minimal_outcome() -> OutcomeRecord:
    """A successful utterance record with only the fields every record needs."""
    return OutcomeRecord(
        kind="utterance",
        experiment="ab",
        phase="p-1",
        variant="a",
        backend="x",
        role="primary",
        client="c",
        unit="u" * 32,
        unit_source="query",
        session_id="s1",
        protocol="usp",
        status="Success",
    )


def read_pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        return wav.readframes(wav.getnframes())


def write_wav(path: Path, pcm: bytes) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(pcm)
    return path


def silence(seconds: float) -> bytes:
    return b"\0\0" * int(16000 * seconds)


# -- the gateway -----------------------------------------------------------------------

CLIENT_KEY = "gateway-test-client-key"  # an application's key: may not force variants
QA_KEY = "gateway-test-qa-key"  # a QA key: may force variants
BACKEND_KEY = "backend-secret-key-4f9a1c"  # what the gateway presents to keyed emulators


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def write_gateway_config(
    path: Path,
    *,
    backends: dict[str, str],
    experiments: list[dict[str, object]],
    outcomes: Path,
    default_variant: dict[str, object] | None = None,
    **gateway: object,
) -> Path:
    """A gateway TOML file: two clients (app, qa), the given backends and experiments."""
    from gateway.control.model import hash_key

    lines = ["[gateway]"]
    lines += [f"{name} = {toml_value(value)}" for name, value in gateway.items()]
    clients = [
        {"name": "app", "key_sha256": hash_key(CLIENT_KEY), "can_force": False},
        {"name": "qa", "key_sha256": hash_key(QA_KEY), "can_force": True},
    ]
    lines.append(f"clients = {toml_value(clients)}")
    lines.append(f"experiments = {toml_value(experiments)}")
    if default_variant is not None:
        lines.append(f"default_variant = {toml_value(default_variant)}")
    for name, url in backends.items():
        lines += [f"[gateway.backends.{name}]", f"url = {toml_value(url)}"]
    lines += ["[outcomes]", f"path = {toml_value(str(outcomes))}"]
    lines += ["[logging]", 'format = "json"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_outcomes(path: Path) -> list[OutcomeRecord]:
    from gateway.stores.jsonl_sink import read_jsonl

    return list(read_jsonl(path)) if path.exists() else []
