"""Tests for gateway.emulator.options: recognition options from the URL and speech.context."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.emulator.options import (
    DEFAULT_INITIAL_SILENCE_MS,
    Mode,
    RecognitionOptions,
    from_query,
    mode_from_path,
    parse_context,
    with_context,
)
from gateway.errors import CloseCode, UspError

V1 = "/speech/recognition/{}/cognitiveservices/v1"
INTERACTIVE = V1.format("interactive")
CONVERSATION = V1.format("conversation")
DICTATION = V1.format("dictation")
UNIVERSAL = "/stt/speech/universal/v2"

# The speech.context bodies protocol.md §1.3 records for native Python 1.53.
NATIVE_DEFAULT = {"phraseDetection": {"language": "en-us"}, "audio": {"streams": {"1": None}}}
NATIVE_DETAILED = {
    "phraseDetection": {"language": "en-us"},
    "phraseOutput": {
        "format": "Detailed",
        "detailed": {"options": ["WordTimings", "WordConfidence"]},
    },
}
NATIVE_SILENCE = {
    "phraseDetection": {"initialSilenceTimeout": 3000, "trailingSilenceTimeout": 1500}
}


def segmentation(mode_key: str, ms: Any) -> dict[str, Any]:
    return {
        "phraseDetection": {
            "mode": mode_key,
            mode_key: {"segmentation": {"segmentationSilenceTimeoutMs": ms, "mode": "Custom"}},
        }
    }


def overlay(context: dict[str, Any], path: str = UNIVERSAL) -> RecognitionOptions:
    """What a session would use: the URL's options with the context body parsed and applied."""
    url_options = from_query(path, {})
    return with_context(
        url_options, parse_context(json.dumps(context)), path_mode=mode_from_path(path)
    )


def test_defaults_without_query() -> None:
    """A bare universal URL gives interactive, en-US, simple, masked, 500 ms segmentation."""
    options = from_query(UNIVERSAL, {})
    assert options == RecognitionOptions()
    assert options.mode is Mode.INTERACTIVE
    assert (options.language, options.detailed, options.profanity) == ("en-US", False, "masked")
    assert options.segmentation_silence_ms == 500
    assert options.endpoint_id is None


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        (INTERACTIVE, Mode.INTERACTIVE),
        (CONVERSATION, Mode.CONVERSATION),
        (DICTATION, Mode.DICTATION),
        (UNIVERSAL, Mode.INTERACTIVE),
        ("/speech/universal/v2", Mode.INTERACTIVE),
    ],
)
def test_mode_comes_from_the_v1_path(path: str, mode: Mode) -> None:
    """The v1 path names the mode; universal paths default to interactive."""
    assert from_query(path, {}).mode is mode


def test_continuous_modes_have_no_default_initial_silence_timeout() -> None:
    """Only interactive turns get the service's 5 s initial-silence default."""
    assert from_query(INTERACTIVE, {}).effective_initial_silence_ms == DEFAULT_INITIAL_SILENCE_MS
    assert from_query(CONVERSATION, {}).effective_initial_silence_ms is None
    assert from_query(DICTATION, {}).effective_initial_silence_ms is None


def test_native_detailed_query_string() -> None:
    """The native Detailed query turns on detailed output, word timings and word confidence."""
    query = {
        "format": "detailed",
        "language": "en-us",
        "wordLevelConfidence": "true",
        "wordLevelTimestamps": "true",
    }
    options = from_query(CONVERSATION, query)
    assert options.mode is Mode.CONVERSATION
    assert options.language == "en-us"
    assert (options.detailed, options.word_timings, options.word_confidence) == (True, True, True)


def test_simple_format_and_false_flags() -> None:
    """format=simple and wordLevel*=false leave detailed output and word options off."""
    query = {"format": "simple", "wordLevelTimestamps": "false", "wordLevelConfidence": "no"}
    options = from_query(INTERACTIVE, query)
    assert (options.detailed, options.word_timings, options.word_confidence) == (
        False,
        False,
        False,
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [("raw", "raw"), ("RAW", "raw"), ("Removed", "removed"), ("masked", "masked")],
)
def test_query_profanity_in_any_case(value: str, expected: str) -> None:
    """profanity= is read case-insensitively and stored lower-case."""
    assert from_query(INTERACTIVE, {"profanity": value}).profanity == expected


def test_query_silence_timeouts_and_cid() -> None:
    """initialSilenceTimeoutMs, segmentationSilenceTimeoutMs and cid are taken from the query."""
    query = {
        "initialSilenceTimeoutMs": "3000",
        "segmentationSilenceTimeoutMs": "700",
        "cid": "banking",
    }
    options = from_query(INTERACTIVE, query)
    assert options.initial_silence_ms == 3000
    assert options.effective_initial_silence_ms == 3000
    assert options.segmentation_silence_ms == 700
    assert options.endpoint_id == "banking"


