"""Tests for gateway.stores.blob_audio_store: captures in Azure Blob Storage (Azurite)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient

from gateway.errors import CaptureCorrupt, CaptureNotFound, StoreUnavailable, UnitDeleted
from gateway.stores.blob_audio_store import BlobAudioStore
from tests.azurite import ACCOUNT, ACCOUNT_KEY, AzuriteServer
from tests.stores.test_audio_store import make_capture, make_wav


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[AzuriteServer]:
    with AzuriteServer(tmp_path / "azurite") as server:
        yield server


@pytest.fixture
async def store(azurite: AzuriteServer) -> AsyncIterator[BlobAudioStore]:
    blob_store = BlobAudioStore(azurite.account_url, "audio", azurite.credential, timeout_s=2.0)
    yield blob_store
    await blob_store.close()


async def blob_properties(azurite: AzuriteServer, name: str) -> tuple[str, dict[str, str]]:
    async with BlobServiceClient(azurite.account_url, credential=azurite.credential) as service:
        props = await service.get_blob_client("audio", name).get_blob_properties()
        return str(props.content_settings.content_type), dict(props.metadata)


async def test_put_then_read_back(store: BlobAudioStore, azurite: AzuriteServer) -> None:
    """A WAV put into Blob Storage reads back byte for byte, as audio/wav, with its sidecar."""
    wav = make_wav(os.urandom(6400))
    capture = make_capture(wav)
    await store.put(capture, wav)
    assert await store.wav(capture.capture_id) == wav
    assert await store.captures("exp") == [capture]
    content_type, metadata = await blob_properties(azurite, f"exp/{capture.capture_id}.wav")
    assert content_type == "audio/wav"
    assert metadata == {"unit": "u1", "captured_at": capture.captured_at}
    # A fresh client (another replica) finds the capture without having listed it.
    other = BlobAudioStore(azurite.account_url, "audio", azurite.credential)
    try:
        assert await other.wav(capture.capture_id) == wav
        with pytest.raises(CaptureNotFound):
            await other.wav(uuid.uuid4().hex)
    finally:
        await other.close()


async def test_read_checks_content_type_and_size(
    store: BlobAudioStore, azurite: AzuriteServer
) -> None:
    """A WAV blob replaced with another content type or size is reported as corrupt."""
    wav = make_wav(b"\x01\x00" * 800)
    capture = make_capture(wav)
    await store.put(capture, wav)
    name = f"exp/{capture.capture_id}.wav"
    async with BlobServiceClient(azurite.account_url, credential=azurite.credential) as service:
        blob = service.get_blob_client("audio", name)
        await blob.upload_blob(
            wav, overwrite=True, content_settings=ContentSettings(content_type="text/plain")
        )
        with pytest.raises(CaptureCorrupt, match="content type"):
            await store.wav(capture.capture_id)
        await blob.upload_blob(
            wav[:-10], overwrite=True, content_settings=ContentSettings(content_type="audio/wav")
        )
        with pytest.raises(CaptureCorrupt, match="bytes stored"):
            await store.wav(capture.capture_id)


async def test_delete_unit_and_expire(store: BlobAudioStore) -> None:
    """Deleting a unit removes both of its blobs per capture and refuses its audio later;
    retention removes old captures only."""
    wav = make_wav(b"\x02" * 320)
    now = datetime.now(UTC)
    old = make_capture(
        wav, unit="u2", captured_at=(now - timedelta(days=10)).isoformat().replace("+00:00", "Z")
    )
    new = make_capture(wav, unit="u2", captured_at=now.isoformat().replace("+00:00", "Z"))
    doomed = [make_capture(wav), make_capture(wav, experiment="exp2")]
    for capture in (old, new, *doomed):
        await store.put(capture, wav)
    assert await store.delete_unit("u1") == 2
    assert await store.captures("exp2") == []
    with pytest.raises(CaptureNotFound):
        await store.wav(doomed[0].capture_id)
    with pytest.raises(UnitDeleted):
        await store.put(make_capture(wav), wav)
    assert await store.expire(now - timedelta(days=5)) == 1
    assert await store.captures("exp") == [new]


async def test_killed_service_is_unavailable(store: BlobAudioStore, azurite: AzuriteServer) -> None:
    """With the Blob service gone, put fails with StoreUnavailable within a few seconds."""
    wav = make_wav(b"\x03" * 320)
    await store.put(make_capture(wav), wav)
    azurite.kill()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.put(make_capture(wav), wav)
    assert time.monotonic() - started < 10
    with pytest.raises(StoreUnavailable):
        await store.captures("exp")


async def test_deletion_during_put_leaves_nothing(
    store: BlobAudioStore, azurite: AzuriteServer
) -> None:
    """A unit deleted (by another replica) while its capture's blobs go up: the put is
    refused and none of the capture's blobs stay behind."""
    wav = make_wav(b"\x04" * 320)
    capture = make_capture(wav)
    other = BlobAudioStore(azurite.account_url, "audio", azurite.credential)
    container = store._container
    upload = container.upload_blob

    async def upload_racing_deletion(name: str, data: bytes, **kwargs: Any) -> Any:
        if name.endswith(".json"):  # the WAV is up; the deletion lists before the sidecar
            await other.delete_unit(capture.unit)
        return await upload(name, data, **kwargs)

    container.upload_blob = upload_racing_deletion  # type: ignore[method-assign]
    try:
        with pytest.raises(UnitDeleted):
            await store.put(capture, wav)
    finally:
        container.upload_blob = upload  # type: ignore[method-assign]
        await other.close()
    assert await store.captures("exp") == []
    names = [blob.name async for blob in container.list_blobs()]
    assert [name for name in names if capture.capture_id in name] == []


