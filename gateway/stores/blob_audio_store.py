"""The production audio store: captures in an Azure Blob Storage container.

One container per gateway installation; each capture is two blobs, `<experiment>/<capture_id>.wav`
(content type audio/wav) and `<experiment>/<capture_id>.json` (its sidecar, application/json),
both with the metadata `unit` and `captured_at` so that deletion by unit and retention find
them from a listing without reading every sidecar. The WAV is uploaded first; a capture is
listed once its sidecar exists. `_ids/<capture_id>` (same metadata) names its experiment,
so that finding a capture by id is one request, and none for the last `cached_ids` captures
the store put, listed or read (it remembers their experiments). The deletion list is a blob
per unit under `_deleted/`. Custom Speech reads training data from the same account.

The container is created by the first put or deletion of a process (and again after it was
found missing by any call); until it exists the store reads as empty.

Same interface and behaviour as `gateway.stores.audio_store.LocalAudioStore`; every failure to
reach the service (refused connection, timeout, an HTTP error) raises `StoreUnavailable`.
The client does not retry (aiohttp may send a request once more when its connection drops
before the answer); `timeout_s` bounds each request's connection and each wait for the
service's answer, not a whole call (a put makes five requests, see `put`). A capture that
cannot be stored is dropped by the writer, never waited for.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Final, TypeVar

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from gateway.errors import CaptureCorrupt, CaptureNotFound, StoreUnavailable, UnitDeleted
from gateway.stores.audio_store import (
    CAPTURE_ID,
    SIDECAR_CONTENT_TYPE,
    WAV_CONTENT_TYPE,
    Capture,
    check_experiment,
    check_unit,
    check_wav,
)

DELETED_PREFIX: Final = "_deleted/"
IDS_PREFIX: Final = "_ids/"  # `_ids/<capture_id>` holds the capture's experiment
_PARALLEL_READS: Final = 8
CACHED_IDS: Final = 10_000  # capture id -> experiment entries kept (about 2 MB)
_T = TypeVar("_T")
# A SAS token travels in each request's query string, and aiohttp names the whole URL in some
# errors ("Connection timeout to host <url>"): queries and signatures never leave the store.
_URL_QUERY: Final = re.compile(r"(\bhttps?://[^\s?#'\"<>]*)\?[^\s'\"<>]*")
_SIGNATURE: Final = re.compile(r"(?i)\b(sig=)[^&\s'\"<>]*")

Credential = str | dict[str, str] | None
"""An account key or SAS token (str), {"account_name", "account_key"}, or None (public/SAS URL)."""


@contextmanager
def _translated(operation: str) -> Iterator[None]:
    """Every failure of the service as StoreUnavailable. A missing blob or container that
    means absence is caught inside the block; one that reaches here is an outage too. The
    reason carries the error without URL queries or signatures (a SAS token is one), and the
    original is not chained: its message names the URL."""
    try:
        yield
    except (TimeoutError, AzureError, OSError) as exc:
        detail = _redacted(str(exc))
        reason = f"{type(exc).__name__}{': ' + detail if detail else ''}"
        raise StoreUnavailable(f"BlobAudioStore.{operation}: {reason}") from None


def _redacted(text: str) -> str:
    """`text` with every URL's query string and every `sig=` value replaced."""
    return _SIGNATURE.sub(r"\1[redacted]", _URL_QUERY.sub(r"\1?[redacted]", text))


