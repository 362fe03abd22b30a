"""Tests for gateway.config.capture: an experiment's capture policy, client consent and the
audio store settings, validated with the offending field named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from gateway.config.capture import AudioSettings, capture_policies, consenting_clients
from gateway.config.gateway import GatewaySettings
from gateway.config.gateway_config import build_gateway_config
from gateway.control.model import hash_key
from gateway.errors import ConfigError
from gateway.session.capture import CapturePolicy, CaptureReason
from gateway.stores.audio_store import LocalAudioStore
from gateway.stores.blob_audio_store import BlobAudioStore
from gateway.stores.factory import create_audio_store


def section(capture: dict[str, Any] | None = None, **audio: Any) -> GatewaySettings:
    experiment: dict[str, Any] = {
        "id": "exp",
        "control": "base",
        "variants": [
            {"name": "base", "backend": "local", "weight": 50},
            {"name": "custom", "backend": "local", "weight": 50},
        ],
    }
    if capture is not None:
        experiment["capture"] = capture
    return GatewaySettings.model_validate(
        {
            "clients": [
                {"name": "app", "key_sha256": hash_key("a"), "capture_consent": True},
                {"name": "qa", "key_sha256": hash_key("q")},
            ],
            "backends": {"local": {"url": "ws://127.0.0.1:5000"}},
            "experiments": [experiment],
            "audio": audio,
        }
    )


def test_a_capture_section_becomes_the_policy() -> None:
    """Every field reaches the policy; priorities keep their order."""
    settings = section(
        {
            "share": 0.1,
            "variant_shares": {"custom": 0.3},
            "utterance_share": 0.2,
            "priorities": ["no_match", "disagreement"],
            "low_confidence_below": 0.4,
            "daily_cap": 50,
            "priority_reserve": 0.2,
            "max_session_bytes": 1000,
        }
    )
    assert capture_policies(settings.experiments) == {
        "exp": CapturePolicy(
            share=0.1,
            variant_shares={"custom": 0.3},
            utterance_share=0.2,
            priorities=(CaptureReason.NO_MATCH, CaptureReason.DISAGREEMENT),
            low_confidence_below=0.4,
            daily_cap=50,
            priority_reserve=0.2,
            max_session_bytes=1000,
        )
    }
    build_gateway_config(settings)


def test_no_section_no_policy_and_consent_is_off_by_default() -> None:
    """Without a capture section nothing is captured; consent is only where it is set."""
    settings = section()
    assert capture_policies(settings.experiments) == {}
    assert consenting_clients(settings.clients) == frozenset({"app"})


@pytest.mark.parametrize(
    ("capture", "field"),
    [
        ({"variant_shares": {"nope": 0.5}}, "gateway.experiments[0].capture.variant_shares"),
        (
            {"variant_shares": {"custom": 1.5}},
            "gateway.experiments[0].capture.variant_shares.custom",
        ),
        ({"priorities": ["no_match", "no_match"]}, "gateway.experiments[0].capture.priorities"),
    ],
)
def test_a_bad_policy_names_its_field(capture: dict[str, Any], field: str) -> None:
    """Rules across fields are ConfigErrors naming the field, raised at load."""
    with pytest.raises(ConfigError) as raised:
        build_gateway_config(section(capture))
    assert raised.value.field == field


@pytest.mark.parametrize(
    "capture",
    [{"share": 2}, {"priorities": ["loud"]}, {"daily_cap": -1}, {"unknown": 1}],
)
def test_a_bad_value_is_refused_by_the_model(capture: dict[str, Any]) -> None:
    """Shapes and ranges are checked by the settings model."""
    with pytest.raises(ValidationError):
        section(capture)


def test_an_experiment_id_starting_with_an_underscore_cannot_capture() -> None:
    """Such ids would collide with the Blob store's own prefixes (`_ids/`, `_deleted/`)."""
    settings = section({"share": 1.0})
    renamed = settings.model_copy(
        update={"experiments": [settings.experiments[0].model_copy(update={"id": "_ids"})]}
    )
    with pytest.raises(ConfigError) as raised:
        capture_policies(renamed.experiments)
    assert raised.value.field == "gateway.experiments[0].capture"


def test_a_blob_store_needs_its_account_url() -> None:
    """`store = "blob"` without `blob_account_url` is refused, naming the field."""
    with pytest.raises(ConfigError) as raised:
        build_gateway_config(section(None, store="blob"))
    assert raised.value.field == "gateway.audio.blob_account_url"


def test_the_factory_builds_the_configured_store(tmp_path: Path) -> None:
    """Local by default; Blob with an account key from a file or a SAS token."""
    local = create_audio_store(AudioSettings(directory=tmp_path))
    assert isinstance(local, LocalAudioStore)
    assert local.directory == tmp_path
    key_file = tmp_path / "key"
    key_file.write_text("a2V5\n")
    settings = AudioSettings(
        store="blob",
        blob_account_url="http://127.0.0.1:1/acct",
        blob_account_name="acct",
        blob_credential_file=key_file,
    )
    assert settings.blob_credential_value() == {"account_name": "acct", "account_key": "a2V5"}
    assert isinstance(create_audio_store(settings), BlobAudioStore)
    sas = AudioSettings(
        store="blob", blob_account_url="http://x", blob_credential=SecretStr("sv=1")
    )
    assert sas.blob_credential_value() == "sv=1"
    missing = AudioSettings(blob_credential_file=tmp_path / "absent")
    with pytest.raises(ConfigError, match="blob_credential_file"):
        missing.blob_credential_value()