async def test_an_undatable_capture_does_not_stop_retention(store: BlobAudioStore) -> None:
    """A capture whose captured_at has no zone is kept; the old captures still go."""
    wav = make_wav(b"\x07" * 320)
    undated = make_capture(wav, captured_at="2026-01-01T00:00:00")
    old = make_capture(wav, captured_at="2026-01-01T00:00:00.000Z")
    for capture in (undated, old):
        await store.put(capture, wav)
    assert await store.expire(datetime(2026, 6, 1, tzinfo=UTC)) == 1
    assert await store.captures("exp") == [undated]


async def test_a_container_not_created_yet_is_an_empty_store(azurite: AzuriteServer) -> None:
    """Before the first put or deletion creates the container, readers see an empty store
    and a deletion is still recorded."""
    container = f"fresh{uuid.uuid4().hex[:8]}"
    store = BlobAudioStore(azurite.account_url, container, azurite.credential, timeout_s=2.0)
    try:
        assert await store.captures("exp") == []
        with pytest.raises(CaptureNotFound):
            await store.wav(uuid.uuid4().hex)
        assert await store.expire(datetime.now(UTC)) == 0
        assert await store.delete_unit("u1") == 0
        wav = make_wav(b"\x08" * 320)
        with pytest.raises(UnitDeleted):
            await store.put(make_capture(wav), wav)
        assert await store.captures("exp") == []
    finally:
        await store.close()


async def test_a_container_deleted_under_the_store(
    store: BlobAudioStore, azurite: AzuriteServer
) -> None:
    """The container removed behind a running store: readers see an empty store, a put
    fails as unavailable (never an Azure SDK error) and the next put creates it again."""
    wav = make_wav(b"\x09" * 320)
    await store.put(make_capture(wav), wav)
    async with BlobServiceClient(azurite.account_url, credential=azurite.credential) as service:
        await service.delete_container("audio")
    with pytest.raises(StoreUnavailable):
        await store.put(make_capture(wav), wav)
    assert await store.captures("exp") == []
    capture = make_capture(wav)
    await store.put(capture, wav)
    assert await store.captures("exp") == [capture]
    assert await store.delete_unit("u1") == 1


async def test_the_id_cache_is_bounded_and_forgets_removed_captures(
    azurite: AzuriteServer,
) -> None:
    """The capture id -> experiment cache holds at most `cached_ids` entries and drops the
    captures that deletion and retention removed; a capture it forgot is still read."""
    store = BlobAudioStore(azurite.account_url, "audio", azurite.credential, cached_ids=3)
    try:
        wav = make_wav(b"\x0a" * 320)
        captures = [make_capture(wav) for _ in range(5)]
        for capture in captures:
            await store.put(capture, wav)
        assert len(store._experiments) == 3
        assert await store.wav(captures[0].capture_id) == wav  # forgotten: found by its id blob
        assert len(store._experiments) == 3
        assert await store.delete_unit("u1") == 5
        assert len(store._experiments) == 0
        old = make_capture(wav, unit="u2", captured_at="2026-01-01T00:00:00.000Z")
        await store.put(old, wav)
        assert await store.expire(datetime(2026, 6, 1, tzinfo=UTC)) == 1
        assert len(store._experiments) == 0
    finally:
        await store.close()


