"""Tests for gateway.stores.label_records: a labelled record and its shadows, found in Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.stores import label_records
from gateway.stores.keys import RECORD_FIELD, RedisKeys
from gateway.stores.label_records import SHADOW_WINDOW_MS, _windows, read_records

EXPERIMENT = "checkout"


def rid(n: int) -> str:
    return f"{n:032x}"


def make(n: int, **changes: Any) -> OutcomeRecord:
    values: dict[str, Any] = {
        "record_id": rid(n),
        "kind": Kind.UTTERANCE,
        "experiment": EXPERIMENT,
        "phase": "1",
        "variant": "base",
        "backend": "westus",
        "role": Role.PRIMARY,
        "client": "shop-app",
        "unit": "5f2b0c3e8a1d4e6f9a7b3c2d1e0f4a5b",
        "unit_source": UnitSource.QUERY,
        "session_id": "session-1",
        "protocol": Protocol.USP,
        "utterance_index": 0,
        "status": "Success",
        "audio_offset_ms": 0.0,
        "audio_duration_ms": 1000.0,
        "text": "pay my bill",
    }
    return OutcomeRecord(**(values | changes))


def shadow(n: int, **changes: Any) -> OutcomeRecord:
    return make(n, **({"role": Role.SHADOW, "variant": "custom"} | changes))


@pytest.fixture
async def redis() -> AsyncIterator[tuple[Redis, RedisKeys]]:
    """A client of the shared test Redis and a key prefix of this test's own, removed after."""
    client = Redis(host="127.0.0.1", port=6379)
    keys = RedisKeys(prefix=f"sgw-test-{uuid.uuid4().hex}")
    try:
        yield client, keys
    finally:
        doomed = [key async for key in client.scan_iter(match=f"{keys.prefix}:*")]
        if doomed:
            await client.delete(*doomed)
        await client.aclose()


async def store(client: Redis, keys: RedisKeys, entries: list[tuple[int, OutcomeRecord]]) -> None:
    """Entries at chosen arrival times (ms), indexed as the outcome sink indexes them."""
    for ms, record in entries:
        entry = await client.xadd(
            keys.outcomes(EXPERIMENT), {RECORD_FIELD: record.to_json()}, id=f"{ms}-0"
        )
        await client.hset(keys.records(EXPERIMENT), record.record_id, entry)


def test_windows_merge_when_they_overlap() -> None:
    """Windows around entry ids are merged when they overlap, and kept apart otherwise."""
    assert _windows(["1000-0", "1500-3", "9000-0"], 600) == [(400, 2100), (8400, 9600)]
    assert _windows(["100-0"], 600) == [(0, 700)]


async def test_near_finds_shadows_within_the_window_only(redis: tuple[Redis, RedisKeys]) -> None:
    """At put time a shadow that reached Redis within the window is found, one that came
    later is not; reading the whole stream (the rescore) finds both."""
    client, keys = redis
    base = 10_000_000
    late = base + SHADOW_WINDOW_MS + 1
    await store(
        client,
        keys,
        [
            (base, make(1)),
            (base + 5, shadow(2)),
            (base + 6, shadow(4, session_id="session-2")),
            (base + 7, make(5, session_id="session-2")),
            (late, shadow(3, variant="other")),
        ],
    )
    near = await read_records(client, keys, EXPERIMENT, [rid(1)], near=True)
    record, session = near[rid(1)]
    assert (record.record_id, record.text) == (rid(1), "pay my bill")
    assert [r.record_id for r in session] == [rid(2)]
    everywhere = await read_records(client, keys, EXPERIMENT, [rid(1)], near=False)
    assert [r.record_id for r in everywhere[rid(1)][1]] == [rid(2), rid(3)]


async def test_many_pages_of_stream_are_read(redis: tuple[Redis, RedisKeys]) -> None:
    """The stream is read page after page: a shadow behind 2,500 other entries is found."""
    client, keys = redis
    entries = [(1_000 + n, make(100 + n, session_id=f"other-{n}")) for n in range(2_500)]
    await store(client, keys, [(10, make(1)), *entries, (5_000, shadow(2))])
    found = await read_records(client, keys, EXPERIMENT, [rid(1)], near=False)
    assert [r.record_id for r in found[rid(1)][1]] == [rid(2)]


async def test_unknown_and_trimmed_records_are_not_found(redis: tuple[Redis, RedisKeys]) -> None:
    """An id no record has, or whose stream entry is gone, is simply absent."""
    client, keys = redis
    await store(client, keys, [(1_000, make(1)), (2_000, make(2))])
    await client.xdel(keys.outcomes(EXPERIMENT), "2000-0")
    found = await read_records(client, keys, EXPERIMENT, [rid(1), rid(2), rid(3)], near=True)
    assert list(found) == [rid(1)]


async def test_decoded_responses(redis: tuple[Redis, RedisKeys]) -> None:
    """A client that decodes responses to str reads the same records."""
    client, keys = redis
    await store(client, keys, [(1_000, make(1)), (1_001, shadow(2))])
    decoded = Redis(host="127.0.0.1", port=6379, decode_responses=True)
    try:
        found = await read_records(decoded, keys, EXPERIMENT, [rid(1)], near=True)
    finally:
        await decoded.aclose()
    assert [r.record_id for r in found[rid(1)][1]] == [rid(2)]


async def test_session_ids_that_json_escapes_are_matched_too(
    redis: tuple[Redis, RedisKeys],
) -> None:
    """A session id with a quote or backslash (escaped in the JSON) still finds its shadow."""
    client, keys = redis
    odd = 'se"ss\\ion'
    await store(
        client,
        keys,
        [(1_000, make(1, session_id=odd)), (1_001, shadow(2, session_id=odd)), (1_002, shadow(3))],
    )
    for near in (True, False):
        found = await read_records(client, keys, EXPERIMENT, [rid(1)], near=near)
        assert [r.record_id for r in found[rid(1)][1]] == [rid(2)]


async def test_many_sessions_are_filtered_here(
    redis: tuple[Redis, RedisKeys], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the number of session ids a script call takes, every shadow is fetched and the
    sessions are matched here: the same shadows are found."""
    client, keys = redis
    monkeypatch.setattr(label_records, "_SCRIPT_SESSIONS", 1)
    entries = [(1_000 + n, make(n, session_id=f"s{n}")) for n in range(1, 4)]
    entries += [(2_000 + n, shadow(10 + n, session_id=f"s{n}")) for n in range(1, 3)]
    entries += [(3_000, shadow(20, session_id="elsewhere"))]
    await store(client, keys, entries)
    found = await read_records(client, keys, EXPERIMENT, [rid(1), rid(2), rid(3)], near=False)
    assert {r: [s.record_id for s in found[r][1]] for r in found} == {
        rid(1): [rid(11)],
        rid(2): [rid(12)],
        rid(3): [],
    }
