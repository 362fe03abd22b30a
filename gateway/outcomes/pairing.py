"""Shadow pairs: a primary utterance and what each shadow recognised from the same audio.

A shadow hears the session's audio but segments it on its own, so its utterances need not
line up with the primary's one for one. A primary utterance is paired, per shadow variant,
with the shadow utterance of the same session whose audio span overlaps it most. Pure
functions over records; the analysis (`gateway.stats`) compares the pairs. The rules are
spelled out for analysts in docs/outcomes.md, "Shadow pairs".
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.outcomes.record import Kind, OutcomeRecord, Role

_PAIRED_KINDS = (Kind.UTTERANCE, Kind.REQUEST)


@dataclass(frozen=True, slots=True)
class _Shadows:
    """One shadow variant's records of one session and kind, sorted by audio offset."""

    records: Sequence[OutcomeRecord]
    starts: Sequence[float]  # audio_offset_ms of `records`, for bisection
    longest: float  # the longest audio_duration_ms, bounding how far back an overlap starts
    unplaced: Sequence[OutcomeRecord]  # records without an audio span


def pair_shadows(records: Iterable[OutcomeRecord]) -> list[tuple[OutcomeRecord, OutcomeRecord]]:
    """(primary, shadow) pairs: per primary, the best shadow of each variant, if any.

    Utterances pair when their audio spans overlap (by more than 0 ms); the largest overlap
    wins, then the shadow whose utterance_index is closest to the primary's, then the lower
    utterance_index. A REST request pairs with the shadow request of the same request id
    even without spans. Records with the same record_id count once. Pairs come in the order
    of the primaries, then by shadow variant name.
    """
    primaries, groups = _index(records)
    pairs: list[tuple[OutcomeRecord, OutcomeRecord]] = []
    for primary in primaries:
        variants = groups.get((primary.session_id, primary.kind), {})
        for variant in sorted(variants, key=lambda name: (name is None, name or "")):
            shadow = _best(primary, variants[variant])
            if shadow is not None:
                pairs.append((primary, shadow))
    return pairs


def unpaired(records: Iterable[OutcomeRecord]) -> list[OutcomeRecord]:
    """Primary utterances and requests that have no shadow partner, in input order.

    This includes the primaries of sessions that had no shadow at all.
    """
    records = list(records)
    paired = {primary.record_id for primary, _ in pair_shadows(records)}
    primaries, _ = _index(records)
    return [primary for primary in primaries if primary.record_id not in paired]


_Groups = dict[tuple[str, Kind], dict[str | None, _Shadows]]


def _index(records: Iterable[OutcomeRecord]) -> tuple[list[OutcomeRecord], _Groups]:
    """The primaries in input order, and the shadows by (session, kind) and variant."""
    seen: set[str] = set()
    primaries: list[OutcomeRecord] = []
    shadows: defaultdict[tuple[str, Kind], defaultdict[str | None, list[OutcomeRecord]]]
    shadows = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.record_id in seen or record.kind not in _PAIRED_KINDS:
            continue
        seen.add(record.record_id)
        if record.role is Role.PRIMARY:
            primaries.append(record)
        elif record.role is Role.SHADOW:  # canary records are nobody's partner
            shadows[record.session_id, record.kind][record.variant].append(record)
    groups: _Groups = {}
    for key, variants in shadows.items():
        groups[key] = {variant: _group(found) for variant, found in variants.items()}
    return primaries, groups


def _group(records: list[OutcomeRecord]) -> _Shadows:
    placed = sorted(
        (r for r in records if _span(r) is not None), key=lambda r: _span(r) or (0.0, 0.0)
    )
    return _Shadows(
        records=placed,
        starts=[r.audio_offset_ms or 0.0 for r in placed],
        longest=max((r.audio_duration_ms or 0.0 for r in placed), default=0.0),
        unplaced=[r for r in records if _span(r) is None],
    )


def _span(record: OutcomeRecord) -> tuple[float, float] | None:
    if record.audio_offset_ms is None or record.audio_duration_ms is None:
        return None
    return record.audio_offset_ms, record.audio_offset_ms + record.audio_duration_ms


def _best(primary: OutcomeRecord, shadows: _Shadows) -> OutcomeRecord | None:
    span = _span(primary)
    if primary.kind is Kind.REQUEST:
        # One request is one result: its shadow is its partner, overlap or not.
        candidates: Sequence[OutcomeRecord] = [*shadows.records, *shadows.unplaced]
    elif span is None:
        return None
    else:
        # Only shadows starting in [start - longest, end) can overlap [start, end).
        low = bisect.bisect_left(shadows.starts, span[0] - shadows.longest)
        high = bisect.bisect_left(shadows.starts, span[1])
        candidates = shadows.records[low:high]
    best: OutcomeRecord | None = None
    best_key: tuple[float, float, float] | None = None
    for shadow in candidates:
        overlap = _overlap(span, _span(shadow))
        if overlap <= 0 and primary.kind is Kind.UTTERANCE:
            continue
        key = (-overlap, _distance(primary, shadow), _index_or_inf(shadow))
        if best_key is None or key < best_key:
            best, best_key = shadow, key
    return best


def _overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> float:
    if a is None or b is None:
        return 0.0
    return min(a[1], b[1]) - max(a[0], b[0])


def _distance(primary: OutcomeRecord, shadow: OutcomeRecord) -> float:
    if primary.utterance_index is None or shadow.utterance_index is None:
        return math.inf
    return abs(primary.utterance_index - shadow.utterance_index)


def _index_or_inf(record: OutcomeRecord) -> float:
    return math.inf if record.utterance_index is None else record.utterance_index