async def test_unreadable_blobs_are_reported_not_raised_raw(
    store: BlobAudioStore, azurite: AzuriteServer
) -> None:
    """A sidecar or id blob that is not what this store wrote: `wav` reports the capture as
    corrupt or finds it by listing, `captures` skips the sidecar; no parsing error escapes."""
    wav = make_wav(b"\x0b" * 320)
    capture = make_capture(wav)
    await store.put(capture, wav)
    other = BlobAudioStore(azurite.account_url, "audio", azurite.credential)
    async with BlobServiceClient(azurite.account_url, credential=azurite.credential) as service:
        container = service.get_container_client("audio")
        try:
            await container.upload_blob(f"_ids/{capture.capture_id}", b"\xff../x", overwrite=True)
            assert await other.wav(capture.capture_id) == wav  # the listing finds it
            await container.upload_blob(f"exp/{capture.capture_id}.json", b"{", overwrite=True)
            with pytest.raises(CaptureCorrupt, match="sidecar"):
                await store.wav(capture.capture_id)
            await container.upload_blob(
                f"exp/{capture.capture_id}.json", b'{"primary": "x"}', overwrite=True
            )
            with pytest.raises(CaptureCorrupt, match="sidecar"):
                await store.wav(capture.capture_id)
            stray = {**capture.to_json(), "capture_id": uuid.uuid4().hex, "primary": "text"}
            await container.upload_blob(f"exp/{stray['capture_id']}.json", json.dumps(stray))
            assert await store.captures("exp") == []
        finally:
            await other.close()


async def test_a_service_that_never_answers_fails_a_put_after_one_timeout() -> None:
    """`timeout_s` bounds each request: a service that takes the connection and never
    answers fails the put's first request, so the put, after about one `timeout_s`."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()  # reads the request, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = BlobAudioStore(
        f"http://127.0.0.1:{port}/{ACCOUNT}",
        "audio",
        {"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
        timeout_s=1.0,
    )
    wav = make_wav(b"\x0c" * 320)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.put(make_capture(wav), wav)
        elapsed = time.monotonic() - started
        assert 1.0 <= elapsed < 2.0  # within 2 x timeout_s, as docs/capture.md says
        assert len(accepted) == 1  # the first request failed; no other was made
    finally:
        await store.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_retention_removes_what_an_interrupted_deletion_left(
    store: BlobAudioStore, azurite: AzuriteServer
) -> None:
    """A unit on the deletion list whose captures are still there (its deletion was cut off
    by an outage after listing the unit): the next retention round removes them, however
    recent."""
    wav = make_wav(b"\x0d" * 320)
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    left, kept = make_capture(wav, captured_at=now), make_capture(wav, unit="u2", captured_at=now)
    for capture in (left, kept):
        await store.put(capture, wav)
    async with BlobServiceClient(azurite.account_url, credential=azurite.credential) as service:
        await service.get_blob_client("audio", "_deleted/u1").upload_blob(b"")
    assert await store.expire(datetime(2026, 1, 1, tzinfo=UTC)) == 1
    assert await store.captures("exp") == [kept]
    with pytest.raises(CaptureNotFound):
        await store.wav(left.capture_id)
    names = [blob.name async for blob in store._container.list_blobs()]
    assert [name for name in names if left.capture_id in name] == []


async def test_an_unavailable_reason_never_carries_the_sas_token() -> None:
    """aiohttp names the request's URL when a connection times out, and a SAS token travels
    in that URL: the StoreUnavailable says what failed without it, and does not chain it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # never accepts: once its queue is full, connecting hangs
    port = listener.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
    store = BlobAudioStore(
        f"http://127.0.0.1:{port}/{ACCOUNT}", "audio", "sv=2025-01-05&sig=SECRETSIG", timeout_s=0.5
    )
    wav = make_wav(b"\x0e" * 320)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.put(make_capture(wav), wav)
    finally:
        await store.close()
        for sock in (*fillers, listener):
            sock.close()
    assert "Connection timeout" in caught.value.reason
    assert "SECRETSIG" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


async def test_a_failed_listing_leaves_no_reads_running(store: BlobAudioStore) -> None:
    """One sidecar read failing fails `captures` and stops the reads still waiting: none
    goes on in the background after the caller got StoreUnavailable."""
    wav = make_wav(b"\x0f" * 320)
    for _ in range(12):
        await store.put(make_capture(wav), wav)
    download = store._download
    calls = 0

    async def failing_first(name: str) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.05)
            raise ServiceRequestError("connection reset")
        await asyncio.sleep(0.2)  # a slow service: the others are still in flight
        return await download(name)

    store._download = failing_first  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await store.captures("exp")
    started = calls
    await asyncio.sleep(0.5)
    assert calls == started < 12
