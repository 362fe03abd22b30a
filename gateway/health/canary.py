"""Canary sets and how one round of canary answers is scored.

A canary set is a small labelled set in the replay format (a folder with `manifest.jsonl`,
one `{"id", "audio", "text"}` object a line, `audio` relative to the folder) that the gateway
sends to every variant of an experiment on a schedule (`gateway.server.health.canary_runner`).
Its answers are scored exactly as the analysis scores labelled outcomes
(`gateway.stats.wer.align`: the documented normalisation, then a minimum edit distance), so a
canary WER and an experiment's labelled WER mean the same thing. No I/O beyond reading the
set's own files; no network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway.errors import ConfigError, UspError
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.protocol.usp import RecognitionStatus
from gateway.protocol.wav import parse_wave_header, require_pcm16_mono_16k
from gateway.stats.wer import align
from gateway.text.normalize import normalize_words

MANIFEST: Final = "manifest.jsonl"
# The `client` of every canary record; reserved: no configured client may take the name.
CANARY_CLIENT: Final = "_canary"
# A canary item is one utterance: 60 s of 16 kHz 16-bit mono is under 2 MB. Larger files
# are a mistake (a whole recording), and would be held in memory for the process's life.
MAX_AUDIO_BYTES: Final = 16 * 1024 * 1024
MAX_ITEMS: Final = 1000
_UNKNOWN_SIZES: Final = (0, 0xFFFFFFFF)  # streaming writers' data sizes


@dataclass(frozen=True, slots=True)
class _Entry:
    id: str
    audio: Path
    text: str


@dataclass(frozen=True, slots=True)
class CanaryItem:
    id: str
    pcm: bytes  # 16 kHz 16-bit mono PCM (the WAV's data chunk)
    text: str  # reference transcript


@dataclass(frozen=True, slots=True)
class CanarySet:
    items: tuple[CanaryItem, ...]

    @classmethod
    def load(cls, folder: Path) -> CanarySet:
        """Read the manifest and every WAV; a ConfigError names the file (and line)."""
        items = tuple(
            CanaryItem(entry.id, _read_pcm(entry.audio), entry.text) for entry in _entries(folder)
        )
        return cls(items)

    def references(self) -> dict[str, str]:
        """Item id -> reference text."""
        return {item.id: item.text for item in self.items}


def load_references(folder: Path) -> dict[str, str]:
    """Item id -> reference text, from the manifest alone: the audio files must exist but
    are not read (a configuration check that stays fast)."""
    return {entry.id: entry.text for entry in _entries(folder)}


def _entries(folder: Path) -> list[_Entry]:
    manifest = folder / MANIFEST
    if not folder.is_dir():
        raise ConfigError(str(folder), "is not a folder (a canary set needs manifest.jsonl)")
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(str(manifest), f"cannot read manifest: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(manifest), f"manifest is not UTF-8: {exc.reason}") from exc
    entries: list[_Entry] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        entry = _entry(line, folder, where)
        if entry.id in seen:
            raise ConfigError(where, f"duplicate id {entry.id!r}")
        seen.add(entry.id)
        entries.append(entry)
        if len(entries) > MAX_ITEMS:
            raise ConfigError(str(manifest), f"more than {MAX_ITEMS} items; a canary set is small")
    if not entries:
        raise ConfigError(str(manifest), "the manifest lists no utterances")
    return entries


def _entry(line: str, folder: Path, where: str) -> _Entry:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ConfigError(where, f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(where, "needs a JSON object with id, audio and text")
    values: dict[str, str] = {}
    for name in ("id", "audio", "text"):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(where, f"{name!r} must be a non-empty string")
        values[name] = value
    if not values["id"].isprintable() or len(values["id"]) > 128:
        raise ConfigError(where, "'id' must be printable and at most 128 characters")
    audio = folder / values["audio"]
    if not audio.is_file():
        raise ConfigError(where, f"audio file {audio} does not exist")
    return _Entry(values["id"], audio, values["text"])


def _read_pcm(path: Path) -> bytes:
    """The PCM of a 16 kHz 16-bit mono WAV file: its data chunk."""
    try:
        size = path.stat().st_size
        if size > MAX_AUDIO_BYTES:
            raise ConfigError(str(path), f"{size} bytes; a canary item holds at most 16 MiB")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read audio: {exc.strerror}") from exc
    try:
        fmt, offset = parse_wave_header(data)
        require_pcm16_mono_16k(fmt)
    except UspError as exc:
        raise ConfigError(str(path), f"not a usable WAV file: {exc}") from exc
    # The data chunk's own size, when the writer knew it: chunks after it are not audio.
    announced = int.from_bytes(data[offset - 4 : offset], "little")
    end = len(data) if announced in _UNKNOWN_SIZES else min(len(data), offset + announced)
    pcm = data[offset:end]
    pcm = pcm[: len(pcm) - len(pcm) % 2]  # whole 16-bit samples
    if not pcm:
        raise ConfigError(str(path), "the WAV file holds no audio")
    return pcm


@dataclass(frozen=True, slots=True)
class CanaryAnswer:
    """One canary utterance of one round, from one variant."""

    item_id: str
    text: str | None  # the recognised text; None when it failed
    errors: int  # S + D + I against the reference, normalised as the analysis does; 0 if failed
    words: int  # reference words (normalised)
    latency_ms: float | None  # end of audio -> final phrase
    error_code: str | None  # e.g. "upstream_unavailable", "timeout"; None when answered


def scored_answer(
    item_id: str, reference: str, text: str | None, latency_ms: float | None = None
) -> CanaryAnswer:
    """The answer of a recognised `text` (None: nothing recognised, which counts as every
    reference word deleted; a failure is `failed` instead)."""
    counts = align(reference, text or "")
    return CanaryAnswer(
        item_id=item_id,
        text=text or "",
        errors=counts.errors,
        words=counts.reference_words,
        latency_ms=latency_ms,
        error_code=None,
    )


def failed_answer(item_id: str, reference: str, error_code: str) -> CanaryAnswer:
    """The answer of an utterance that got no answer (unreachable, refused, timed out)."""
    return CanaryAnswer(
        item_id=item_id,
        text=None,
        errors=0,
        words=align(reference, "").reference_words,
        latency_ms=None,
        error_code=error_code,
    )


@dataclass(frozen=True, slots=True)
class RoundResult:
    """One round of one variant: every canary item's answer."""

    experiment: str
    phase: str
    variant: str
    backend: str
    endpoint_id: str | None
    at: str  # ISO-8601 UTC of the round's start
    answers: tuple[CanaryAnswer, ...]

    @property
    def answered(self) -> tuple[CanaryAnswer, ...]:
        return tuple(answer for answer in self.answers if answer.text is not None)

    @property
    def wer(self) -> float | None:
        """Corpus WER over the answered items (summed errors over summed reference words),
        as the analysis computes it; None when nothing was answered."""
        answered = self.answered
        if not answered:
            return None
        words = sum(answer.words for answer in answered)
        errors = sum(answer.errors for answer in answered)
        # As WerCounts.wer: without reference words, every inserted word is a full error.
        return errors / words if words else float(errors)

    @property
    def failed(self) -> bool:
        """No item was answered: the backend is down for canaries (or refuses them)."""
        return not self.answered

    def latency_ms(self) -> float | None:
        """The median latency of the answered items; None without any."""
        values = sorted(a.latency_ms for a in self.answered if a.latency_ms is not None)
        if not values:
            return None
        middle = len(values) // 2
        if len(values) % 2:
            return values[middle]
        return (values[middle - 1] + values[middle]) / 2


