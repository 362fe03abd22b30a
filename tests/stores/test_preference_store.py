"""Tests for gateway.stores.preference_store: the current preference per capture and the
audit trail, in a file and in the shared test Redis (a key prefix of each test's own)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.errors import StoreUnavailable
from gateway.outcomes.preference import Preference
from gateway.stores.preference_store import (
    PREFERENCE_FIELD,
    FilePreferenceStore,
    PreferenceStore,
    RedisPreferenceStore,
)


def make(n: int, **changes: Any) -> Preference:
    values: dict[str, Any] = {
        "capture_id": f"{n:032x}",
        "experiment": "checkout",
        "unit": f"unit-{n}",
        "sample": "uniform",
        "reviewer": "rita",
        "choice": "a",
        "variant_a": "base",
        "variant_b": "custom",
        "reviewed_at": f"2026-12-07T10:00:{n:02d}.000Z",
    }
    values.update(changes)
    return Preference(**values)


@pytest.fixture
async def redis_prefix() -> AsyncIterator[tuple[Redis, str]]:
    client = Redis(host="127.0.0.1", port=6379)
    prefix = f"sgw-test-{uuid.uuid4().hex}"
    try:
        yield client, prefix
    finally:
        doomed = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if doomed:
            await client.delete(*doomed)
        await client.aclose()


@pytest.fixture(params=["file", "redis"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: tuple[Redis, str]
) -> PreferenceStore:
    if request.param == "file":
        return FilePreferenceStore(tmp_path / "preferences.jsonl", fsync=False)
    return RedisPreferenceStore(*redis_prefix)


async def test_the_last_write_of_a_capture_wins(store: PreferenceStore) -> None:
    """A second preference of a capture replaces the first; other experiments are apart."""
    await store.put(make(1))
    await store.put(make(2))
    await store.put(make(1, choice="same", reviewer="raj"))
    await store.put(make(3, experiment="other"))
    current = await store.current("checkout")
    assert set(current) == {make(1).capture_id, make(2).capture_id}
    assert current[make(1).capture_id].choice == "same"
    assert current[make(1).capture_id].reviewer == "raj"
    assert set(await store.current("other")) == {make(3).capture_id}
    assert await store.current("nothing") == {}


async def test_a_withdrawn_preference_is_not_current_but_is_found(store: PreferenceStore) -> None:
    """Withdrawing takes the capture out of `current`; `get` still returns it, withdrawn."""
    preference = make(1)
    await store.put(preference)
    await store.put(preference.withdraw("2026-12-07T11:00:00.000Z"))
    assert await store.current("checkout") == {}
    found = await store.get("checkout", preference.capture_id)
    assert found is not None
    assert found.withdrawn
    assert await store.get("checkout", make(9).capture_id) is None
    assert await store.latest("checkout") == {preference.capture_id: found}
    assert await store.latest("nothing") == {}


async def test_every_write_is_kept_in_the_audit_trail(
    tmp_path: Path, redis_prefix: tuple[Redis, str]
) -> None:
    """Both stores keep each write: the file's lines, the Redis audit stream's entries."""
    file_store = FilePreferenceStore(tmp_path / "preferences.jsonl", fsync=False)
    client, prefix = redis_prefix
    redis_store = RedisPreferenceStore(client, prefix)
    for target in (file_store, redis_store):
        await target.put(make(1))
        await target.put(make(1, choice="b"))
    lines = (tmp_path / "preferences.jsonl").read_text().splitlines()
    assert [Preference.from_json(line).choice for line in lines] == ["a", "b"]
    entries = await client.xrange(f"{prefix}:{{checkout}}:preference-audit")
    choices = [
        Preference.from_json(fields[PREFERENCE_FIELD.encode()]).choice for _, fields in entries
    ]
    assert choices == ["a", "b"]


async def test_a_torn_line_is_skipped(tmp_path: Path) -> None:
    """A line that is not a preference (a torn write) is skipped; the others are read."""
    path = tmp_path / "preferences.jsonl"
    store = FilePreferenceStore(path, fsync=False)
    await store.put(make(1))
    with path.open("a") as file:
        file.write('{"capture_id": "c\n')
    await store.put(make(2))
    assert len(await store.current("checkout")) == 2


async def test_an_unreachable_redis_raises_store_unavailable() -> None:
    """A Redis that does not answer raises StoreUnavailable from reads and writes."""
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    store = RedisPreferenceStore(client, "sgw-test-unreachable")
    try:
        with pytest.raises(StoreUnavailable):
            await store.put(make(1))
        with pytest.raises(StoreUnavailable):
            await store.current("checkout")
    finally:
        await client.aclose()


async def test_the_file_store_reads_what_was_appended_and_a_replaced_file_anew(
    tmp_path: Path,
) -> None:
    """Reads parse only the lines added since the last read (a second process's too); a
    line still being written waits for its newline; a file replaced is read from its start."""
    path = tmp_path / "preferences.jsonl"
    store, other = FilePreferenceStore(path, fsync=False), FilePreferenceStore(path, fsync=False)
    await store.put(make(1))
    assert set(await store.current("checkout")) == {make(1).capture_id}
    await other.put(make(2))
    with path.open("ab") as file:
        file.write(make(3).to_json().encode())  # no newline yet: a write under way
    assert set(await store.current("checkout")) == {make(1).capture_id, make(2).capture_id}
    with path.open("ab") as file:
        file.write(b"\n")
    assert len(await store.current("checkout")) == 3
    replacement = tmp_path / "new.jsonl"
    replacement.write_text(make(4).to_json() + "\n")
    replacement.replace(path)
    assert set(await store.current("checkout")) == {make(4).capture_id}
