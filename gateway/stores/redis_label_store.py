"""The Redis label store: labels in Redis, beside the experiment's outcome stream.

`RedisLabelStore` implements `gateway.stores.label_store.LabelStore` (the protocol, its
results and the rules both stores keep are described there) on the keys of
`gateway.stores.keys`, shared by every replica; its counterpart for files is
`gateway.stores.file_label_store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from gateway.logging import get_logger
from gateway.outcomes.label_scores import needs_scores, score_targets, scored, scored_if_found
from gateway.outcomes.labels import Label, LabelInput, LabelSource, UnitQuery, check_labeller
from gateway.outcomes.record import now_iso
from gateway.stores.failures import store_call
from gateway.stores.keys import LABEL_FIELD, RedisKeys
from gateway.stores.label_records import read_records
from gateway.stores.label_store import LabelResult, LabelStatus, PutResult, RescoreResult, UnitMatch
from gateway.stores.redis_client import RedisClient

log = get_logger(__name__)

_REDIS_CHUNK: Final = 1_000  # record ids per lookup pipeline, labels per MULTI
# Replace a label's value only if it is still the one that was scored: a relabel written
# meanwhile wins over the rescore of the text it replaced.
_REPLACE_IF_SAME: Final = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""
_UNKNOWN = LabelStatus.UNKNOWN


def _str(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class RedisLabelStore:
    """Labels in Redis, beside the experiment's outcome stream.

    A record's experiment is found by asking each experiment's `records` hash (the members
    of `experiments`) whether it holds the id; a unit's records, by asking each experiment's
    `units` hash (both kept by the outcome sink's script,
    `gateway.stores.redis_sink_script`, and trimmed with the stream: a record the stream no
    longer holds is unknown here).
    Each label is then one MULTI on the experiment's keys (one Cluster slot): `HGET labels`
    (the previous label), `HSET labels` (the current one), `XADD label-audit` (every write,
    field `l`). The audit stream is never trimmed. Before it, the labelled records and the
    shadows near them in the stream are read to score the labels
    (`gateway.stores.label_records`).
    """

    def __init__(self, client: RedisClient, keys: RedisKeys | None = None) -> None:
        self.client = client
        self.keys = keys or RedisKeys()

    @store_call
    async def experiments(self) -> list[str]:
        """Experiment keys that have outcome records, sorted."""
        return sorted(_str(member) for member in await self.client.smembers(self.keys.experiments))

    @store_call
    async def locate(self, record_ids: Iterable[str]) -> dict[str, str]:
        """record_id -> experiment key, for the ids that some experiment's records hold."""
        experiments = await self.experiments()
        ids = list(dict.fromkeys(record_ids))
        found: dict[str, str] = {}
        if not experiments:
            return found
        for start in range(0, len(ids), _REDIS_CHUNK):
            chunk = ids[start : start + _REDIS_CHUNK]
            async with self.client.pipeline(transaction=False) as pipe:
                for rid in chunk:
                    for experiment in experiments:
                        pipe.hexists(self.keys.records(experiment), rid)
                replies = await pipe.execute()
            for position, rid in enumerate(chunk):
                row = replies[position * len(experiments) : (position + 1) * len(experiments)]
                for experiment, exists in zip(experiments, row, strict=True):
                    if exists:
                        found[rid] = experiment
                        break
        return found

    @store_call
    async def find_units(self, queries: Sequence[UnitQuery]) -> list[tuple[UnitMatch, ...]]:
        found: list[list[UnitMatch]] = [[] for _ in queries]
        if not queries:
            return []
        anywhere = await self.experiments() if any(q.experiment is None for q in queries) else []
        # (query position, experiment) per HGET, in pipeline order
        asks = [
            (position, experiment)
            for position, query in enumerate(queries)
            for experiment in ([query.experiment] if query.experiment is not None else anywhere)
        ]
        for start in range(0, len(asks), _REDIS_CHUNK):
            chunk = asks[start : start + _REDIS_CHUNK]
            async with self.client.pipeline(transaction=False) as pipe:
                for position, experiment in chunk:
                    pipe.hget(self.keys.units(experiment), queries[position].key)
                replies = await pipe.execute()
            for (position, experiment), value in zip(chunk, replies, strict=True):
                if value is not None:
                    found[position] += (UnitMatch(rid, experiment) for rid in _str(value).split())
        return [tuple(matches) for matches in found]

    @store_call
    async def put(
        self,
        labels: Sequence[LabelInput],
        labeller: str,
        source: LabelSource,
        *,
        all_or_nothing: bool = False,
    ) -> PutResult:
        check_labeller(labeller)
        where = await self.locate(label.record_id for label in labels)
        unknown = [label.record_id for label in labels if label.record_id not in where]
        if unknown and all_or_nothing:
            ids = dict.fromkeys(unknown)
            return PutResult(tuple(LabelResult(rid, _UNKNOWN) for rid in ids), committed=False)
        labelled_at = now_iso()
        results: list[LabelResult | None] = [None] * len(labels)
        groups: dict[str, list[int]] = {}
        for position, given in enumerate(labels):
            experiment = where.get(given.record_id)
            if experiment is None:
                results[position] = LabelResult(given.record_id, _UNKNOWN)
            else:
                groups.setdefault(experiment, []).append(position)
        for experiment, positions in groups.items():
            hash_key = self.keys.labels(experiment)
            audit_key = self.keys.label_audit(experiment)
            for start in range(0, len(positions), _REDIS_CHUNK):
                chunk = positions[start : start + _REDIS_CHUNK]
                records = await read_records(
                    self.client,
                    self.keys,
                    experiment,
                    (labels[position].record_id for position in chunk),
                    near=True,
                )
                async with self.client.pipeline(transaction=True) as pipe:
                    for position in chunk:
                        given = labels[position]
                        label = given.label(labeller, source, labelled_at)
                        line = scored_if_found(label, records).to_json()
                        pipe.hget(hash_key, given.record_id)
                        pipe.hset(hash_key, given.record_id, line)
                        pipe.xadd(audit_key, {LABEL_FIELD: line})
                    replies = await pipe.execute()
                for offset, position in enumerate(chunk):
                    rid = labels[position].record_id
                    previous = replies[3 * offset]
                    if previous is None:
                        results[position] = LabelResult(rid, LabelStatus.STORED)
                    else:
                        text = _text_of(previous, hash_key, rid)
                        results[position] = LabelResult(rid, LabelStatus.RELABELLED, text)
        return PutResult(tuple(result for result in results if result is not None))

    @store_call
    async def get(self, record_ids: Iterable[str]) -> dict[str, Label]:
        ids = list(dict.fromkeys(record_ids))
        experiments = await self.experiments()
        found: dict[str, Label] = {}
        if not ids or not experiments:
            return found
        for start in range(0, len(ids), _REDIS_CHUNK):
            chunk = ids[start : start + _REDIS_CHUNK]
            async with self.client.pipeline(transaction=False) as pipe:
                for experiment in experiments:
                    pipe.hmget(self.keys.labels(experiment), chunk)
                replies = await pipe.execute()
            for experiment, values in zip(experiments, replies, strict=True):
                for rid, value in zip(chunk, values, strict=True):
                    if value is not None and rid not in found:
                        label = _parse(value, self.keys.labels(experiment), rid)
                        if label is not None:
                            found[rid] = label
        return found

    @store_call
    async def all(self, experiment: str) -> dict[str, Label]:
        key = self.keys.labels(experiment)
        found: dict[str, Label] = {}
        # HSCAN walks this one hash in pages; it is not a scan of the keyspace.
        async for field, value in self.client.hscan_iter(key, count=_REDIS_CHUNK):
            rid = _str(field)
            label = _parse(value, key, rid)
            if label is not None:
                found[rid] = label
        return found

    @store_call
    async def rescore(self, experiment: str) -> RescoreResult:
        """See `LabelStore.rescore`. The labelled records are read by entry id, their
        shadows from one pass over the experiment's stream; each rescored label replaces the
        hash value only if that is still the label scored (a relabel written meanwhile wins).
        The audit stream is not written: counts are derived from the label, not a new one."""
        key = self.keys.labels(experiment)
        raw: dict[str, bytes | str] = {}
        async for field, value in self.client.hscan_iter(key, count=_REDIS_CHUNK):
            raw[_str(field)] = value
        labels = [
            label for rid, value in raw.items() if (label := _parse(value, key, rid)) is not None
        ]
        records = await read_records(
            self.client, self.keys, experiment, (label.record_id for label in labels), near=False
        )
        writes: list[tuple[str, bytes | str, str]] = []
        current = not_found = 0
        for label in labels:
            if label.record_id not in records:
                not_found += 1
                continue
            targets = score_targets(*records[label.record_id])
            if needs_scores(label, targets):
                writes.append(
                    (label.record_id, raw[label.record_id], scored(label, targets).to_json())
                )
            else:
                current += 1
        rescored = 0
        for start in range(0, len(writes), _REDIS_CHUNK):
            async with self.client.pipeline(transaction=False) as pipe:
                for rid, old, new in writes[start : start + _REDIS_CHUNK]:
                    pipe.eval(_REPLACE_IF_SAME, 1, key, rid, old, new)
                replies = await pipe.execute()
            rescored += sum(int(reply) for reply in replies)
        # A label relabelled between the read and the write was scored by its own put.
        current += len(writes) - rescored
        return RescoreResult(experiment, len(labels), rescored, current, not_found)


def _parse(value: bytes | str, key: str, record_id: str) -> Label | None:
    try:
        return Label.from_json(value)
    except ValueError as exc:
        log.warning("labels_entry_unreadable", key=key, record_id=record_id, error=str(exc))
        return None


def _text_of(value: bytes | str, key: str, record_id: str) -> str | None:
    label = _parse(value, key, record_id)
    return None if label is None else label.text
