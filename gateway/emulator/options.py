"""Recognition options of a turn, read from the URL and from `speech.context`.

The native SDK puts options in the query string on v1 paths and only in `speech.context`
on the universal v2 paths (protocol.md §1.3, §2.3), so both are read; the context wins
where both say something, as it is the newer, per-turn statement.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, cast, get_args

from gateway.errors import CloseCode, UspError
from gateway.protocol import paths
from gateway.text.normalize import Profanity


class Mode(StrEnum):
    INTERACTIVE = "interactive"
    CONVERSATION = "conversation"
    DICTATION = "dictation"

    @property
    def continuous(self) -> bool:
        return self is not Mode.INTERACTIVE


# Interactive turns give up on leading silence after this long (the service's default).
DEFAULT_INITIAL_SILENCE_MS = 5000
DEFAULT_SEGMENTATION_SILENCE_MS = 500
SUPPORTED_LANGUAGE_PREFIX = "en"
# Bad options are bad requests: close 1007, which the SDKs report as BadRequest.
BAD_REQUEST = CloseCode.INVALID_PAYLOAD


@dataclass(frozen=True, slots=True)
class RecognitionOptions:
    mode: Mode = Mode.INTERACTIVE
    language: str = "en-US"
    detailed: bool = False
    word_timings: bool = False
    word_confidence: bool = False
    profanity: Profanity = "masked"
    # None: the mode's default (interactive: 5 s; continuous: no timeout phrases).
    initial_silence_ms: int | None = None
    segmentation_silence_ms: int = DEFAULT_SEGMENTATION_SILENCE_MS
    endpoint_id: str | None = None

    @property
    def effective_initial_silence_ms(self) -> int | None:
        if self.initial_silence_ms is not None:
            return self.initial_silence_ms
        return None if self.mode.continuous else DEFAULT_INITIAL_SILENCE_MS

    def check_language(self) -> None:
        if not self.language.lower().startswith(SUPPORTED_LANGUAGE_PREFIX):
            raise UspError(f"unsupported language {self.language!r}", close_code=BAD_REQUEST)


def mode_from_path(path: str) -> Mode | None:
    """The recognition mode a v1 path names; None for the universal paths."""
    mode = paths.mode_from_path(path)
    return Mode(mode) if mode is not None else None


def _truthy(value: str) -> bool:
    return value.lower() in ("true", "1", "yes")


def _int_option(name: str, value: Any, low: int, high: int) -> int:
    # int() would take true as 1; JSON numbers such as 1e400 parse as infinity (OverflowError).
    try:
        if isinstance(value, bool):
            raise TypeError(name)
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise UspError(f"{name} must be an integer", close_code=BAD_REQUEST) from None
    return max(low, min(high, number))


def _profanity(name: str, value: str) -> Profanity:
    lowered = value.lower()
    if lowered not in get_args(Profanity):
        raise UspError(f"{name} must be masked, removed or raw", close_code=BAD_REQUEST)
    return cast(Profanity, lowered)


def from_query(path: str, query: Mapping[str, str]) -> RecognitionOptions:
    """Options from the connection URL (v1 paths carry them; v2 only `cid`)."""
    options = RecognitionOptions(mode=mode_from_path(path) or Mode.INTERACTIVE)
    if "language" in query:
        options = replace(options, language=query["language"])
    if "format" in query:
        options = replace(options, detailed=query["format"].lower() == "detailed")
    if _truthy(query.get("wordLevelTimestamps", "")):
        options = replace(options, word_timings=True)
    if _truthy(query.get("wordLevelConfidence", "")):
        options = replace(options, word_confidence=True)
    if "profanity" in query:
        options = replace(options, profanity=_profanity("profanity", query["profanity"]))
    if "initialSilenceTimeoutMs" in query:
        ms = _int_option("initialSilenceTimeoutMs", query["initialSilenceTimeoutMs"], 0, 600_000)
        options = replace(options, initial_silence_ms=ms)
    if "segmentationSilenceTimeoutMs" in query:
        ms = _int_option(
            "segmentationSilenceTimeoutMs", query["segmentationSilenceTimeoutMs"], 100, 5000
        )
        options = replace(options, segmentation_silence_ms=ms)
    if query.get("cid"):
        options = replace(options, endpoint_id=query["cid"])
    return options


def parse_context(body: str) -> dict[str, Any]:
    try:
        context = json.loads(body) if body.strip() else {}
    except json.JSONDecodeError as exc:
        raise UspError(f"speech.context is not valid JSON: {exc.msg}", BAD_REQUEST) from None
    except (ValueError, RecursionError):  # a 5000-digit number, or nesting 100k deep
        raise UspError("speech.context is not acceptable JSON", BAD_REQUEST) from None
    if not isinstance(context, dict):
        raise UspError("speech.context must be a JSON object", BAD_REQUEST)
    return context


def with_context(
    options: RecognitionOptions, context: Mapping[str, Any], *, path_mode: Mode | None
) -> RecognitionOptions:
    """Overlay what a `speech.context` body says on the URL's options."""
    detection = _section(context, "phraseDetection")
    output = _section(context, "phraseOutput")
    if path_mode is None and isinstance(detection.get("mode"), str):
        try:
            options = replace(options, mode=Mode(detection["mode"].lower()))
        except ValueError:
            reason = f"unknown phraseDetection.mode {detection['mode']!r}"
            raise UspError(reason, BAD_REQUEST) from None
    if isinstance(detection.get("language"), str):
        options = replace(options, language=detection["language"])
    if "initialSilenceTimeout" in detection:
        ms = _int_option("initialSilenceTimeout", detection["initialSilenceTimeout"], 0, 600_000)
        options = replace(options, initial_silence_ms=ms)
    segmentation = _section(_section(detection, options.mode.value.upper()), "segmentation")
    segmentation = segmentation or _section(_section(detection, options.mode.value), "segmentation")
    if "segmentationSilenceTimeoutMs" in segmentation:
        ms = _int_option(
            "segmentationSilenceTimeoutMs", segmentation["segmentationSilenceTimeoutMs"], 100, 5000
        )
        options = replace(options, segmentation_silence_ms=ms)
    profanity = _section(detection, "enrichment").get("profanity")
    if isinstance(profanity, str):
        options = replace(options, profanity=_profanity("profanity", profanity))
    if isinstance(output.get("format"), str):
        options = replace(options, detailed=output["format"].lower() == "detailed")
    detail_options = _section(output, "detailed").get("options")
    if isinstance(detail_options, list):
        if "WordTimings" in detail_options:
            options = replace(options, word_timings=True)
        if "WordConfidence" in detail_options:
            options = replace(options, word_confidence=True)
    custom = detection.get("customModels")
    if options.endpoint_id is None and isinstance(custom, list) and custom:
        first = custom[0]
        if isinstance(first, dict) and isinstance(first.get("endpoint"), str) and first["endpoint"]:
            options = replace(options, endpoint_id=first["endpoint"])
    return options


def _section(parent: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = parent.get(name)
    return value if isinstance(value, dict) else {}
