"""What the analysis measures, gathered from one experiment's outcome records and labels.

`observe` sorts the records of an experiment into phases and, within a phase, variants:
the primary, non-forced records are the experiment's evidence (forced records are QA
overrides, outside the split, and only counted; so are failed-over records, which control
served while the assigned variant's backend was down, counted under the assigned variant);
shadow records are kept for the paired comparison on identical audio. Canary records (the
gateway's own test utterances, `gateway.analysis.canaries`) are no traffic of the experiment:
`observe` leaves them out before anything is counted, paired or timed. Each primary record is
classified into one outcome category and, when it has a label and recognised text, scored
for WER. Everything downstream (`gateway.analysis.report`) works on these values, never on
raw records.

Attempts and client sessions: every gateway session (`session_id`) is one attempt, and the
Speech SDKs retry a failed connection, or reconnect a lost one, as new attempts under the
same client session (`client_session`, the SDK's connection id). A failure that the client
retried (`retried_attempts`) was never seen by its user: it counts as a failed attempt, but
not as an outcome, so the outcome rates (and the guardrails) are the ones users saw, as the
live guardrails count them (`gateway.control.retries`).

Units: the randomisation unit (user, device) is what is independent, not the utterance; one
unit's outcomes share its speaker, microphone and network. `OutcomeTable` and
`wer_unit_sums` are the one place where outcomes become per-unit sums, which every rate,
latency and WER statistic of the analysis uses (`gateway.stats.clustered`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from gateway.analysis.model import AnalysisOptions
from gateway.outcomes.labels import Label, stored_counts
from gateway.outcomes.pairing import pair_shadows
from gateway.outcomes.record import CATEGORIES, Category, Kind, OutcomeRecord, Role, category
from gateway.stats.bootstrap import ratio_interval
from gateway.stats.clustered import UnitSums
from gateway.stats.wer import WerCounts, align

LatencyMetric = Literal["first_hypothesis_ms", "final_latency_ms"]
LATENCY_METRICS: Final[tuple[LatencyMetric, ...]] = ("first_hypothesis_ms", "final_latency_ms")

# A failed attempt was retried when another attempt of its client session produced its
# first record within this many seconds of the failed one's last. The SDKs retry within
# about 0.3 s; a reconnected session's first record can be a whole utterance later.
RETRY_GAP_S: Final = 120.0
ClientSession = tuple[str, str]  # (client, client_session), or (client, session_id)
# The roles of the experiment's own traffic: what users were served, and what shadows heard.
EVIDENCE_ROLES: Final = frozenset({Role.PRIMARY, Role.SHADOW})


def epoch_seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


@dataclass(frozen=True, slots=True)
class Outcome:
    """One primary record, reduced to what the rates and latencies need."""

    at: float  # epoch seconds of the record's timestamp
    unit: str
    category: Category
    first_hypothesis_ms: float | None
    final_latency_ms: float | None
    confidence: float | None = None  # the recogniser's, for results that carry one

    def latency(self, metric: LatencyMetric) -> float | None:
        return (
            self.first_hypothesis_ms if metric == "first_hypothesis_ms" else self.final_latency_ms
        )


@dataclass(frozen=True, slots=True)
class Scored:
    """One labelled utterance scored against its reference."""

    at: float
    unit: str
    counts: WerCounts


@dataclass(frozen=True, slots=True)
class VariantObservations:
    """One variant's evidence in a phase: counts, and its outcomes and scored utterances as
    tables (`OutcomeTable`, `ScoredTable`). Built from records by `observe`, or from an
    engine's query (`gateway.stores.engine`) without a record in memory."""

    name: str
    backends: frozenset[str] = frozenset()
    units: int = 0  # distinct units of its non-forced, not failed-over records
    sessions: int = 0  # attempts (gateway sessions) among those records
    forced: int = 0
    failed_over: int = 0  # records of units assigned here that control served instead
    failed_attempts: int = 0  # attempts ending in an error
    # Client sessions assigned here (failed-over attempts count, forced ones not), those
    # with more than one attempt, and those whose users saw an error (a failed attempt
    # nobody retried).
    client_sessions: int = 0
    retried_client_sessions: int = 0
    failed_client_sessions: int = 0
    utterances: int = 0  # utterance and request records (results, not failures)
    labelled: int = 0  # utterances with a label (scored or not)
    unscorable: int = 0  # labelled, but the record carries no text (privacy hash/none)
    table: OutcomeTable = field(default_factory=lambda: OutcomeTable.of(()))  # in time order
    scores: ScoredTable = field(default_factory=lambda: ScoredTable.of(()))  # in time order

    @classmethod
    def of(
        cls, name: str, outcomes: Sequence[Outcome], scored: Sequence[Scored] = ()
    ) -> VariantObservations:
        """A variant of these outcomes and scored utterances alone (each in time order)."""
        return cls(
            name=name,
            units=len({o.unit for o in outcomes}),
            table=OutcomeTable.of(outcomes),
            scores=ScoredTable.of(scored),
        )


