"""Tests for gateway.stores.failures: how a store's Redis and file failures become
`StoreUnavailable`, and what passes through unchanged. The stores themselves failing for
real (a killed redis-server, an unreadable file) are in test_store_errors.py."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from gateway.errors import GatewayError, StoreUnavailable
from gateway.stores.failures import (
    STORE_FAILURES,
    store_call,
    store_iteration,
    translated,
    unavailable,
)
from gateway.stores.redis_client import REDIS_ERRORS


class Store:
    """A store whose methods fail as `failure` says."""

    def __init__(self, failure: BaseException | None) -> None:
        self.failure = failure
        self.closed = False

    @store_call
    async def read(self, value: int) -> int:
        if self.failure is not None:
            raise self.failure
        return value

    @store_iteration
    async def records(self, count: int) -> AsyncGenerator[int, None]:
        try:
            for n in range(count):
                yield n
            if self.failure is not None:
                raise self.failure
        finally:
            self.closed = True


def test_store_unavailable_is_a_gateway_error_without_credentials() -> None:
    """The reason names the operation and the failure, never a URL's password, and is short."""
    exc = ConnectionError("cannot reach redis://admin:s3cret@redis.internal:6379/0 " + "x" * 500)
    error = unavailable("RedisLabelStore.put", exc)
    assert isinstance(error, GatewayError)
    assert "s3cret" not in error.reason
    assert "admin" not in error.reason
    assert error.reason.startswith(
        "RedisLabelStore.put: ConnectionError: cannot reach redis://***@redis.internal:6379/0"
    )
    assert len(error.reason) <= 300
    assert str(error) == error.reason
    assert error.status == 503
    assert unavailable("X.y", TimeoutError()).reason == "X.y: TimeoutError"


def test_translated_lets_other_errors_and_kept_failures_through() -> None:
    with pytest.raises(ValueError, match="corrupt"), translated("X.y"):
        raise ValueError("corrupt")
    with (
        pytest.raises(FileNotFoundError, match="absent"),
        translated("X.y", keep=(FileNotFoundError,)),
    ):
        raise FileNotFoundError("absent")
    for failure in (OSError(28, "No space left on device"), *(e() for e in REDIS_ERRORS)):
        assert isinstance(failure, STORE_FAILURES)
        with pytest.raises(StoreUnavailable) as caught, translated("X.y"):
            raise failure
        assert caught.value.__cause__ is failure


async def test_a_store_call_names_its_method_and_chains_the_failure() -> None:
    assert await Store(None).read(3) == 3
    failure = OSError(5, "Input/output error")
    with pytest.raises(StoreUnavailable) as caught:
        await Store(failure).read(3)
    assert caught.value.reason == "Store.read: OSError: [Errno 5] Input/output error"
    assert caught.value.__cause__ is failure
    with pytest.raises(ValueError, match="bad"):
        await Store(ValueError("bad")).read(3)


async def test_a_failure_while_iterating_is_translated() -> None:
    """The items before the failure arrive; the failure itself is StoreUnavailable."""
    store = Store(ConnectionResetError("reset by peer"))
    got: list[int] = []

    async def consume() -> None:
        async for n in store.records(2):
            got.append(n)

    with pytest.raises(StoreUnavailable, match=r"Store\.records: ConnectionResetError"):
        await consume()
    assert got == [0, 1]
    assert store.closed


async def test_closing_the_iteration_closes_the_store_s_generator() -> None:
    """A consumer that stops early releases the store's file or connection at once, and an
    error of the consumer's own is not the store's."""
    store = Store(None)
    records = store.records(5)
    assert await anext(records) == 0
    await records.aclose()
    assert store.closed
    store = Store(None)
    records = store.records(5)
    assert await anext(records) == 0
    with pytest.raises(OSError, match="consumer"):
        await records.athrow(OSError("consumer"))
    assert store.closed
