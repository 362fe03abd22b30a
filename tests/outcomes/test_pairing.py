"""Tests for gateway.outcomes.pairing: shadow utterances paired with primaries by audio overlap."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.outcomes.pairing import pair_shadows, unpaired
from gateway.outcomes.record import (
    Kind,
    OutcomeRecord,
    Protocol,
    Role,
    UnitSource,
    new_record_id,
)


def utt(
    role: Role,
    index: int,
    start: float | None,
    end: float | None,
    *,
    variant: str = "base",
    session: str = "s1",
    **changes: Any,
) -> OutcomeRecord:
    values: dict[str, Any] = {
        "record_id": new_record_id(),
        "kind": Kind.UTTERANCE,
        "experiment": "checkout",
        "phase": "1",
        "variant": variant,
        "backend": variant,
        "role": role,
        "client": "app",
        "unit": "u1",
        "unit_source": UnitSource.QUERY,
        "session_id": session,
        "protocol": Protocol.USP,
        "utterance_index": index,
        "status": "Success",
        "audio_offset_ms": start,
        "audio_duration_ms": None if start is None or end is None else end - start,
        "shadow_drops": 0 if role is Role.SHADOW else None,
    }
    values.update(changes)
    return OutcomeRecord(**values)


def primary(index: int, start: float | None, end: float | None, **kw: Any) -> OutcomeRecord:
    return utt(Role.PRIMARY, index, start, end, **kw)


def shadow(index: int, start: float | None, end: float | None, **kw: Any) -> OutcomeRecord:
    return utt(Role.SHADOW, index, start, end, **{"variant": "custom", **kw})


def test_same_segmentation_pairs_one_to_one() -> None:
    """Utterances with the same spans pair with their counterparts."""
    p0, p1 = primary(0, 0, 1000), primary(1, 1500, 2500)
    s0, s1 = shadow(0, 0, 1000), shadow(1, 1500, 2500)
    assert pair_shadows([p0, s0, p1, s1]) == [(p0, s0), (p1, s1)]
    assert unpaired([p0, s0, p1, s1]) == []


def test_shifted_segmentation_pairs_by_largest_overlap() -> None:
    """When the shadow cuts elsewhere, each primary takes the shadow it overlaps most."""
    p0, p1 = primary(0, 0, 1000), primary(1, 1000, 2000)
    s0, s1 = shadow(0, 80, 1300), shadow(1, 1300, 2600)  # p1: 300 ms of s0, 700 ms of s1
    assert pair_shadows([s1, p0, s0, p1]) == [(p0, s0), (p1, s1)]


def test_a_shadow_that_split_an_utterance_pairs_its_larger_part() -> None:
    """If the shadow splits one utterance in two, the part with more overlap is the partner."""
    p0 = primary(0, 0, 3000)
    s0, s1 = shadow(0, 0, 1200), shadow(1, 1200, 3000)
    assert pair_shadows([p0, s0, s1]) == [(p0, s1)]


def test_equal_overlap_goes_to_the_closest_utterance_index() -> None:
    """Ties in overlap go to the shadow whose utterance_index is closest to the primary's."""
    p1 = primary(1, 3000, 6000)
    s1, s2 = shadow(1, 3000, 4500), shadow(2, 4500, 6000)
    assert pair_shadows([p1, s2, s1]) == [(p1, s1)]


def test_equally_close_indexes_go_to_the_lower_index() -> None:
    """With equal overlap and equally close indexes, the lower utterance_index wins."""
    p5 = primary(5, 3000, 6000)
    s4, s6 = shadow(4, 3000, 4500), shadow(6, 4500, 6000)
    assert pair_shadows([p5, s6, s4]) == [(p5, s4)]


def test_a_shadow_spanning_two_primaries_pairs_with_both() -> None:
    """A shadow that merged two primary utterances is the partner of each of them."""
    p0, p1 = primary(0, 0, 1000), primary(1, 1200, 2000)
    s0 = shadow(0, 0, 2000)
    assert pair_shadows([p0, p1, s0]) == [(p0, s0), (p1, s0)]


def test_two_shadow_variants_give_one_pair_each_in_name_order() -> None:
    """Each shadow variant pairs separately; pairs come by primary, then variant name."""
    p0, p1 = primary(0, 0, 1000), primary(1, 1000, 2000)
    b0, b1 = shadow(0, 0, 900, variant="zeta"), shadow(1, 950, 2000, variant="zeta")
    a0 = shadow(0, 0, 2000, variant="alpha")
    assert pair_shadows([b0, b1, p0, p1, a0]) == [(p0, a0), (p0, b0), (p1, a0), (p1, b1)]


def test_records_of_other_sessions_never_pair() -> None:
    """A shadow with the same span in another session is no partner."""
    p0 = primary(0, 0, 1000, session="s1")
    s0 = shadow(0, 0, 1000, session="s2")
    assert pair_shadows([p0, s0]) == []
    assert unpaired([p0, s0]) == [p0]


def test_touching_or_disjoint_spans_do_not_pair() -> None:
    """Spans that only touch, or do not meet, have no overlap and do not pair."""
    p0 = primary(0, 1000, 2000)
    records = [p0, shadow(0, 0, 1000), shadow(1, 2000, 3000), shadow(2, 5000, 6000)]
    assert pair_shadows(records) == []


