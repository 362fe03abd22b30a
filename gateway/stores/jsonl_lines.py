"""Whole outcome records read back from a JSON-lines file by their line numbers.

The analysis engine (`gateway.stores.engine`) reads an outcome file once with DuckDB,
numbering its records in file order, and later needs a few thousand of them whole (the
error analysis's sample of units, canaries, shadow sessions). Reading those lines again by
number costs a skip over the file in C (no JSON parsed but theirs), a tenth of what a second
reading with DuckDB of every column of every record costs. DuckDB skips the blank lines the
numbering would count: each line read is checked to be the record expected, and a file
that does not match (a blank line, a file replaced since) gives None, for the caller to
read the records another way.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from gateway.outcomes.record import InvalidRecordError, OutcomeRecord

_BUFFER: Final = 1 << 20


def records_at(path: Path, lines: Mapping[int, str]) -> list[OutcomeRecord] | None:
    """The records on these 0-based lines of non-blank lines (line -> the record_id expected
    there), in line order; None when a line is missing, is not a record, or is another
    record than expected."""
    found: list[OutcomeRecord] = []
    position = 0  # the number of the line the file is at
    try:
        with path.open("rb", buffering=_BUFFER) as file:
            for number in sorted(lines):
                if number > position:
                    # Skipped in C: consuming the file's line iterator creates no record.
                    collections.deque(itertools.islice(file, number - position), maxlen=0)
                line = file.readline()
                position = number + 1
                if not line.strip():
                    return None
                record = OutcomeRecord.from_json(line)
                if record.record_id != lines[number]:
                    return None
                found.append(record)
    except (OSError, InvalidRecordError):
        return None
    return found
