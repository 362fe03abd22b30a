"""Tests for gateway.stores.review_leases: one holder per capture, one capture per reviewer,
skips and expiry, in a file and in the shared test Redis (a key prefix of each test's own)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.stores.review_leases import FileReviewLeases, RedisReviewLeases, ReviewLeases

IDS = [f"{n:032x}" for n in range(1, 6)]
LONG = 60.0


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
def leases(
    request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: tuple[Redis, str]
) -> ReviewLeases:
    if request.param == "file":
        return FileReviewLeases(tmp_path / "review-leases.json")
    return RedisReviewLeases(*redis_prefix)


async def test_claims_follow_the_order_and_a_reviewer_keeps_their_item(
    leases: ReviewLeases,
) -> None:
    """The first free candidate is leased; the holder's next claim returns it again."""
    assert await leases.claim("exp", "rita", IDS, LONG) == IDS[0]
    assert await leases.claim("exp", "raj", IDS, LONG) == IDS[1]
    assert await leases.claim("exp", "rita", IDS, LONG) == IDS[0]
    assert await leases.holder("exp", IDS[0]) == "rita"
    assert await leases.holder("other", IDS[0]) is None


async def test_many_reviewers_at_once_never_share_an_item(leases: ReviewLeases) -> None:
    """Eight concurrent claims over five items: five distinct items, three reviewers without."""
    reviewers = [f"reviewer-{n}" for n in range(8)]
    got = await asyncio.gather(*(leases.claim("exp", r, IDS, LONG) for r in reviewers))
    items = [item for item in got if item is not None]
    assert sorted(items) == IDS
    assert got.count(None) == 3


async def test_a_release_frees_the_item_and_only_the_holder_releases(
    leases: ReviewLeases,
) -> None:
    """Another reviewer's release does nothing; the holder's frees the item for others."""
    await leases.claim("exp", "rita", IDS[:1], LONG)
    await leases.release("exp", "raj", IDS[0])
    assert await leases.holder("exp", IDS[0]) == "rita"
    await leases.release("exp", "rita", IDS[0])
    assert await leases.holder("exp", IDS[0]) is None
    assert await leases.claim("exp", "raj", IDS[:1], LONG) == IDS[0]


async def test_a_skip_is_remembered_for_the_skipper_only(leases: ReviewLeases) -> None:
    """A skipped item is not offered to the skipper again, but is to another reviewer."""
    assert await leases.claim("exp", "rita", IDS[:2], LONG) == IDS[0]
    await leases.skip("exp", "rita", IDS[0])
    assert await leases.claim("exp", "rita", IDS[:2], LONG) == IDS[1]
    assert await leases.claim("exp", "raj", IDS[:2], LONG) == IDS[0]
    await leases.release("exp", "rita", IDS[1])
    assert await leases.claim("exp", "rita", IDS[:1], LONG) is None


async def test_hold_takes_a_free_item_but_not_one_held_by_another(leases: ReviewLeases) -> None:
    """An undo's hold succeeds on a free or own item and fails on another's."""
    assert await leases.claim("exp", "raj", IDS[:1], LONG) == IDS[0]
    assert not await leases.hold("exp", "rita", IDS[0], LONG)
    assert await leases.hold("exp", "rita", IDS[1], LONG)
    assert await leases.holder("exp", IDS[1]) == "rita"
    assert await leases.claim("exp", "rita", IDS, LONG) == IDS[1]


async def test_a_lease_runs_out(leases: ReviewLeases) -> None:
    """After its time a lease is gone and the item goes to the next reviewer who claims."""
    assert await leases.claim("exp", "rita", IDS[:1], 0.2) == IDS[0]
    deadline = time.monotonic() + 5.0
    while await leases.holder("exp", IDS[0]) is not None:
        assert time.monotonic() < deadline, "the lease did not run out"
        await asyncio.sleep(0.05)
    assert await leases.claim("exp", "raj", IDS[:1], LONG) == IDS[0]


async def test_a_hold_gives_back_the_item_held_before(leases: ReviewLeases) -> None:
    """A reviewer holds one item: holding another (an undo) frees the one claimed before."""
    assert await leases.claim("exp", "rita", IDS[:1], LONG) == IDS[0]
    assert await leases.hold("exp", "rita", IDS[1], LONG)
    assert await leases.holder("exp", IDS[0]) is None
    assert await leases.claim("exp", "raj", IDS[:1], LONG) == IDS[0]
    assert await leases.claim("exp", "rita", IDS[:2], LONG) == IDS[1]
