"""Prometheus metrics of one gateway process, served at `/metrics` (docs/observability.md).

Each app owns its `GatewayMetrics` with a private registry (no module-level collectors), so
two apps in one process, as in the tests, never share or double-register series. Label
values are configuration names (experiments, variants, backends, guardrails) and a few
fixed vocabularies (roles, protocols, statuses), never ids of sessions or units, so the
number of series stays bounded: a value outside its vocabulary, or past a label's cap of
distinct values, is counted under `_other`, and a missing one under `_none`.

Four feeds: `observe(record)` once per outcome record (`GatewayState.submit`; canary records
count under role `canary`), the `SessionObserver` calls of `LiveSessions.hold`, the model-health
machinery (`canary_round`, `health_alert`, `model_expiry`), and, at scrape time only, the
outcome sink's own counters and queue depths (`watch_sink`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Final, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gateway.constants import NO_EXPERIMENT
from gateway.health.alerts import ALERT_KINDS
from gateway.outcomes.record import OutcomeRecord, Role
from gateway.protocol.usp import RecognitionStatus
from gateway.server.sessions import LiveSession

BREAKER_LEVELS: Final = {"closed": 0, "half_open": 1, "open": 2}

OTHER: Final = "_other"  # a value outside the label's vocabulary, or past its cap
NONE: Final = "_none"  # no value (a record without a variant)
# Distinct values one label may take per process before the rest become OTHER. Experiment
# and variant names come from the configuration, error codes from the gateway's own small
# set (`upstream_http_<status>`, `upstream_close_<code>`, ...): the caps are a backstop.
NAME_CAP: Final = 256
ERROR_CODE_CAP: Final = 64
_STATUSES: Final = frozenset(s.value for s in RecognitionStatus) | {"Unknown"}
# Final-result and first-hypothesis latency, in ms: interactive speech sits at 100-1000 ms,
# a slow backend or a long REST body at seconds.
LATENCY_BUCKETS_MS: Final = (
    25.0,
    50.0,
    100.0,
    200.0,
    300.0,
    500.0,
    750.0,
    1000.0,
    1500.0,
    2000.0,
    3000.0,
    5000.0,
    10000.0,
    30000.0,
)
# Shadow sessions whose dropped-frame total is remembered (records carry a running total).
SHADOW_DROP_SESSIONS: Final = 4096


_ALERT_KINDS: Final = frozenset(ALERT_KINDS)
_EXPIRY_KINDS: Final = frozenset({"adaptation", "transcription"})


def _alert_kind(kind: str) -> str:
    return kind if kind in _ALERT_KINDS else OTHER


class _Vocabulary:
    """Label values as they come, up to `cap` distinct ones; OTHER past it."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if value is None:
            return NONE
        if value in self._seen:
            return value
        if len(self._seen) >= self._cap or not value.isprintable() or len(value) > 128:
            return OTHER
        self._seen.add(value)
        return value


@runtime_checkable
class _Queued(Protocol):
    @property
    def queued(self) -> int: ...


@runtime_checkable
class _Journalled(Protocol):
    @property
    def journal_pending(self) -> int: ...

    @property
    def redis_available(self) -> bool: ...


@runtime_checkable
class _Exported(Protocol):
    @property
    def retention_waiting(self) -> frozenset[str]: ...


class WatchedSink(Protocol):
    @property
    def written(self) -> int: ...

    @property
    def dropped(self) -> int: ...


