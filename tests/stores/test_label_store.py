"""Tests for gateway.stores.label_store and its two stores (gateway.stores.file_label_store,
gateway.stores.redis_label_store): labels beside the outcomes, in a file or in Redis."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis_servers import RedisClusterServers

from gateway.constants import NO_EXPERIMENT
from gateway.errors import ConfigError
from gateway.outcomes.labels import Label, LabelError, LabelInput, UnitQuery, stored_counts
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.stats.wer import WerCounts, align
from gateway.stores.file_label_store import FileLabelStore
from gateway.stores.keys import LABEL_FIELD, UNIT_RECORDS_MAX, RedisKeys
from gateway.stores.label_store import (
    LabelResult,
    LabelStatus,
    LabelStore,
    UnitMatch,
    import_labels,
    labels_path_beside,
)
from gateway.stores.redis_client import connect
from gateway.stores.redis_label_store import RedisLabelStore
from gateway.stores.redis_sink import RedisSink
from gateway.text import normalize

REDIS_URL = "redis://127.0.0.1:6379"  # the shared test Redis; each test has its own prefix

STORED, RELABELLED, UNKNOWN = LabelStatus.STORED, LabelStatus.RELABELLED, LabelStatus.UNKNOWN


def rid(n: int) -> str:
    return f"{n:032x}"


def make(n: int, experiment: str | None = "checkout", **changes: Any) -> OutcomeRecord:
    values: dict[str, Any] = {
        "record_id": rid(n),
        "kind": Kind.UTTERANCE,
        "experiment": experiment,
        "phase": "1" if experiment else None,
        "variant": "base",
        "backend": "westus",
        "role": Role.PRIMARY,
        "client": "shop-app",
        "unit": "5f2b0c3e8a1d4e6f9a7b3c2d1e0f4a5b",
        "unit_source": UnitSource.QUERY,
        "session_id": f"session-{n}",
        "protocol": Protocol.USP,
        "utterance_index": 0,
        "status": "Success",
        "text": f"utterance number {n}",
        "word_count": 3,
    }
    values.update(changes)
    return OutcomeRecord(**values)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as file:
        file.write(data)


# -- the two stores behind one fixture ------------------------------------------------------

Deliver = Callable[..., Awaitable[None]]


class FileBackend:
    def __init__(self, folder: Path) -> None:
        self.outcomes = folder / "outcomes.jsonl"
        self.labels = labels_path_beside(self.outcomes)

    def store(self) -> FileLabelStore:
        return FileLabelStore(self.outcomes, self.labels)

    async def deliver(self, *records: OutcomeRecord) -> None:
        append(self.outcomes, b"".join(r.to_json().encode() + b"\n" for r in records))

    async def audit(self, record_id: str) -> list[Label]:
        if not self.labels.exists():
            return []
        lines = self.labels.read_text(encoding="ascii").splitlines()
        return [label for label in map(Label.from_json, lines) if label.record_id == record_id]


class RedisBackend:
    def __init__(self, client: Redis, keys: RedisKeys, journal_dir: Path) -> None:
        self.client = client
        self.keys = keys
        self.journal_dir = journal_dir

    def store(self) -> RedisLabelStore:
        return RedisLabelStore(self.client, self.keys)

    async def deliver(self, *records: OutcomeRecord) -> None:
        """Store records through the outcome sink's own script: stream entries, the records
        and units hashes, the experiments set."""
        factory = functools.partial(connect, REDIS_URL, cluster=False)
        async with RedisSink(factory, self.keys, self.journal_dir) as sink:
            await sink.deliver(records)

    async def audit(self, record_id: str) -> list[Label]:
        found: list[Label] = []
        for experiment in await self.store().experiments():
            for _, fields in await self.client.xrange(self.keys.label_audit(experiment)):
                label = Label.from_json(fields[LABEL_FIELD.encode()])
                if label.record_id == record_id:
                    found.append(label)
        return found


@pytest.fixture
async def redis_keys() -> AsyncIterator[tuple[Redis, RedisKeys]]:
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


@pytest.fixture(params=["file", "redis"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, redis_keys: tuple[Redis, RedisKeys]
) -> FileBackend | RedisBackend:
    """Each store with a way to deliver outcome records to it and to read its audit trail."""
    if request.param == "file":
        return FileBackend(tmp_path)
    return RedisBackend(*redis_keys, tmp_path / "journal")


async def test_stores_are_label_stores(backend: FileBackend | RedisBackend) -> None:
    """Both stores satisfy the LabelStore protocol the API and the CLI hold them by."""
    store: LabelStore = backend.store()
    assert await store.get([rid(1)]) == {}


async def test_label_of_a_known_record_is_stored(backend: FileBackend | RedisBackend) -> None:
    """A label for a known record is stored with labeller, time and source, and read back."""
    await backend.deliver(make(1))
    store = backend.store()
    result = await store.put([LabelInput(rid(1), " hello there ")], "alice", "api")
    assert result.committed
    assert result.results == (LabelResult(rid(1), STORED),)
    label = (await store.get([rid(1), rid(2)]))[rid(1)]
    assert (label.text, label.labeller, label.source) == ("hello there", "alice", "api")
    assert list(await backend.store().get([rid(1)])) == [rid(1)]  # a fresh store sees it


async def test_relabel_wins_and_the_audit_keeps_both(backend: FileBackend | RedisBackend) -> None:
    """A second label replaces the first (its text is returned) and both stay audited."""
    await backend.deliver(make(1))
    store = backend.store()
    await store.put([LabelInput(rid(1), "first words")], "alice", "api")
    result = await store.put([LabelInput(rid(1), "second words")], "bob", "import")
    assert result.results == (LabelResult(rid(1), RELABELLED, "first words"),)
    assert result.results[0].to_dict() == {
        "record_id": rid(1),
        "status": "relabelled",
        "previous": "first words",
    }
    current = (await backend.store().get([rid(1)]))[rid(1)]
    assert (current.text, current.labeller, current.source) == ("second words", "bob", "import")
    audit = await backend.audit(rid(1))
    assert [(a.text, a.labeller) for a in audit] == [
        ("first words", "alice"),
        ("second words", "bob"),
    ]


async def test_same_record_twice_in_one_batch(backend: FileBackend | RedisBackend) -> None:
    """Within one batch a later label of the same record relabels the earlier one."""
    await backend.deliver(make(1))
    result = await backend.store().put(
        [LabelInput(rid(1), "one"), LabelInput(rid(1), "two")], "alice", "api"
    )
    assert result.results == (
        LabelResult(rid(1), STORED),
        LabelResult(rid(1), RELABELLED, "one"),
    )
    assert (await backend.store().get([rid(1)]))[rid(1)].text == "two"


async def test_concurrent_relabels_form_one_chain(backend: FileBackend | RedisBackend) -> None:
    """Twenty concurrent writers of one record: one stores, each other replaces exactly one
    earlier text, and the audit keeps all twenty."""
    await backend.deliver(make(1))
    stores = [backend.store() for _ in range(4)]
    texts = [f"text {n}" for n in range(20)]
    results = await asyncio.gather(
        *(
            stores[n % 4].put([LabelInput(rid(1), text)], f"w{n}", "api")
            for n, text in enumerate(texts)
        )
    )
    statuses = [result.results[0].status for result in results]
    assert statuses.count(STORED) == 1
    previous = [result.results[0].previous for result in results if result.results[0].previous]
    final = (await backend.store().get([rid(1)]))[rid(1)].text
    assert sorted([*previous, final]) == sorted(texts)
    assert len(await backend.audit(rid(1))) == 20


async def test_unknown_ids_are_reported_and_not_stored(backend: FileBackend | RedisBackend) -> None:
    """An id no record has is reported as unknown; the known ones of the batch are stored."""
    await backend.deliver(make(1))
    store = backend.store()
    result = await store.put([LabelInput(rid(9), "x"), LabelInput(rid(1), "y")], "alice", "api")
    assert result.committed
    assert [r.status for r in result.results] == [UNKNOWN, STORED]
    assert result.unknown == [rid(9)]
    assert list(await store.get([rid(1), rid(9)])) == [rid(1)]
    assert await backend.audit(rid(9)) == []


async def test_all_or_nothing_refuses_a_batch_with_unknown_ids(
    backend: FileBackend | RedisBackend,
) -> None:
    """With all_or_nothing one unknown id stores nothing, and the unknown ids are named."""
    await backend.deliver(make(1))
    store = backend.store()
    labels = [LabelInput(rid(1), "y"), LabelInput(rid(9), "x"), LabelInput(rid(9), "z")]
    result = await store.put(labels, "alice", "api", all_or_nothing=True)
    assert not result.committed
    assert result.unknown == [rid(9)]
    assert await store.get([rid(1)]) == {}
    assert await backend.audit(rid(1)) == []


async def test_late_label_of_a_record_written_after_the_store_started(
    backend: FileBackend | RedisBackend,
) -> None:
    """A record delivered after the store first looked is found when its label arrives,
    however long after the outcome the label comes."""
    await backend.deliver(make(1))
    store = backend.store()
    assert (await store.put([LabelInput(rid(2), "x")], "a", "api")).unknown == [rid(2)]
    await backend.deliver(make(2, timestamp="2024-01-31T12:00:00.000Z"))
    result = await store.put([LabelInput(rid(2), "x")], "a", "api")
    assert result.results == (LabelResult(rid(2), STORED),)


async def test_all_lists_the_labels_of_one_experiment(backend: FileBackend | RedisBackend) -> None:
    """all(experiment) returns that experiment's labels only; NO_EXPERIMENT the default route's."""
    for n, experiment in ((1, "checkout"), (2, "search"), (3, None), (4, "checkout")):
        await backend.deliver(make(n, experiment))
    store = backend.store()
    labels = [LabelInput(rid(n), f"text {n}") for n in (1, 2, 3)]
    await store.put(labels, "alice", "import")
    assert {k: v.text for k, v in (await store.all("checkout")).items()} == {rid(1): "text 1"}
    assert list(await store.all("search")) == [rid(2)]
    assert list(await store.all(NO_EXPERIMENT)) == [rid(3)]
    assert await store.all("nothing") == {}


async def test_bad_labeller_is_refused(backend: FileBackend | RedisBackend) -> None:
    """A labeller name that is empty or has control characters is refused."""
    await backend.deliver(make(1))
    with pytest.raises(LabelError, match="labeller"):
        await backend.store().put([LabelInput(rid(1), "x")], " ", "api")


async def test_empty_store_answers_empty(backend: FileBackend | RedisBackend) -> None:
    """With no records at all every id is unknown and nothing is listed."""
    store = backend.store()
    result = await store.put([LabelInput(rid(1), "x")], "alice", "api")
    assert result.unknown == [rid(1)]
    assert await store.all("checkout") == {}


# -- labels by unit -------------------------------------------------------------------------


async def test_find_units_resolves_primary_records_of_every_session(
    backend: FileBackend | RedisBackend,
) -> None:
    """A unit and utterance index find the primary utterance and request records that the
    unit's sessions made, in every experiment; shadows and failures are not label targets."""
    await backend.deliver(
        make(1, unit="u1", session_id="s1"),
        make(2, unit="u1", session_id="s1", utterance_index=1),
        make(3, unit="u1", session_id="s2"),
        make(4, "search", unit="u1", session_id="s3"),
        make(5, unit="u1", role=Role.SHADOW, shadow_drops=0),
        make(6, unit="u1", kind=Kind.SESSION_FAILURE, utterance_index=None, status="Error"),
        make(7, None, unit="u2", kind=Kind.REQUEST, protocol=Protocol.REST),
    )
    found = await backend.store().find_units(
        [UnitQuery("u1", 0), UnitQuery("u1", 1), UnitQuery("u2", 0), UnitQuery("u1", 2)]
    )
    first, second, request, none = found
    assert sorted(first, key=lambda m: m.record_id) == [
        UnitMatch(rid(1), "checkout"),
        UnitMatch(rid(3), "checkout"),
        UnitMatch(rid(4), "search"),
    ]
    assert (second, request, none) == (
        (UnitMatch(rid(2), "checkout"),),
        (UnitMatch(rid(7), NO_EXPERIMENT),),
        (),
    )


