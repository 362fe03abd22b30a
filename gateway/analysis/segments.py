"""Where a challenger wins and loses: WER and outcome rates per segment of the traffic.

A segment is the traffic sharing one value of a dimension: `locale`, `client`, recognition
`mode`, the audio's `duration` and the result's `confidence`. Durations and confidences are
bucketed, lower bound included (`DURATION_BUCKETS`, `CONFIDENCE_BUCKETS`); a record without
the value (a session failure has no audio duration, a request may carry no locale) falls in
`unknown`. Per segment and variant: the WER of the labelled results in it
(`gateway.analysis.labelled`), and the error and no-match rates of its outcomes (the
phase's primary, non-forced, not failed-over records, a failure its client retried left
out: exactly the outcomes of `gateway.analysis.observations`); the confidence dimension
holds results only, so its rates are null. Per challenger, the difference to control.

Every number is computed as the report's headline one, on the segment's records alone: the
WER's interval is the cluster bootstrap over units (`gateway.stats.bootstrap`), a rate's is
Wilson's on the units' effective sample and a difference's the clustered delta method
(`gateway.stats.clustered`), all at the report's confidence. So with one segment holding
all traffic the numbers are the report's. A metric of an arm with fewer than `min_units`
units in the segment gets no interval (`too_small`): from few units the spread of units,
which every interval rests on, is unknown.

Call-outs: a segment where a challenger's interval lies wholly above control's (worse WER or
error rate) while over all segments its estimate is below (better) is the Simpson-style
case, where an overall win hides a loss somewhere. The intervals are descriptive and
uncorrected for the number of segments: with many segments one may miss by chance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from gateway.analysis.labelled import LabelledResult
from gateway.analysis.model import AnalysisOptions, Json
from gateway.analysis.observations import (
    Outcome,
    OutcomeTable,
    Scored,
    epoch_seconds,
    retried_attempts,
    wer_unit_sums,
)
from gateway.analysis.report_fields import (
    as_html,
    as_interval,
    as_list,
    as_map,
    as_number,
    as_text,
)
from gateway.analysis.text_tables import text_table
from gateway.outcomes.record import Category, Kind, OutcomeRecord, Role, category
from gateway.stats import clustered
from gateway.stats.bootstrap import ratio_difference_interval, ratio_interval
from gateway.stats.proportions import clustered_wilson_interval

MIN_UNITS: Final = clustered.MIN_UNITS
UNKNOWN: Final = "unknown"
# (upper bound, exclusive; label), in order; the last bucket is open above.
DURATION_BUCKETS: Final = ((2000.0, "<2 s"), (5000.0, "2-5 s"), (10000.0, "5-10 s"))
DURATION_TOP: Final = ">=10 s"
CONFIDENCE_BUCKETS: Final = ((0.5, "<0.5"), (0.7, "0.5-0.7"), (0.9, "0.7-0.9"))
CONFIDENCE_TOP: Final = ">=0.9"
RateName = Literal["error_rate", "no_match_rate"]
RATES: Final[Mapping[RateName, Category]] = {"error_rate": "error", "no_match_rate": "no_match"}
CALL_OUT_METRICS: Final = ("wer", "error_rate")
METRIC_NAMES: Final = {"wer": "WER", "error_rate": "error rate", "no_match_rate": "no-match rate"}
_DEFAULTS: Final = AnalysisOptions()


def _bucket(value: float | None, buckets: Sequence[tuple[float, str]], top: str) -> str:
    if value is None:
        return UNKNOWN
    for bound, label in buckets:
        if value < bound:
            return label
    return top


def _named(value: str | None) -> str:
    return value if value else UNKNOWN


@dataclass(frozen=True, slots=True)
class Dimension:
    """How records split into segments: the segment of a record, and the fixed buckets
    (always listed, in order, even when empty) of a bucketed dimension."""

    name: str
    of: Callable[[OutcomeRecord], str]
    buckets: tuple[str, ...] = ()
    results_only: bool = False  # the value exists for results only: no outcome rates


DIMENSIONS: Final = (
    Dimension("locale", lambda r: _named(r.locale)),
    Dimension("client", lambda r: _named(r.client)),
    Dimension("mode", lambda r: _named(r.mode)),
    Dimension(
        "duration",
        lambda r: _bucket(r.audio_duration_ms, DURATION_BUCKETS, DURATION_TOP),
        (*(label for _, label in DURATION_BUCKETS), DURATION_TOP),
    ),
    Dimension(
        "confidence",
        lambda r: _bucket(r.confidence, CONFIDENCE_BUCKETS, CONFIDENCE_TOP),
        (*(label for _, label in CONFIDENCE_BUCKETS), CONFIDENCE_TOP),
        results_only=True,
    ),
)


@dataclass(frozen=True, slots=True)
class _Settings:
    confidence: float
    min_units: int
    resamples: int
    seed: int


@dataclass(slots=True)
class _Arm:
    """One variant's evidence in one segment."""

    scored: list[Scored]
    outcomes: list[Outcome] | None  # None: the dimension has no outcome rates

    @property
    def units(self) -> int:
        found = {item.unit for item in self.scored}
        found.update(o.unit for o in self.outcomes or ())
        return len(found)


