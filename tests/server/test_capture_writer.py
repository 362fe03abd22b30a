"""Tests for gateway.server.capture_writer: the bounded queue to the audio store, the drops
it counts, retention, and which sessions get a capture at all."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config.capture import AudioSettings
from gateway.errors import StoreUnavailable
from gateway.protocol.wav import PCM_16K_MONO
from gateway.server.capture_writer import CaptureWriter
from gateway.server.metrics import GatewayMetrics
from gateway.session.capture import (
    CapturedResult,
    CapturedUtterance,
    CapturePolicy,
    CaptureQuota,
    CaptureReason,
    CaptureSample,
)
from gateway.session.taps import SessionFacts
from gateway.stores.audio_store import Capture, LocalAudioStore

EVERYTHING = {"exp": CapturePolicy(share=1.0)}


def utterance(
    unit: str = "u1", pcm: bytes | None = None, quota_day: date | None = None
) -> CapturedUtterance:
    return CapturedUtterance(
        experiment="exp",
        phase="p-1",
        unit=unit,
        client="app",
        session_id="s" * 32,
        utterance_index=0,
        reason=CaptureReason.NO_MATCH,
        sample=CaptureSample.PRIORITY,
        primary=CapturedResult("a" * 32, "base", None, None),
        shadows=(),
        fmt=PCM_16K_MONO,
        pcm=os.urandom(3200) if pcm is None else pcm,
        quota_day=quota_day,
    )


def facts(client: str = "app", experiment: str | None = "exp") -> SessionFacts:
    return SessionFacts(
        experiment=experiment,
        phase="p-1",
        client=client,
        unit="u" * 32,
        unit_source="query",
        session_id="s" * 32,
        protocol="usp",
        mode="conversation",
        locale="en-us",
        forced=False,
        text_privacy="text",
        privacy_key=b"k" * 32,
    )


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class FailingStore(LocalAudioStore):
    """A local store whose every put fails as an unreachable service would."""

    async def put(self, capture: Capture, wav: bytes) -> None:
        raise StoreUnavailable("BlobAudioStore.put: ServiceRequestError: connection refused")


async def test_a_stored_capture_is_the_wav_of_its_pcm(tmp_path: Path) -> None:
    """The writer stores the PCM behind a canonical header and counts it by reason."""
    metrics = GatewayMetrics()
    store = LocalAudioStore(tmp_path)
    writer = CaptureWriter(store, EVERYTHING, frozenset({"app"}), AudioSettings(), metrics)
    await writer.start()
    pcm = os.urandom(6400)
    writer.offer(utterance(pcm=pcm))
    await writer.close()
    (capture,) = await LocalAudioStore(tmp_path).captures("exp")
    wav = await LocalAudioStore(tmp_path).wav(capture.capture_id)
    assert wav[44:] == pcm
    assert (capture.duration_ms, capture.wav_bytes, capture.reason) == (200, 6444, "no_match")
    labels = {"experiment": "exp", "reason": "no_match"}
    assert sample(metrics, "speech_gateway_captures_stored_total", **labels) == 1


async def test_a_full_queue_drops_and_counts_without_waiting(tmp_path: Path) -> None:
    """With the writer not draining, offers beyond the queue are dropped at once."""
    metrics = GatewayMetrics()
    settings = AudioSettings(queue_captures=2)
    writer = CaptureWriter(
        LocalAudioStore(tmp_path), EVERYTHING, frozenset({"app"}), settings, metrics
    )
    for _ in range(5):
        writer.offer(utterance())  # not started: nothing takes from the queue
    labels = {"experiment": "exp", "cause": "queue_full"}
    assert sample(metrics, "speech_gateway_captures_dropped_total", **labels) == 3
    await writer.start()
    await writer.close()
    assert len(await LocalAudioStore(tmp_path).captures("exp")) == 2


async def test_queued_captures_count_against_the_process_budget(tmp_path: Path) -> None:
    """A capture waiting for the store holds its PCM in the process budget until it is
    stored; one that would exceed the budget is dropped as `total_bytes`."""
    metrics = GatewayMetrics()
    settings = AudioSettings(max_buffered_bytes=8000)
    writer = CaptureWriter(
        LocalAudioStore(tmp_path), EVERYTHING, frozenset({"app"}), settings, metrics
    )
    writer.offer(utterance(pcm=os.urandom(3200)))
    writer.offer(utterance(pcm=os.urandom(3200)))
    writer.offer(utterance(pcm=os.urandom(3200)))  # 9,600 bytes would exceed 8,000
    assert writer.budget.used == 6400
    assert sample(metrics, "speech_gateway_capture_buffered_bytes") == 6400
    labels = {"experiment": "exp", "cause": "total_bytes"}
    assert sample(metrics, "speech_gateway_captures_dropped_total", **labels) == 1
    await writer.start()
    await writer.close()
    assert writer.budget.used == 0
    assert sample(metrics, "speech_gateway_capture_buffered_bytes") == 0
    assert len(await LocalAudioStore(tmp_path).captures("exp")) == 2


async def test_an_unavailable_store_drops_and_counts(tmp_path: Path) -> None:
    """A store that fails drops each capture (counted); the writer goes on."""
    metrics = GatewayMetrics()
    writer = CaptureWriter(
        FailingStore(tmp_path), EVERYTHING, frozenset({"app"}), AudioSettings(), metrics
    )
    await writer.start()
    for _ in range(3):
        writer.offer(utterance())
    await writer.close()
    labels = {"experiment": "exp", "cause": "store_unavailable"}
    assert sample(metrics, "speech_gateway_captures_dropped_total", **labels) == 3
    assert writer.dropped == 3


async def test_a_dropped_capture_gives_its_place_in_the_daily_cap_back(tmp_path: Path) -> None:
    """The daily cap counts stored captures: places taken by captures the store (or the
    queue) dropped come back the same day, a stored capture's does not."""
    today = date(2026, 12, 7)
    quota = CaptureQuota(lambda: today)
    policy = CapturePolicy(share=1.0, daily_cap=2, priority_reserve=0.0)
    days = [quota.take("exp", policy, priority=False) for _ in range(2)]
    assert days == [today, today]
    assert quota.take("exp", policy, priority=False) is None  # the cap is reached
    failing, stored = (
        CaptureWriter(
            store, EVERYTHING, frozenset({"app"}), AudioSettings(), GatewayMetrics(), quota=quota
        )
        for store in (FailingStore(tmp_path), LocalAudioStore(tmp_path))
    )
    for day in days:
        assert not await failing.write(utterance(quota_day=day))
    assert failing.dropped == 2
    for _ in range(2):
        day = quota.take("exp", policy, priority=False)
        assert day == today
        assert await stored.write(utterance(quota_day=day))
    assert quota.take("exp", policy, priority=False) is None
    # A place of an earlier day is not given back to today's cap.
    assert not await failing.write(utterance(quota_day=date(2026, 12, 6)))
    assert quota.take("exp", policy, priority=False) is None


