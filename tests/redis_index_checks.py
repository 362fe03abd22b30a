"""Checks shared by the Redis retention tests: the label indexes an outcome sink keeps beside
a stream (the `records` and `units` hashes, and the `indexed` list behind their trimming)
must index exactly the records the stream still holds."""

from __future__ import annotations

import json

from redis_servers import AsyncClient

from gateway.stores.keys import RECORD_FIELD, UNIT_RECORDS_MAX, RedisKeys
from gateway.stores.redis_sink_script import units_field_of_json


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def stream_entries(client: AsyncClient, key: str) -> list[tuple[str, str, str]]:
    """(entry id, record_id, units field) of every entry of a stream, in stream order."""
    entries: list[tuple[str, str, str]] = []
    start = "-"
    while True:
        page = await client.xrange(key, min=start, count=10_000)
        for entry_id, fields in page:
            record = fields[RECORD_FIELD.encode()].decode()
            entry = (_text(entry_id), json.loads(record)["record_id"], units_field_of_json(record))
            entries.append(entry)
        if len(page) < 10_000:
            return entries
        start = "(" + _text(page[-1][0])


async def assert_indexes_match_stream(
    client: AsyncClient, keys: RedisKeys, experiment: str | None
) -> int:
    """The records hash maps exactly the stream's record ids to their entries, the units
    hash lists exactly the stream's primary records per unit and index (oldest first, the
    newest UNIT_RECORDS_MAX), and the indexed list names exactly the stream's entries.
    Returns the stream's length."""
    entries = await stream_entries(client, keys.outcomes(experiment))
    records = await client.hgetall(keys.records(experiment))
    assert {_text(rid): _text(entry) for rid, entry in records.items()} == {
        rid: entry for entry, rid, _field in entries
    }
    expected_units: dict[str, list[str]] = {}
    for _entry, rid, field in entries:
        if field:
            expected_units.setdefault(field, []).append(rid)
    units = await client.hgetall(keys.units(experiment))
    assert {_text(field): _text(ids).split() for field, ids in units.items()} == {
        field: ids[-UNIT_RECORDS_MAX:] for field, ids in expected_units.items()
    }
    indexed = await client.lrange(keys.indexed(experiment), 0, -1)
    assert [_text(line) for line in indexed] == [
        f"{entry} {rid} {field}" for entry, rid, field in entries
    ]
    return len(entries)
