"""Where a store's failures become `StoreUnavailable`, the one error callers catch.

A store's public methods fail in two ways that mean the same to a caller: Redis is
unavailable (`REDIS_ERRORS`) or a data file cannot be read or written (`OSError`). Both
leave a store as `gateway.errors.StoreUnavailable`, chained to the original, so that no
caller outside `gateway.stores` needs to know redis-py or which store is configured.
Everything else passes unchanged: a `ValueError` (corrupt data, a bad argument) and a
Redis refusal that is not an outage (a script error, a key of the wrong type).

`store_call` decorates a coroutine method, `store_iteration` an async generator method (a
failure while iterating is translated too); `translated` is the context manager beneath
both, for code that must let some failure through (a missing outcome file is absence, not
an outage, to the outcome reader's callers).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterator
from contextlib import aclosing, contextmanager
from typing import Any, Final, ParamSpec, TypeVar

from gateway.errors import StoreUnavailable
from gateway.stores.redis_client import REDIS_ERRORS

STORE_FAILURES: Final[tuple[type[BaseException], ...]] = (*REDIS_ERRORS, OSError)
"""What a store translates: Redis unavailable, or a data file that failed."""

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")


def unavailable(operation: str, exc: BaseException) -> StoreUnavailable:
    """The StoreUnavailable for `exc`, raised by `operation` (e.g. `RedisLabelStore.put`)."""
    detail = str(exc)
    return StoreUnavailable(f"{operation}: {type(exc).__name__}{': ' + detail if detail else ''}")


@contextmanager
def translated(operation: str, *, keep: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Raise `STORE_FAILURES` from the block as StoreUnavailable, except those in `keep`."""
    try:
        yield
    except keep:
        raise
    except STORE_FAILURES as exc:
        raise unavailable(operation, exc) from exc


def store_call(method: Callable[_P, Awaitable[_R]]) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """Decorate a store's coroutine method: its failures leave as StoreUnavailable."""
    operation = method.__qualname__

    @functools.wraps(method)
    async def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with translated(operation):
            return await method(*args, **kwargs)

    return call


def store_iteration(
    method: Callable[_P, AsyncGenerator[_T, None]],
) -> Callable[_P, AsyncGenerator[_T, None]]:
    """Decorate a store's async generator method: a failure to start or to continue the
    iteration leaves as StoreUnavailable."""
    operation = method.__qualname__

    @functools.wraps(method)
    def iterate(*args: _P.args, **kwargs: _P.kwargs) -> AsyncGenerator[_T, None]:
        return translated_iteration(method(*args, **kwargs), operation)

    return iterate


async def translated_iteration(
    iterator: AsyncGenerator[_T, None],
    operation: str,
    *,
    keep: tuple[type[BaseException], ...] = (),
) -> AsyncGenerator[_T, None]:
    """The items of `iterator`, with its failures (except those in `keep`) raised as
    StoreUnavailable. Closing this generator closes `iterator` (its file or connection)."""
    async with aclosing(iterator) as items:
        while True:
            with translated(operation, keep=keep):
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    return
            # Outside `translated`: an exception thrown in at the yield is the consumer's.
            yield item
