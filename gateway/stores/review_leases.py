"""Review leases: which reviewer holds which capture, so two never review the same at once.

The review queue (`gateway.server.admin.review`) offers captures in priority order; `claim`
gives a reviewer the first one nobody else holds and they did not skip, leased for a while
(renewed by each claim, released by a save or a skip). A reviewer holds one capture at a
time: claiming again returns the one held. A skipped capture is not offered to the same
reviewer again for `SKIP_MEMORY_S`, but is to others.

* `FileReviewLeases`: one JSON file, read and rewritten under an exclusive `flock` (so the
  processes of `serve --workers N` on one machine agree), times from the wall clock.
* `RedisReviewLeases`: `<prefix>:{<experiment>}:review-lease:<capture_id>` (STRING reviewer,
  expiring with the lease, taken with SET NX), `...:review-held:<reviewer>` (STRING the
  capture held), `...:review-skips:<reviewer>` (SET of skipped captures, expiring).

Failures raise `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from gateway.stores.failures import store_call
from gateway.stores.redis_client import RedisClient

LEASES_FILE_NAME: Final = "review-leases.json"
SKIP_MEMORY_S: Final = 7 * 24 * 3600
MAX_SKIPS: Final = 10_000  # per reviewer and experiment, the oldest forgotten first

_RELEASE: Final = """
if redis.call('get', KEYS[2]) == ARGV[2] then redis.call('del', KEYS[2]) end
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_HOLD: Final = """
local holder = redis.call('get', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class ReviewLeases(Protocol):
    """Who holds which capture of an experiment's review queue."""

    async def claim(
        self, experiment: str, reviewer: str, candidates: Sequence[str], ttl_s: float
    ) -> str | None:
        """The capture `reviewer` holds if it is among `candidates`, else the first candidate
        nobody holds and the reviewer did not skip, now leased to them for `ttl_s`; None
        when there is none."""
        ...

    async def hold(self, experiment: str, reviewer: str, capture_id: str, ttl_s: float) -> bool:
        """Lease `capture_id` to `reviewer` (an undo's reopened capture) unless another
        reviewer holds it; whether they hold it now."""
        ...

    async def holder(self, experiment: str, capture_id: str) -> str | None:
        """The reviewer holding the capture's live lease, or None."""
        ...

    async def release(self, experiment: str, reviewer: str, capture_id: str) -> None:
        """End `reviewer`'s lease of the capture (nothing if they do not hold it)."""
        ...

    async def skip(self, experiment: str, reviewer: str, capture_id: str) -> None:
        """Release the capture and never offer it to `reviewer` again (for SKIP_MEMORY_S)."""
        ...


class FileReviewLeases:
    """Leases and skips in one JSON file (module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @store_call
    async def claim(
        self, experiment: str, reviewer: str, candidates: Sequence[str], ttl_s: float
    ) -> str | None:
        return await asyncio.to_thread(self._claim, experiment, reviewer, list(candidates), ttl_s)

    @store_call
    async def hold(self, experiment: str, reviewer: str, capture_id: str, ttl_s: float) -> bool:
        return await asyncio.to_thread(self._hold, experiment, reviewer, capture_id, ttl_s)

    @store_call
    async def holder(self, experiment: str, capture_id: str) -> str | None:
        return await asyncio.to_thread(self._holder, experiment, capture_id)

    @store_call
    async def release(self, experiment: str, reviewer: str, capture_id: str) -> None:
        await asyncio.to_thread(self._release, experiment, reviewer, capture_id, False)

    @store_call
    async def skip(self, experiment: str, reviewer: str, capture_id: str) -> None:
        await asyncio.to_thread(self._release, experiment, reviewer, capture_id, True)

    def _update(self, change: Any) -> Any:
        """Run change(state, now) on the file's state under the locks and write it back."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            with os.fdopen(fd, "r+", encoding="utf-8") as file:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX)
                try:
                    text = file.read()
                    state: dict[str, Any] = json.loads(text) if text.strip() else {}
                    now = time.time()
                    leases: dict[str, list[Any]] = state.setdefault("leases", {})
                    for slot in [k for k, (_, until) in leases.items() if until <= now]:
                        del leases[slot]
                    state.setdefault("skips", {})
                    answer = change(state, now)
                    file.seek(0)
                    file.truncate()
                    file.write(json.dumps(state, separators=(",", ":")))
                    file.flush()
                finally:
                    fcntl.flock(file.fileno(), fcntl.LOCK_UN)
        return answer

    def _claim(
        self, experiment: str, reviewer: str, candidates: list[str], ttl_s: float
    ) -> str | None:
        def change(state: dict[str, Any], now: float) -> str | None:
            leases: dict[str, list[Any]] = state["leases"]
            skips = {
                cid
                for cid, until in state["skips"].get(f"{experiment}/{reviewer}", {}).items()
                if until > now
            }
            mine = [c for c in candidates if leases.get(f"{experiment}/{c}", [None])[0] == reviewer]
            free = [c for c in candidates if f"{experiment}/{c}" not in leases and c not in skips]
            chosen = (mine or free)[0] if mine or free else None
            for slot in [k for k, (who, _) in leases.items() if who == reviewer]:
                if slot.startswith(f"{experiment}/"):
                    del leases[slot]  # one capture at a time
            if chosen is not None:
                leases[f"{experiment}/{chosen}"] = [reviewer, now + ttl_s]
            return chosen

        result: str | None = self._update(change)
        return result

    def _hold(self, experiment: str, reviewer: str, capture_id: str, ttl_s: float) -> bool:
        def change(state: dict[str, Any], now: float) -> bool:
            leases: dict[str, list[Any]] = state["leases"]
            slot = f"{experiment}/{capture_id}"
            if leases.get(slot, [reviewer])[0] != reviewer:
                return False
            for other in [k for k, (who, _) in leases.items() if who == reviewer]:
                if other.startswith(f"{experiment}/"):
                    del leases[other]
            leases[slot] = [reviewer, now + ttl_s]
            return True

        result: bool = self._update(change)
        return result

    def _holder(self, experiment: str, capture_id: str) -> str | None:
        def change(state: dict[str, Any], now: float) -> str | None:
            entry = state["leases"].get(f"{experiment}/{capture_id}")
            return None if entry is None else str(entry[0])

        result: str | None = self._update(change)
        return result

    def _release(self, experiment: str, reviewer: str, capture_id: str, skip: bool) -> None:
        def change(state: dict[str, Any], now: float) -> None:
            slot = f"{experiment}/{capture_id}"
            if state["leases"].get(slot, [None])[0] == reviewer:
                del state["leases"][slot]
            if skip:
                skips: dict[str, float] = state["skips"].setdefault(f"{experiment}/{reviewer}", {})
                skips[capture_id] = now + SKIP_MEMORY_S
                for old in sorted(skips, key=skips.__getitem__)[: max(0, len(skips) - MAX_SKIPS)]:
                    del skips[old]

        self._update(change)