def test_utterances_without_a_span_do_not_pair() -> None:
    """An utterance without audio offset or duration cannot be placed, so it is unpaired."""
    p0, p1 = primary(0, None, None), primary(1, 0, 1000)
    s0, s1 = shadow(0, 0, 1000), shadow(1, None, None)
    assert pair_shadows([p0, p1, s0, s1]) == [(p1, s0)]
    assert unpaired([p0, p1, s0, s1]) == [p0]


def test_rest_requests_pair_within_their_request_even_without_spans() -> None:
    """A REST request and its shadow request share a session id and pair, spans or not."""
    rest = {"kind": Kind.REQUEST, "protocol": Protocol.REST, "utterance_index": None}
    p = primary(0, None, None, session="req-1", **rest)
    s = shadow(0, None, None, session="req-1", **rest)
    other = shadow(0, None, None, session="req-2", **rest)
    assert pair_shadows([p, s, other]) == [(p, s)]


def test_kinds_are_not_mixed_and_failures_are_ignored() -> None:
    """Utterances pair only with utterances; session-failure records take no part."""
    p0 = primary(0, 0, 1000)
    failure = shadow(0, None, None, kind=Kind.SESSION_FAILURE, status="Error")
    assert pair_shadows([p0, failure]) == []
    assert unpaired([p0, failure]) == [p0]


def test_a_record_delivered_twice_counts_once() -> None:
    """Duplicates (same record_id) yield no duplicate pairs."""
    p0, s0 = primary(0, 0, 1000), shadow(0, 0, 1000)
    assert pair_shadows([p0, s0, p0, s0]) == [(p0, s0)]
    lonely = primary(1, 5000, 6000)
    assert unpaired([lonely, lonely]) == [lonely]


def test_unpaired_lists_primaries_without_partner_from_any_iterable() -> None:
    """unpaired() returns primaries with no partner, in input order, from a one-shot iterator."""
    p0, p1, p2 = primary(0, 0, 1000), primary(1, 1000, 2000), primary(2, 3000, 4000)
    s1 = shadow(0, 1000, 2000)
    lonely = primary(0, 0, 1000, session="unshadowed")
    records = [p0, p1, p2, s1, lonely]
    assert unpaired(iter(records)) == [p0, p2, lonely]
    assert pair_shadows(iter(records)) == [(p1, s1)]


def _reference(records: list[OutcomeRecord]) -> list[tuple[OutcomeRecord, OutcomeRecord]]:
    """Brute force: every shadow of the session and variant, scored by the documented rule."""
    pairs = []
    for p in (r for r in records if r.role is Role.PRIMARY):
        assert p.audio_offset_ms is not None
        assert p.audio_duration_ms is not None
        p_end = p.audio_offset_ms + p.audio_duration_ms
        for variant in sorted({r.variant or "" for r in records if r.role is Role.SHADOW}):
            scored = []
            for s in records:
                if s.role is not Role.SHADOW or s.variant != variant:
                    continue
                assert s.audio_offset_ms is not None
                assert s.audio_duration_ms is not None
                s_end = s.audio_offset_ms + s.audio_duration_ms
                overlap = min(p_end, s_end) - max(p.audio_offset_ms, s.audio_offset_ms)
                assert p.utterance_index is not None
                assert s.utterance_index is not None
                distance = abs(p.utterance_index - s.utterance_index)
                if overlap > 0:
                    scored.append(((-overlap, distance, s.utterance_index), s))
            if scored:
                pairs.append((p, min(scored, key=lambda item: item[0])[1]))
    return pairs


def _segments(role: Role, variant: str, cuts: list[int]) -> list[OutcomeRecord]:
    edges = sorted(set(cuts))
    return [
        utt(role, i, float(a), float(b), variant=variant, shadow_drops=None)
        if role is Role.PRIMARY
        else utt(role, i, float(a), float(b), variant=variant)
        for i, (a, b) in enumerate(itertools.pairwise(edges))
    ]


cuts = st.lists(st.integers(0, 20_000), min_size=2, max_size=30)


@given(cuts, cuts, cuts)
def test_matches_a_brute_force_reference(p_cuts: list[int], a: list[int], b: list[int]) -> None:
    """On random segmentations the indexed search picks what an exhaustive scan picks."""
    records = [
        *_segments(Role.PRIMARY, "base", p_cuts),
        *_segments(Role.SHADOW, "alpha", a),
        *_segments(Role.SHADOW, "beta", b),
    ]
    got = pair_shadows(records)
    want = _reference(records)
    assert [(p.record_id, s.record_id) for p, s in got] == [
        (p.record_id, s.record_id) for p, s in want
    ]


def test_pairs_keep_the_records_unchanged() -> None:
    """Pairing returns the very records it was given, not copies or changed ones."""
    p0, s0 = primary(0, 0, 1000), shadow(0, 0, 1000)
    [(got_p, got_s)] = pair_shadows([p0, s0])
    assert got_p is p0
    assert got_s is s0
    assert dataclasses.asdict(got_s) == dataclasses.asdict(s0)
