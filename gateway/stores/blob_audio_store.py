"""The production audio store: captures in an Azure Blob Storage container.

One container per gateway installation; each capture is two blobs, `<experiment>/<capture_id>.wav`
(content type audio/wav) and `<experiment>/<capture_id>.json` (its sidecar, application/json),
both with the metadata `unit` and `captured_at` so that deletion by unit and retention find
them from a listing without reading every sidecar. The WAV is uploaded first; a capture is
listed once its sidecar exists. `_ids/<capture_id>` (same metadata) names its experiment,
so that reading a capture by id is one request. The deletion list is a blob per unit under
`_deleted/`.
Custom Speech reads training data from the same account.

Same interface and behaviour as `gateway.stores.audio_store.LocalAudioStore`; every failure to
reach the service (refused connection, timeout, an HTTP error) raises `StoreUnavailable`.
The client does not retry and times out quickly: a capture that cannot be stored is dropped
by the writer, never waited for.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Final, TypeVar

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from gateway.errors import CaptureCorrupt, CaptureNotFound, UnitDeleted
from gateway.stores.audio_store import (
    CAPTURE_ID,
    SIDECAR_CONTENT_TYPE,
    WAV_CONTENT_TYPE,
    Capture,
    check_experiment,
    check_unit,
    check_wav,
)
from gateway.stores.failures import unavailable

DELETED_PREFIX: Final = "_deleted/"
IDS_PREFIX: Final = "_ids/"  # `_ids/<capture_id>` holds the capture's experiment
_PARALLEL_READS: Final = 8
_T = TypeVar("_T")

Credential = str | dict[str, str] | None
"""An account key or SAS token (str), {"account_name", "account_key"}, or None (public/SAS URL)."""


@contextmanager
def _translated(operation: str) -> Iterator[None]:
    try:
        yield
    except (ResourceNotFoundError, ResourceExistsError):
        raise
    except (TimeoutError, AzureError, OSError) as exc:
        raise unavailable(f"BlobAudioStore.{operation}", exc) from exc


class BlobAudioStore:
    """Captures in the container `container` of the Blob service at `account_url`."""

    def __init__(
        self,
        account_url: str,
        container: str,
        credential: Credential = None,
        *,
        timeout_s: float = 5.0,
    ) -> None:
        self._service = BlobServiceClient(
            account_url,
            credential=credential,
            retry_total=0,
            connection_timeout=timeout_s,
            read_timeout=timeout_s,
        )
        self._container: ContainerClient = self._service.get_container_client(container)
        self._container_ready = False
        self._experiments: dict[str, str] = {}  # capture_id -> experiment, of captures seen

    async def put(self, capture: Capture, wav: bytes) -> None:
        if len(wav) != capture.wav_bytes:
            raise ValueError(f"capture {capture.capture_id}: wav_bytes is not the WAV's size")
        check_wav(capture.capture_id, wav, capture.wav_bytes)
        with _translated("put"):
            await self._ensure_container()
            if await self._is_deleted(capture.unit):
                raise UnitDeleted(capture.unit)
            metadata = {"unit": capture.unit, "captured_at": capture.captured_at}
            base = f"{capture.experiment}/{capture.capture_id}"
            await self._container.upload_blob(
                f"{base}.wav",
                wav,
                overwrite=True,
                metadata=metadata,
                content_settings=ContentSettings(content_type=WAV_CONTENT_TYPE),
            )
            await self._container.upload_blob(
                f"{base}.json",
                capture.sidecar(),
                overwrite=True,
                metadata=metadata,
                content_settings=ContentSettings(content_type=SIDECAR_CONTENT_TYPE),
            )
            # Where the capture is, by id: a reader that knows only the id needs one request.
            await self._container.upload_blob(
                f"{IDS_PREFIX}{capture.capture_id}",
                capture.experiment.encode(),
                overwrite=True,
                metadata=metadata,
            )
            # A deletion of the unit that ran while these blobs went up may have listed
            # before they existed: looked at again, so that its audio never outlives it.
            if await self._is_deleted(capture.unit):
                for name in (f"{base}.json", f"{IDS_PREFIX}{capture.capture_id}", f"{base}.wav"):
                    with suppress(ResourceNotFoundError):
                        await self._container.delete_blob(name)
                raise UnitDeleted(capture.unit)
        self._experiments[capture.capture_id] = capture.experiment

    async def wav(self, capture_id: str) -> bytes:
        if not CAPTURE_ID.fullmatch(capture_id):
            raise CaptureNotFound(capture_id)
        with _translated("wav"):
            experiment = self._experiments.get(capture_id) or await self._find(capture_id)
            base = f"{experiment}/{capture_id}"
            try:
                capture = Capture.from_json(json.loads(await self._download(f"{base}.json")))
                blob = await self._container.download_blob(f"{base}.wav")
            except ResourceNotFoundError:
                raise CaptureNotFound(capture_id) from None
            content_type = blob.properties.content_settings.content_type
            if content_type != WAV_CONTENT_TYPE:
                raise CaptureCorrupt(capture_id, f"content type {content_type!r}")
            if blob.size != capture.wav_bytes:
                raise CaptureCorrupt(
                    capture_id, f"{blob.size} bytes stored, {capture.wav_bytes} expected"
                )
            return check_wav(capture_id, await blob.readall(), capture.wav_bytes)

    async def captures(self, experiment: str) -> list[Capture]:
        check_experiment(experiment)
        with _translated("captures"):
            names = [
                blob.name
                async for blob in self._container.list_blobs(name_starts_with=f"{experiment}/")
                if blob.name.endswith(".json")
            ]
            sidecars = await _bounded_gather([self._sidecar(name) for name in names])
        found = [capture for capture in sidecars if capture is not None]
        for capture in found:
            self._experiments[capture.capture_id] = capture.experiment
        return sorted(found, key=lambda c: c.captured_at)

    async def delete_unit(self, unit: str) -> int:
        check_unit(unit)
        with _translated("delete_unit"):
            await self._ensure_container()
            # Listed before the blobs go: a put racing with the deletion is refused.
            await self._container.upload_blob(f"{DELETED_PREFIX}{unit}", b"", overwrite=True)
            return await self._delete_where(lambda metadata: metadata.get("unit") == unit)

    async def expire(self, older_than: datetime) -> int:
        def old(metadata: dict[str, str]) -> bool:
            captured_at = metadata.get("captured_at")
            if captured_at is None:
                return False
            try:
                return datetime.fromisoformat(captured_at.replace("Z", "+00:00")) < older_than
            except (ValueError, TypeError):  # not dated (or without a zone): kept, not fatal
                return False

        with _translated("expire"):
            return await self._delete_where(old)

    async def close(self) -> None:
        await self._container.close()
        await self._service.close()

    # -- helpers -------------------------------------------------------------------------

    async def _ensure_container(self) -> None:
        if self._container_ready:
            return
        with suppress(ResourceExistsError):
            await self._container.create_container()
        self._container_ready = True

    async def _is_deleted(self, unit: str) -> bool:
        try:
            await self._container.get_blob_client(f"{DELETED_PREFIX}{unit}").get_blob_properties()
        except ResourceNotFoundError:
            return False
        return True

    async def _find(self, capture_id: str) -> str:
        try:
            return (await self._download(f"{IDS_PREFIX}{capture_id}")).decode()
        except ResourceNotFoundError:
            pass  # absent, or its id blob was lost: a listing decides
        suffix = f"/{capture_id}.json"
        try:
            async for blob in self._container.list_blobs():
                if blob.name.endswith(suffix):
                    return str(blob.name).removesuffix(suffix)
        except ResourceNotFoundError:
            pass  # no container yet: nothing was captured
        raise CaptureNotFound(capture_id)

    async def _download(self, name: str) -> bytes:
        stream = await self._container.download_blob(name)
        return await stream.readall()

    async def _sidecar(self, name: str) -> Capture | None:
        try:
            return Capture.from_json(json.loads(await self._download(name)))
        except ResourceNotFoundError:
            return None  # removed by a concurrent deletion
        except (ValueError, KeyError, TypeError):
            return None  # not a sidecar this store wrote

    async def _delete_where(self, doomed: Callable[[dict[str, str]], bool]) -> int:
        sidecars: list[str] = []
        wavs: list[str] = []
        try:
            async for blob in self._container.list_blobs(include=["metadata"]):
                if blob.name.startswith(DELETED_PREFIX) or not doomed(blob.metadata or {}):
                    continue
                (sidecars if blob.name.endswith(".json") else wavs).append(blob.name)
        except ResourceNotFoundError:
            return 0
        # Sidecars first: an interruption leaves orphan WAVs, never a listed capture
        # without its audio; retention removes the orphans.
        for name in sidecars + wavs:
            with suppress(ResourceNotFoundError):
                await self._container.delete_blob(name)
        return len(sidecars)


async def _bounded_gather(calls: list[Awaitable[_T]]) -> list[_T]:
    gate = asyncio.Semaphore(_PARALLEL_READS)

    async def one(call: Awaitable[_T]) -> _T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(call) for call in calls)))