class _SinkCollector(Collector):
    """The outcome sink's counters and depths, read when Prometheus scrapes."""

    def __init__(self, sink: WatchedSink) -> None:
        self._sink = sink

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked: the families depend on the sink

    def collect(self) -> Iterable[Metric]:
        sink = self._sink
        yield CounterMetricFamily(
            "speech_gateway_outcomes_written",
            "Outcome records the sink stored (file, or Redis acknowledged).",
            value=sink.written,
        )
        yield CounterMetricFamily(
            "speech_gateway_outcomes_dropped",
            "Outcome records the sink refused: queue (and overflow) full, or sink closed.",
            value=sink.dropped,
        )
        lost = getattr(sink, "lost", None)
        if isinstance(lost, int):
            yield CounterMetricFamily(
                "speech_gateway_outcomes_lost",
                "Accepted outcome records no store could take (disk errors at close).",
                value=lost,
            )
        if isinstance(sink, _Queued):
            yield GaugeMetricFamily(
                "speech_gateway_outcome_queue_depth",
                "Outcome records waiting in the sink's queue for its writer.",
                value=sink.queued,
            )
        if isinstance(sink, _Journalled):
            yield GaugeMetricFamily(
                "speech_gateway_outcome_journal_records",
                "Outcome records spooled in the local journal, waiting for Redis.",
                value=sink.journal_pending,
            )
            yield GaugeMetricFamily(
                "speech_gateway_outcome_store_up",
                "1 while the outcome sink delivers to Redis, 0 from a failed delivery until "
                "the next successful one.",
                value=1 if sink.redis_available else 0,
            )
        if isinstance(sink, _Exported):
            yield GaugeMetricFamily(
                "speech_gateway_outcome_retention_waiting",
                "Experiments whose stream retention keeps entries the export consumer group "
                "has not acknowledged yet (docs/export.md).",
                value=len(sink.retention_waiting),
            )


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._experiments = _Vocabulary(NAME_CAP)
        self._variants = _Vocabulary(NAME_CAP)
        self._error_codes = _Vocabulary(ERROR_CODE_CAP)
        # (session id, shadow variant) -> frames dropped so far, as the last record said.
        self._shadow_drops: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._sink: _SinkCollector | None = None
        r = self.registry
        self.guardrail_rollbacks = Counter(
            "speech_gateway_guardrail_rollbacks",
            "Challengers rolled back to weight 0 by a guardrail breach (by this replica).",
            ["experiment", "variant", "guardrail"],
            registry=r,
        )
        self.control_changes = Counter(
            "speech_gateway_control_changes",
            "Experiment state changes committed by this replica.",
            ["experiment", "action"],
            registry=r,
        )
        self.control_version = Gauge(
            "speech_gateway_control_state_version",
            "The experiment state version this replica serves (0: as configured).",
            ["experiment"],
            registry=r,
        )
        self.control_store_up = Gauge(
            "speech_gateway_control_store_up",
            "1 when the last read of the shared experiment state succeeded, else 0.",
            registry=r,
        )
        self.breaker_state = Gauge(
            "speech_gateway_breaker_state",
            "Circuit breaker of a backend: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "speech_gateway_breaker_transitions",
            "Circuit breaker state changes, by the state entered.",
            ["backend", "state"],
            registry=r,
        )
        self.failovers = Counter(
            "speech_gateway_failovers",
            "Sessions served by control because their assigned variant's backend was down.",
            ["experiment", "variant"],
            registry=r,
        )
        self.breaker_refusals = Counter(
            "speech_gateway_breaker_refusals",
            "Sessions refused because their backend's circuit breaker was open.",
            ["backend"],
            registry=r,
        )

        self.limit_hits = Counter(
            "speech_gateway_limit_hits",
            "Sessions or requests stopped by a configured limit (gateway.limits).",
            ["limit"],
            registry=r,
        )

        self.sessions_started = Counter(
            "speech_gateway_sessions_started",
            "Sessions admitted: USP connections and REST requests relayed to a backend.",
            ["experiment", "variant", "protocol"],
            registry=r,
        )
        self.sessions_live = Gauge(
            "speech_gateway_sessions_live",
            "Sessions open now.",
            ["experiment", "variant", "protocol"],
            registry=r,
        )
        self.outcomes = Counter(
            "speech_gateway_outcomes",
            "Outcome records: one per utterance (kind utterance), REST request (request) or "
            "failed session (session_failure), by recognition status.",
            ["experiment", "variant", "role", "protocol", "kind", "status"],
            registry=r,
        )
        self.outcome_errors = Counter(
            "speech_gateway_outcome_errors",
            "Outcome records with an error code (the gateway's failure vocabulary).",
            ["experiment", "variant", "role", "protocol", "error_code"],
            registry=r,
        )
        self.final_latency = Histogram(
            "speech_gateway_final_latency_ms",
            "Final-result latency of an utterance or REST request, in ms (record field "
            "final_latency_ms).",
            ["experiment", "variant", "role", "protocol"],
            buckets=LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.first_hypothesis = Histogram(
            "speech_gateway_first_hypothesis_ms",
            "Time to the first hypothesis of an utterance, in ms (record field "
            "first_hypothesis_ms).",
            ["experiment", "variant", "role", "protocol"],
            buckets=LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.shadow_dropped_frames = Counter(
            "speech_gateway_shadow_dropped_frames",
            "Audio frames not sent to a shadow because its queue was full.",
            ["experiment", "variant"],
            registry=r,
        )
        self.captures_stored = Counter(
            "speech_gateway_captures_stored",
            "Captured utterances written to the audio store, by why they were captured.",
            ["experiment", "reason"],
            registry=r,
        )
        self.captures_dropped = Counter(
            "speech_gateway_captures_dropped",
            "Utterances selected for capture but not stored, by cause.",
            ["experiment", "cause"],
            registry=r,
        )
        self.capture_buffered_bytes = Gauge(
            "speech_gateway_capture_buffered_bytes",
            "PCM bytes live sessions hold for capture now (gateway.audio.max_buffered_bytes).",
            registry=r,
        )
        self.draining = Gauge(
            "speech_gateway_draining",
            "1 from SIGTERM until the process exits: new sessions are refused.",
            registry=r,
        )

        # Model health (docs/health.md): canary rounds, alerts, custom models' expiry.
        self._endpoints = _Vocabulary(NAME_CAP)
        self._backends = _Vocabulary(NAME_CAP)
        self.canary_wer = Gauge(
            "speech_gateway_canary_wer",
            "The last canary round's WER of a variant (0..1), over the items it answered.",
            ["experiment", "variant"],
            registry=r,
        )
        self.canary_latency = Gauge(
            "speech_gateway_canary_latency_ms",
            "The last canary round's median latency of a variant, in ms (end of audio to "
            "final result).",
            ["experiment", "variant"],
            registry=r,
        )
        self.canary_rounds = Counter(
            "speech_gateway_canary_rounds",
            "Canary rounds of a variant: ok (some item answered) or failed (none).",
            ["experiment", "variant", "result"],
            registry=r,
        )
        self.health_alerts = Counter(
            "speech_gateway_health_alerts",
            "Model-health alerts raised, by kind.",
            ["experiment", "variant", "kind"],
            registry=r,
        )
        self.model_expiry_days = Gauge(
            "speech_gateway_model_expiry_days",
            "Days until the model behind a custom endpoint expires for adaptation or "
            "transcription; negative once past.",
            ["backend", "endpoint", "kind"],
            registry=r,
        )

    # -- feeds --------------------------------------------------------------------------------

    def capture_stored(self, experiment: str, reason: str) -> None:
        self.captures_stored.labels(self._experiments(experiment), reason).inc()

    def capture_dropped(self, experiment: str, cause: str) -> None:
        self.captures_dropped.labels(self._experiments(experiment), cause).inc()

    def observe(self, record: OutcomeRecord) -> None:
        """Count one outcome record; called once per record, on the event loop."""
        experiment = self._experiments(record.experiment or NO_EXPERIMENT)
        variant = self._variants(record.variant)
        role = record.role.value
        protocol = record.protocol.value
        status = record.status if record.status in _STATUSES else OTHER
        self.outcomes.labels(experiment, variant, role, protocol, record.kind.value, status).inc()
        if record.error_code is not None:
            code = self._error_codes(record.error_code)
            self.outcome_errors.labels(experiment, variant, role, protocol, code).inc()
        if record.final_latency_ms is not None:
            self.final_latency.labels(experiment, variant, role, protocol).observe(
                record.final_latency_ms
            )
        if record.first_hypothesis_ms is not None:
            self.first_hypothesis.labels(experiment, variant, role, protocol).observe(
                record.first_hypothesis_ms
            )
        if record.role is Role.SHADOW and record.shadow_drops:
            self._count_shadow_drops(record, experiment, variant)

    def _count_shadow_drops(self, record: OutcomeRecord, experiment: str, variant: str) -> None:
        """Records carry the session's running total: count what is new since the last one.
        A shadow that dropped frames ends with one failure record, which ends its entry."""
        assert record.shadow_drops is not None
        key = (record.session_id, record.variant or NONE)
        before = self._shadow_drops.pop(key, 0)
        if record.shadow_drops > before:
            self.shadow_dropped_frames.labels(experiment, variant).inc(record.shadow_drops - before)
        if record.error_code is None:  # more records of this shadow may come
            self._shadow_drops[key] = max(before, record.shadow_drops)
            if len(self._shadow_drops) > SHADOW_DROP_SESSIONS:
                self._shadow_drops.popitem(last=False)

    def canary_round(
        self,
        experiment: str,
        variant: str,
        *,
        ok: bool,
        wer: float | None,
        latency_ms: float | None,
    ) -> None:
        """One canary round of a variant; a failed round leaves the gauges at their last
        value (the counter says it failed)."""
        labels = (self._experiments(experiment), self._variants(variant))
        self.canary_rounds.labels(*labels, "ok" if ok else "failed").inc()
        if wer is not None:
            self.canary_wer.labels(*labels).set(wer)
        if latency_ms is not None:
            self.canary_latency.labels(*labels).set(latency_ms)

    def health_alert(self, experiment: str, variant: str | None, kind: str) -> None:
        """Count one alert (kind: `gateway.health.alerts.AlertKind`)."""
        self.health_alerts.labels(
            self._experiments(experiment), self._variants(variant), _alert_kind(kind)
        ).inc()

    def model_expiry(self, backend: str, endpoint: str, kind: str, days: float) -> None:
        """Days until a custom endpoint's model expires (kind: adaptation | transcription)."""
        label = kind if kind in _EXPIRY_KINDS else OTHER
        self.model_expiry_days.labels(
            self._backends(backend), self._endpoints(endpoint), label
        ).set(days)

    def session_started(self, session: LiveSession) -> None:
        labels = self._session_labels(session)
        self.sessions_started.labels(*labels).inc()
        self.sessions_live.labels(*labels).inc()

    def session_ended(self, session: LiveSession) -> None:
        self.sessions_live.labels(*self._session_labels(session)).dec()

    def _session_labels(self, session: LiveSession) -> tuple[str, str, str]:
        experiment = self._experiments(session.experiment or NO_EXPERIMENT)
        protocol = session.protocol if session.protocol in ("usp", "rest") else OTHER
        return experiment, self._variants(session.variant), protocol

    def watch_sink(self, sink: WatchedSink) -> None:
        """Report the outcome sink's counters and queue depths at each scrape."""
        if self._sink is not None:
            self.registry.unregister(self._sink)
        self._sink = _SinkCollector(sink)
        self.registry.register(self._sink)

    def render(self) -> bytes:
        return generate_latest(self.registry)
