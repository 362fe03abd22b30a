"""The experiment analysis: per phase and variant, every metric with its interval, as JSON.

`analyze` reads one experiment's records and labels from a store (`OutcomeReader`) and
returns the report as a JSON-ready dict; `build_report` does the computing on records
already in memory (it is CPU work: async callers run it in a thread). The report's schema
is documented in docs/analysis.md and pinned by tests; renderers (`text_report`,
`html_report`, the dashboard) read only that dict. Its inputs besides the records, how
to decide and what the configuration says of the experiment, are the types of `model`;
with the reference transcripts of the experiment's canary set it also scores the canary
records (`canaries`), which are never part of the evidence, and for a shipped phase it
follows the shipped variant against the holdout over time (`drift`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Final

import numpy as np

from gateway.analysis.canaries import CanaryAnswer, canary_answers, canary_section
from gateway.analysis.decision import guardrails, recommend
from gateway.analysis.drift import drift_section, shipped_variant
from gateway.analysis.engine_port import (
    AnalysisWindow,
    Evidence,
    EvidenceSource,
    LabelledEvidenceSource,
)
from gateway.analysis.error_analysis import ErrorInputs, errors_section
from gateway.analysis.model import AnalysisOptions, ExperimentInfo, Json
from gateway.analysis.observations import (
    LATENCY_METRICS,
    LatencyMetric,
    OutcomeTable,
    PhaseObservations,
    ShadowPair,
    VariantObservations,
    observe,
    wer_interval,
)
from gateway.analysis.paired import oriented, with_always_valid
from gateway.analysis.review_report import (
    ReviewInputs,
    captured_records,
    headline_labels,
    held_back_records,
    review_section,
)
from gateway.analysis.timeline import boundaries, bucket_seconds
from gateway.analysis.unit_sample import UnitSample, labelled_primaries, sampled
from gateway.control.guardrails import Guardrails
from gateway.errors import EngineUnreadable
from gateway.outcomes.labels import Label
from gateway.outcomes.ports import OutcomeReader
from gateway.outcomes.record import CATEGORIES, Category, OutcomeRecord
from gateway.stats import clustered
from gateway.stats.bootstrap import (
    cluster_median_difference_interval,
    paired_ratio_difference_interval,
    ratio_difference_interval,
)
from gateway.stats.proportions import clustered_wilson_interval, wilson_interval
from gateway.stats.sequential import DEFAULT_TAU, AlwaysValid, always_valid, ratio_variance
from gateway.stats.srm import sample_ratio_mismatch

REPORT_SCHEMA_VERSION: Final = 1
QUANTILES: Final = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
_HISTOGRAM_BINS: Final = 20


async def analyze(
    reader: OutcomeReader,
    experiment: str,
    *,
    info: ExperimentInfo | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    phase: str | None = None,
    options: AnalysisOptions | None = None,
    canary_references: Mapping[str, str] | None = None,
    errors: ErrorInputs | None = None,
    missing_ok: bool = False,
    in_thread: bool = False,
    engine: EvidenceSource | None = None,
    reviews: ReviewInputs | None = None,
) -> Json:
    """Read the experiment's records and labels and build its report.

    `canary_references`: the experiment's canary set, item id -> reference transcript
    (`gateway.health.canary.load_references`); without it there is no canary section.
    `errors`: the error analysis's term list and synonyms (`error_analysis.ErrorInputs`).
    `missing_ok`: a store without an outcome file yet (FileNotFoundError) has no records.
    `in_thread`: compute in a worker thread, keeping a serving event loop responsive.
    `engine`: computes the observations where the records lie (`engine_port`); a store it
    cannot read (`EngineUnreadable`) is read record by record instead.
    `reviews`: the experiment's captures and blind preferences (`review_report`).
    """
    options = options or AnalysisOptions()
    computed: Evidence | None = None
    labels: dict[str, Label] | None = None
    if engine is not None:
        window = AnalysisWindow(experiment, since, until)
        try:
            if isinstance(engine, LabelledEvidenceSource) and _same_labels(engine, reader):
                # The engine reads the labels where they lie: none is read into memory here.
                computed = await asyncio.to_thread(
                    partial(
                        engine.evidence,
                        window,
                        options.error_labelled,
                        held_back=frozenset() if reviews is None else held_back_records(reviews),
                        wanted=frozenset() if reviews is None else captured_records(reviews),
                    )
                )
            else:
                labels = await reader.labels(experiment)
                headline = labels if reviews is None else headline_labels(labels, reviews)
                found = await asyncio.to_thread(
                    engine.inputs, window, headline, options.error_labelled
                )
                computed = Evidence(*found, labels=labels)
        except EngineUnreadable:
            # A missing file, a torn last line, a bad line: the record reader below tells
            # them apart (no records, skipped, named).
            computed = None
    if computed is not None:
        records, observations, sample = computed.records, computed.observations, computed.sample
        labels = computed.labels
    else:
        if labels is None:
            labels = await reader.labels(experiment)
        observations, sample = None, None
        try:
            records = [record async for record in reader.outcomes(experiment, since, until)]
        except FileNotFoundError:
            if not missing_ok:
                raise
            records = []
    build = partial(
        build_report,
        experiment,
        records,
        labels,
        info=info,
        since=since,
        until=until,
        phase=phase,
        options=options,
        canary_references=canary_references,
        errors=errors,
        observations=observations,
        sample=sample,
        reviews=reviews,
    )
    return await asyncio.to_thread(build) if in_thread else build()


def _same_labels(engine: LabelledEvidenceSource, reader: OutcomeReader) -> bool:
    """Whether the engine reads the reader's labels: a file store's label file can be
    configured elsewhere than beside the outcome file, where the engine looks by default."""
    ours, theirs = getattr(engine, "labels_path", None), getattr(reader, "labels_path", None)
    return ours is None or theirs is None or ours == theirs


def build_report(
    experiment: str,
    records: Iterable[OutcomeRecord],
    labels: Mapping[str, Label],
    *,
    info: ExperimentInfo | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    phase: str | None = None,
    options: AnalysisOptions | None = None,
    now: datetime | None = None,
    canary_references: Mapping[str, str] | None = None,
    errors: ErrorInputs | None = None,
    observations: Mapping[str, PhaseObservations] | None = None,
    sample: UnitSample | None = None,
    reviews: ReviewInputs | None = None,
) -> Json:
    """The report of `records` and their `labels`. With `observations` (an engine's, see
    `engine_port`) the records are only those the engine materialised: canaries and, with
    a `sample`, the error analysis's units; without, every record of the window, and the
    error analysis samples units itself above `options.error_labelled` labelled
    utterances (`unit_sample`). With `reviews`, the review labels of priority captures are
    left out of everything but the `review` section (`review_report.headline_labels`)."""
    options = options or AnalysisOptions()
    every_label = labels
    if reviews is not None:
        labels = headline_labels(labels, reviews)
    # One order, whatever order the store returned them in (an engine's is this one), so
    # every resampling sees the units in the same order.
    records = sorted(records, key=lambda r: (r.timestamp, r.record_id))
    references = canary_references or {}
    answers = canary_answers(records, references)
    if observations is None:
        every_phase = observe(records, labels)
        sample = UnitSample.for_labelled(
            labelled_primaries(records, labels), options.error_labelled
        )
        records = sampled(records, sample)
    else:
        every_phase = dict(observations)
    phases = every_phase
    if phase is not None:
        phases = {key: value for key, value in phases.items() if key == phase}
        answers = [answer for answer in answers if answer.phase == phase]
    control = _control(info, phases)
    ordered = sorted(
        phases.values(),
        key=lambda p: (info is None or p.phase != info.phase, -p.last),
    )
    # A phase with forced records only (QA right after a weight change) has no evidence.
    phase_reports = [
        _phase(p, control, info, options)
        for p in ordered
        if any(len(v.table) for v in p.variants.values())
    ]
    current = phase_reports[0] if phase_reports else None
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "generated_at": _iso(now or datetime.now(UTC)),
        "experiment": experiment,
        "control": control,
        # No configuration and no --control: the first variant by name stands in.
        "control_guessed": info is None and control is not None,
        "window": {
            "since": _iso(since) if since else None,
            "until": _iso(until) if until else None,
            "phase": phase,
        },
        "settings": {
            "confidence": options.confidence,
            "alpha": round(options.alpha, 10),
            "srm_threshold": options.srm_threshold,
            "resamples": options.resamples,
            "min_labelled": options.min_labelled,
            "drift_window_s": options.drift_window_s,
        },
        "phases": phase_reports,
        "canary": canary_section(answers, references, control),
        "drift": _drift(every_phase, answers, info, phase, options),
        "errors": errors_section(
            records,
            labels,
            # The selected phase, else the current one (the first phase report).
            phase=phase or (current["phase"] if current is not None else None),
            control=control,
            options=options,
            inputs=errors,
            selected=phase is not None,
            sample=sample,
        ),
        "review": None
        if reviews is None
        else review_section(reviews, every_label, control=control, options=options, phase=phase),
        "recommendation": recommend(current, info, options),
    }


def _drift(
    phases: Mapping[str, PhaseObservations],
    answers: Sequence[CanaryAnswer],
    info: ExperimentInfo | None,
    phase: str | None,
    options: AnalysisOptions,
) -> Json | None:
    """The drift section of the selected phase (else the current one) when a ship split it;
    None otherwise, or when the configuration (and so the phase's split) is unknown."""
    selected = phase if phase is not None else None if info is None else info.phase
    if info is None or selected is None:
        return None
    origin = info.phase_origins.get(selected)
    if origin is not None and origin != "ship":
        return None  # the phase history says another change opened it
    shares = info.shares_of(selected)
    shipped = (
        None if shares is None else shipped_variant(shares, info.control, shipped=origin == "ship")
    )
    if shares is None or shipped is None:
        return None
    return drift_section(
        phases.get(selected) or PhaseObservations(selected),
        answers,
        shipped=shipped,
        holdout=info.control,
        holdout_share=shares[info.control],
        window_s=options.drift_window_s,
        alpha=options.alpha,
    )


def _control(info: ExperimentInfo | None, phases: Mapping[str, PhaseObservations]) -> str | None:
    if info is not None:
        return info.control
    names = sorted({name for p in phases.values() for name in p.variants})
    return names[0] if names else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_epoch(seconds: float) -> str:
    return _iso(datetime.fromtimestamp(seconds, UTC))


def _interval(low: float, high: float) -> list[float | None]:
    return [_finite(low), _finite(high)]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _phase(
    phase: PhaseObservations,
    control: str | None,
    info: ExperimentInfo | None,
    options: AnalysisOptions,
) -> Json:
    names = sorted(phase.variants, key=lambda name: (name != control, name))
    length = bucket_seconds(phase.first, phase.last, options.max_buckets)
    starts = boundaries(phase.first, phase.last, length)
    ends = [start + length for start in starts]
    edges = {metric: _edges(phase, metric) for metric in LATENCY_METRICS}
    variants = [_variant(phase.variants[name], name == control, edges, options) for name in names]
    comparisons: list[Json] = []
    cumulative: dict[str, list[Json | None]] = {}
    if control is not None and control in phase.variants and len(phase.variants[control].table):
        base = phase.variants[control]
        for name in names[1:]:
            if not len(phase.variants[name].table):
                continue  # forced records only: nothing to compare
            configured = None if info is None else info.guardrails
            comparison, effect = _comparison(
                base, phase.variants[name], phase.shadow_pairs, ends, options, configured
            )
            comparisons.append(comparison)
            cumulative[name] = effect
    return {
        "phase": phase.phase,
        "current": None if info is None or info.phase is None else phase.phase == info.phase,
        "first_record": _iso_epoch(phase.first),
        "last_record": _iso_epoch(phase.last),
        "srm": _srm(phase, info, options),
        "variants": variants,
        "comparisons": comparisons,
        "timeline": _timeline(phase, names, starts, length, cumulative),
    }


def _srm(phase: PhaseObservations, info: ExperimentInfo | None, options: AnalysisOptions) -> Json:
    units = {name: v.units for name, v in sorted(phase.variants.items())}
    shares = None if info is None else info.shares_of(phase.phase)
    if shares is None:
        return {
            "status": "unchecked",
            "p_value": None,
            "chi2": None,
            "units": units,
            "expected_share": None,
            "note": "the split of this phase is unknown (neither the current one nor in the "
            "phase history), so its expected shares are too",
        }
    observed = {name: units.get(name, 0) for name in shares}
    stray = sorted(set(units) - set(shares))
    if stray or sum(observed.values()) == 0:
        note = (
            f"variants {', '.join(stray)} are not in the configured split"
            if stray
            else "no units yet"
        )
        return {
            "status": "unchecked",
            "p_value": None,
            "chi2": None,
            "units": units,
            "expected_share": dict(shares),
            "note": note,
        }
    result = sample_ratio_mismatch(observed, shares, threshold=options.srm_threshold)
    return {
        "status": "mismatch" if result.flagged else "ok",
        "p_value": result.p_value,
        "chi2": _finite(result.chi2),  # infinite when a weight-0 variant has units
        "units": observed,
        "expected_share": dict(shares),
        "note": None,
    }


def _edges(phase: PhaseObservations, metric: LatencyMetric) -> list[float]:
    """Histogram edges shared by the phase's variants, so their histograms overlay."""
    every = [variant.table.latencies[metric] for variant in phase.variants.values()]
    values = np.concatenate(every) if every else np.zeros(0)
    values = values[~np.isnan(values)]
    if not values.size:
        return []
    high = float(np.quantile(values, 0.99)) if values.size >= 100 else float(values.max())
    high = max(high, 1.0)
    step = _nice_step(high / _HISTOGRAM_BINS)
    bins = math.ceil(high / step) or 1
    return [round(i * step, 6) for i in range(bins + 1)]


def _nice_step(raw: float) -> float:
    scale = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * scale:
            return float(factor * scale)
    return 10.0 * scale


def _variant(
    variant: VariantObservations,
    is_control: bool,
    edges: Mapping[LatencyMetric, list[float]],
    options: AnalysisOptions,
) -> Json:
    table = variant.table
    total = len(table)
    rates = {name: _unit_share(table.rate_sums(name), options) for name in CATEGORIES}
    return {
        "name": variant.name,
        "is_control": is_control,
        "backends": sorted(variant.backends),
        "units": variant.units,
        "sessions": variant.sessions,
        "outcomes": total,
        "utterances": variant.utterances,
        "labelled": variant.labelled,
        "labelled_share": variant.labelled / variant.utterances if variant.utterances else None,
        "unscorable": variant.unscorable,
        "forced": variant.forced,
        "failed_over": variant.failed_over,
        "rates": rates,
        "failures": _failures(variant, options),
        "latency": {m: _latency(table, m, edges[m], options) for m in LATENCY_METRICS},
        "wer": _wer(variant, options),
    }


def _share(count: int, total: int, options: AnalysisOptions) -> Json:
    low, high = wilson_interval(count, total, options.confidence)
    return {
        "count": count,
        "total": total,
        "rate": count / total if total else None,
        "ci": [low, high] if total else None,
    }


def _unit_share(sums: clustered.UnitSums, options: AnalysisOptions) -> Json:
    """A rate over outcomes with Wilson's interval on the units' effective sample."""
    count, total = round(sums.x), round(sums.n)
    low, high = clustered_wilson_interval(sums, options.confidence)
    return {
        "count": count,
        "total": total,
        "rate": count / total if total else None,
        "ci": [low, high] if total else None,
    }


def _failures(variant: VariantObservations, options: AnalysisOptions) -> Json:
    """Errors per attempt (every gateway session, retries too) and per client session as
    its user saw it (an error nobody retried); docs/analysis.md, "Attempts and what users
    saw"."""
    return {
        "attempts": _share(variant.failed_attempts, variant.sessions, options),
        "client_sessions": _share(variant.failed_client_sessions, variant.client_sessions, options),
        "retried": variant.retried_client_sessions,
    }


def _latency(
    table: OutcomeTable,
    metric: LatencyMetric,
    edges: list[float],
    options: AnalysisOptions,
) -> Json:
    values, units = table.latency_values(metric)
    if not values.size:
        return {"n": 0, "mean": None, "quantiles": None, "histogram": None}
    quantiles: Json = {}
    for name, q in QUANTILES.items():
        # Clustered by unit: one unit's latencies share its device and network.
        value, low, high = clustered.quantile_interval(values, units, q, options.confidence)
        ci = _interval(low, high) if len(values) > 1 else None
        quantiles[name] = {"value": value, "ci": ci}
    # Values past the last edge (the slowest 1 %) go into the last bin, so nothing is lost.
    clipped = np.minimum(np.asarray(values, dtype=np.float64), edges[-1])
    counts, _ = np.histogram(clipped, bins=np.asarray(edges, dtype=np.float64))
    return {
        "n": int(values.size),
        "mean": float(np.mean(values)),
        "quantiles": quantiles,
        "histogram": {"edges": edges, "counts": [int(c) for c in counts]},
    }


def _wer(variant: VariantObservations, options: AnalysisOptions) -> Json | None:
    scores = variant.scores
    if not len(scores):
        return None
    total = scores.totals()
    errors, words = scores.unit_sums()
    ci = wer_interval(errors, words, options)
    return {
        "wer": total.wer,
        "ci": ci,
        "substitutions": total.substitutions,
        "deletions": total.deletions,
        "insertions": total.insertions,
        "hits": total.hits,
        "reference_words": total.reference_words,
        "utterances": len(scores),
        "units": len(errors),
    }


def _comparison(
    control: VariantObservations,
    challenger: VariantObservations,
    pairs: Sequence[ShadowPair],
    ends: Sequence[float],
    options: AnalysisOptions,
    configured: Guardrails | None = None,
) -> tuple[Json, list[Json | None]]:
    table_a, table_b = control.table, challenger.table
    rates = {name: _rate_difference(table_a, table_b, name, ends, options) for name in CATEGORIES}
    latency = {m: _median_difference(table_a, table_b, m, options) for m in LATENCY_METRICS}
    wer, effect = _wer_difference(control, challenger, ends, options)
    comparison: Json = {
        "variant": challenger.name,
        "control": control.name,
        "rates": rates,
        "latency": latency,
        "wer": wer,
        "shadow": with_always_valid(
            _shadow(pairs, control.name, challenger.name, options),
            pairs,
            control.name,
            challenger.name,
            ends,
            options.alpha,
        ),
    }
    comparison["guardrails"] = guardrails(control, challenger, ends, options, configured)
    return comparison, effect


def _rate_difference(
    control: OutcomeTable,
    challenger: OutcomeTable,
    name: Category,
    ends: Sequence[float],
    options: AnalysisOptions,
) -> Json:
    """The difference of a rate, clustered by unit: the delta-method interval, and the
    always-valid test on the same variance at every look."""
    a, b = control.rate_sums(name), challenger.rate_sums(name)
    if not a.n or not b.n:
        return {"difference": None, "ci": None, "always_valid": None}
    low, high = clustered.difference_interval(a, b, options.confidence)
    looks: list[tuple[float, float]] = []
    for end in ends:
        look_a = control.rate_sums(name, control.upto(end))
        look_b = challenger.rate_sums(name, challenger.upto(end))
        if look_a.n and look_b.n:
            # Infinite below clustered.MIN_UNITS units an arm, a look always_valid skips.
            variance = clustered.difference_variance(look_a, look_b)
            looks.append((look_b.rate - look_a.rate, variance))
    sequential = always_valid(looks, tau2=DEFAULT_TAU["rate"] ** 2, alpha=options.alpha)
    return {
        "difference": b.rate - a.rate,
        "ci": [low, high],
        "always_valid": _always_valid(sequential),
    }


def _always_valid(result: AlwaysValid) -> Json:
    """`conflicts`: looks whose interval missed all earlier ones: the effect changed."""
    return {
        "ci": _interval(*result.interval),
        "p_value": result.p_value,
        "conflicts": result.conflicts,
    }


def _median_difference(
    control: OutcomeTable,
    challenger: OutcomeTable,
    metric: LatencyMetric,
    options: AnalysisOptions,
) -> Json:
    (a, units_a), (b, units_b) = control.latency_values(metric), challenger.latency_values(metric)
    if not a.size or not b.size:
        return {"median_difference": None, "ci": None}
    estimate = cluster_median_difference_interval(
        a,
        units_a,
        b,
        units_b,
        confidence=options.confidence,
        resamples=options.resamples,
        seed=options.seed,
    )
    ci = _interval(estimate.low, estimate.high) if a.size > 1 and b.size > 1 else None
    return {"median_difference": estimate.value, "ci": ci}


def _wer_difference(
    control: VariantObservations,
    challenger: VariantObservations,
    ends: Sequence[float],
    options: AnalysisOptions,
) -> tuple[Json | None, list[Json | None]]:
    nothing: list[Json | None] = [None] * len(ends)
    if not len(control.scores) or not len(challenger.scores):
        return None, nothing
    errors_a, words_a = control.scores.unit_sums()
    errors_b, words_b = challenger.scores.unit_sums()
    if words_a.sum() == 0 or words_b.sum() == 0:
        return None, nothing
    wer_a = float(errors_a.sum() / words_a.sum())
    wer_b = float(errors_b.sum() / words_b.sum())
    ci: list[float | None] | None = None
    if len(errors_a) > 1 and len(errors_b) > 1:
        estimate = ratio_difference_interval(
            errors_a,
            words_a,
            errors_b,
            words_b,
            confidence=options.confidence,
            resamples=options.resamples,
            seed=options.seed,
        )
        ci = _interval(estimate.low, estimate.high)
    effect: list[Json | None] = []
    looks: list[tuple[float, float]] = []
    tau2 = DEFAULT_TAU["wer"] ** 2
    for end in ends:
        ea, wa = control.scores.unit_sums(control.scores.upto(end))
        eb, wb = challenger.scores.unit_sums(challenger.scores.upto(end))
        if wa.sum() > 0 and wb.sum() > 0:
            # Infinite below sequential.MIN_SESSIONS units an arm: too few for the variance.
            variance = ratio_variance(ea, wa) + ratio_variance(eb, wb)
            if math.isfinite(variance):
                difference = float(eb.sum() / wb.sum() - ea.sum() / wa.sum())
                looks.append((difference, variance))
        if not looks:
            effect.append(None)
            continue
        so_far = always_valid(looks, tau2=tau2, alpha=options.alpha)
        effect.append({"wer_difference": looks[-1][0], "ci": _interval(*so_far.interval)})
    sequential = always_valid(looks, tau2=tau2, alpha=options.alpha)
    return {
        "difference": wer_b - wer_a,
        "relative": (wer_b - wer_a) / wer_a if wer_a else None,
        "ci": ci,
        "always_valid": _always_valid(sequential),
        # The always-valid test's inputs, one per look: what the decision's tests and the
        # planner (gateway.stats.planning) read.
        "looks": [[difference, variance] for difference, variance in looks],
    }, effect


def _shadow(
    pairs: Sequence[ShadowPair], control: str, challenger: str, options: AnalysisOptions
) -> Json | None:
    """WER of control vs challenger on identical audio (one served, the other shadowed)."""
    by_unit: dict[str, list[int]] = {}  # unit -> [words, control errors, challenger errors]
    found = oriented(pairs, control, challenger)
    count = len(found)
    for _, unit, pair_words, ours, theirs in found:
        sums = by_unit.setdefault(unit, [0, 0, 0])
        sums[0] += pair_words
        sums[1] += ours
        sums[2] += theirs
    words = [float(s[0]) for s in by_unit.values()]
    if not count or sum(words) == 0:
        return None
    control_errors = [float(s[1]) for s in by_unit.values()]
    challenger_errors = [float(s[2]) for s in by_unit.values()]
    wer_a = sum(control_errors) / sum(words)
    wer_b = sum(challenger_errors) / sum(words)
    ci: list[float | None] | None = None
    if len(words) > 1:
        estimate = paired_ratio_difference_interval(
            words,
            control_errors,
            challenger_errors,
            confidence=options.confidence,
            resamples=options.resamples,
            seed=options.seed,
        )
        ci = _interval(estimate.low, estimate.high)
    return {
        "pairs": count,
        "units": len(words),
        "control_wer": wer_a,
        "challenger_wer": wer_b,
        "difference": wer_b - wer_a,
        "ci": ci,
    }


def _timeline(
    phase: PhaseObservations,
    names: Sequence[str],
    starts: Sequence[float],
    length: int,
    cumulative: Mapping[str, list[Json | None]],
) -> Json:
    buckets: list[Json] = []
    for index, start in enumerate(starts):
        units: dict[str, int] = {}
        outcomes: dict[str, int] = {}
        for name in names:
            table = phase.variants[name].table
            inside = table.window(start, start + length)
            units[name] = table.distinct_units(inside)
            outcomes[name] = inside.stop - inside.start
        buckets.append(
            {
                "start": _iso_epoch(start),
                "units": units,
                "outcomes": outcomes,
                "cumulative": {name: effect[index] for name, effect in cumulative.items()},
            }
        )
    return {"bucket_seconds": length, "buckets": buckets}
