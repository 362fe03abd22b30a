"""Tests for gateway.stores.audio_store: captures and their WAVs in a local directory."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import (
    AudioStoreFull,
    CaptureCorrupt,
    CaptureNotFound,
    StoreUnavailable,
    UnitDeleted,
)
from gateway.protocol.wav import PCM_16K_MONO, wave_header
from gateway.stores.audio_store import (
    Capture,
    CapturedResult,
    CaptureReason,
    CaptureSample,
    LocalAudioStore,
)


def make_wav(pcm: bytes) -> bytes:
    return wave_header(PCM_16K_MONO, len(pcm)) + pcm


def make_capture(
    wav: bytes,
    *,
    unit: str = "u1",
    experiment: str = "exp",
    captured_at: str = "2026-12-07T10:00:00.000Z",
) -> Capture:
    return Capture(
        capture_id=uuid.uuid4().hex,
        experiment=experiment,
        phase="p1",
        unit=unit,
        client="app",
        session_id="s" * 32,
        utterance_index=0,
        captured_at=captured_at,
        reason=CaptureReason.DISAGREEMENT,
        sample=CaptureSample.PRIORITY,
        primary=CapturedResult("a" * 32, "control", "hello world", 0.9),
        shadows=(CapturedResult("b" * 32, "candidate", "hello word", None),),
        duration_ms=(len(wav) - 44) // 32,
        wav_bytes=len(wav),
    )


def test_capture_json_round_trip() -> None:
    """A capture's sidecar JSON reads back as the same capture."""
    capture = make_capture(make_wav(b"\x01\x02" * 100))
    assert Capture.from_json(json.loads(capture.sidecar())) == capture


def test_capture_refuses_names_that_escape_the_store() -> None:
    """An experiment of dots or a capture id that is not hex never becomes a path."""
    with pytest.raises(ValueError, match="experiment name"):
        make_capture(make_wav(b""), experiment="..")
    with pytest.raises(ValueError, match="experiment name"):
        make_capture(make_wav(b""), experiment="_ids")
    with pytest.raises(ValueError, match="32 hex digits"):
        Capture.from_json({**make_capture(make_wav(b"")).to_json(), "capture_id": "../x"})


async def test_put_then_read_back(tmp_path: Path) -> None:
    """A stored WAV reads back byte for byte and its capture is listed under its experiment."""
    store = LocalAudioStore(tmp_path)
    wav = make_wav(os.urandom(3200))
    capture = make_capture(wav)
    await store.put(capture, wav)
    assert await store.wav(capture.capture_id) == wav
    assert await store.captures("exp") == [capture]
    assert await store.captures("other") == []
    assert (tmp_path / "exp" / f"{capture.capture_id}.wav").read_bytes() == wav


async def test_absent_capture_is_not_found(tmp_path: Path) -> None:
    """Reading an id that was never stored raises CaptureNotFound, a LookupError."""
    store = LocalAudioStore(tmp_path)
    with pytest.raises(CaptureNotFound):
        await store.wav(uuid.uuid4().hex)
    with pytest.raises(LookupError):
        await store.wav("not-an-id")


async def test_read_checks_size_and_content_type(tmp_path: Path) -> None:
    """A WAV truncated or replaced on disk is reported as corrupt, not served."""
    store = LocalAudioStore(tmp_path)
    wav = make_wav(b"\x00\x01" * 500)
    capture = make_capture(wav)
    await store.put(capture, wav)
    path = tmp_path / "exp" / f"{capture.capture_id}.wav"
    path.write_bytes(wav[:-2])
    with pytest.raises(CaptureCorrupt, match="bytes stored"):
        await store.wav(capture.capture_id)
    path.write_bytes(b"JUNK" + wav[4:])
    with pytest.raises(CaptureCorrupt, match="RIFF"):
        await store.wav(capture.capture_id)


async def test_size_bound_refuses_and_frees(tmp_path: Path) -> None:
    """At max_bytes a put raises AudioStoreFull; deleting captures frees the room again."""
    wav = make_wav(b"\x00" * 956)  # 1000 bytes
    store = LocalAudioStore(tmp_path, max_bytes=2500)
    await store.put(make_capture(wav, unit="u1"), wav)
    await store.put(make_capture(wav, unit="u2"), wav)
    with pytest.raises(AudioStoreFull):
        await store.put(make_capture(wav, unit="u3"), wav)
    assert isinstance(AudioStoreFull("x"), StoreUnavailable)
    assert await store.delete_unit("u1") == 1
    await store.put(make_capture(wav, unit="u3"), wav)
    # A new store over the same directory counts what is there.
    with pytest.raises(AudioStoreFull):
        await LocalAudioStore(tmp_path, max_bytes=2500).put(make_capture(wav, unit="u4"), wav)


async def test_delete_unit_removes_and_refuses_later_audio(tmp_path: Path) -> None:
    """Deleting a unit removes its captures in every experiment and refuses its audio later,
    also in another store over the same directory (another worker) and one opened later."""
    store = LocalAudioStore(tmp_path)
    other_process = LocalAudioStore(tmp_path)
    wav = make_wav(b"\x05" * 64)
    kept = make_capture(wav, unit="u2")
    for capture in (make_capture(wav), make_capture(wav, experiment="exp2"), kept):
        await store.put(capture, wav)
    await other_process.put(make_capture(wav, unit="u9", experiment="exp3"), wav)  # list read
    assert await store.delete_unit("u1") == 2
    with pytest.raises(UnitDeleted):
        await other_process.put(make_capture(wav), wav)
    assert await store.captures("exp") == [kept]
    assert await store.captures("exp2") == []
    assert sorted(p.name for p in (tmp_path / "exp2").iterdir()) == []
    with pytest.raises(UnitDeleted):
        await store.put(make_capture(wav), wav)
    with pytest.raises(UnitDeleted):
        await LocalAudioStore(tmp_path).put(make_capture(wav), wav)
    assert await store.delete_unit("u1") == 0
    with pytest.raises(ValueError, match="not a unit"):
        await store.delete_unit("a\nb")


