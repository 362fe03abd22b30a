"""Guardrail counters: per-variant outcome counts that every replica adds to.

Guardrails compare variants of one experiment phase on flat counts (`{"n": 3, "error": 1,
"lat.17": 2}`; the field names mean nothing here). Each replica adds its deltas; a guardrail
reads the sums of all replicas.

* `LocalCounterStore`: in-process dicts, for one process without Redis.
* `RedisCounterStore`: one hash per experiment phase, under the experiment's hash tag like
  the keys in `gateway.constants`:

    <prefix>:{<experiment>}:guard:<phase>   HASH   "<variant>|<field>" -> count

  refreshed to expire `ttl_s` after the last write, so a finished experiment's counters go.

Redis failures propagate as `REDIS_ERRORS`; the caller keeps its deltas and adds them again
later. The increments are not idempotent: a batch whose reply was lost is counted twice
when retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Protocol

from gateway.io.redis_client import RedisClient

SEPARATOR: Final = "|"  # between the variant and the field name in a hash field

CounterKey = tuple[str, str, str]  # (experiment, phase, variant)


class CounterStore(Protocol):
    """Where the guardrail counts of every replica add up."""

    async def add(
        self, experiment: str, phase: str, variant: str, deltas: Mapping[str, int]
    ) -> None:
        """Add `deltas` to the variant's counts."""
        ...

    async def add_many(self, batch: Mapping[CounterKey, Mapping[str, int]]) -> None:
        """Add the deltas of many (experiment, phase, variant) in one round trip."""
        ...

    async def read(self, experiment: str, phase: str) -> dict[str, dict[str, int]]:
        """variant -> field -> count, for the experiment phase (empty if nothing was added)."""
        ...


def _check_variant(variant: str) -> None:
    if SEPARATOR in variant:
        raise ValueError(f"variant {variant!r}: must not contain {SEPARATOR!r}")


class LocalCounterStore:
    """Counts in this process only."""

    def __init__(self) -> None:
        # (experiment, phase) -> variant -> field -> count
        self._counts: dict[tuple[str, str], dict[str, dict[str, int]]] = {}

    async def add(
        self, experiment: str, phase: str, variant: str, deltas: Mapping[str, int]
    ) -> None:
        await self.add_many({(experiment, phase, variant): deltas})

    async def add_many(self, batch: Mapping[CounterKey, Mapping[str, int]]) -> None:
        for _experiment, _phase, variant in batch:
            _check_variant(variant)  # as the Redis store does: both refuse the same input
        for (experiment, phase, variant), deltas in batch.items():
            counts = self._counts.setdefault((experiment, phase), {}).setdefault(variant, {})
            for field, delta in deltas.items():
                counts[field] = counts.get(field, 0) + delta

    async def read(self, experiment: str, phase: str) -> dict[str, dict[str, int]]:
        variants = self._counts.get((experiment, phase), {})
        return {variant: dict(fields) for variant, fields in variants.items()}


def guard_key(prefix: str, experiment: str, phase: str) -> str:
    """The hash of an experiment phase's counters."""
    return f"{prefix}:{{{experiment}}}:guard:{phase}"


class RedisCounterStore:
    """Counts in Redis, summed over every replica (key layout in the module docstring).

    A batch is one non-transactional pipeline: HINCRBY per field, then PEXPIRE per key. In a
    Redis Cluster redis-py splits it by node; each key's increments stay together.
    """

    def __init__(self, client: RedisClient, prefix: str, *, ttl_s: float = 30 * 86400) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.client = client
        self.prefix = prefix
        self.ttl_ms = max(1, round(ttl_s * 1000))

    async def add(
        self, experiment: str, phase: str, variant: str, deltas: Mapping[str, int]
    ) -> None:
        await self.add_many({(experiment, phase, variant): deltas})

    async def add_many(self, batch: Mapping[CounterKey, Mapping[str, int]]) -> None:
        for _experiment, _phase, variant in batch:
            _check_variant(variant)
        touched: set[str] = set()
        async with self.client.pipeline(transaction=False) as pipe:
            for (experiment, phase, variant), deltas in batch.items():
                key = guard_key(self.prefix, experiment, phase)
                for field, delta in deltas.items():
                    pipe.hincrby(key, f"{variant}{SEPARATOR}{field}", delta)
                    touched.add(key)
            for key in touched:
                pipe.pexpire(key, self.ttl_ms)
            if touched:
                await pipe.execute()

    async def read(self, experiment: str, phase: str) -> dict[str, dict[str, int]]:
        key = guard_key(self.prefix, experiment, phase)
        stored = await self.client.hgetall(key)
        counts: dict[str, dict[str, int]] = {}
        for raw_field, raw_value in stored.items():
            name = _str(raw_field)
            variant, separator, field = name.partition(SEPARATOR)
            try:
                value = int(raw_value)
            except ValueError:
                value = None
            if not separator or value is None:
                raise ValueError(f"{key}: field {name!r} is not a guardrail counter")
            counts.setdefault(variant, {})[field] = value
        return counts


def _str(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