@dataclass(slots=True)
class _VariantBuilder:
    """A variant's observations while `observe` goes through the records."""

    name: str
    backends: set[str] = field(default_factory=set)
    units: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    forced: int = 0
    failed_over: int = 0
    failed_attempts: set[str] = field(default_factory=set)
    client_sessions: dict[ClientSession, set[str]] = field(default_factory=dict)
    failed_client_sessions: set[ClientSession] = field(default_factory=set)
    utterances: int = 0
    labelled: int = 0
    unscorable: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    scored: list[Scored] = field(default_factory=list)

    def build(self) -> VariantObservations:
        return VariantObservations(
            name=self.name,
            backends=frozenset(self.backends),
            units=len(self.units),
            sessions=len(self.sessions),
            forced=self.forced,
            failed_over=self.failed_over,
            failed_attempts=len(self.failed_attempts),
            client_sessions=len(self.client_sessions),
            retried_client_sessions=sum(len(a) > 1 for a in self.client_sessions.values()),
            failed_client_sessions=len(self.failed_client_sessions),
            utterances=self.utterances,
            labelled=self.labelled,
            unscorable=self.unscorable,
            table=OutcomeTable.of(self.outcomes),
            scores=ScoredTable.of(self.scored),
        )


@dataclass(frozen=True, slots=True)
class ShadowPair:
    """A labelled primary utterance and a shadow's result for the same audio, both scored."""

    at: float
    unit: str
    primary_variant: str
    shadow_variant: str
    words: int  # reference words
    primary_errors: int
    shadow_errors: int


@dataclass(slots=True)
class PhaseObservations:
    phase: str
    first: float = float("inf")
    last: float = float("-inf")
    variants: dict[str, VariantObservations] = field(default_factory=dict)
    shadow_pairs: list[ShadowPair] = field(default_factory=list)


def observe(
    records: Iterable[OutcomeRecord], labels: Mapping[str, Label]
) -> dict[str, PhaseObservations]:
    """Phase id -> its observations. Records without a phase or variant are left out."""
    phases: dict[str, PhaseObservations] = {}
    by_phase: dict[str, list[OutcomeRecord]] = {}
    # (timestamp, record_id): one order whatever order the store returned the records in.
    ordered = sorted(records, key=lambda r: (r.timestamp, r.record_id))
    retried = retried_attempts(ordered)
    for record in ordered:
        if record.phase is None or record.variant is None or record.role not in EVIDENCE_ROLES:
            continue
        by_phase.setdefault(record.phase, []).append(record)
    for phase_id, phase_records in by_phase.items():
        phase = phases[phase_id] = PhaseObservations(phase_id)
        builders: dict[str, _VariantBuilder] = {}
        for record in phase_records:
            label = labels.get(record.record_id)
            _add(phase, builders, record, label, record.session_id in retried)
        phase.variants = {name: builder.build() for name, builder in builders.items()}
        phase.shadow_pairs = shadow_pairs(phase_records, labels)
    return phases


def client_session_of(record: OutcomeRecord) -> ClientSession:
    """The client session a record's attempt belongs to; without a client session id
    (the client sent none, or a version-2 record) the attempt is a client session alone."""
    return record.client, record.client_session or record.session_id


def retried_attempts(records: Iterable[OutcomeRecord]) -> set[str]:
    """The session ids of the attempts that failed and were retried: another attempt of the
    same client session followed, its first record within `RETRY_GAP_S` of their last."""
    spans: dict[ClientSession, dict[str, list[float]]] = {}  # -> session id -> [first, last]
    failed: set[str] = set()
    for record in records:
        if record.role is not Role.PRIMARY:
            continue
        at = epoch_seconds(record.timestamp)
        span = spans.setdefault(client_session_of(record), {}).setdefault(
            record.session_id, [at, at]
        )
        span[0], span[1] = min(span[0], at), max(span[1], at)
        if record.kind is Kind.SESSION_FAILURE:
            failed.add(record.session_id)
    retried: set[str] = set()
    for attempts in spans.values():
        if len(attempts) < 2:
            continue
        ordered = sorted(attempts.items(), key=lambda item: (item[1][0], item[0]))
        for (session_id, (_, last)), (_, (next_first, _)) in pairwise(ordered):
            if session_id in failed and next_first - last <= RETRY_GAP_S:
                retried.add(session_id)
    return retried