async def test_expire_removes_old_captures(tmp_path: Path) -> None:
    """Retention removes the captures made before the cut-off and keeps the rest."""
    store = LocalAudioStore(tmp_path)
    wav = make_wav(b"\x07" * 64)
    now = datetime.now(UTC)
    old = make_capture(
        wav, captured_at=(now - timedelta(days=40)).isoformat().replace("+00:00", "Z")
    )
    new = make_capture(wav, captured_at=now.isoformat().replace("+00:00", "Z"))
    await store.put(old, wav)
    await store.put(new, wav)
    assert await store.expire(now - timedelta(days=30)) == 1
    assert await store.captures("exp") == [new]
    with pytest.raises(CaptureNotFound):
        await store.wav(old.capture_id)


async def test_unwritable_directory_is_unavailable(tmp_path: Path) -> None:
    """A directory that cannot be written raises StoreUnavailable, the error callers catch."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = LocalAudioStore(blocker / "audio")
    wav = make_wav(b"")
    with pytest.raises(StoreUnavailable):
        await store.put(make_capture(wav), wav)


async def test_deletion_by_another_worker_during_put_leaves_nothing(tmp_path: Path) -> None:
    """A unit deleted by another process's store while a capture of it is written: the put
    is refused and neither of the capture's files stays behind."""
    writer, deleter = LocalAudioStore(tmp_path), LocalAudioStore(tmp_path)
    wav = make_wav(b"\x05\x00" * 400)
    capture = make_capture(wav)
    loop = asyncio.get_running_loop()
    write = writer._write

    def write_after_deletion(capture: Capture, wav: bytes) -> None:
        # The deletion's scan runs after the list was read and before the files exist.
        asyncio.run_coroutine_threadsafe(deleter.delete_unit(capture.unit), loop).result(10)
        write(capture, wav)

    writer._write = write_after_deletion  # type: ignore[method-assign]
    with pytest.raises(UnitDeleted):
        await writer.put(capture, wav)
    assert await deleter.captures("exp") == []
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == []


async def test_an_undatable_sidecar_does_not_stop_retention(tmp_path: Path) -> None:
    """A sidecar whose captured_at has no zone is kept; the old captures still go."""
    store = LocalAudioStore(tmp_path)
    wav = make_wav(b"\x06\x00" * 400)
    undated = make_capture(wav, captured_at="2026-01-01T00:00:00")
    old = make_capture(wav, captured_at="2026-01-01T00:00:00.000Z")
    for capture in (undated, old):
        await store.put(capture, wav)
    assert await store.expire(datetime(2026, 6, 1, tzinfo=UTC)) == 1
    assert await store.captures("exp") == [undated]


async def test_retention_removes_what_a_crash_left(tmp_path: Path) -> None:
    """A WAV whose sidecar never came, one whose sidecar a crash left empty (sidecars are
    renamed into place but not flushed) and a temporary file go once old; nobody lists them,
    and a listed capture and a young orphan stay."""
    store = LocalAudioStore(tmp_path)
    wav = make_wav(b"\x08\x00" * 400)
    kept = make_capture(wav, captured_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"))
    await store.put(kept, wav)
    folder = tmp_path / "exp"
    lonely, torn, young = (folder / f"{uuid.uuid4().hex}.wav" for _ in range(3))
    for path in (lonely, torn, young):
        path.write_bytes(wav)
    torn.with_suffix(".json").write_bytes(b"")
    leftover = folder / f"{uuid.uuid4().hex}.json.tmp"
    leftover.write_bytes(b"{")
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    long_ago = (cutoff - timedelta(days=1)).timestamp()
    for path in (
        lonely,
        torn,
        torn.with_suffix(".json"),
        leftover,
        folder / f"{kept.capture_id}.wav",
    ):
        os.utime(path, (long_ago, long_ago))
    assert await store.captures("exp") == [kept]
    assert await store.expire(cutoff) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{kept.capture_id}.wav", f"{kept.capture_id}.json", young.name]
    )
    assert await store.wav(kept.capture_id) == wav


async def test_a_listing_parses_only_the_sidecars_new_since_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sidecars are written whole and never rewritten, so the store parses each once: the
    review workbench lists the captures at every click."""
    store = LocalAudioStore(tmp_path)
    wav = make_wav(b"\x09\x00" * 400)
    first = [make_capture(wav) for _ in range(2)] + [make_capture(wav, unit="gone")]
    for capture in first:
        await store.put(capture, wav)
    parsed: list[str] = []
    from_json = Capture.from_json

    def counting(data: dict[str, object]) -> Capture:
        parsed.append(str(data["capture_id"]))
        return from_json(data)

    monkeypatch.setattr(Capture, "from_json", staticmethod(counting))
    assert {c.capture_id for c in await store.captures("exp")} == {c.capture_id for c in first}
    assert len(parsed) == 3
    later = make_capture(wav)
    await store.put(later, wav)
    assert await store.delete_unit("gone") == 1
    listed = await store.captures("exp")
    assert {c.capture_id for c in listed} == {
        first[0].capture_id,
        first[1].capture_id,
        later.capture_id,
    }
    assert sorted(parsed) == sorted([c.capture_id for c in first] + [later.capture_id])