class BlobAudioStore:
    """Captures in the container `container` of the Blob service at `account_url`."""

    def __init__(
        self,
        account_url: str,
        container: str,
        credential: Credential = None,
        *,
        timeout_s: float = 5.0,
        cached_ids: int = CACHED_IDS,
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
        # capture_id -> experiment of the captures seen last, least recently used first.
        self._experiments: OrderedDict[str, str] = OrderedDict()
        self._cached_ids = cached_ids

    async def put(self, capture: Capture, wav: bytes) -> None:
        """Five requests, one after the other: the deletion list, the WAV, the sidecar, the
        id blob, the deletion list again (one more, creating the container, on a process's
        first put); three more deletions when the unit was deleted meanwhile."""
        if len(wav) != capture.wav_bytes:
            raise ValueError(f"capture {capture.capture_id}: wav_bytes is not the WAV's size")
        check_wav(capture.capture_id, wav, capture.wav_bytes)
        with _translated("put"), self._container_may_go():
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
        self._remember(capture.capture_id, capture.experiment)

    async def wav(self, capture_id: str) -> bytes:
        if not CAPTURE_ID.fullmatch(capture_id):
            raise CaptureNotFound(capture_id)
        with _translated("wav"):
            experiment = self._recall(capture_id) or await self._find(capture_id)
            base = f"{experiment}/{capture_id}"
            try:
                sidecar = await self._download(f"{base}.json")
                blob = await self._container.download_blob(f"{base}.wav")
            except ResourceNotFoundError:
                self._experiments.pop(capture_id, None)
                raise CaptureNotFound(capture_id) from None
            capture = _parse_sidecar(sidecar)
            if capture is None:
                raise CaptureCorrupt(capture_id, "the sidecar is unreadable")
            content_type = blob.properties.content_settings.content_type
            if content_type != WAV_CONTENT_TYPE:
                raise CaptureCorrupt(capture_id, f"content type {content_type!r}")
            if blob.size != capture.wav_bytes:
                raise CaptureCorrupt(
                    capture_id, f"{blob.size} bytes stored, {capture.wav_bytes} expected"
                )
            data = check_wav(capture_id, await blob.readall(), capture.wav_bytes)
        self._remember(capture_id, experiment)
        return data

    async def captures(self, experiment: str) -> list[Capture]:
        check_experiment(experiment)
        with _translated("captures"):
            try:
                names = [
                    blob.name
                    async for blob in self._container.list_blobs(name_starts_with=f"{experiment}/")
                    if blob.name.endswith(".json")
                ]
            except ResourceNotFoundError:
                self._container_ready = False
                return []  # no container (yet): nothing was captured
            sidecars = await _bounded_gather(self._sidecar, names)
        found = [capture for capture in sidecars if capture is not None]
        for capture in found:
            self._remember(capture.capture_id, capture.experiment)
        return sorted(found, key=lambda c: c.captured_at)

    async def delete_unit(self, unit: str) -> int:
        check_unit(unit)
        with _translated("delete_unit"), self._container_may_go():
            await self._ensure_container()
            # Listed before the blobs go: a put racing with the deletion is refused.
            await self._container.upload_blob(f"{DELETED_PREFIX}{unit}", b"", overwrite=True)
            return await self._delete_where(lambda metadata: metadata.get("unit") == unit)

    async def expire(self, older_than: datetime) -> int:
        """The captures made before `older_than`, and what is left of a deleted unit's
        captures (a deletion, or a put's clean-up, cut off by an outage) however recent."""
        deleted: set[str] = set()

        def doomed(metadata: dict[str, str]) -> bool:
            if metadata.get("unit") in deleted:
                return True
            captured_at = metadata.get("captured_at")
            if captured_at is None:
                return False
            try:
                return datetime.fromisoformat(captured_at.replace("Z", "+00:00")) < older_than
            except (ValueError, TypeError):  # not dated (or without a zone): kept, not fatal
                return False

        with _translated("expire"):
            deleted.update(await self._deleted_units())
            return await self._delete_where(doomed)

    async def close(self) -> None:
        await self._container.close()
        await self._service.close()

    # -- helpers -------------------------------------------------------------------------

    @contextmanager
    def _container_may_go(self) -> Iterator[None]:
        """A write that found the container missing (removed behind the store): the next
        write creates it again."""
        try:
            yield
        except ResourceNotFoundError:
            self._container_ready = False
            raise

    def _remember(self, capture_id: str, experiment: str) -> None:
        self._experiments[capture_id] = experiment
        self._experiments.move_to_end(capture_id)
        while len(self._experiments) > self._cached_ids:
            self._experiments.popitem(last=False)

    def _recall(self, capture_id: str) -> str | None:
        experiment = self._experiments.get(capture_id)
        if experiment is not None:
            self._experiments.move_to_end(capture_id)
        return experiment

    def _forget(self, name: str) -> None:
        """Drop the cache entry of the capture whose blob `name` was deleted."""
        capture_id = name.rsplit("/", 1)[-1].split(".", 1)[0]
        self._experiments.pop(capture_id, None)

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

    async def _deleted_units(self) -> set[str]:
        try:
            return {
                str(blob.name).removeprefix(DELETED_PREFIX)
                async for blob in self._container.list_blobs(name_starts_with=DELETED_PREFIX)
            }
        except ResourceNotFoundError:
            self._container_ready = False
            return set()  # no container (yet): no deletion list

    async def _find(self, capture_id: str) -> str:
        try:
            experiment = (await self._download(f"{IDS_PREFIX}{capture_id}")).decode()
            check_experiment(experiment)
            return experiment
        except ResourceNotFoundError:
            pass  # absent, or its id blob was lost: a listing decides
        except ValueError:
            pass  # an id blob this store did not write: a listing decides
        suffix = f"/{capture_id}.json"
        try:
            async for blob in self._container.list_blobs():
                name = str(blob.name)
                if name.endswith(suffix):
                    return name.removesuffix(suffix)
        except ResourceNotFoundError:
            self._container_ready = False  # no container (yet): nothing was captured
        raise CaptureNotFound(capture_id)

    async def _download(self, name: str) -> bytes:
        stream = await self._container.download_blob(name)
        return await stream.readall()

    async def _sidecar(self, name: str) -> Capture | None:
        try:
            return _parse_sidecar(await self._download(name))
        except ResourceNotFoundError:
            return None  # removed by a concurrent deletion

    async def _delete_where(self, doomed: Callable[[dict[str, str]], bool]) -> int:
        sidecars: list[str] = []
        wavs: list[str] = []
        try:
            async for blob in self._container.list_blobs(include=["metadata"]):
                if blob.name.startswith(DELETED_PREFIX) or not doomed(blob.metadata or {}):
                    continue
                (sidecars if blob.name.endswith(".json") else wavs).append(blob.name)
        except ResourceNotFoundError:
            self._container_ready = False
            return 0  # no container (yet): nothing was captured
        # Sidecars first: an interruption leaves orphan WAVs, never a listed capture
        # without its audio; retention removes the orphans.
        for name in sidecars + wavs:
            with suppress(ResourceNotFoundError):
                await self._container.delete_blob(name)
            self._forget(name)
        return len(sidecars)


def _parse_sidecar(data: bytes) -> Capture | None:
    """The capture a sidecar describes; None when it is not one this store wrote."""
    try:
        return Capture.from_json(json.loads(data))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


async def _bounded_gather(read: Callable[[str], Awaitable[_T]], names: list[str]) -> list[_T]:
    """`read` of each name, at most `_PARALLEL_READS` at a time; the first failure cancels the
    reads still running or waiting (none goes on after the caller got the error)."""
    gate = asyncio.Semaphore(_PARALLEL_READS)

    async def one(name: str) -> _T:
        async with gate:
            return await read(name)

    tasks = [asyncio.ensure_future(one(name)) for name in names]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()  # nothing for the calls that are done
        await asyncio.gather(*tasks, return_exceptions=True)
