"""Whole outcome records read back from a JSON-lines file by their ids.

The analysis engine (`gateway.stores.engine`) reads an outcome file with DuckDB, and later
needs a few thousand of its records whole (the error analysis's sample of units, canaries,
shadow sessions). Finding their lines by the id each line carries, and parsing only those,
takes a fifth of the CPU of a second reading with DuckDB of every column of every record
(which also parsed every line). The gateway writes a record's id as `"record_id":"<id>"`;
a file whose lines say it otherwise (JSON allows spaces there), or that holds a record twice
with different lines, gives None, for the caller to read the records another way.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Final

from gateway.outcomes.record import InvalidRecordError, OutcomeRecord

_KEY: Final = b'"record_id":"'
_ID_BYTES: Final = 32  # a record id: 32 hex digits (`OutcomeRecord`)
_BUFFER: Final = 1 << 20


def records_by_id(path: Path, ids: Collection[str]) -> list[OutcomeRecord] | None:
    """The records of these ids, in file order; None when one is not found as the gateway
    writes it, or is there twice with different lines."""
    wanted = {rid.encode("ascii", "replace") for rid in ids}
    lines: dict[bytes, bytes] = {}
    try:
        with path.open("rb", buffering=_BUFFER) as file:
            for line in file:
                # Inside a JSON string a quote is escaped: the key's first occurrence is the
                # record's own field.
                at = line.find(_KEY) + len(_KEY)
                rid = line[at : at + _ID_BYTES]
                if rid in wanted and lines.setdefault(rid, line) != line:
                    return None
        if len(lines) != len(wanted):
            return None
        found = [OutcomeRecord.from_json(line) for line in lines.values()]
    except (OSError, InvalidRecordError):
        return None
    if any(record.record_id.encode() != rid for record, rid in zip(found, lines, strict=True)):
        return None
    return found