async def test_full_store_and_deleted_unit_are_counted_apart(tmp_path: Path) -> None:
    """A store at its bound and a unit on the deletion list each have their cause."""
    metrics = GatewayMetrics()
    store = LocalAudioStore(tmp_path, max_bytes=4000)
    await store.delete_unit("gone")
    writer = CaptureWriter(store, EVERYTHING, frozenset({"app"}), AudioSettings(), metrics)
    assert await writer.write(utterance())
    assert not await writer.write(utterance())
    assert not await writer.write(utterance(unit="gone"))
    dropped = "speech_gateway_captures_dropped_total"
    assert sample(metrics, dropped, experiment="exp", cause="store_full") == 1
    assert sample(metrics, dropped, experiment="exp", cause="deleted_unit") == 1


async def test_only_consenting_clients_of_capturing_experiments_get_a_capture(
    tmp_path: Path,
) -> None:
    """No consent, no policy, no experiment or a closing writer: no capture for a session."""
    writer = CaptureWriter(
        LocalAudioStore(tmp_path), EVERYTHING, frozenset({"app"}), AudioSettings(), GatewayMetrics()
    )
    assert writer.for_session(facts(), "base", ()) is not None
    assert writer.for_session(facts(client="qa"), "base", ()) is None
    assert writer.for_session(facts(experiment="other"), "base", ()) is None
    assert writer.for_session(facts(experiment=None), "base", ()) is None
    await writer.close()
    assert writer.for_session(facts(), "base", ()) is None


async def test_retention_removes_old_captures(tmp_path: Path) -> None:
    """`expire` deletes the captures older than retention_days."""

    def writer() -> CaptureWriter:
        settings = AudioSettings(retention_days=1)
        store = LocalAudioStore(tmp_path)
        return CaptureWriter(store, EVERYTHING, frozenset({"app"}), settings, GatewayMetrics())

    young = writer()
    assert await young.write(utterance())
    assert await young.expire() == 0
    (capture,) = await young.store.captures("exp")
    # Aged by hand: the store never rewrites a sidecar, so a new process reads it.
    old = datetime.now(UTC) - timedelta(days=2)
    sidecar = tmp_path / "exp" / f"{capture.capture_id}.json"
    sidecar.write_text(
        sidecar.read_text().replace(capture.captured_at, old.isoformat().replace("+00:00", "Z"))
    )
    later = writer()
    assert await later.expire() == 1
    assert await later.store.captures("exp") == []


async def test_close_waits_for_the_queue_then_stops(tmp_path: Path) -> None:
    """Closing stores what is queued and leaves no task behind."""
    writer = CaptureWriter(
        LocalAudioStore(tmp_path), EVERYTHING, frozenset({"app"}), AudioSettings(), GatewayMetrics()
    )
    await writer.start()
    for _ in range(10):
        writer.offer(utterance())
    await writer.close()
    assert writer.stored == 10
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert not names & {"capture-writer", "capture-retention"}


class BrokenExpiryStore(LocalAudioStore):
    """A local store whose retention fails with an error that is no outage."""

    expired = 0

    async def expire(self, older_than: datetime) -> int:
        self.expired += 1
        raise ValueError("a sidecar the store cannot date")


async def test_a_failed_retention_round_does_not_end_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention that fails with any error is logged and tried again at the next interval."""
    monkeypatch.setattr("gateway.server.capture_writer.RETENTION_INTERVAL_S", 0.01)
    store = BrokenExpiryStore(tmp_path)
    writer = CaptureWriter(store, EVERYTHING, frozenset({"app"}), AudioSettings(), GatewayMetrics())
    await writer.start()
    await asyncio.sleep(0.2)
    alive = [task for task in writer._tasks if not task.done()]
    await writer.close()
    assert len(alive) == 2
    assert store.expired > 1