async def test_find_units_narrowed_to_an_experiment(backend: FileBackend | RedisBackend) -> None:
    """A query naming an experiment finds that experiment's records only."""
    await backend.deliver(
        make(1, unit="u1"), make(2, "search", unit="u1"), make(3, None, unit="u1")
    )
    store = backend.store()
    found = await store.find_units(
        [
            UnitQuery("u1", 0, "search"),
            UnitQuery("u1", 0, NO_EXPERIMENT),
            UnitQuery("u1", 0, "nothing"),
        ]
    )
    assert found == [(UnitMatch(rid(2), "search"),), (UnitMatch(rid(3), NO_EXPERIMENT),), ()]


async def test_find_units_sees_records_delivered_later(
    backend: FileBackend | RedisBackend,
) -> None:
    """A unit whose records have not reached the store yet is found once they have."""
    store = backend.store()
    assert await store.find_units([UnitQuery("u1", 0)]) == [()]
    assert await store.find_units([]) == []
    await backend.deliver(make(1, unit="u1"))
    assert await store.find_units([UnitQuery("u1", 0)]) == [(UnitMatch(rid(1), "checkout"),)]


async def test_find_units_keeps_the_newest_records_of_a_busy_unit(
    backend: FileBackend | RedisBackend,
) -> None:
    """A unit with more sessions than UNIT_RECORDS_MAX resolves to its newest ones."""
    total = UNIT_RECORDS_MAX + 5
    await backend.deliver(*(make(n, unit="busy") for n in range(total)))
    (found,) = await backend.store().find_units([UnitQuery("busy", 0)])
    assert [m.record_id for m in found] == [rid(n) for n in range(5, total)]


