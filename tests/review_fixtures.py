"""Captures, outcome records and a review app for the workbench and dataset export tests.

`ReviewWorld` puts captures (real WAVs) into a LocalAudioStore and writes the outcome
records they name into a JSONL outcome file, so the file label store knows their ids; its
`app()` mounts the real label and review routes on those stores.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gateway.control.model import hash_key
from gateway.outcomes.preference import Preference
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.server.admin.auth import AdminTokens
from gateway.server.admin.labels import LABEL_STORE, PSEUDONYM_KEY, add_label_routes
from gateway.server.admin.review import (
    AUDIO_STORE,
    PREFERENCE_STORE,
    REVIEW_LEASES,
    add_review_routes,
)
from gateway.stores.audio_store import (
    Capture,
    CapturedResult,
    CaptureReason,
    CaptureSample,
    LocalAudioStore,
)
from gateway.stores.file_label_store import FileLabelStore
from gateway.stores.label_store import labels_path_beside
from gateway.stores.preference_store import (
    PREFERENCES_FILE_NAME,
    FilePreferenceStore,
    PreferenceStore,
)
from gateway.stores.review_leases import LEASES_FILE_NAME, FileReviewLeases, ReviewLeases

EXPERIMENT = "checkout"
REVIEWER_TOKENS = {"rita": "reviewer-token-rita-7c2f", "raj": "reviewer-token-raj-91ab"}
ADMIN_TOKEN = "admin-token-alice-3e5d"
KEY = b"review-test-pseudonym-key-000001"


def wav_bytes(pcm: bytes, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


def tone(seconds: float) -> bytes:
    """A 440 Hz square wave, 16-bit mono 16 kHz PCM (audible, so a player has something)."""
    period = 16000 // 440
    samples = int(16000 * seconds)
    return b"".join(
        (6000 if (i % period) < period // 2 else -6000).to_bytes(2, "little", signed=True)
        for i in range(samples)
    )


def rid(n: int) -> str:
    return f"{n:032x}"


def cid(n: int) -> str:
    return f"{n:032x}".replace("0", "c", 1)


def record(record_id: str, variant: str, role: Role, unit: str, text: str) -> OutcomeRecord:
    return OutcomeRecord(
        record_id=record_id,
        kind=Kind.UTTERANCE,
        experiment=EXPERIMENT,
        phase="1",
        variant=variant,
        backend="westus",
        role=role,
        client="shop-app",
        unit=unit,
        unit_source=UnitSource.QUERY,
        session_id=f"session-{record_id[-6:]}",
        protocol=Protocol.USP,
        utterance_index=0,
        status="Success",
        text=text,
        word_count=len(text.split()),
    )


def review(capture: Capture, *, withdrawn: bool = False, reviewer: str = "rita") -> Preference:
    """`reviewer`'s review of `capture`: A (base) better; undone when `withdrawn`."""
    preference = Preference(
        capture_id=capture.capture_id,
        experiment=capture.experiment,
        unit=capture.unit,
        sample="uniform",
        reviewer=reviewer,
        choice="a",
        variant_a="base",
        variant_b="custom",
        reviewed_at="2026-12-07T11:00:00.000Z",
    )
    return preference.withdraw("2026-12-07T11:05:00.000Z") if withdrawn else preference


@dataclass
class ReviewWorld:
    """An audio store, an outcome file and the review stores in one folder."""

    folder: Path
    captures: list[Capture] = field(default_factory=list)

    @property
    def outcomes(self) -> Path:
        return self.folder / "outcomes.jsonl"

    def audio_store(self) -> LocalAudioStore:
        return LocalAudioStore(self.folder / "audio")

    def label_store(self) -> FileLabelStore:
        return FileLabelStore(self.outcomes, labels_path_beside(self.outcomes), fsync=False)

    def preference_store(self) -> FilePreferenceStore:
        return FilePreferenceStore(self.folder / PREFERENCES_FILE_NAME, fsync=False)

    def leases(self) -> FileReviewLeases:
        return FileReviewLeases(self.folder / LEASES_FILE_NAME)

    async def add(
        self,
        n: int,
        *,
        unit: str | None = None,
        sample: CaptureSample = CaptureSample.UNIFORM,
        reason: CaptureReason = CaptureReason.UNIFORM,
        texts: tuple[str | None, ...] = ("pay my bill", "pay my bills"),
        variants: tuple[str, ...] = ("base", "custom"),
        wav: bytes | None = None,
        captured_at: str | None = None,
    ) -> Capture:
        """A capture numbered n with one result per text (the first the primary's), its
        records written to the outcome file."""
        unit = unit or f"unit-{n:04d}"
        results = [
            CapturedResult(rid(n * 10 + i), variant, text)
            for i, (variant, text) in enumerate(zip(variants, texts, strict=False))
        ]
        audio = wav if wav is not None else wav_bytes(tone(1.0))
        capture = Capture(
            capture_id=cid(n),
            experiment=EXPERIMENT,
            phase=1,
            unit=unit,
            client="shop-app",
            session_id=f"session-{n}",
            utterance_index=0,
            captured_at=captured_at or f"2026-12-07T10:{n // 60:02d}:{n % 60:02d}.000Z",
            reason=reason,
            sample=sample,
            primary=results[0],
            shadows=tuple(results[1:]),
            duration_ms=round((len(audio) - 44) / 32),
            wav_bytes=len(audio),
        )
        await self.audio_store().put(capture, audio)
        with self.outcomes.open("a", encoding="utf-8") as file:
            for i, result in enumerate(results):
                role = Role.PRIMARY if i == 0 else Role.SHADOW
                line = record(result.record_id, result.variant, role, unit, result.text or "")
                file.write(line.to_json() + "\n")
        self.captures.append(capture)
        return capture

    def app(
        self, preferences: PreferenceStore | None = None, leases: ReviewLeases | None = None
    ) -> web.Application:
        """The label and review routes on this world's stores (the review stores in its
        folder unless given)."""
        reviewers = AdminTokens.from_digests(
            {name: hash_key(token) for name, token in REVIEWER_TOKENS.items()},
            "gateway.reviewer_tokens_sha256",
        )
        admins = AdminTokens.from_digests({"alice": hash_key(ADMIN_TOKEN)})
        app = web.Application()
        app[LABEL_STORE] = self.label_store()
        app[PSEUDONYM_KEY] = KEY
        app[AUDIO_STORE] = self.audio_store()
        app[PREFERENCE_STORE] = preferences or self.preference_store()
        app[REVIEW_LEASES] = leases or self.leases()
        add_label_routes(app, admins)
        add_review_routes(app, reviewers, admins)
        return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