def _add(
    phase: PhaseObservations,
    builders: dict[str, _VariantBuilder],
    record: OutcomeRecord,
    label: Label | None,
    retried: bool,
) -> None:
    if record.role is not Role.PRIMARY:
        return
    assert record.variant is not None

    def builder(name: str) -> _VariantBuilder:
        found = builders.get(name)
        if found is None:
            found = builders[name] = _VariantBuilder(name)
        return found

    if record.forced:
        builder(record.variant).forced += 1  # outside the split: counted, never compared
        return
    assigned = builder(record.failover_from or record.variant)
    key = client_session_of(record)
    assigned.client_sessions.setdefault(key, set()).add(record.session_id)
    if record.kind is Kind.SESSION_FAILURE and not retried and category(record) == "error":
        assigned.failed_client_sessions.add(key)
    if record.failover_from is not None:
        assigned.failed_over += 1  # outside the split, too
        return
    variant = assigned
    at = epoch_seconds(record.timestamp)
    phase.first = min(phase.first, at)
    phase.last = max(phase.last, at)
    if record.backend is not None:
        variant.backends.add(record.backend)
    variant.units.add(record.unit)
    variant.sessions.add(record.session_id)
    kind = category(record)
    failure = record.kind is Kind.SESSION_FAILURE
    if failure and kind == "error":
        variant.failed_attempts.add(record.session_id)
    if not (failure and retried):  # a failure the client retried is no outcome users saw
        variant.outcomes.append(
            Outcome(
                at,
                record.unit,
                kind,
                record.first_hypothesis_ms,
                record.final_latency_ms,
                None if failure else record.confidence,
            )
        )
    if failure:
        return
    variant.utterances += 1
    if label is None:
        return
    variant.labelled += 1
    if record.text is None:
        variant.unscorable += 1
        return
    variant.scored.append(Scored(at, record.unit, counts_of(label, record.record_id, record.text)))


def counts_of(label: Label, record_id: str, text: str) -> WerCounts:
    """A record's WER counts against `label`: those stored with the label when current
    (`gateway.outcomes.labels.stored_counts`), else aligned now."""
    return stored_counts(label, record_id) or align(label.text, text)


def shadow_pairs(records: list[OutcomeRecord], labels: Mapping[str, Label]) -> list[ShadowPair]:
    """The labelled shadow pairs among a phase's records (`pair_shadows`), both scored."""
    pairs: list[ShadowPair] = []
    for primary, shadow in pair_shadows(records):
        label = labels.get(primary.record_id)
        if label is None or primary.forced or primary.failover_from is not None:
            continue
        if primary.text is None or shadow.text is None:
            continue
        if primary.variant is None or shadow.variant is None:
            continue
        ours = counts_of(label, primary.record_id, primary.text)
        theirs = counts_of(label, shadow.record_id, shadow.text)
        pairs.append(
            ShadowPair(
                at=epoch_seconds(primary.timestamp),
                unit=primary.unit,
                primary_variant=primary.variant,
                shadow_variant=shadow.variant,
                words=ours.reference_words,
                primary_errors=ours.errors,
                shadow_errors=theirs.errors,
            )
        )
    return pairs