# -- the file store -------------------------------------------------------------------------


async def test_two_file_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    """A CLI import and the gateway writing the same label file agree on relabels."""
    backend = FileBackend(tmp_path)
    await backend.deliver(make(1))
    gateway, cli = backend.store(), backend.store()
    await gateway.put([LabelInput(rid(1), "from api")], "alice", "api")
    result = await cli.put([LabelInput(rid(1), "from file")], "bob", "import")
    assert result.results == (LabelResult(rid(1), RELABELLED, "from api"),)
    assert (await gateway.get([rid(1)]))[rid(1)].text == "from file"


async def test_file_store_cuts_a_torn_label_line(tmp_path: Path) -> None:
    """A label line torn by a crash is ignored when reading and cut off before appending."""
    backend = FileBackend(tmp_path)
    await backend.deliver(make(1))
    await backend.store().put([LabelInput(rid(1), "kept")], "alice", "api")
    append(backend.labels, b'{"record_id":"' + rid(1).encode() + b'","text":"tor')
    store = backend.store()
    assert (await store.get([rid(1)]))[rid(1)].text == "kept"
    result = await store.put([LabelInput(rid(1), "next")], "bob", "api")
    assert result.results == (LabelResult(rid(1), RELABELLED, "kept"),)
    lines = backend.labels.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert [Label.from_json(line).text for line in lines[:-1]] == ["kept", "next"]


