"""JSON bodies of the service's results, shaped like Azure's (protocol.md §3, §7).

Shared by the USP session (`speech.hypothesis`, `speech.phrase`) and the REST handler.
With detailed output an `NBest` list is always present for Success (the JS SDK hangs
without it); `DisplayText` is always present too, which is safe for every client.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from gateway.emulator.options import RecognitionOptions
from gateway.emulator.recognition import Alternative, Final, Partial, Word
from gateway.protocol.usp import RecognitionStatus, status_phrase_body
from gateway.text.normalize import Profanity, display_text, itn_text, masked_itn_text


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def hypothesis_body(partial: Partial, profanity: Profanity) -> str:
    return _dumps(
        {
            "Text": masked_itn_text(partial.words, profanity),
            "Offset": partial.offset,
            "Duration": partial.duration,
        }
    )


def status_body(status: RecognitionStatus, offset: int = 0, duration: int = 0) -> str:
    """A phrase that carries only a status: NoMatch, timeouts, acknowledgements, errors."""
    return status_phrase_body(status, offset, duration)


def phrase_fields(final: Final, options: RecognitionOptions) -> dict[str, Any]:
    """The result fields of one recognised utterance (USP phrase and REST body alike)."""
    if not final.words:
        return {
            "RecognitionStatus": RecognitionStatus.NO_MATCH.value,
            "Offset": final.offset,
            "Duration": final.duration,
            "DisplayText": "",
        }
    profanity = options.profanity
    fields: dict[str, Any] = {
        "Id": uuid.uuid4().hex,
        "RecognitionStatus": RecognitionStatus.SUCCESS.value,
        "Offset": final.offset,
        "Duration": final.duration,
        "Channel": 0,
        "DisplayText": display_text(final.lexical, profanity=profanity),
    }
    if options.detailed:
        # Never an empty NBest: the JS SDK reads NBest[0] and hangs without it.
        alternatives = final.alternatives or (Alternative(final.lexical, final.confidence),)
        fields["NBest"] = [
            _nbest_entry(alt.words, alt.confidence, final.words if i == 0 else (), options)
            for i, alt in enumerate(alternatives)
        ]
    return fields


def phrase_body(final: Final, options: RecognitionOptions) -> str:
    return _dumps(phrase_fields(final, options))


def _nbest_entry(
    words: Sequence[str], confidence: float, timed: Sequence[Word], options: RecognitionOptions
) -> dict[str, Any]:
    profanity = options.profanity
    entry: dict[str, Any] = {
        "Confidence": confidence,
        "Lexical": " ".join(words),
        "ITN": itn_text(words),
        "MaskedITN": masked_itn_text(words, profanity),
        "Display": display_text(words, profanity=profanity),
    }
    if options.word_timings and timed:
        entry["Words"] = [_word(w, options.word_confidence) for w in timed]
    return entry


def _word(word: Word, with_confidence: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"Word": word.text, "Offset": word.offset, "Duration": word.duration}
    if with_confidence:
        item["Confidence"] = word.confidence
    return item


def merge_finals(finals: Sequence[Final]) -> Final | None:
    """One result for a whole REST request: the utterances joined in order."""
    if not finals:
        return None
    recognised = [f for f in finals if f.words]
    if not recognised:
        first, last = finals[0], finals[-1]
        return Final(first.offset, last.offset + last.duration - first.offset, (), 0.0, ())
    first, last = recognised[0], recognised[-1]
    words = tuple(w for f in recognised for w in f.words)
    confidence = round(sum(w.confidence for w in words) / len(words), 4)
    return Final(
        offset=first.offset,
        duration=last.offset + last.duration - first.offset,
        words=words,
        confidence=confidence,
        alternatives=(Alternative(tuple(w.text for w in words), confidence),),
    )
