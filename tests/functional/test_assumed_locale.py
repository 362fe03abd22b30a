"""An experiment's assumed locale, with the real Speech SDK through a gateway process: the
native SDK omits `language` from the URL when an `endpoint_id` is set, so such a session is
targeted and recorded with the locale the experiment assumes."""

from __future__ import annotations

from pathlib import Path

import azure.cognitiveservices.speech as speechsdk
from conftest import ALPHA, BRAVO, gateway_for
from support import CLIENT_KEY, ROOT, read_outcomes

from gateway.tools.local_services import LocalEmulator
from gateway.tools.speech_client import speech_config, transcribe_file

PATH = "/speech/recognition/conversation/cognitiveservices/v1"
WAV = ROOT / "data" / "demo" / "banking" / "audio" / "banking-001.wav"
ENGLISH = {
    "id": "english",
    "control": "a",
    "variants": [{"name": "a", "backend": "alpha", "weight": 1}],
    "targeting": {"locales": ["en-US"]},
    "locale": "en-US",
}


def test_a_session_without_language_is_targeted_and_recorded_with_the_assumed_locale(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """With an endpoint id (and no recognition language set) the SDK sends no `language`:
    the session is taken by the experiment that assumes en-US and its records say `en-us`.
    A session that names its language (en-GB, which the experiment does not target) keeps
    it, and goes to the default variant."""
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    default = {"name": "rest", "backend": "bravo"}
    gateway = gateway_for(tmp_path, backends, [ENGLISH], default_variant=default)
    with gateway:
        endpoint = f"{gateway.ws_url}{PATH}"
        custom = speechsdk.SpeechConfig(endpoint=endpoint, subscription=CLIENT_KEY)
        custom.endpoint_id = "banking"  # the gateway replaces it with the variant's
        british = speech_config(endpoint, CLIENT_KEY, language="en-GB")
        assert transcribe_file(custom, WAV).text.startswith(ALPHA)
        assert transcribe_file(british, WAV).text.startswith(BRAVO)
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    seen = {(r.experiment, r.variant, r.locale) for r in records}
    assert seen == {("english", "a", "en-us"), (None, "rest", "en-gb")}