@dataclass(frozen=True, slots=True)
class OutcomeTable:
    """One arm's outcomes, in time order, as arrays: the per-unit sums of any prefix.

    A prefix (the outcomes before a look) is given by its length, `upto`; units with no
    outcome in it do not count.
    """

    at: npt.NDArray[np.float64]
    units: npt.NDArray[np.intp]  # a code per outcome, 0..K-1
    categories: npt.NDArray[np.intp]  # an index into CATEGORIES per outcome
    latencies: Mapping[LatencyMetric, npt.NDArray[np.float64]]  # NaN: none recorded
    confidences: npt.NDArray[np.float64]  # NaN: none (failures, results without one)
    # Per category, the per-unit sums of the last prefix asked for: the next, longer one
    # (the looks come in time order) adds only its new outcomes (`rate_sums`).
    _prefix: dict[Category, _PrefixSums] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # The outcomes per unit of the last span of outcomes a prefix grew by, which every
    # category's prefix grows by in turn (`_PrefixSums.advance`).
    _counted: dict[tuple[int, int], _Counted] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def of(cls, outcomes: Sequence[Outcome]) -> OutcomeTable:
        names = [outcome.unit for outcome in outcomes]
        _, codes = np.unique(np.asarray(names, dtype=object), return_inverse=True)
        latencies = {
            metric: _floats([o.latency(metric) for o in outcomes]) for metric in LATENCY_METRICS
        }
        return cls(
            at=np.array([outcome.at for outcome in outcomes], dtype=np.float64),
            units=codes.reshape(-1).astype(np.intp),
            categories=np.array([CATEGORIES.index(o.category) for o in outcomes], dtype=np.intp),
            latencies=latencies,
            confidences=_floats([o.confidence for o in outcomes]),
        )

    def __len__(self) -> int:
        return int(self.at.size)

    def window(self, start: float, end: float) -> slice:
        """The outcomes from `start` (inclusive) to `end` (exclusive), epoch seconds."""
        low, high = np.searchsorted(self.at, [start, end], side="left")
        return slice(int(low), int(high))

    def distinct_units(self, span: slice) -> int:
        return int(np.unique(self.units[span]).size)

    def hits(self, category: Category) -> npt.NDArray[np.float64]:
        """1.0 per outcome of `category`, else 0.0."""
        found: npt.NDArray[np.float64] = (self.categories == CATEGORIES.index(category)).astype(
            np.float64
        )
        return found

    def upto(self, end: float) -> int:
        """The number of outcomes before `end` (epoch seconds, exclusive)."""
        return int(np.searchsorted(self.at, end, side="left"))

    def rate_sums(self, category: Category, upto: int | None = None) -> UnitSums:
        """Per-unit sums of the outcomes of `category` (x) among all outcomes (n) of the
        first `upto` outcomes (all: None)."""
        stop = len(self) if upto is None else upto
        if stop <= 0:
            return UnitSums()
        state = self._prefix.get(category)
        if state is None or state.stop > stop:
            size = int(self.units.max()) + 1
            state = self._prefix[category] = _PrefixSums(np.zeros(size), np.zeros(size))
        state.advance(self, CATEGORIES.index(category), stop)
        return state.sums()

    def latency_values(
        self, metric: LatencyMetric, upto: int | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
        """The recorded latencies of the prefix and each one's unit code."""
        stop = len(self) if upto is None else upto
        values = self.latencies[metric][:stop]
        recorded = ~np.isnan(values)
        return values[recorded], self.units[:stop][recorded]


@dataclass(frozen=True, slots=True)
class _Counted:
    """The units with outcomes in a span of a table (increasing codes), and how many each."""

    touched: npt.NDArray[np.intp]
    outcomes: npt.NDArray[np.float64]


@dataclass(slots=True)
class _PrefixSums:
    """Per-unit counts (x: of a category, n: all) of the first `stop` outcomes of a table,
    and their sums over units, kept up to date as the prefix grows. The counts are whole
    numbers, so every sum is exact in floating point, in whatever order it is added up:
    the same `UnitSums` as computed from scratch."""

    x: npt.NDArray[np.float64]
    n: npt.NDArray[np.float64]
    stop: int = 0
    units: int = 0
    totals: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(5))

    def advance(self, table: OutcomeTable, category: int, stop: int) -> None:
        """The prefix grown to the table's first `stop` outcomes; x counts those of the
        category of this index."""
        if stop == self.stop:
            return
        span = (self.stop, stop)
        new_units = table.units[self.stop : stop]
        size = self.x.size
        counted = table._counted.get(span)
        if counted is None:
            # Counted over every unit code, not sorted: a look adds tens of thousands of
            # outcomes, and sorting them (numpy.unique) cost ten times these counts.
            counts = np.bincount(new_units, minlength=size)
            touched = np.flatnonzero(counts)  # in increasing order, as numpy.unique's
            counted = _Counted(touched, counts[touched].astype(np.float64))
            table._counted.clear()
            table._counted[span] = counted
        touched, added_n = counted.touched, counted.outcomes
        hits = (table.categories[self.stop : stop] == category).astype(np.float64)
        added_x = np.bincount(new_units, weights=hits, minlength=size)[touched]
        old_x, old_n = self.x[touched], self.n[touched]
        new_x, new_n = old_x + added_x, old_n + added_n
        self.units += int(np.count_nonzero(old_n == 0))
        self.totals += _moments(new_x, new_n) - _moments(old_x, old_n)
        self.x[touched], self.n[touched] = new_x, new_n
        self.stop = stop

    def sums(self) -> UnitSums:
        x, n, xx, nn, xn = (float(v) for v in self.totals)
        return UnitSums(units=self.units, x=x, n=n, xx=xx, nn=nn, xn=xn)