def segments_section(
    results: Sequence[LabelledResult],
    records: Iterable[OutcomeRecord],
    *,
    control: str,
    variants: Sequence[str],
    alpha: float,
    min_units: int = MIN_UNITS,
    resamples: int = _DEFAULTS.resamples,
    seed: int = _DEFAULTS.seed,
) -> Json:
    """The segments section (module doc): per dimension, segment and variant the WER and
    outcome rates, per challenger the difference to control, and the call-outs.

    `results`: the phase's labelled results; `records`: the phase's records, of which the
    primary, non-forced, not failed-over ones are the outcomes; `alpha`: 1 - the report's
    confidence; `resamples` and `seed`: the WER bootstrap's, as the report's.
    """
    if control not in variants:
        raise ValueError(f"control {control!r} is not among the variants {list(variants)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if min_units < 2:
        raise ValueError(f"min_units must be at least 2 (one unit has no spread), got {min_units}")
    settings = _Settings(1.0 - alpha, min_units, resamples, seed)
    names = [control, *(name for name in variants if name != control)]
    # Time order, as `observations.observe` keeps it: the bootstrap resamples the units in
    # the order of their first result, so the same order gives the report's numbers.
    ordered_results = sorted(
        (r for r in results if r.variant in names), key=lambda r: r.record.timestamp
    )
    outcomes = [(r, o) for r, o in _outcomes(records) if r.variant in names]
    overall = _overall(ordered_results, outcomes, names)
    dimensions: Json = {}
    call_outs: list[Json] = []
    for dimension in DIMENSIONS:
        segments = _segments(dimension, ordered_results, outcomes, names, settings)
        dimensions[dimension.name] = segments
        call_outs += _call_outs(dimension.name, segments, overall, control)
    return {
        "control": control,
        "variants": names,
        "confidence": round(settings.confidence, 10),
        "min_units": min_units,
        "overall": overall,
        "dimensions": dimensions,
        "call_outs": call_outs,
    }


def _outcomes(records: Iterable[OutcomeRecord]) -> list[tuple[OutcomeRecord, Outcome]]:
    """The outcomes (module doc), each with its record, in time order."""
    ordered = sorted(records, key=lambda r: r.timestamp)
    retried = retried_attempts(ordered)
    found: list[tuple[OutcomeRecord, Outcome]] = []
    for record in ordered:
        if (
            record.role is not Role.PRIMARY
            or record.forced
            or record.failover_from is not None
            or record.variant is None
        ):
            continue
        failure = record.kind is Kind.SESSION_FAILURE
        if failure and record.session_id in retried:
            continue  # a failure the client retried is no outcome its user saw
        outcome = Outcome(
            epoch_seconds(record.timestamp),
            record.unit,
            category(record),
            record.first_hypothesis_ms,
            record.final_latency_ms,
            None if failure else record.confidence,
        )
        found.append((record, outcome))
    return found


def _scored(result: LabelledResult) -> Scored:
    record = result.record
    return Scored(epoch_seconds(record.timestamp), record.unit, result.alignment.counts)


def _wer_of(scored: Sequence[Scored]) -> float | None:
    errors, words = wer_unit_sums(scored)
    return sum(errors) / sum(words) if sum(words) > 0 else None


def _rate_of(outcomes: Sequence[Outcome], kind: Category) -> float | None:
    if not outcomes:
        return None
    return sum(o.category == kind for o in outcomes) / len(outcomes)


def _overall(
    results: Sequence[LabelledResult],
    outcomes: Sequence[tuple[OutcomeRecord, Outcome]],
    names: Sequence[str],
) -> Json:
    """Per challenger, its difference to control over all segments together (estimates)."""
    scored = {name: [_scored(r) for r in results if r.variant == name] for name in names}
    found = {name: [o for r, o in outcomes if r.variant == name] for name in names}
    control = names[0]
    overall: Json = {}
    for name in names[1:]:
        entry: Json = {"wer": _minus(_wer_of(scored[name]), _wer_of(scored[control]))}
        for rate, kind in RATES.items():
            entry[rate] = _minus(_rate_of(found[name], kind), _rate_of(found[control], kind))
        overall[name] = entry
    return overall


def _minus(challenger: float | None, control: float | None) -> float | None:
    return None if challenger is None or control is None else challenger - control


def _segments(
    dimension: Dimension,
    results: Sequence[LabelledResult],
    outcomes: Sequence[tuple[OutcomeRecord, Outcome]],
    names: Sequence[str],
    settings: _Settings,
) -> list[Json]:
    arms: dict[str, dict[str, _Arm]] = {value: {} for value in dimension.buckets}

    def arm(value: str, name: str) -> _Arm:
        empty: list[Outcome] | None = None if dimension.results_only else []
        return arms.setdefault(value, {}).setdefault(name, _Arm([], empty))

    for result in results:
        arm(dimension.of(result.record), result.variant).scored.append(_scored(result))
    if not dimension.results_only:
        for record, outcome in outcomes:
            assert record.variant is not None
            found = arm(dimension.of(record), record.variant).outcomes
            assert found is not None
            found.append(outcome)
    # Buckets in their order, then seen values by name; unknown last.
    values = list(dimension.buckets) + sorted(set(arms) - set(dimension.buckets) - {UNKNOWN})
    if UNKNOWN in arms and UNKNOWN not in values:
        values.append(UNKNOWN)
    return [
        _segment(value, {name: arm(value, name) for name in names}, names, settings)
        for value in values
    ]


def _segment(
    value: str, arms: Mapping[str, _Arm], names: Sequence[str], settings: _Settings
) -> Json:
    control = arms[names[0]]
    comparisons = {name: _comparison(control, arms[name], settings) for name in names[1:]}
    small = {name: arms[name].units < settings.min_units for name in names}
    return {
        "segment": value,
        "too_small": any(small.values()),
        "variants": {name: _variant(arms[name], settings) for name in names},
        "comparisons": comparisons,
    }


def _variant(arm: _Arm, settings: _Settings) -> Json:
    return {
        "units": arm.units,
        "utterances": len(arm.scored),
        "outcomes": None if arm.outcomes is None else len(arm.outcomes),
        "wer": _wer(arm.scored, settings),
        **{
            rate: None if arm.outcomes is None else _rate(arm.outcomes, kind, settings)
            for rate, kind in RATES.items()
        },
    }


def _wer(scored: Sequence[Scored], settings: _Settings) -> Json | None:
    errors, words = wer_unit_sums(scored)
    if sum(words) <= 0:
        return None
    small = len(errors) < settings.min_units
    ci: list[float | None] | None = None
    if not small:
        estimate = ratio_interval(
            errors,
            words,
            confidence=settings.confidence,
            resamples=settings.resamples,
            seed=settings.seed,
        )
        ci = _interval(estimate.low, estimate.high)
    return {
        "value": sum(errors) / sum(words),
        "ci": ci,
        "errors": round(sum(errors)),
        "reference_words": round(sum(words)),
        "units": len(errors),
        "too_small": small,
    }


def _rate(outcomes: Sequence[Outcome], kind: Category, settings: _Settings) -> Json | None:
    if not outcomes:
        return None
    sums = OutcomeTable.of(outcomes).rate_sums(kind)
    small = sums.units < settings.min_units
    ci = None if small else list(clustered_wilson_interval(sums, settings.confidence))
    return {
        "rate": sums.rate,
        "ci": ci,
        "count": round(sums.x),
        "total": round(sums.n),
        "units": sums.units,
        "too_small": small,
    }


def _comparison(control: _Arm, challenger: _Arm, settings: _Settings) -> Json:
    entry: Json = {
        "too_small": min(control.units, challenger.units) < settings.min_units,
        "wer": _wer_difference(control.scored, challenger.scored, settings),
    }
    for rate, kind in RATES.items():
        if control.outcomes is None or challenger.outcomes is None:
            entry[rate] = None
        else:
            entry[rate] = _rate_difference(control.outcomes, challenger.outcomes, kind, settings)
    return entry


def _wer_difference(
    control: Sequence[Scored], challenger: Sequence[Scored], settings: _Settings
) -> Json | None:
    errors_a, words_a = wer_unit_sums(control)
    errors_b, words_b = wer_unit_sums(challenger)
    if sum(words_a) <= 0 or sum(words_b) <= 0:
        return None
    small = min(len(errors_a), len(errors_b)) < settings.min_units
    ci: list[float | None] | None = None
    if not small:
        estimate = ratio_difference_interval(
            errors_a,
            words_a,
            errors_b,
            words_b,
            confidence=settings.confidence,
            resamples=settings.resamples,
            seed=settings.seed,
        )
        ci = _interval(estimate.low, estimate.high)
    difference = sum(errors_b) / sum(words_b) - sum(errors_a) / sum(words_a)
    return {"difference": difference, "ci": ci, "too_small": small}


def _rate_difference(
    control: Sequence[Outcome], challenger: Sequence[Outcome], kind: Category, settings: _Settings
) -> Json | None:
    if not control or not challenger:
        return None
    a = OutcomeTable.of(control).rate_sums(kind)
    b = OutcomeTable.of(challenger).rate_sums(kind)
    small = min(a.units, b.units) < settings.min_units
    ci = None if small else list(clustered.difference_interval(a, b, settings.confidence))
    return {"difference": b.rate - a.rate, "ci": ci, "too_small": small}


def _interval(low: float, high: float) -> list[float | None]:
    return [low if math.isfinite(low) else None, high if math.isfinite(high) else None]


def _call_outs(
    dimension: str, segments: Sequence[Json], overall: Mapping[str, Json], control: str
) -> list[Json]:
    """Segments where a challenger is surely worse on a metric it wins overall."""
    found: list[Json] = []
    for segment in segments:
        for name, comparison in segment["comparisons"].items():
            for metric in CALL_OUT_METRICS:
                entry = comparison.get(metric)
                whole = overall[name].get(metric)
                if entry is None or entry["ci"] is None or whole is None or whole >= 0:
                    continue
                low, high = entry["ci"]
                if low is None or low <= 0:
                    continue
                found.append(
                    {
                        "dimension": dimension,
                        "segment": segment["segment"],
                        "variant": name,
                        "control": control,
                        "metric": metric,
                        "difference": entry["difference"],
                        "ci": entry["ci"],
                        "overall": whole,
                        "message": (
                            f"{name} is worse than {control} on {METRIC_NAMES[metric]} for "
                            f"{dimension} {segment['segment']}: {_pp(entry['difference'])} "
                            f"[{_points(low)}, {_points(high)}], while better overall "
                            f"({_pp(whole)})"
                        ),
                    }
                )
    return found


# -- rendering -------------------------------------------------------------------------------

_NONE: Final = "-"
TOO_FEW: Final = "too few units"
NO_DATA: Final = "no utterances"


def _pct(value: float | None) -> str:
    return _NONE if value is None else f"{value * 100:.1f}%"


def _pp(value: float | None) -> str:
    return _NONE if value is None else f"{value * 100:+.1f} pp"


def _points(value: float | None, sign: str = "+") -> str:
    return "inf" if value is None else f"{value * 100:{sign}.1f}"


def _level(section: Mapping[str, Any]) -> str:
    confidence = as_number(section.get("confidence"))
    return "" if confidence is None else f"{confidence * 100:g}%"


def _measure(entry: object, key: str, difference: bool) -> str:
    """A value with its interval, or the reason it has none."""
    found = as_map(entry)
    value = as_number(found.get(key))
    if value is None:
        return _NONE
    text = _pp(value) if difference else _pct(value)
    interval = as_interval(found.get("ci"))
    if found.get("too_small") is True:
        return f"{text} ({TOO_FEW})"
    if interval is None:
        return text
    sign = "+" if difference else ""
    low = "-inf" if interval[0] is None else _points(interval[0], sign)
    return f"{text} [{low}, {_points(interval[1], sign)}]"


def _rows(section: Mapping[str, Any], dimension: object) -> list[tuple[Json, list[str]]]:
    """(flags, cells) per segment and variant of one dimension, control first; a segment
    without any unit is one row saying so."""
    rows: list[tuple[Json, list[str]]] = []
    control = as_text(section.get("control"))
    for found in as_list(dimension):
        segment = as_map(found)
        value = as_text(segment.get("segment"))
        small = segment.get("too_small") is True
        comparisons = as_map(segment.get("comparisons"))
        variants = as_map(segment.get("variants"))
        if variants and not any(as_number(as_map(v).get("units")) for v in variants.values()):
            empty = [value, _NONE, "0", "0", "0", NO_DATA]
            rows.append(({"segment": value, "variant": "", "too_small": small}, _padded(empty)))
            continue
        for name, entry in variants.items():
            variant = as_map(entry)
            comparison = as_map(comparisons.get(name))
            outcomes = as_number(variant.get("outcomes"))
            cells = [
                value,
                as_text(name),
                f"{as_number(variant.get('units')) or 0:.0f}",
                f"{as_number(variant.get('utterances')) or 0:.0f}",
                _NONE if outcomes is None else f"{outcomes:.0f}",
                _measure(variant.get("wer"), "value", False),
                _measure(variant.get("error_rate"), "rate", False),
                _measure(variant.get("no_match_rate"), "rate", False),
            ]
            for metric in METRIC_NAMES:
                cell = _NONE
                if name != control:
                    cell = _measure(comparison.get(metric), "difference", True)
                    # An arm with nothing in the segment: no difference, for too few units.
                    measured = metric == "wer" or outcomes is not None
                    if cell == _NONE and small and measured:
                        cell = TOO_FEW
                cells.append(cell)
            rows.append(({"segment": value, "variant": as_text(name), "too_small": small}, cells))
    return rows


def _padded(cells: list[str]) -> list[str]:
    return cells + [""] * (len(HEADER) - len(cells))


HEADER: Final = (
    "segment",
    "variant",
    "units",
    "labelled",
    "outcomes",
    "WER",
    "error rate",
    "no-match rate",
    "diff WER",
    "diff error rate",
    "diff no-match",
)


def segments_text(section: Mapping[str, Any] | None) -> list[str]:
    """Terminal lines: the call-outs, then a table per dimension."""
    found = as_map(section)
    dimensions = as_map(found.get("dimensions"))
    if not dimensions:
        return []
    min_units = as_number(found.get("min_units"))
    lines = [
        f"Segments: differences challenger - control, {_level(found)} intervals clustered by "
        f"unit; {TOO_FEW}: an arm has fewer than {min_units or 0:.0f} units in the segment"
    ]
    for call_out in as_list(found.get("call_outs")):
        lines.append(f"  ! {as_text(as_map(call_out).get('message'))}")
    for name, dimension in dimensions.items():
        rows = [cells for _, cells in _rows(found, dimension)]
        lines += ["", f"By {as_text(name)}:"]
        lines += text_table(HEADER, rows) if rows else ["  no labelled results or outcomes"]
    return lines


def segments_html(section: Mapping[str, Any] | None) -> str:
    """An HTML fragment: the call-outs as warnings, then a table per dimension."""
    found = as_map(section)
    dimensions = as_map(found.get("dimensions"))
    if not dimensions:
        return ""
    min_units = as_number(found.get("min_units"))
    called = {
        (
            as_text(c.get("dimension")),
            as_text(c.get("segment")),
            as_text(c.get("variant")),
            as_text(c.get("metric")),
        )
        for c in map(as_map, as_list(found.get("call_outs")))
    }
    first_difference = len(HEADER) - len(METRIC_NAMES)
    parts = [
        '<section class="segments" data-section="segments">',
        "<h3>Segments</h3>",
        f'<p class="meta">WER and outcome rates per segment; differences are challenger − '
        f"control with {as_html(_level(found))} intervals clustered by unit. "
        f"“{TOO_FEW}”: an arm has fewer than {min_units or 0:.0f} units in the segment, "
        "too few for an interval. Intervals are not corrected for the number of segments.</p>",
    ]
    for call_out in map(as_map, as_list(found.get("call_outs"))):
        parts.append(
            f'<p class="warning" data-call-out="{as_html(call_out.get("metric"))}" '
            f'data-dimension="{as_html(call_out.get("dimension"))}" '
            f'data-segment="{as_html(call_out.get("segment"))}">'
            f"{as_html(call_out.get('message'))}</p>"
        )
    for name, dimension in dimensions.items():
        body = []
        for flags, cells in _rows(found, dimension):
            key = (as_text(name), flags["segment"], flags["variant"])
            marked = {m for m in METRIC_NAMES if (*key, m) in called}
            css = ' class="called-out"' if marked else ""
            tds = "".join(
                f'<td><span class="status bad">{as_html(c)}</span></td>'
                if index >= first_difference
                and list(METRIC_NAMES)[index - first_difference] in marked
                else f"<td>{as_html(c)}</td>"
                for index, c in enumerate(cells)
            )
            body.append(
                f'<tr{css} data-segment="{as_html(flags["segment"])}" '
                f'data-variant="{as_html(flags["variant"])}" '
                f'data-too-small="{"true" if flags["too_small"] else "false"}">{tds}</tr>'
            )
        head = "".join(f"<th>{as_html(h)}</th>" for h in HEADER)
        rows = "".join(body) or (
            f'<tr><td colspan="{len(HEADER)}" class="no-data">No labelled results or outcomes.'
            "</td></tr>"
        )
        parts.append(
            f'<div class="table-wrap"><table data-table="segments" '
            f'data-dimension="{as_html(name)}"><caption>By {as_html(name)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
        )
    parts.append("</section>")
    return "\n".join(parts)
