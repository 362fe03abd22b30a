"""Tests for gateway.emulator.phrases: Azure-shaped speech.phrase, hypothesis and REST bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.emulator.options import RecognitionOptions
from gateway.emulator.phrases import (
    hypothesis_body,
    merge_finals,
    phrase_body,
    phrase_fields,
    status_body,
)
from gateway.emulator.recognition import Alternative, Final, Partial, Word, ticks
from gateway.protocol.usp import RecognitionStatus

SIMPLE = RecognitionOptions()
DETAILED = RecognitionOptions(detailed=True)
DETAILED_WORDS = RecognitionOptions(detailed=True, word_timings=True, word_confidence=True)


def final(words: tuple[str, ...], offset: int = ticks(0.5), confidence: float = 0.8) -> Final:
    step = ticks(0.25)
    timed = tuple(Word(w, offset + i * step, step, confidence) for i, w in enumerate(words))
    return Final(offset, step * len(words), timed, confidence, (Alternative(words, confidence),))


def body(result: Final, options: RecognitionOptions) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(phrase_body(result, options))
    return parsed


MONEY = ("i", "owe", "two", "hundred", "fifty", "dollars")
SWEARING = ("damn", "that", "was", "fast")


def test_simple_body() -> None:
    """A simple Success phrase carries Id, status, offsets, Channel and DisplayText, no NBest."""
    result = body(final(MONEY), SIMPLE)
    assert result["RecognitionStatus"] == "Success"
    assert (result["Offset"], result["Duration"]) == (ticks(0.5), 6 * ticks(0.25))
    assert result["DisplayText"] == "I owe $250."
    assert result["Channel"] == 0
    assert len(result["Id"]) == 32
    int(result["Id"], 16)
    assert "NBest" not in result


def test_each_phrase_gets_a_new_id() -> None:
    """Two phrases never share an Id."""
    assert body(final(MONEY), SIMPLE)["Id"] != body(final(MONEY), SIMPLE)["Id"]


def test_detailed_body_has_nbest_without_words_by_default() -> None:
    """Detailed output adds NBest with Lexical/ITN/MaskedITN/Display; Words need WordTimings."""
    result = body(final(MONEY), DETAILED)
    assert result["DisplayText"] == "I owe $250."
    (best,) = result["NBest"]
    assert best == {
        "Confidence": 0.8,
        "Lexical": "i owe two hundred fifty dollars",
        "ITN": "i owe $250",
        "MaskedITN": "i owe $250",
        "Display": "I owe $250.",
    }


def test_detailed_body_with_word_timings_and_confidence() -> None:
    """WordTimings adds Words with offsets in ticks; WordConfidence adds their Confidence."""
    result = body(final(("hello", "world")), DETAILED_WORDS)
    assert result["NBest"][0]["Words"] == [
        {"Word": "hello", "Offset": ticks(0.5), "Duration": ticks(0.25), "Confidence": 0.8},
        {"Word": "world", "Offset": ticks(0.75), "Duration": ticks(0.25), "Confidence": 0.8},
    ]
    timings_only = RecognitionOptions(detailed=True, word_timings=True)
    words = body(final(("hello", "world")), timings_only)["NBest"][0]["Words"]
    assert all("Confidence" not in w for w in words)


def test_only_the_best_alternative_has_words() -> None:
    """Later n-best entries carry their own text and confidence but no word timings."""
    best = final(("recognize", "speech"))
    alternatives = (*best.alternatives, Alternative(("wreck", "a", "nice", "beach"), 0.4))
    result = body(Final(best.offset, best.duration, best.words, 0.8, alternatives), DETAILED_WORDS)
    assert [entry["Lexical"] for entry in result["NBest"]] == [
        "recognize speech",
        "wreck a nice beach",
    ]
    assert [entry["Confidence"] for entry in result["NBest"]] == [0.8, 0.4]
    assert "Words" in result["NBest"][0]
    assert "Words" not in result["NBest"][1]


def test_detailed_success_always_has_nbest() -> None:
    """A detailed Success without n-best entries still gets one (the JS SDK reads NBest[0])."""
    best = final(("hello", "world"))
    bare = Final(best.offset, best.duration, best.words, best.confidence, ())
    (entry,) = body(bare, DETAILED_WORDS)["NBest"]
    assert entry["Display"] == "Hello world."
    assert entry["Confidence"] == 0.8
    assert [w["Word"] for w in entry["Words"]] == ["hello", "world"]


@pytest.mark.parametrize("options", [SIMPLE, DETAILED_WORDS])
def test_no_words_is_a_no_match(options: RecognitionOptions) -> None:
    """A Final without words becomes a NoMatch phrase with empty DisplayText and no NBest."""
    silent = Final(ticks(1.0), ticks(2.0), (), 0.0, ())
    assert body(silent, options) == {
        "RecognitionStatus": "NoMatch",
        "Offset": ticks(1.0),
        "Duration": ticks(2.0),
        "DisplayText": "",
    }


@pytest.mark.parametrize(
    ("profanity", "display", "masked_itn"),
    [
        ("masked", "**** that was fast.", "**** that was fast"),
        ("removed", "That was fast.", "that was fast"),
        ("raw", "Damn that was fast.", "damn that was fast"),
    ],
)
def test_profanity_in_display_and_masked_itn(profanity: Any, display: str, masked_itn: str) -> None:
    """Profanity is masked, removed or kept in Display/MaskedITN; Lexical and ITN keep it."""
    options = RecognitionOptions(detailed=True, profanity=profanity)
    result = body(final(SWEARING), options)
    (best,) = result["NBest"]
    assert result["DisplayText"] == display
    assert best["Display"] == display
    assert best["MaskedITN"] == masked_itn
    assert best["Lexical"] == "damn that was fast"
    assert best["ITN"] == "damn that was fast"


def test_hypothesis_body_masks_profanity() -> None:
    """speech.hypothesis Text is the masked ITN form with the partial's offsets."""
    partial = Partial(("damn", "two", "dollars"), ticks(0.5), ticks(1.0))
    assert json.loads(hypothesis_body(partial, "masked")) == {
        "Text": "**** $2",
        "Offset": ticks(0.5),
        "Duration": ticks(1.0),
    }
    assert json.loads(hypothesis_body(partial, "raw"))["Text"] == "damn $2"