def _moments(x: npt.NDArray[np.float64], n: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.array([x.sum(), n.sum(), np.dot(x, x), np.dot(n, n), np.dot(x, n)])


def _floats(values: Sequence[float | None]) -> npt.NDArray[np.float64]:
    found: npt.NDArray[np.float64] = np.array(
        [math.nan if v is None else v for v in values], dtype=np.float64
    )
    return found


@dataclass(frozen=True, slots=True)
class ScoredTable:
    """One arm's scored utterances, in time order, as arrays: WER counts per utterance and
    each one's unit, coded in order of the unit's first scored utterance (so a prefix holds
    units 0..k-1, and per-unit sums come in the order `wer_unit_sums` gives them)."""

    at: npt.NDArray[np.float64]
    units: npt.NDArray[np.intp]
    substitutions: npt.NDArray[np.int64]
    deletions: npt.NDArray[np.int64]
    insertions: npt.NDArray[np.int64]
    hits: npt.NDArray[np.int64]

    @classmethod
    def of(cls, scored: Sequence[Scored]) -> ScoredTable:
        codes: dict[str, int] = {}
        return cls(
            at=np.array([s.at for s in scored], dtype=np.float64),
            units=np.array([codes.setdefault(s.unit, len(codes)) for s in scored], dtype=np.intp),
            substitutions=np.array([s.counts.substitutions for s in scored], dtype=np.int64),
            deletions=np.array([s.counts.deletions for s in scored], dtype=np.int64),
            insertions=np.array([s.counts.insertions for s in scored], dtype=np.int64),
            hits=np.array([s.counts.hits for s in scored], dtype=np.int64),
        )

    def __len__(self) -> int:
        return int(self.at.size)

    @property
    def errors(self) -> npt.NDArray[np.int64]:
        return self.substitutions + self.deletions + self.insertions

    @property
    def words(self) -> npt.NDArray[np.int64]:
        return self.substitutions + self.deletions + self.hits

    def totals(self) -> WerCounts:
        return WerCounts(
            substitutions=int(self.substitutions.sum()),
            deletions=int(self.deletions.sum()),
            insertions=int(self.insertions.sum()),
            hits=int(self.hits.sum()),
        )

    def upto(self, end: float) -> int:
        """The number of scored utterances before `end` (epoch seconds, exclusive)."""
        return int(np.searchsorted(self.at, end, side="left"))

    def unit_sums(
        self, upto: int | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Per unit of the prefix, in order of first appearance: errors and reference words."""
        stop = len(self) if upto is None else upto
        units = self.units[:stop]
        if not units.size:
            return np.zeros(0), np.zeros(0)
        errors = np.bincount(units, weights=self.errors[:stop].astype(np.float64))
        words = np.bincount(units, weights=self.words[:stop].astype(np.float64))
        return errors.astype(np.float64), words.astype(np.float64)


def below_sums(values: npt.NDArray[np.float64], units: npt.NDArray[Any], at: float) -> UnitSums:
    """Per-unit sums of the values <= at (x) among all values (n): the clustered empirical
    CDF at `at`, whose design effect is that of a quantile near it."""
    if not values.size:
        return UnitSums()
    n = np.bincount(units).astype(np.float64)
    x = np.bincount(units, weights=(values <= at).astype(np.float64), minlength=n.size)
    seen = n > 0
    return UnitSums.of(x[seen], n[seen])


def wer_unit_sums(scored: Iterable[Scored]) -> tuple[list[float], list[float]]:
    """Per unit (in order of first appearance): its errors and its reference words."""
    totals: dict[str, tuple[int, int]] = {}
    for item in scored:
        errors, words = totals.get(item.unit, (0, 0))
        totals[item.unit] = (errors + item.counts.errors, words + item.counts.reference_words)
    return [float(e) for e, _ in totals.values()], [float(w) for _, w in totals.values()]


def wer_interval(
    errors: Sequence[float] | npt.NDArray[np.float64],
    words: Sequence[float] | npt.NDArray[np.float64],
    options: AnalysisOptions,
) -> list[float | None] | None:
    """A WER's interval as the headline's: the cluster bootstrap over units (`errors` and
    `words` per unit), from two units on; None below that or without reference words. An
    unbounded end is None."""
    if len(errors) < 2 or float(np.sum(words)) <= 0:
        return None
    estimate = ratio_interval(
        errors,
        words,
        confidence=options.confidence,
        resamples=options.resamples,
        seed=options.seed,
    )
    return [v if math.isfinite(v) else None for v in (estimate.low, estimate.high)]