@pytest.mark.parametrize(("value", "expected"), [("20", 100), ("100", 100), ("9000", 5000)])
def test_query_segmentation_is_clamped(value: str, expected: int) -> None:
    """segmentationSilenceTimeoutMs is clamped to [100, 5000]."""
    query = {"segmentationSilenceTimeoutMs": value}
    assert from_query(INTERACTIVE, query).segmentation_silence_ms == expected


def test_empty_cid_is_ignored() -> None:
    """An empty cid= does not select a custom endpoint."""
    assert from_query(INTERACTIVE, {"cid": ""}).endpoint_id is None


@pytest.mark.parametrize(
    "query",
    [
        {"initialSilenceTimeoutMs": "soon"},
        {"segmentationSilenceTimeoutMs": "1.5"},
        {"profanity": "tagged"},
    ],
)
def test_bad_query_values_are_bad_requests(query: dict[str, str]) -> None:
    """A non-integer timeout or unknown profanity option closes with 1007."""
    with pytest.raises(UspError) as caught:
        from_query(INTERACTIVE, query)
    assert caught.value.close_code == CloseCode.INVALID_PAYLOAD


def test_native_default_context_changes_only_the_language() -> None:
    """The native default context sets the language and nothing else."""
    options = overlay(NATIVE_DEFAULT)
    assert options == RecognitionOptions(language="en-us")


def test_native_detailed_context() -> None:
    """phraseOutput Detailed with WordTimings/WordConfidence turns on all three options."""
    options = overlay(NATIVE_DETAILED)
    assert (options.detailed, options.word_timings, options.word_confidence) == (True, True, True)


def test_js_detailed_context_without_word_options() -> None:
    """JS Detailed without requestWordLevelTimestamps is detailed output without word timings."""
    options = overlay({"phraseOutput": {"detailed": {"options": []}, "format": "Detailed"}})
    assert (options.detailed, options.word_timings, options.word_confidence) == (True, False, False)


def test_context_simple_format_overrides_query_detailed() -> None:
    """The context wins over the URL: format Simple switches detailed output back off."""
    url_options = from_query(INTERACTIVE, {"format": "detailed"})
    context = {"phraseOutput": {"format": "Simple"}}
    options = with_context(url_options, context, path_mode=Mode.INTERACTIVE)
    assert options.detailed is False


@pytest.mark.parametrize(
    ("value", "expected"), [("Raw", "raw"), ("raw", "raw"), ("Removed", "removed")]
)
def test_context_profanity(value: str, expected: str) -> None:
    """enrichment.profanity is read whether capitalised (JS SDK) or lower-case (native)."""
    options = overlay({"phraseDetection": {"enrichment": {"profanity": value}}})
    assert options.profanity == expected


def test_context_initial_silence_timeout() -> None:
    """phraseDetection.initialSilenceTimeout sets the initial-silence timeout in ms."""
    assert overlay(NATIVE_SILENCE).initial_silence_ms == 3000


def test_native_interactive_segmentation_on_a_v1_path() -> None:
    """Segmentation under the upper-case INTERACTIVE key applies on the interactive path."""
    assert overlay(segmentation("INTERACTIVE", 700), INTERACTIVE).segmentation_silence_ms == 700


def test_native_conversation_segmentation_on_a_v1_path() -> None:
    """Segmentation under the CONVERSATION key applies on the conversation path."""
    options = overlay(segmentation("CONVERSATION", 900), CONVERSATION)
    assert options.mode is Mode.CONVERSATION
    assert options.segmentation_silence_ms == 900


def test_segmentation_under_lower_case_mode_key() -> None:
    """The JS schema's lower-case mode key is read too."""
    context = {
        "phraseDetection": {
            "conversation": {"segmentation": {"segmentationSilenceTimeoutMs": 1200}}
        }
    }
    assert overlay(context, CONVERSATION).segmentation_silence_ms == 1200


def test_segmentation_of_another_mode_is_ignored() -> None:
    """Segmentation stated for interactive does not apply to a conversation turn."""
    options = overlay(segmentation("INTERACTIVE", 700), CONVERSATION)
    assert options.mode is Mode.CONVERSATION
    assert options.segmentation_silence_ms == 500


@pytest.mark.parametrize(("value", "expected"), [(10, 100), (60_000, 5000)])
def test_context_segmentation_is_clamped(value: int, expected: int) -> None:
    """Context segmentation timeouts are clamped to [100, 5000] like the query's."""
    assert overlay(segmentation("INTERACTIVE", value)).segmentation_silence_ms == expected


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("Interactive", Mode.INTERACTIVE),
        ("CONVERSATION", Mode.CONVERSATION),
        ("Conversation", Mode.CONVERSATION),
        ("Dictation", Mode.DICTATION),
    ],
)
def test_v2_mode_comes_from_phrase_detection(value: str, mode: Mode) -> None:
    """On universal paths phraseDetection.mode picks the mode, in any case."""
    assert overlay({"phraseDetection": {"mode": value}}).mode is mode


def test_v2_conversation_segmentation() -> None:
    """A v2 context naming CONVERSATION reads the segmentation under that key."""
    options = overlay(segmentation("CONVERSATION", 800))
    assert (options.mode, options.segmentation_silence_ms) == (Mode.CONVERSATION, 800)