@dataclass(frozen=True, slots=True)
class CanaryTarget:
    """Where one round's utterances of one variant go, and what their records say."""

    experiment: str
    phase: str
    variant: str
    backend: str
    mode: str
    locale: str


def canary_record(
    target: CanaryTarget,
    answer: CanaryAnswer,
    *,
    session_id: str,
    status: str,
    turn_id: str | None = None,
    error_detail: str | None = None,
    audio_duration_ms: float | None = None,
    first_hypothesis_ms: float | None = None,
    total_ms: float | None = None,
    confidence: float | None = None,
) -> OutcomeRecord:
    """The outcome record of one canary utterance: role and unit source `canary`, the item's
    id as the unit (it is no user), the text kept (it is no user's speech). A failed answer
    makes a `session_failure` record."""
    answered = answer.text is not None
    return OutcomeRecord(
        kind=Kind.UTTERANCE if answered else Kind.SESSION_FAILURE,
        experiment=target.experiment,
        phase=target.phase,
        variant=target.variant,
        backend=target.backend,
        role=Role.CANARY,
        client=CANARY_CLIENT,
        unit=answer.item_id,
        unit_source=UnitSource.CANARY,
        session_id=session_id,
        protocol=Protocol.USP,
        mode=target.mode,
        locale=target.locale,
        turn_id=turn_id if answered else None,
        utterance_index=0 if answered else None,
        status=status if answered else (status or RecognitionStatus.ERROR.value),
        error_code=answer.error_code,
        error_detail=error_detail,
        audio_offset_ms=0.0 if answered and audio_duration_ms is not None else None,
        audio_duration_ms=audio_duration_ms if answered else None,
        first_hypothesis_ms=first_hypothesis_ms if answered else None,
        final_latency_ms=answer.latency_ms,
        total_ms=total_ms if answered else None,
        text=answer.text or None,
        confidence=confidence if answered else None,
        word_count=len(normalize_words(answer.text)) if answer.text is not None else None,
    )
