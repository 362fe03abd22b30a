"""The merge of several workers' Prometheus expositions into one (`serve --workers N`)."""

from __future__ import annotations

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from gateway.server.metrics import GatewayMetrics
from gateway.server.metrics_merge import merge_expositions, parse_exposition


def _worker(sessions: int, latency_ms: float) -> bytes:
    metrics = GatewayMetrics()
    for _ in range(sessions):
        metrics.sessions_started.labels("ab", "a", "usp").inc()
    metrics.final_latency.labels("ab", "a", "primary", "usp").observe(latency_ms)
    return metrics.render()


def test_every_sample_gets_its_worker_label_and_each_family_is_written_once() -> None:
    """Two workers' series side by side under one HELP/TYPE per family, each labelled."""
    parts = [("0", parse_exposition(_worker(3, 40))), ("1", parse_exposition(_worker(5, 400)))]
    text = merge_expositions(parts).decode()
    assert text.count("# TYPE speech_gateway_sessions_started_total counter") == 1
    assert text.count("# HELP speech_gateway_final_latency_ms ") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    started = {
        s.labels["worker"]: s.value
        for s in families["speech_gateway_sessions_started"].samples
        if s.name.endswith("_total")
    }
    assert started == {"0": 3.0, "1": 5.0}
    buckets = [
        s
        for s in families["speech_gateway_final_latency_ms"].samples
        if s.name.endswith("_bucket") and s.labels["le"] == "50.0"
    ]
    assert {s.labels["worker"]: s.value for s in buckets} == {"0": 1.0, "1": 0.0}
    assert all("worker" in s.labels for f in families.values() for s in f.samples)


def test_extra_families_come_last_without_a_worker_label() -> None:
    """The merge's own families (how many workers, how many missing) are not per worker."""
    missing = GaugeMetricFamily("speech_gateway_worker_metrics_missing", "Missing.", value=1)
    text = merge_expositions([("0", parse_exposition(_worker(1, 10)))], [missing]).decode()
    assert text.rstrip().endswith("speech_gateway_worker_metrics_missing 1.0")


def test_an_invalid_exposition_is_refused() -> None:
    """A sibling's answer that is not an exposition raises ValueError (counted as missing)."""
    with pytest.raises(ValueError, match="not a Prometheus exposition"):
        parse_exposition(b"\xff\xfe not text")
    with pytest.raises(ValueError, match="not a Prometheus exposition"):
        parse_exposition(b"speech_gateway_x not-a-number\n")