async def test_file_store_follows_a_rotated_outcome_file(tmp_path: Path) -> None:
    """After a rotation the new outcome file is read from its start; older ids stay known."""
    backend = FileBackend(tmp_path)
    await backend.deliver(make(1))
    store = backend.store()
    await store.put([LabelInput(rid(1), "one")], "a", "api")
    backend.outcomes.rename(tmp_path / "outcomes.1.jsonl")
    await backend.deliver(make(2))
    result = await store.put([LabelInput(rid(1), "uno"), LabelInput(rid(2), "two")], "a", "api")
    assert [r.status for r in result.results] == [RELABELLED, STORED]


async def test_file_store_skips_unreadable_lines(tmp_path: Path) -> None:
    """Garbage lines in the outcome or label file are skipped, not fatal."""
    backend = FileBackend(tmp_path)
    await backend.deliver(make(1))
    append(backend.outcomes, b"not json\n[]\n")
    await backend.deliver(make(2))
    backend.labels.write_bytes(b"garbage\n")
    store = backend.store()
    result = await store.put([LabelInput(rid(2), "two")], "a", "api")
    assert result.results == (LabelResult(rid(2), STORED),)
    assert await store.experiment_of(rid(1)) == "checkout"


async def test_file_label_lines_are_one_json_object_each(tmp_path: Path) -> None:
    """The label file is JSON lines: record_id, text, labeller, labelled_at, source, then
    the normalisation version and the WER counts of the scored records."""
    backend = FileBackend(tmp_path)
    await backend.deliver(make(1))
    await backend.store().put([LabelInput(rid(1), "Zoë")], "alice", "import")
    (line,) = backend.labels.read_text(encoding="ascii").splitlines()
    data = json.loads(line)
    assert list(data) == [
        "record_id",
        "text",
        "labeller",
        "labelled_at",
        "source",
        "normalisation",
        "scores",
    ]
    assert (data["text"], data["source"]) == ("Zoë", "import")
    assert [score["record_id"] for score in data["scores"]] == [rid(1)]


