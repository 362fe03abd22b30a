"""Guardrail counters: per-variant outcome counts that every replica adds to.

Guardrails compare variants of one experiment phase on flat counts (`{"n": 3, "error": 1,
"lat.17": 2}`; the field names mean nothing here). Each replica adds its deltas; a guardrail
reads the sums of all replicas.

* `LocalCounterStore`: in-process dicts, for one process without Redis.
* `RedisCounterStore`: one hash per experiment phase, under the experiment's hash tag
  (`RedisKeys.guard`; the layout is in `gateway.stores.keys`), refreshed to expire `ttl_s`
  after the last write, so a finished experiment's counters go; and beside it a hash of the
  same counts per randomisation unit (`add_units`, `RedisKeys.guard_units`), with the same
  expiry: a clustered variance needs each unit's counts to grow the arm's sums of squares
  exactly.

An unavailable Redis raises `StoreUnavailable`; the caller keeps its deltas and adds them
again later. The increments are not idempotent: a batch whose reply was lost is counted
twice when retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from gateway.control.ports import CounterKey, UnitKey
from gateway.stores.failures import store_call
from gateway.stores.keys import RedisKeys
from gateway.stores.redis_client import RedisClient

SEPARATOR: Final = "|"  # between the variant and the field name in a hash field


def _check_variant(variant: str) -> None:
    if SEPARATOR in variant:
        raise ValueError(f"variant {variant!r}: must not contain {SEPARATOR!r}")


class LocalCounterStore:
    """Counts in this process only."""

    def __init__(self) -> None:
        # (experiment, phase) -> variant -> field -> count
        self._counts: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
        self._units: dict[UnitKey, dict[str, int]] = {}

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

    async def add_units(
        self, batch: Mapping[UnitKey, Mapping[str, int]]
    ) -> dict[UnitKey, dict[str, int]]:
        for _experiment, _phase, variant, _unit in batch:
            _check_variant(variant)
        after: dict[UnitKey, dict[str, int]] = {}
        for key, deltas in batch.items():
            if not deltas:
                continue  # as the Redis store: nothing to add, nothing to report
            counts = self._units.setdefault(key, {})
            for field, delta in deltas.items():
                counts[field] = counts.get(field, 0) + delta
            after[key] = {field: counts[field] for field in deltas}
        return after


def guard_key(prefix: str, experiment: str, phase: str) -> str:
    """The hash of an experiment phase's counters (`RedisKeys.guard`)."""
    return RedisKeys(prefix).guard(experiment, phase)


def units_key(prefix: str, experiment: str, phase: str) -> str:
    """The hash of an experiment phase's per-unit counters (`RedisKeys.guard_units`)."""
    return RedisKeys(prefix).guard_units(experiment, phase)


class RedisCounterStore:
    """Counts in Redis, summed over every replica (key layout in the module docstring).

    A batch is one transaction (MULTI/EXEC) per experiment: HINCRBY per field, then PEXPIRE
    per key; an experiment's keys share its hash tag, so each transaction is on one node.
    """

    def __init__(self, client: RedisClient, prefix: str, *, ttl_s: float = 30 * 86400) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.client = client
        self.prefix = prefix
        self.keys = RedisKeys(prefix)
        self.ttl_ms = max(1, round(ttl_s * 1000))

    async def add(
        self, experiment: str, phase: str, variant: str, deltas: Mapping[str, int]
    ) -> None:
        await self.add_many({(experiment, phase, variant): deltas})

    @store_call
    async def add_many(self, batch: Mapping[CounterKey, Mapping[str, int]]) -> None:
        for _experiment, _phase, variant in batch:
            _check_variant(variant)
        by_experiment: dict[str, list[tuple[CounterKey, Mapping[str, int]]]] = {}
        for counter_key, deltas in batch.items():
            by_experiment.setdefault(counter_key[0], []).append((counter_key, deltas))
        for items in by_experiment.values():
            touched: set[str] = set()
            # One transaction per experiment (its keys share a hash slot): a reader sees all
            # of a batch's counts or none, so an arm's totals and unit sums always agree.
            async with self.client.pipeline(transaction=True) as pipe:
                for (experiment, phase, variant), deltas in items:
                    key = self.keys.guard(experiment, phase)
                    for field, delta in deltas.items():
                        pipe.hincrby(key, f"{variant}{SEPARATOR}{field}", delta)
                        touched.add(key)
                for key in touched:
                    pipe.pexpire(key, self.ttl_ms)
                if touched:
                    await pipe.execute()

    @store_call
    async def read(self, experiment: str, phase: str) -> dict[str, dict[str, int]]:
        key = self.keys.guard(experiment, phase)
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

    @store_call
    async def add_units(
        self, batch: Mapping[UnitKey, Mapping[str, int]]
    ) -> dict[UnitKey, dict[str, int]]:
        """One transaction per experiment (its keys share a hash slot), so that a unit's
        fields are incremented together and the replies are its counts right after."""
        by_experiment: dict[str, list[tuple[UnitKey, Mapping[str, int]]]] = {}
        for unit_key, deltas in batch.items():
            _check_variant(unit_key[2])
            if deltas:
                by_experiment.setdefault(unit_key[0], []).append((unit_key, deltas))
        after: dict[UnitKey, dict[str, int]] = {}
        for items in by_experiment.values():
            touched: set[str] = set()
            async with self.client.pipeline(transaction=True) as pipe:
                for (experiment, phase, variant, unit), deltas in items:
                    hash_key = self.keys.guard_units(experiment, phase)
                    touched.add(hash_key)
                    for field, delta in deltas.items():
                        name = f"{variant}{SEPARATOR}{field}{SEPARATOR}{unit}"
                        pipe.hincrby(hash_key, name, delta)
                for hash_key in touched:
                    pipe.pexpire(hash_key, self.ttl_ms)
                replies = iter(await pipe.execute())
            for unit_key, deltas in items:
                after[unit_key] = {field: int(next(replies)) for field in deltas}
        return after


def _str(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
