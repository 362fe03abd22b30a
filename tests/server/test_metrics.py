"""GatewayMetrics without sockets: outcome records and sessions in, Prometheus samples out,
with label values bounded whatever the records carry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.server.metrics import ERROR_CODE_CAP, NONE, OTHER, GatewayMetrics
from gateway.server.sessions import LiveSessions
from gateway.stores.jsonl_sink import JsonlSink
from gateway.stores.keys import RedisKeys
from gateway.stores.redis_sink import RedisSink


def record(**fields: Any) -> OutcomeRecord:
    values: dict[str, Any] = {
        "kind": Kind.UTTERANCE,
        "experiment": "ab",
        "phase": "p1",
        "variant": "a",
        "backend": "alpha",
        "role": Role.PRIMARY,
        "client": "app",
        "unit": "u1",
        "unit_source": UnitSource.QUERY,
        "session_id": "s1",
        "protocol": Protocol.USP,
        "status": "Success",
    }
    return OutcomeRecord(**(values | fields))


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


PRIMARY = {"experiment": "ab", "variant": "a", "role": "primary", "protocol": "usp"}


def test_each_record_counts_once_by_kind_and_status() -> None:
    """An utterance, a no-match and a failed session land in their own series."""
    metrics = GatewayMetrics()
    metrics.observe(record(final_latency_ms=180.0, first_hypothesis_ms=90.0))
    metrics.observe(record(final_latency_ms=620.0))
    metrics.observe(record(status="NoMatch"))
    metrics.observe(
        record(kind=Kind.SESSION_FAILURE, status="Error", error_code="upstream_unreachable")
    )
    total = "speech_gateway_outcomes_total"
    assert sample(metrics, total, **PRIMARY, kind="utterance", status="Success") == 2
    assert sample(metrics, total, **PRIMARY, kind="utterance", status="NoMatch") == 1
    assert sample(metrics, total, **PRIMARY, kind="session_failure", status="Error") == 1
    errors = "speech_gateway_outcome_errors_total"
    assert sample(metrics, errors, **PRIMARY, error_code="upstream_unreachable") == 1
    latency = "speech_gateway_final_latency_ms"
    assert sample(metrics, f"{latency}_count", **PRIMARY) == 2
    assert sample(metrics, f"{latency}_sum", **PRIMARY) == 800.0
    assert sample(metrics, f"{latency}_bucket", **PRIMARY, le="200.0") == 1
    assert sample(metrics, f"{latency}_bucket", **PRIMARY, le="750.0") == 2
    first = "speech_gateway_first_hypothesis_ms"
    assert sample(metrics, f"{first}_count", **PRIMARY) == 1
    assert sample(metrics, f"{first}_sum", **PRIMARY) == 90.0


def test_label_values_are_bounded() -> None:
    """A status outside the SDK's vocabulary, a missing experiment or variant, and error
    codes past the cap get fixed values, so a misbehaving backend cannot grow the series."""
    metrics = GatewayMetrics()
    metrics.observe(record(status="Whatever" * 8))
    metrics.observe(record(experiment=None, phase=None, variant=None))
    for index in range(ERROR_CODE_CAP + 5):
        metrics.observe(
            record(kind=Kind.SESSION_FAILURE, status="Error", error_code=f"code_{index}")
        )
    total = "speech_gateway_outcomes_total"
    assert sample(metrics, total, **PRIMARY, kind="utterance", status=OTHER) == 1
    no_experiment = {**PRIMARY, "experiment": "_default", "variant": NONE}
    assert sample(metrics, total, **no_experiment, kind="utterance", status="Success") == 1
    errors = "speech_gateway_outcome_errors_total"
    assert sample(metrics, errors, **PRIMARY, error_code="code_0") == 1
    assert sample(metrics, errors, **PRIMARY, error_code=OTHER) == 5
    codes = {
        s.labels["error_code"]
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == errors
    }
    assert len(codes) == ERROR_CODE_CAP + 1


def test_shadow_drops_count_each_dropped_frame_once() -> None:
    """Shadow records carry the session's running total of dropped frames; the counter
    adds only what is new, per session, and the shadow's failure record ends the session."""
    metrics = GatewayMetrics()
    shadow = {"role": Role.SHADOW, "variant": "b", "backend": "bravo"}
    metrics.observe(record(**shadow, shadow_drops=0))
    metrics.observe(record(**shadow, shadow_drops=3))
    metrics.observe(record(**shadow, session_id="s2", shadow_drops=2))
    metrics.observe(record(**shadow, shadow_drops=3))  # nothing new
    metrics.observe(
        record(
            **shadow,
            kind=Kind.SESSION_FAILURE,
            status="Error",
            error_code="shadow_dropped_audio",
            shadow_drops=7,
        )
    )
    dropped = "speech_gateway_shadow_dropped_frames_total"
    assert sample(metrics, dropped, experiment="ab", variant="b") == 7 + 2


async def test_sessions_are_counted_as_they_start_and_end() -> None:
    """LiveSessions tells the metrics: a started counter and a live gauge per variant."""
    metrics = GatewayMetrics()
    sessions = LiveSessions(metrics)
    labels = {"experiment": "ab", "variant": "a", "protocol": "usp"}
    with sessions.hold("app", "usp", "ab", "a"), sessions.hold("app", "usp", "ab", "a"):
        assert sample(metrics, "speech_gateway_sessions_live", **labels) == 2
    with sessions.hold("app", "rest", None, "base"):
        pass
    assert sample(metrics, "speech_gateway_sessions_live", **labels) == 0
    assert sample(metrics, "speech_gateway_sessions_started_total", **labels) == 2
    rest = {"experiment": "_default", "variant": "base", "protocol": "rest"}
    assert sample(metrics, "speech_gateway_sessions_started_total", **rest) == 1
    assert await sessions.wait_idle(0.0)