# -- the Redis store ------------------------------------------------------------------------


async def test_redis_label_lives_in_the_experiment_hash_and_audit(
    redis_keys: tuple[Redis, RedisKeys], tmp_path: Path
) -> None:
    """HSET labels and XADD label-audit use the record's experiment keys."""
    client, keys = redis_keys
    backend = RedisBackend(client, keys, tmp_path)
    await backend.deliver(make(1, "search"))
    await backend.store().put([LabelInput(rid(1), "words")], "alice", "api")
    stored = await client.hget(keys.labels("search"), rid(1))
    assert Label.from_json(stored).text == "words"
    assert await client.xlen(keys.label_audit("search")) == 1
    assert not await client.exists(keys.labels("checkout"), keys.label_audit("checkout"))


async def test_redis_store_with_decoded_responses(
    redis_keys: tuple[Redis, RedisKeys], tmp_path: Path
) -> None:
    """A client that decodes responses to str works as well as one giving bytes."""
    client, keys = redis_keys
    backend = RedisBackend(client, keys, tmp_path)
    await backend.deliver(make(1), make(2, unit="u1"))
    decoded = Redis(host="127.0.0.1", port=6379, decode_responses=True)
    try:
        store = RedisLabelStore(decoded, keys)
        await store.put([LabelInput(rid(1), "a")], "alice", "api")
        result = await store.put([LabelInput(rid(1), "b")], "alice", "api")
        assert result.results == (LabelResult(rid(1), RELABELLED, "a"),)
        assert (await store.all("checkout"))[rid(1)].text == "b"
        assert (await store.get([rid(1)]))[rid(1)].text == "b"
        assert stored_counts((await store.get([rid(1)]))[rid(1)], rid(1)) is not None
        assert (await store.rescore("checkout")).current == 1
        assert await store.find_units([UnitQuery("u1", 0)]) == [(UnitMatch(rid(2), "checkout"),)]
    finally:
        await decoded.aclose()


async def test_redis_batch_larger_than_a_chunk(
    redis_keys: tuple[Redis, RedisKeys], tmp_path: Path
) -> None:
    """A batch of 2,500 labels over two experiments is looked up and written in chunks; so
    are 2,500 unit queries."""
    client, keys = redis_keys
    backend = RedisBackend(client, keys, tmp_path)
    await backend.deliver(
        *(make(n, "checkout" if n % 2 else "search", unit=f"u{n}") for n in range(2500))
    )
    store = backend.store()
    found = await store.find_units([UnitQuery(f"u{n}", 0) for n in range(2500)])
    assert [match.record_id for (match,) in found] == [rid(n) for n in range(2500)]
    result = await store.put([LabelInput(rid(n), f"t{n}") for n in range(2500)], "a", "import")
    assert result.count(STORED) == 2500
    assert [r.record_id for r in result.results] == [rid(n) for n in range(2500)]
    assert len(await store.all("checkout")) == 1250
    assert len(await store.get(rid(n) for n in range(0, 2500, 7))) == len(range(0, 2500, 7))


