"""Records for scoring labels in Redis: a labelled record, and the shadow records of its audio.

The Redis label store scores a label against the text of its record and of that record's
shadow partners (`gateway.outcomes.label_scores`). It finds the record through the
experiment's `records` hash (record_id -> stream entry id, kept by the outcome sink) and
reads that one stream entry. Shadow records have no index of their own, and none is added
to the record path: they are looked for in the stream instead.

* When a label is stored (`near=True`), only the stream entries that reached Redis within
  `SHADOW_WINDOW_MS` of the labelled record's entry are read (overlapping windows of a batch
  are read once). A shadow recognises the same audio at the same time, so its record
  normally arrives within seconds; one that arrives later (delivered from the journal after
  an outage, or not written yet) is scored by `speech-gateway label rescore`.
* The rescore (`near=False`) reads the experiment's whole stream once, in pages.

Records trimmed from the stream (retention) are not found: their labels stay as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Final

from gateway.logging import get_logger
from gateway.outcomes.label_scores import SHADOWED_KINDS, RecordsById, has_shadows
from gateway.outcomes.record import OutcomeRecord
from gateway.stores.keys import RECORD_FIELD, RedisKeys
from gateway.stores.redis_client import RedisClient

log = get_logger(__name__)

# How far (ms of arrival in Redis) around a labelled record a label looks for its shadows.
SHADOW_WINDOW_MS: Final = 120_000
_PAGE: Final = 1_000  # ids per lookup pipeline
# Stream entries per script call: each call holds Redis for about 2 ms (a busy stream's
# window is read in many short calls, not one long one).
_SCAN_PAGE: Final = 250
# Past this many sessions (a rescore of a large experiment) the script returns every shadow
# record rather than receive the session ids with every call; they are filtered here.
_SCRIPT_SESSIONS: Final = 1_000
_SHADOW_MARK: Final = b'"role":"shadow"'  # records are compact JSON: skip others unparsed
# One page of a stream (KEYS[1]) from ARGV[1] to ARGV[2], at most ARGV[3] entries: the
# record JSON (field ARGV[4]) of the shadow records whose session id is one of ARGV[5...]
# (of every shadow record if none is given).
# Returns {last entry id or '', entries read, {matching record JSON, ...}}.
_SHADOWS_OF_SESSIONS: Final = """
local wanted = {}
local any = #ARGV < 5
for i = 5, #ARGV do wanted[ARGV[i]] = true end
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
local found = {}
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == ARGV[4] then
      local raw = fields[i + 1]
      if string.find(raw, '"role":"shadow"', 1, true) then
        local session = string.match(raw, '"session_id":"([^"\\\\]*)"')
        if any or (session and wanted[session]) then found[#found + 1] = raw end
      end
    end
  end
end
local last = ''
if #entries > 0 then last = entries[#entries][1] end
return {last, #entries, found}
"""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _record_json(fields: object) -> bytes | None:
    """The record JSON of a stream entry's fields (bytes or decoded); None: a deleted entry."""
    if not isinstance(fields, dict):
        return None
    value = fields.get(RECORD_FIELD.encode(), fields.get(RECORD_FIELD))
    if isinstance(value, str):
        return value.encode("utf-8")
    return value if isinstance(value, bytes) else None


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def _windows(entry_ids: Iterable[str], width_ms: int) -> list[tuple[int, int]]:
    """The ms ranges within `width_ms` of each entry id, overlapping ones merged, in order."""
    merged: list[tuple[int, int]] = []
    for ms in sorted({_entry_ms(entry) for entry in entry_ids}):
        low, high = max(0, ms - width_ms), ms + width_ms
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return merged


def _parse(raw: bytes | str, where: str) -> OutcomeRecord | None:
    try:
        return OutcomeRecord.from_json(raw)
    except ValueError as exc:  # an invalid record: the analysis reports it
        log.warning("labels_record_unreadable", key=where, error=str(exc))
        return None


async def read_records(
    client: RedisClient, keys: RedisKeys, experiment: str, record_ids: Iterable[str], *, near: bool
) -> RecordsById:
    """The records with these ids in the experiment's stream, each with the shadow records
    of its session (within `SHADOW_WINDOW_MS` if `near`, else anywhere in the stream)."""
    stream = keys.outcomes(experiment)
    ids = list(dict.fromkeys(record_ids))
    entries: dict[str, str] = {}  # record_id -> stream entry id
    for start in range(0, len(ids), _PAGE):
        chunk = ids[start : start + _PAGE]
        values = await client.hmget(keys.records(experiment), chunk)
        entries.update((rid, _text(v)) for rid, v in zip(chunk, values, strict=True) if v)
    found: dict[str, OutcomeRecord] = {}
    pending = list(entries.items())
    for start in range(0, len(pending), _PAGE):
        located = pending[start : start + _PAGE]
        async with client.pipeline(transaction=False) as pipe:
            for _, entry in located:
                pipe.xrange(stream, entry, entry, count=1)
            replies = await pipe.execute()
        for (rid, _), reply in zip(located, replies, strict=True):
            raw = _record_json(reply[0][1]) if reply else None
            record = _parse(raw, stream) if raw is not None else None
            if record is not None and record.record_id == rid:
                found[rid] = record
    sessions = {r.session_id for r in found.values() if has_shadows(r)}
    shadows: dict[str, list[OutcomeRecord]] = {}
    if sessions:
        primaries = [entries[rid] for rid, r in found.items() if has_shadows(r)]
        ranges = _windows(primaries, SHADOW_WINDOW_MS) if near else [(0, -1)]
        for low, high in ranges:
            await _collect_shadows(client, stream, low, high, sessions, shadows)
    return {rid: (record, shadows.get(record.session_id, [])) for rid, record in found.items()}


async def _collect_shadows(
    client: RedisClient,
    stream: str,
    low_ms: int,
    high_ms: int,
    sessions: set[str],
    into: dict[str, list[OutcomeRecord]],
) -> None:
    """Add the shadow records of `sessions` among the stream's entries from `low_ms` to
    `high_ms` (-1: the end) to `into`, by session id, each record once.

    A script picks the matching entries on the server, a page at a time, so that only they
    cross the network and get parsed here (parsing every entry of a busy stream in Python
    costs about 50 us each). A session id that JSON escapes (never one the gateway makes) is
    matched here instead, entry by entry.
    """
    low = str(low_ms)
    high = "+" if high_ms < 0 else str(high_ms)
    seen = {record.record_id for found in into.values() for record in found}
    plain = all(json.dumps(session)[1:-1] == session for session in sessions)
    named = sorted(sessions) if len(sessions) <= _SCRIPT_SESSIONS else []
    script = client.register_script(_SHADOWS_OF_SESSIONS)
    while True:
        if plain:
            last, count, raws = await script(
                keys=[stream], args=[low, high, _SCAN_PAGE, RECORD_FIELD, *named]
            )
        else:
            page = await client.xrange(stream, low, high, count=_SCAN_PAGE) or []
            count = len(page)
            last = page[-1][0] if page else None
            raws = [raw for _, values in page if (raw := _record_json(values)) is not None]
        for raw in raws:
            value = raw.encode("utf-8") if isinstance(raw, str) else raw
            if _SHADOW_MARK not in value:
                continue
            try:
                data = json.loads(value)
            except ValueError:
                continue
            if data.get("session_id") not in sessions or data.get("kind") not in SHADOWED_KINDS:
                continue
            record = _parse(value, stream)
            if record is not None and record.record_id not in seen:
                seen.add(record.record_id)
                into.setdefault(record.session_id, []).append(record)
        if int(count) < _SCAN_PAGE or not last:
            return
        low = "(" + _text(last)  # exclusive: continue after the last entry