def test_status_body() -> None:
    """A status-only phrase has just RecognitionStatus, Offset and Duration."""
    text = status_body(RecognitionStatus.END_OF_DICTATION, 10, 20)
    assert json.loads(text) == {"RecognitionStatus": "EndOfDictation", "Offset": 10, "Duration": 20}
    assert json.loads(status_body(RecognitionStatus.ERROR)) == {
        "RecognitionStatus": "Error",
        "Offset": 0,
        "Duration": 0,
    }


def test_bodies_are_compact_utf8_json() -> None:
    """Bodies use compact separators and keep non-ASCII text unescaped."""
    text = phrase_body(final(("café",)), SIMPLE)
    assert ", " not in text
    assert ": " not in text
    assert "Café." in text


def test_phrase_fields_match_phrase_body() -> None:
    """phrase_fields is the dict that phrase_body serialises (ids aside)."""
    result = final(MONEY)
    fields = phrase_fields(result, DETAILED)
    parsed = body(result, DETAILED)
    fields.pop("Id")
    parsed.pop("Id")
    assert fields == parsed


def test_merge_finals_of_nothing_is_none() -> None:
    """No utterances at all merge to None."""
    assert merge_finals([]) is None


def test_merge_finals_all_no_match_spans_every_utterance() -> None:
    """Only NoMatch finals merge to one NoMatch spanning from the first to the last."""
    merged = merge_finals(
        [Final(ticks(1.0), ticks(0.5), (), 0.0, ()), Final(ticks(3.0), ticks(1.0), (), 0.0, ())]
    )
    assert merged == Final(ticks(1.0), ticks(3.0), (), 0.0, ())
    assert body(merged, SIMPLE)["RecognitionStatus"] == "NoMatch"


def test_merge_finals_mixed_joins_recognised_utterances() -> None:
    """NoMatch finals are skipped; recognised words are joined in order with averaged confidence."""
    first = final(("hello",), offset=ticks(1.0), confidence=0.9)
    silence = Final(ticks(2.0), ticks(1.0), (), 0.0, ())
    second = final(("big", "world"), offset=ticks(4.0), confidence=0.6)
    merged = merge_finals([silence, first, Final(ticks(3.0), ticks(0.5), (), 0.0, ()), second])
    assert merged is not None
    assert merged.lexical == ("hello", "big", "world")
    assert merged.offset == ticks(1.0)
    assert merged.duration == ticks(4.0) + 2 * ticks(0.25) - ticks(1.0)
    assert merged.confidence == 0.7
    assert merged.alternatives == (Alternative(("hello", "big", "world"), 0.7),)
    assert body(merged, SIMPLE)["DisplayText"] == "Hello big world."


def test_merge_single_final_keeps_its_span() -> None:
    """One recognised final merges to the same words, offset and duration."""
    only = final(MONEY)
    merged = merge_finals([only])
    assert merged is not None
    assert (merged.offset, merged.duration, merged.words) == (
        only.offset,
        only.duration,
        only.words,
    )
