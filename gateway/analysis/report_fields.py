"""Tolerant reading of an analysis report dict, for the renderers that display it.

A report may come from this process, a JSON file or a gateway's admin API, possibly of a
newer schema or hand-edited: these accessors turn anything unexpected into an empty value
instead of an exception, so a renderer shows a dash or a "no data" note.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

LATENCIES: Final = (
    ("final_latency_ms", "Final result latency"),
    ("first_hypothesis_ms", "Time to first hypothesis"),
)


def as_map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def as_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def as_text(value: object) -> str:
    return "" if value is None else str(value)


def as_html(value: object) -> str:
    """The value as text, escaped for HTML text and attributes (report strings come from
    users: experiment ids, variant names, reasons)."""
    return html.escape(as_text(value), quote=True)


def as_interval(value: object) -> tuple[float | None, float | None] | None:
    """An interval [low, high]; a None bound is an unbounded side; None if there is none."""
    pair = as_list(value)
    if len(pair) != 2 or (pair[0] is None and pair[1] is None):
        return None
    return as_number(pair[0]), as_number(pair[1])


def as_epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
