"""The capture writer: the one owner of capture I/O, off the relay's hot path.

It decides which sessions get a `SessionCapture` (a consenting client, an experiment with a
`capture` policy that considers the session), takes the utterances they select through a
bounded queue (`offer` never waits: a full queue drops and counts), and stores each as a WAV
with its sidecar in the audio store from one task. A queued capture's PCM counts against the
same process budget as the sessions' buffers until it is stored, so
`gateway.audio.max_buffered_bytes` bounds all capture audio the process holds. A second task
deletes captures past `gateway.audio.retention_days` every hour. A store that is full,
unreachable or refuses a deleted unit drops the capture and counts it
(`speech_gateway_captures_dropped_total`); nothing of it reaches a session. Logs name
captures by id, never carry audio or text.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Final

from aiohttp import web

from gateway.config.capture import AudioSettings
from gateway.errors import AudioStoreFull, StoreUnavailable, UnitDeleted
from gateway.logging import get_logger
from gateway.outcomes.record import now_iso
from gateway.protocol.wav import wave_header
from gateway.server.metrics import GatewayMetrics
from gateway.session.capture import (
    CaptureBudget,
    CapturedUtterance,
    CaptureIdentity,
    CapturePolicy,
    CaptureQuota,
    DropReason,
    SessionCapture,
)
from gateway.session.taps import SessionFacts
from gateway.stores.audio_store import AudioStore, Capture

log = get_logger(__name__)

RETENTION_INTERVAL_S: Final = 3600.0
CLOSE_TIMEOUT_S: Final = 5.0


class CaptureWriter:
    """Capture for the app's sessions: per-session captures in, stored WAVs out."""

    def __init__(
        self,
        store: AudioStore,
        policies: dict[str, CapturePolicy],
        consenting: frozenset[str],
        settings: AudioSettings,
        metrics: GatewayMetrics,
        *,
        quota: CaptureQuota | None = None,
    ) -> None:
        self.store = store
        self._policies = policies
        self._consenting = consenting
        self._retention = timedelta(days=settings.retention_days)
        self._metrics = metrics
        self._quota = quota or CaptureQuota()
        self.budget = CaptureBudget(settings.max_buffered_bytes)
        self._queue: asyncio.Queue[CapturedUtterance] = asyncio.Queue(settings.queue_captures)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.stored = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return bool(self._policies) and bool(self._consenting)

    def for_session(
        self, facts: SessionFacts, variant: str, shadows: tuple[str, ...]
    ) -> SessionCapture | None:
        """The session's capture, or None: no consent, no policy, not considered, closing."""
        experiment = facts.experiment
        if experiment is None or self._closing or facts.client not in self._consenting:
            return None
        policy = self._policies.get(experiment)
        if policy is None or not policy.considers(experiment, variant, facts.session_id):
            return None
        identity = CaptureIdentity(
            experiment, facts.phase or "", facts.unit, facts.client, facts.session_id
        )

        def drop(reason: DropReason) -> None:
            self._drop(experiment, reason)

        return SessionCapture(
            policy,
            identity,
            shadows,
            quota=self._quota,
            budget=self.budget,
            emit=self.offer,
            drop=drop,
        )

    def offer(self, utterance: CapturedUtterance) -> None:
        """Queue a selected utterance for the store; never waits (a full queue or budget:
        dropped, counted)."""
        if self._closing or self._queue.full():
            self._refuse(utterance, DropReason.QUEUE_FULL)
            return
        if not self.budget.take(len(utterance.pcm)):
            self._refuse(utterance, DropReason.TOTAL_BYTES)
            return
        self._queue.put_nowait(utterance)
        self._metrics.capture_buffered_bytes.set(self.budget.used)

    def _dequeued(self, utterance: CapturedUtterance) -> None:
        self.budget.give_back(len(utterance.pcm))
        self._metrics.capture_buffered_bytes.set(self.budget.used)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="capture-writer"),
            asyncio.create_task(self._retention_loop(), name="capture-retention"),
        ]

    async def close(self) -> None:
        """Stop taking captures, store what is queued (for up to a few seconds), stop."""
        self._closing = True
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._queue.join()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        while not self._queue.empty():
            utterance = self._queue.get_nowait()
            self._dequeued(utterance)
            self._refuse(utterance, DropReason.STORE_UNAVAILABLE)
        await self.store.close()

    async def write(self, utterance: CapturedUtterance) -> bool:
        """Store one utterance; False (and counted) when the store refused or failed."""
        wav = wave_header(utterance.fmt, len(utterance.pcm)) + utterance.pcm
        capture = Capture(
            capture_id=uuid.uuid4().hex,
            experiment=utterance.experiment,
            phase=utterance.phase,
            unit=utterance.unit,
            client=utterance.client,
            session_id=utterance.session_id,
            utterance_index=utterance.utterance_index,
            captured_at=now_iso(),
            reason=utterance.reason,
            sample=utterance.sample,
            primary=utterance.primary,
            shadows=utterance.shadows,
            duration_ms=utterance.duration_ms,
            sample_rate=utterance.fmt.sample_rate,
            wav_bytes=len(wav),
        )
        try:
            await self.store.put(capture, wav)
        except AudioStoreFull:
            self._refuse(utterance, DropReason.STORE_FULL)
            return False
        except UnitDeleted:
            self._refuse(utterance, DropReason.DELETED_UNIT)
            return False
        except StoreUnavailable as exc:
            log.warning("capture_store_unavailable", error=exc.reason)
            self._refuse(utterance, DropReason.STORE_UNAVAILABLE)
            return False
        self.stored += 1
        self._metrics.capture_stored(capture.experiment, capture.reason.value)
        log.info(
            "capture_stored",
            capture_id=capture.capture_id,
            experiment=capture.experiment,
            reason=capture.reason.value,
            bytes=capture.wav_bytes,
        )
        return True

    async def expire(self) -> int:
        """Delete the captures past retention now; how many went."""
        removed = await self.store.expire(datetime.now(UTC) - self._retention)
        if removed:
            log.info("captures_expired", removed=removed)
        return removed

    def _refuse(self, utterance: CapturedUtterance, reason: DropReason) -> None:
        """Drop a selected utterance (counted) and give its place in the day's cap back: the
        cap counts captures stored, not attempts (an unreachable store does not use it up)."""
        self._quota.give_back(utterance.experiment, utterance.quota_day)
        self._drop(utterance.experiment, reason)

    def _drop(self, experiment: str, reason: DropReason) -> None:
        self.dropped += 1
        self._metrics.capture_dropped(experiment, reason.value)
        self._metrics.capture_buffered_bytes.set(self.budget.used)

    async def _write_loop(self) -> None:
        while True:
            utterance = await self._queue.get()
            try:
                await self.write(utterance)
            except Exception as exc:  # one bad capture must not stop the writer
                log.error("capture_write_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                self._refuse(utterance, DropReason.STORE_UNAVAILABLE)
            finally:
                self._dequeued(utterance)
                self._queue.task_done()

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.expire()
            except StoreUnavailable as exc:
                log.warning("capture_retention_failed", error=exc.reason)
            except Exception as exc:  # one failed round must not end retention for good
                log.error("capture_retention_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(RETENTION_INTERVAL_S)


CAPTURE_WRITER: Final = web.AppKey("capture_writer", CaptureWriter)