def test_path_mode_wins_over_context_mode() -> None:
    """On a v1 path the path's mode stands, whatever the context says."""
    assert (
        overlay({"phraseDetection": {"mode": "INTERACTIVE"}}, CONVERSATION).mode
        is Mode.CONVERSATION
    )
    assert (
        overlay({"phraseDetection": {"mode": "Conversation"}}, INTERACTIVE).mode is Mode.INTERACTIVE
    )


def test_path_mode_ignores_an_unknown_context_mode() -> None:
    """An unknown context mode is not even read on a v1 path."""
    assert overlay({"phraseDetection": {"mode": "Karaoke"}}, DICTATION).mode is Mode.DICTATION


def test_custom_models_endpoint() -> None:
    """customModels[0].endpoint selects the custom endpoint on v2 paths."""
    context = {"phraseDetection": {"customModels": [{"language": "en-US", "endpoint": "banking"}]}}
    assert overlay(context).endpoint_id == "banking"


def test_query_cid_wins_over_custom_models() -> None:
    """A cid in the URL is kept when the context also names a custom model."""
    url_options = from_query(INTERACTIVE, {"cid": "travel"})
    context = {"phraseDetection": {"customModels": [{"endpoint": "banking"}]}}
    options = with_context(url_options, context, path_mode=Mode.INTERACTIVE)
    assert options.endpoint_id == "travel"


@pytest.mark.parametrize(
    "custom", [[], [{"endpoint": ""}], [{"language": "en-US"}], ["banking"], "banking"]
)
def test_unusable_custom_models_are_ignored(custom: object) -> None:
    """Empty, endpoint-less or mistyped customModels leave the base model selected."""
    assert overlay({"phraseDetection": {"customModels": custom}}).endpoint_id is None


def test_context_language_overrides_query_language() -> None:
    """phraseDetection.language wins over language= in the URL."""
    url_options = from_query(INTERACTIVE, {"language": "en-US"})
    context = {"phraseDetection": {"language": "en-GB"}}
    assert with_context(url_options, context, path_mode=Mode.INTERACTIVE).language == "en-GB"


def test_mistyped_sections_are_ignored() -> None:
    """Sections that are not objects are treated as absent, not as errors."""
    context = {"phraseDetection": "fast", "phraseOutput": ["Detailed"]}
    assert overlay(context) == RecognitionOptions()


def test_empty_context_body_is_an_empty_object() -> None:
    """A blank speech.context body parses to {}."""
    assert parse_context("") == {}
    assert parse_context("  \r\n") == {}


@pytest.mark.parametrize("body", ["{", "not json", "[1, 2]", '"text"', "null", "42"])
def test_context_that_is_not_a_json_object_is_a_bad_request(body: str) -> None:
    """Invalid JSON or a non-object speech.context closes with 1007."""
    with pytest.raises(UspError) as caught:
        parse_context(body)
    assert caught.value.close_code == CloseCode.INVALID_PAYLOAD


@pytest.mark.parametrize(
    "context",
    [
        {"phraseDetection": {"initialSilenceTimeout": "soon"}},
        {"phraseDetection": {"initialSilenceTimeout": None}},
        {"phraseDetection": {"initialSilenceTimeout": [3000]}},
        {"phraseDetection": {"initialSilenceTimeout": True}},
        {"phraseDetection": {"initialSilenceTimeout": float("inf")}},
        {"phraseDetection": {"initialSilenceTimeout": float("nan")}},
        segmentation("INTERACTIVE", "quick"),
        {"phraseDetection": {"enrichment": {"profanity": "Tagged"}}},
        {"phraseDetection": {"mode": "Karaoke"}},
    ],
)
def test_bad_context_values_are_bad_requests(context: dict[str, Any]) -> None:
    """Bad numbers, unknown profanity or an unknown v2 mode close with 1007."""
    with pytest.raises(UspError) as caught:
        overlay(context)
    assert caught.value.close_code == CloseCode.INVALID_PAYLOAD


def test_huge_json_number_is_a_bad_request() -> None:
    """A JSON number too large for a float (1e400 parses as infinity) closes with 1007."""
    context = parse_context('{"phraseDetection": {"initialSilenceTimeout": 1e400}}')
    with pytest.raises(UspError) as caught:
        with_context(RecognitionOptions(), context, path_mode=None)
    assert caught.value.close_code == CloseCode.INVALID_PAYLOAD


@pytest.mark.parametrize("language", ["en-US", "en-gb", "EN-AU"])
def test_check_language_accepts_english(language: str) -> None:
    """English locales in any case pass the language check."""
    RecognitionOptions(language=language).check_language()


@pytest.mark.parametrize("language", ["de-DE", "fr-FR", ""])
def test_check_language_rejects_other_languages(language: str) -> None:
    """Non-English locales are refused with 1007."""
    with pytest.raises(UspError) as caught:
        RecognitionOptions(language=language).check_language()
    assert caught.value.close_code == CloseCode.INVALID_PAYLOAD
