"""Preference stores: the review workbench's blind choices, keyed by capture, in either store.

The workbench (`gateway.server.admin.review`) writes one `Preference` per reviewed capture;
a later write of the same capture replaces it (an undo writes it back withdrawn), and every
write is kept in an audit trail. `current` answers the live ones of an experiment, which
both the review queue (what is done) and the analysis (`gateway.analysis.preferences`) read;
`latest` every reviewed capture's, withdrawn ones included (`gateway.analysis.review_report`
holds their labels out of the headline).

* `FilePreferenceStore`: JSON lines appended to `preferences.jsonl`; the last line of a
  capture is its current preference, the earlier ones the audit trail. A read parses only
  the lines appended since the previous read.
* `RedisPreferenceStore`: the current preference in the experiment's `preferences` hash,
  every write in its `preference-audit` stream (one MULTI, one Cluster slot).

A store that cannot be read or written raises `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from pathlib import Path
from typing import Final, Protocol

from gateway.logging import get_logger
from gateway.outcomes.preference import Preference, PreferenceError
from gateway.stores.failures import store_call
from gateway.stores.redis_client import RedisClient

log = get_logger(__name__)

PREFERENCES_FILE_NAME: Final = "preferences.jsonl"
PREFERENCE_FIELD: Final = "p"


class PreferenceStore(Protocol):
    """Where the workbench's preferences are kept."""

    async def put(self, preference: Preference) -> None:
        """Write `preference` as its capture's current one (withdrawn or not)."""
        ...

    async def get(self, experiment: str, capture_id: str) -> Preference | None:
        """The capture's current preference, withdrawn ones included; None if never written."""
        ...

    async def current(self, experiment: str) -> dict[str, Preference]:
        """capture_id -> current preference, for every capture of the experiment whose
        current preference is not withdrawn."""
        ...

    async def latest(self, experiment: str) -> dict[str, Preference]:
        """capture_id -> current preference, withdrawn ones included: every capture of the
        experiment that was ever reviewed."""
        ...


class FilePreferenceStore:
    """Preferences as JSON lines appended to one file (module doc).

    Writes take an exclusive `flock`, so several gateway processes may append; each write
    is one `write` of one whole line, then fsync'd. A read parses the complete lines
    appended since the previous read (a store's first read, the whole file). A line that
    is not a preference (a torn write) is skipped and logged.
    """

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self._fsync = fsync
        self._lock = threading.Lock()
        # The file is only ever appended to: what was read is kept (experiment ->
        # capture_id -> latest preference), with the file's identity and the offset read up
        # to, and a read parses only the lines added since (the workbench reads at every
        # click). A file replaced or cut short is read again from its start.
        self._read_to = 0
        self._lines_read = 0
        self._identity: tuple[int, int] | None = None
        self._seen: dict[str, dict[str, Preference]] = {}

    @store_call
    async def put(self, preference: Preference) -> None:
        await asyncio.to_thread(self._append, preference.to_json())

    @store_call
    async def get(self, experiment: str, capture_id: str) -> Preference | None:
        latest = await asyncio.to_thread(self._latest, experiment)
        return latest.get(capture_id)

    @store_call
    async def current(self, experiment: str) -> dict[str, Preference]:
        latest = await asyncio.to_thread(self._latest, experiment)
        return {cid: p for cid, p in latest.items() if not p.withdrawn}

    @store_call
    async def latest(self, experiment: str) -> dict[str, Preference]:
        return await asyncio.to_thread(self._latest, experiment)

    def _append(self, line: str) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as file:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX)
                try:
                    file.write(line.encode("utf-8") + b"\n")
                    file.flush()
                    if self._fsync:
                        os.fsync(file.fileno())
                finally:
                    fcntl.flock(file.fileno(), fcntl.LOCK_UN)

    def _latest(self, experiment: str) -> dict[str, Preference]:
        with self._lock:
            try:
                with self.path.open("rb") as file:
                    stat = os.fstat(file.fileno())
                    identity = (stat.st_dev, stat.st_ino)
                    if identity != self._identity or stat.st_size < self._read_to:
                        self._identity, self._read_to, self._lines_read = identity, 0, 0
                        self._seen = {}
                    file.seek(self._read_to)
                    tail = file.read()
            except FileNotFoundError:
                self._identity, self._read_to, self._lines_read = None, 0, 0
                self._seen = {}
                return {}
            # Up to the last complete line: a write under way is read next time.
            end = tail.rfind(b"\n") + 1
            self._read_to += end
            for number, line in enumerate(tail[:end].splitlines(), start=self._lines_read + 1):
                self._lines_read = number
                if not line.strip():
                    continue
                try:
                    preference = Preference.from_json(line)
                except PreferenceError as exc:
                    log.warning(
                        "preference_line_skipped",
                        path=str(self.path),
                        line=number,
                        error=str(exc),
                    )
                    continue
                self._seen.setdefault(preference.experiment, {})[preference.capture_id] = preference
            return dict(self._seen.get(experiment, {}))


class RedisPreferenceStore:
    """Preferences in Redis: `<prefix>:{<experiment>}:preferences` (HASH capture_id ->
    preference JSON, the current one) and `<prefix>:{<experiment>}:preference-audit`
    (STREAM, field `p`, every write, never trimmed)."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, experiment: str, name: str) -> str:
        return f"{self.prefix}:{{{experiment}}}:{name}"

    @store_call
    async def put(self, preference: Preference) -> None:
        line = preference.to_json()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(preference.experiment, "preferences"), preference.capture_id, line)
            pipe.xadd(
                self._key(preference.experiment, "preference-audit"), {PREFERENCE_FIELD: line}
            )
            await pipe.execute()

    @store_call
    async def get(self, experiment: str, capture_id: str) -> Preference | None:
        raw = await self.client.hget(self._key(experiment, "preferences"), capture_id)
        return None if raw is None else self._parse(raw)

    @store_call
    async def current(self, experiment: str) -> dict[str, Preference]:
        latest = await self.latest(experiment)
        return {cid: p for cid, p in latest.items() if not p.withdrawn}

    @store_call
    async def latest(self, experiment: str) -> dict[str, Preference]:
        raw = await self.client.hgetall(self._key(experiment, "preferences"))
        found: dict[str, Preference] = {}
        for value in raw.values():
            preference = self._parse(value)
            if preference is not None:
                found[preference.capture_id] = preference
        return found

    def _parse(self, raw: bytes | str) -> Preference | None:
        try:
            return Preference.from_json(raw)
        except PreferenceError as exc:
            log.warning("preference_value_skipped", error=str(exc))
            return None