async def test_close_all_closes_each_session_once_and_wait_idle_sees_them_end() -> None:
    """A drain's two steps: closers are called once each, and waiting ends when the last
    session is released."""
    sessions = LiveSessions()
    calls: list[tuple[int, str]] = []
    release = asyncio.Event()

    async def hold_one() -> None:
        with sessions.hold("app", "usp", "ab", "a") as live:

            async def closer(code: int, reason: str) -> None:
                calls.append((code, reason))
                release.set()

            live.closer = closer
            await release.wait()

    task = asyncio.create_task(hold_one())
    await asyncio.sleep(0)
    assert sessions.total == 1
    assert not await sessions.wait_idle(0.05)
    assert await sessions.close_all(1012, "Instance is shutting down") == 1
    assert await sessions.close_all(1012, "again") == 0
    assert await sessions.wait_idle(1.0)
    await task
    assert calls == [(1012, "Instance is shutting down")]


async def test_the_jsonl_sink_is_read_at_scrape_time(tmp_path: Path) -> None:
    """Written, dropped and queued come from the sink itself when the registry is read."""
    metrics = GatewayMetrics()
    sink = JsonlSink(tmp_path / "outcomes.jsonl", queue_size=2)
    metrics.watch_sink(sink)
    for _ in range(3):
        sink.submit(record())
    assert sample(metrics, "speech_gateway_outcome_queue_depth") == 2
    assert sample(metrics, "speech_gateway_outcomes_dropped_total") == 1
    await sink.start()
    await sink.close()
    assert sample(metrics, "speech_gateway_outcome_queue_depth") == 0
    assert sample(metrics, "speech_gateway_outcomes_written_total") == 2
    assert metrics.registry.get_sample_value("speech_gateway_outcome_journal_records") is None
    assert b"speech_gateway_outcomes_written_total 2.0" in metrics.render()


def test_the_redis_sink_reports_its_queue_journal_and_store(tmp_path: Path) -> None:
    """A Redis sink adds its journal size and whether Redis takes its writes."""

    async def never() -> Any:
        raise AssertionError("not connected in this test")

    sink = RedisSink(never, RedisKeys("t"), tmp_path / "journal", queue_size=4)
    metrics = GatewayMetrics()
    metrics.watch_sink(sink)
    sink.submit(record())
    assert sample(metrics, "speech_gateway_outcome_queue_depth") == 1
    assert sample(metrics, "speech_gateway_outcome_journal_records") == 0
    assert sample(metrics, "speech_gateway_outcome_store_up") == 1


# -- model health ---------------------------------------------------------------------------------


def test_canary_records_count_under_their_own_role() -> None:
    metrics = GatewayMetrics()
    metrics.observe(
        record(role=Role.CANARY, unit_source=UnitSource.CANARY, client="_canary", unit="c0")
    )
    metrics.observe(record())
    canary = PRIMARY | {"role": "canary"}
    total = "speech_gateway_outcomes_total"
    assert sample(metrics, total, **canary, kind="utterance", status="Success") == 1
    assert sample(metrics, total, **PRIMARY, kind="utterance", status="Success") == 1


def test_a_canary_round_sets_the_gauges_and_counts_the_round() -> None:
    """An ok round sets WER and latency; a failed round is counted and leaves them."""
    metrics = GatewayMetrics()
    labels = {"experiment": "ab", "variant": "custom"}
    metrics.canary_round("ab", "custom", ok=True, wer=0.125, latency_ms=340.0)
    metrics.canary_round("ab", "custom", ok=False, wer=None, latency_ms=None)
    assert sample(metrics, "speech_gateway_canary_wer", **labels) == 0.125
    assert sample(metrics, "speech_gateway_canary_latency_ms", **labels) == 340.0
    rounds = "speech_gateway_canary_rounds_total"
    assert sample(metrics, rounds, **labels, result="ok") == 1
    assert sample(metrics, rounds, **labels, result="failed") == 1
    metrics.canary_round("ab", "custom", ok=True, wer=0.5, latency_ms=None)
    assert sample(metrics, "speech_gateway_canary_wer", **labels) == 0.5
    assert sample(metrics, "speech_gateway_canary_latency_ms", **labels) == 340.0


def test_alerts_and_expiry_keep_their_vocabularies() -> None:
    """Alert and expiry kinds outside their vocabularies are `_other`; a missing variant
    is `_none`."""
    metrics = GatewayMetrics()
    metrics.health_alert("ab", "custom", "canary_wer_change")
    metrics.health_alert("ab", "custom", "canary_wer_change")
    metrics.health_alert("ab", None, "model_expiring")
    metrics.health_alert("ab", "custom", "made_up")
    alerts = "speech_gateway_health_alerts_total"
    assert sample(metrics, alerts, experiment="ab", variant="custom", kind="canary_wer_change") == 2
    assert sample(metrics, alerts, experiment="ab", variant=NONE, kind="model_expiring") == 1
    assert sample(metrics, alerts, experiment="ab", variant="custom", kind=OTHER) == 1
    metrics.model_expiry("azure", "banking", "transcription", 12.5)
    metrics.model_expiry("azure", "banking", "adaptation", -3.0)
    metrics.model_expiry("azure", "banking", "made_up", 1.0)
    expiry = "speech_gateway_model_expiry_days"
    assert (
        sample(metrics, expiry, backend="azure", endpoint="banking", kind="transcription") == 12.5
    )
    assert sample(metrics, expiry, backend="azure", endpoint="banking", kind="adaptation") == -3.0
    assert sample(metrics, expiry, backend="azure", endpoint="banking", kind=OTHER) == 1.0