# -- the CLI import -------------------------------------------------------------------------


async def test_import_stores_and_relabels(
    backend: FileBackend | RedisBackend, tmp_path: Path
) -> None:
    """An import stores new labels and relabels labelled records, counting each."""
    for n in (1, 2):
        await backend.deliver(make(n))
    store = backend.store()
    await store.put([LabelInput(rid(2), "old")], "alice", "api")
    path = tmp_path / "review.csv"
    path.write_text(f"record_id,text\n{rid(1)},one\n{rid(2)},two\n", encoding="utf-8")
    result = await import_labels(path, store, "bob")
    assert (result.stored, result.relabelled, result.unknown, result.invalid) == (1, 1, (), 0)
    assert result.summary() == f"imported 2 labels from {path}: 1 new, 1 relabelled"
    assert (await store.get([rid(2)]))[rid(2)].source == "import"


async def test_import_with_a_bad_line_imports_nothing(
    backend: FileBackend | RedisBackend, tmp_path: Path
) -> None:
    """Without skip_invalid a bad line fails the import, naming it, and stores nothing."""
    await backend.deliver(make(1))
    path = tmp_path / "review.jsonl"
    good = json.dumps({"record_id": rid(1), "text": "fine"})
    path.write_text(f"{good}\n{{broken\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        await import_labels(path, backend.store(), "bob")
    assert caught.value.field == f"{path}:2"
    assert await backend.store().get([rid(1)]) == {}


async def test_import_with_an_unknown_id_imports_nothing(
    backend: FileBackend | RedisBackend, tmp_path: Path
) -> None:
    """Without skip_invalid an unknown record id fails the import at its line."""
    await backend.deliver(make(1))
    path = tmp_path / "review.csv"
    path.write_text(
        f"record_id,text\n{rid(1)},fine\n{rid(7)},who\n{rid(8)},what\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError) as caught:
        await import_labels(path, backend.store(), "bob")
    assert caught.value.field == f"{path}:3"
    assert f"no outcome record has id {rid(7)} (and 1 more unknown ids)" in caught.value.problem
    assert await backend.store().get([rid(1)]) == {}


async def test_import_skip_invalid_imports_the_rest(
    backend: FileBackend | RedisBackend, tmp_path: Path
) -> None:
    """With skip_invalid bad lines and unknown ids are skipped and reported."""
    await backend.deliver(make(1))
    path = tmp_path / "review.csv"
    path.write_text(f"record_id,text\n{rid(1)},fine\nnope,bad\n{rid(7)},who\n", encoding="utf-8")
    result = await import_labels(path, backend.store(), "bob", skip_invalid=True)
    assert (result.stored, result.relabelled, result.invalid) == (1, 0, 1)
    assert result.unknown == ((4, rid(7)),)
    assert result.skipped[0].field == f"{path}:3"
    assert result.summary().endswith("1 unknown record ids skipped, 1 invalid lines skipped")
    assert list(await backend.store().get([rid(1), rid(7)])) == [rid(1)]


async def test_import_refuses_a_bad_labeller(tmp_path: Path) -> None:
    """An empty --by is a ConfigError naming the option, before the file is read."""
    store = FileBackend(tmp_path).store()
    with pytest.raises(ConfigError) as caught:
        await import_labels(tmp_path / "absent.csv", store, "")
    assert caught.value.field == "--by"


# -- WER counts stored with labels -----------------------------------------------------------


def shadow_of(n: int, primary: int, **changes: Any) -> OutcomeRecord:
    """A shadow record of the same audio as `make(primary)` (same session, overlapping)."""
    values: dict[str, Any] = {
        "role": Role.SHADOW,
        "variant": "custom",
        "session_id": f"session-{primary}",
        "audio_offset_ms": 0.0,
        "audio_duration_ms": 1000.0,
    }
    return make(n, **(values | changes))


def spanned(n: int, **changes: Any) -> OutcomeRecord:
    return make(n, **({"audio_offset_ms": 0.0, "audio_duration_ms": 1000.0} | changes))


async def current(backend: FileBackend | RedisBackend, record_id: str) -> Label:
    return (await backend.store().get([record_id]))[record_id]


async def test_put_stores_counts_of_the_record_and_its_shadow(
    backend: FileBackend | RedisBackend,
) -> None:
    """A label is stored with the counts of its record and of the shadow of the same audio,
    equal to align(), under the current normalisation version; a shadow of other audio
    is not scored."""
    await backend.deliver(
        spanned(1, text="pay my bill for two hundred dollars"),
        shadow_of(2, 1, text="pay my bill for $200"),
        shadow_of(3, 1, text="something else", audio_offset_ms=5000.0, utterance_index=1),
    )
    await backend.store().put([LabelInput(rid(1), "Pay my bill for $200.")], "alice", "api")
    label = await current(backend, rid(1))
    assert label.normalisation == normalize.NORMALISATION_VERSION
    assert [s.record_id for s in label.scores or ()] == [rid(1), rid(2)]
    reference = "Pay my bill for $200."
    assert stored_counts(label, rid(1)) == align(reference, "pay my bill for two hundred dollars")
    assert stored_counts(label, rid(2)) == WerCounts(hits=7)
    assert stored_counts(label, rid(3)) is None


async def test_records_without_text_have_no_counts(backend: FileBackend | RedisBackend) -> None:
    """A record whose text is hashed (privacy) gets no entry, but the label is scored (an
    empty list) and its shadow with text is counted."""
    await backend.deliver(
        spanned(1, text=None, text_sha256="0" * 64), shadow_of(2, 1, text="hello")
    )
    await backend.deliver(make(3, text=None))
    await backend.store().put(
        [LabelInput(rid(1), "hello"), LabelInput(rid(3), "hi")], "alice", "api"
    )
    assert [s.record_id for s in (await current(backend, rid(1))).scores or ()] == [rid(2)]
    assert (await current(backend, rid(3))).scores == ()


async def test_rescore_scores_old_labels_and_is_idempotent(
    backend: FileBackend | RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labels stored without counts (before labels carried them) are scored by rescore;
    a second rescore changes nothing."""
    await backend.deliver(make(1), make(2, text="utterance number to"))
    store = backend.store()
    unscored = {rid(1): "utterance number one", rid(2): "utterance number two"}
    await write_unscored(backend, unscored)
    assert (await current(backend, rid(1))).scores is None
    first = await store.rescore("checkout")
    assert (first.labels, first.rescored, first.current, first.not_found) == (2, 2, 0, 0)
    assert stored_counts(await current(backend, rid(2)), rid(2)) == WerCounts(1, 0, 0, 2)
    again = await backend.store().rescore("checkout")
    assert (again.rescored, again.current) == (0, 2)
    assert "2 labels, 0 rescored, 2 already current" in again.summary()


async def test_rescore_after_a_normalisation_change(
    backend: FileBackend | RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new normalisation version makes stored counts stale (not used); rescore recomputes
    them under the new version, keeping text, labeller and time; then nothing is left."""
    await backend.deliver(make(1))
    await backend.store().put([LabelInput(rid(1), "utterance number 1")], "alice", "api")
    before = await current(backend, rid(1))
    monkeypatch.setattr(normalize, "NORMALISATION_VERSION", "test-2")
    assert stored_counts(before, rid(1)) is None
    result = await backend.store().rescore("checkout")
    assert (result.rescored, result.current) == (1, 0)
    after = await current(backend, rid(1))
    assert after.normalisation == "test-2"
    assert (after.text, after.labeller, after.labelled_at) == (
        before.text,
        before.labeller,
        before.labelled_at,
    )
    assert stored_counts(after, rid(1)) == WerCounts(hits=3)
    assert (await backend.store().rescore("checkout")).rescored == 0


async def test_rescore_adds_a_shadow_that_arrived_after_the_label(
    backend: FileBackend | RedisBackend,
) -> None:
    """A shadow record stored after its primary was labelled is scored by the next rescore."""
    await backend.deliver(spanned(1))
    await backend.store().put([LabelInput(rid(1), "utterance number 1")], "alice", "api")
    await backend.deliver(shadow_of(2, 1, text="utterance number one"))
    assert stored_counts(await current(backend, rid(1)), rid(2)) is None
    result = await backend.store().rescore("checkout")
    assert result.rescored == 1
    assert stored_counts(await current(backend, rid(1)), rid(2)) == WerCounts(hits=3)


async def test_rescore_of_an_experiment_without_labels(
    backend: FileBackend | RedisBackend,
) -> None:
    """An experiment without labels (or without any label file yet) rescores nothing."""
    await backend.deliver(make(1))
    result = await backend.store().rescore("checkout")
    assert (result.labels, result.rescored) == (0, 0)
    assert await backend.store().experiments() == ["checkout"]


async def write_unscored(backend: FileBackend | RedisBackend, texts: dict[str, str]) -> None:
    """Store labels as a version without counts wrote them: only the five old fields."""
    labels = [
        LabelInput(record_id, text).label("alice", "api").to_json()
        for record_id, text in texts.items()
    ]
    if isinstance(backend, FileBackend):
        append(backend.labels, "".join(line + "\n" for line in labels).encode())
        return
    for line in labels:
        await backend.client.hset(
            backend.keys.labels("checkout"), json.loads(line)["record_id"], line
        )


async def test_file_rescore_of_a_rotated_outcome_file_leaves_labels(tmp_path: Path) -> None:
    """Labels whose records are in a rotated outcome file stay as they are: counted as
    without their record; a new label of such a record is stored without counts."""
    backend = FileBackend(tmp_path)
    await backend.deliver(make(1))
    store = backend.store()
    await write_unscored(backend, {rid(1): "utterance number one"})
    await store.experiments()  # the store indexes the first file
    backend.outcomes.rename(tmp_path / "outcomes.1.jsonl")
    await backend.deliver(make(2))
    result = await store.rescore("checkout")
    assert (result.labels, result.rescored, result.not_found) == (1, 0, 1)
    # A new label of that record is stored, without counts: its text is not at hand.
    await store.put([LabelInput(rid(1), "utterance number one")], "alice", "api")
    assert (await store.get([rid(1)]))[rid(1)].scores is None


async def test_counts_and_rescore_on_a_redis_cluster(tmp_path: Path) -> None:
    """On a Redis Cluster, a label is scored at put (the shadow found by the server-side
    script) and a rescore replaces an old label in place (the compare-and-set script)."""
    keys = RedisKeys(prefix="ctest")
    with RedisClusterServers(tmp_path / "cluster") as cluster:
        factory = functools.partial(connect, cluster.url, cluster=True)
        async with RedisSink(factory, keys, tmp_path / "journal") as sink:
            await sink.deliver(
                [spanned(1), shadow_of(2, 1, text="utterance number one"), spanned(3)]
            )
        async with RedisCluster.from_url(cluster.url) as client:
            store = RedisLabelStore(client, keys)
            await store.put([LabelInput(rid(1), "utterance number 1")], "alice", "api")
            label = (await store.get([rid(1)]))[rid(1)]
            assert stored_counts(label, rid(2)) == WerCounts(hits=3)
            old = LabelInput(rid(3), "utterance number three").label("alice", "api").to_json()
            await client.hset(keys.labels("checkout"), rid(3), old)
            result = await store.rescore("checkout")
            assert (result.labels, result.rescored, result.current) == (2, 1, 1)
            label = (await store.get([rid(3)]))[rid(3)]
    assert stored_counts(label, rid(3)) == WerCounts(hits=3)