class RedisReviewLeases:
    """Leases and skips in Redis, every key of an experiment in its Cluster slot (module doc)."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, experiment: str, name: str) -> str:
        return f"{self.prefix}:{{{experiment}}}:{name}"

    @store_call
    async def claim(
        self, experiment: str, reviewer: str, candidates: Sequence[str], ttl_s: float
    ) -> str | None:
        ttl_ms = max(1, round(ttl_s * 1000))
        held_key = self._key(experiment, f"review-held:{reviewer}")
        held = _text(await self.client.get(held_key))
        if held is not None and held in candidates:
            if await self.hold(experiment, reviewer, held, ttl_s):
                return held
        elif held is not None:
            await self.release(experiment, reviewer, held)
        skipped = {
            _str(member)
            for member in await self.client.smembers(
                self._key(experiment, f"review-skips:{reviewer}")
            )
        }
        for capture_id in candidates:
            if capture_id in skipped:
                continue
            lease = self._key(experiment, f"review-lease:{capture_id}")
            if await self.client.set(lease, reviewer, nx=True, px=ttl_ms):
                await self.client.set(held_key, capture_id, px=ttl_ms)
                return capture_id
        return None

    @store_call
    async def hold(self, experiment: str, reviewer: str, capture_id: str, ttl_s: float) -> bool:
        ttl_ms = max(1, round(ttl_s * 1000))
        lease = self._key(experiment, f"review-lease:{capture_id}")
        held: Any = await self.client.eval(_HOLD, 1, lease, reviewer, ttl_ms)
        if not held:
            return False
        held_key = self._key(experiment, f"review-held:{reviewer}")
        before = _text(await self.client.set(held_key, capture_id, px=ttl_ms, get=True))
        if before is not None and before != capture_id:
            # One capture at a time: the one held before goes back to the queue.
            previous = self._key(experiment, f"review-lease:{before}")
            await self.client.eval(_RELEASE, 2, previous, held_key, reviewer, "")
        return True

    @store_call
    async def holder(self, experiment: str, capture_id: str) -> str | None:
        return _text(await self.client.get(self._key(experiment, f"review-lease:{capture_id}")))

    @store_call
    async def release(self, experiment: str, reviewer: str, capture_id: str) -> None:
        lease = self._key(experiment, f"review-lease:{capture_id}")
        held = self._key(experiment, f"review-held:{reviewer}")
        await self.client.eval(_RELEASE, 2, lease, held, reviewer, capture_id)

    @store_call
    async def skip(self, experiment: str, reviewer: str, capture_id: str) -> None:
        await self.release(experiment, reviewer, capture_id)
        skips = self._key(experiment, f"review-skips:{reviewer}")
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.sadd(skips, capture_id)
            pipe.expire(skips, SKIP_MEMORY_S)
            await pipe.execute()


def _str(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _text(value: Any) -> str | None:
    return None if value is None else _str(value)
