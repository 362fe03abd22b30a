"""Analysis reports (schema_version 1) as the admin API serves them, for rendering tests.

Built by hand in the documented shape: a two-variant report, a three-variant report with an
earlier phase and every documented null, and a report with no records yet.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

Json = dict[str, Any]

SETTINGS: Json = {
    "confidence": 0.95,
    "alpha": 0.05,
    "srm_threshold": 0.001,
    "resamples": 2000,
    "min_labelled": 20,
}
START = datetime(2026, 11, 21, 11, 58, tzinfo=UTC)
EDGES = [0, 100, 200, 300, 400, 500, 600]


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def rate(count: int, total: int, ci: list[float] | None) -> Json:
    return {"count": count, "total": total, "rate": count / total if total else 0.0, "ci": ci}


def latency(n: int, counts: list[int], p50: float, *, ci: bool = True) -> Json:
    def q(value: float, low: float, high: float) -> Json:
        return {"value": value, "ci": [low, high] if ci else None}

    return {
        "n": n,
        "mean": p50 - 8.8,
        "quantiles": {
            "p50": q(p50, p50 - 20, p50 + 20),
            "p90": q(p50 + 90, p50 + 40, p50 + 170),
            "p99": q(p50 + 210, p50 + 140, p50 + 210),
        },
        "histogram": {"edges": EDGES, "counts": counts},
    }


def variant(
    name: str,
    *,
    control: bool,
    units: int,
    success: int,
    wer: Json | None,
    first: list[int],
    final: list[int],
    p50: float,
    backend: str = "local",
) -> Json:
    no_match = units - success
    return {
        "name": name,
        "is_control": control,
        "backends": [backend],
        "units": units,
        "sessions": units,
        "outcomes": units,
        "utterances": units,
        "labelled": units if wer else 0,
        "labelled_share": 1.0 if wer else 0.0,
        "forced": 0,
        "rates": {
            "success": rate(success, units, [0.742, 0.977]),
            "no_match": rate(no_match, units, [0.023, 0.258]),
            "error": rate(0, units, [0.0, 0.138]),
            "cancellation": rate(0, units, [0.0, 0.138]),
        },
        "latency": {
            "first_hypothesis_ms": latency(units, first, p50 - 120),
            "final_latency_ms": latency(units, final, p50),
        },
        "wer": wer,
    }


def wer(value: float, ci: list[float] | None, words: int = 240) -> Json:
    errors = round(value * words)
    deletions, insertions = errors // 6, errors // 4
    substitutions = errors - deletions - insertions
    return {
        "wer": value,
        "ci": ci,
        "substitutions": substitutions,
        "deletions": deletions,
        "insertions": insertions,
        "hits": words - substitutions - deletions,
        "reference_words": words,
        "utterances": 24,
        "sessions": 24,
    }


def rate_difference(difference: float, low: float | None, high: float | None) -> Json:
    return {
        "difference": difference,
        "ci": [difference - 0.14, difference + 0.16],
        "always_valid": {"ci": [low, high], "p_value": 1.0},
    }


def comparison(name: str, wer_difference: float | None) -> Json:
    wer_part = None
    if wer_difference is not None:
        wer_part = {
            "difference": wer_difference,
            "relative": wer_difference / 0.38,
            "ci": [wer_difference - 0.065, wer_difference + 0.065],
            "always_valid": {
                "ci": [wer_difference - 0.165, wer_difference + 0.165],
                "p_value": 0.0001,
            },
        }
    return {
        "variant": name,
        "control": "base",
        "rates": {
            "success": rate_difference(0.04, -0.3, 0.4),
            "no_match": rate_difference(-0.04, -0.4, 0.3),
            "error": rate_difference(0.0, -0.2, 0.2),
            "cancellation": rate_difference(0.0, -0.2, 0.2),
        },
        "latency": {
            "first_hypothesis_ms": {"median_difference": 12.0, "ci": [-5.0, 30.0]},
            "final_latency_ms": {"median_difference": -3.0, "ci": [-20.0, 10.0]},
        },
        "wer": wer_part,
        "shadow": None,
        "guardrails": [
            {"metric": "error_rate", "status": "ok", "detail": "+0.0 pp (95% CI -3.1 to +3.4)"},
            {"metric": "cancellation_rate", "status": "ok", "detail": "+0.0 pp"},
            {"metric": "final_latency_p50_ms", "status": "ok", "detail": "-3 ms"},
        ],
    }


def buckets(names: list[str], challengers: list[str], count: int = 3) -> list[Json]:
    found = []
    for i in range(count):
        cumulative: dict[str, Json | None] = {}
        for j, name in enumerate(challengers):
            value = -0.3 - 0.02 * i + 0.05 * j
            cumulative[name] = {"wer_difference": value, "ci": [value - 0.2, value + 0.2]}
        found.append(
            {
                "start": iso(START + timedelta(minutes=i)),
                "units": {name: 3 + i + k for k, name in enumerate(names)},
                "outcomes": {name: 3 + i + k for k, name in enumerate(names)},
                "cumulative": cumulative,
            }
        )
    return found


def two_variant_report() -> Json:
    """base vs custom, both fully labelled: custom is clearly better."""
    return {
        "schema_version": 1,
        "generated_at": "2026-11-21T12:00:00.000Z",
        "experiment": "banking-custom",
        "control": "base",
        "window": {"since": None, "until": None, "phase": None},
        "settings": dict(SETTINGS),
        "phases": [
            {
                "phase": "3f9a0c1d2e4b",
                "current": True,
                "first_record": "2026-11-21T11:58:00.000Z",
                "last_record": "2026-11-21T12:00:00.000Z",
                "srm": {
                    "status": "ok",
                    "p_value": 0.77,
                    "chi2": 0.08,
                    "units": {"base": 24, "custom": 24},
                    "expected_share": {"base": 0.5, "custom": 0.5},
                    "note": None,
                },
                "variants": [
                    variant(
                        "base",
                        control=True,
                        units=24,
                        success=22,
                        wer=wer(0.38, [0.30, 0.46]),
                        first=[2, 8, 9, 4, 1, 0],
                        final=[0, 2, 8, 9, 4, 1],
                        p50=310.0,
                    ),
                    variant(
                        "custom",
                        control=False,
                        units=24,
                        success=23,
                        wer=wer(0.025, [0.01, 0.05]),
                        first=[1, 9, 10, 3, 1, 0],
                        final=[0, 1, 9, 10, 3, 1],
                        p50=322.0,
                    ),
                ],
                "comparisons": [comparison("custom", -0.355)],
                "timeline": {
                    "bucket_seconds": 60,
                    "buckets": buckets(["base", "custom"], ["custom"]),
                },
            }
        ],
        "recommendation": {
            "action": "ship_custom",
            "variant": "custom",
            "phase": "3f9a0c1d2e4b",
            "reason": "custom lowers WER by 35.5 points (always-valid 95% CI -52.0 to -19.0) "
            "and no guardrail regresses",
        },
    }


def three_variant_report() -> Json:
    """base, custom and custom-v2 in the current phase plus an earlier phase; many nulls.

    custom-v2 has no labels (wer null, comparison wer null, cumulative null), one latency
    quantile has no interval, an always-valid bound is unbounded, the earlier phase had a
    sample ratio mismatch, and the current phase has a shadow comparison.
    """
    report = two_variant_report()
    current = report["phases"][0]
    current["phase"] = "77aa00bb11cc"
    v2 = variant(
        "custom-v2",
        control=False,
        units=12,
        success=10,
        wer=None,
        first=[0, 3, 5, 3, 1, 0],
        final=[0, 0, 4, 5, 2, 1],
        p50=340.0,
        backend="westeurope",
    )
    v2["latency"]["final_latency_ms"]["quantiles"]["p99"]["ci"] = None
    current["variants"].append(v2)
    current["srm"]["units"]["custom-v2"] = 12
    current["srm"]["expected_share"] = {"base": 0.4, "custom": 0.4, "custom-v2": 0.2}
    current["srm"]["p_value"] = 0.99
    unbounded = comparison("custom-v2", None)
    unbounded["rates"]["error"]["always_valid"]["ci"] = [None, 0.25]
    unbounded["guardrails"][2] = {
        "metric": "final_latency_p50_ms",
        "status": "insufficient",
        "detail": "fewer than 20 values",
    }
    current["comparisons"][0]["shadow"] = {
        "pairs": 18,
        "units": 9,
        "control_wer": 0.4,
        "challenger_wer": 0.05,
        "difference": -0.35,
        "ci": [-0.45, -0.25],
    }
    current["comparisons"].append(unbounded)
    current["timeline"]["buckets"] = buckets(["base", "custom", "custom-v2"], ["custom"])
    for bucket in current["timeline"]["buckets"]:
        bucket["cumulative"]["custom-v2"] = None
    current["timeline"]["buckets"][0]["cumulative"]["custom"] = None  # too few labels at first
    earlier = copy.deepcopy(two_variant_report()["phases"][0])
    earlier.update(
        phase="11aa22bb33cc",
        current=False,
        first_record="2026-11-20T09:00:00.000Z",
        last_record="2026-11-20T10:00:00.000Z",
    )
    earlier["srm"] = {
        "status": "mismatch",
        "p_value": 0.00002,
        "chi2": 18.2,
        "units": {"base": 40, "custom": 8},
        "expected_share": {"base": 0.5, "custom": 0.5},
        "note": None,
    }
    report["phases"] = [earlier, current]  # out of order on purpose: current renders first
    report["recommendation"] = {
        "action": "keep_collecting",
        "variant": None,
        "phase": "77aa00bb11cc",
        "reason": "custom-v2 has 0 labelled utterances; at least 20 are needed",
    }
    return report


def empty_report() -> Json:
    """An experiment with no records in the window yet."""
    return {
        "schema_version": 1,
        "generated_at": "2026-11-21T12:00:00.000Z",
        "experiment": "banking-custom",
        "control": "base",
        "window": {"since": "2026-11-21T00:00:00.000Z", "until": None, "phase": None},
        "settings": dict(SETTINGS),
        "phases": [],
        "recommendation": {
            "action": "keep_collecting",
            "variant": None,
            "phase": None,
            "reason": "no outcome records yet",
        },
    }


def experiments_listing(weights: tuple[float, float] = (50.0, 50.0)) -> Json:
    """`GET /admin/experiments` for the banking-custom experiment."""
    total = sum(weights)
    return {
        "experiments": [
            {
                "id": "banking-custom",
                "control": "base",
                "phase": "3f9a0c1d2e4b",
                "shadows": [],
                "variants": [
                    {
                        "name": "base",
                        "weight": weights[0],
                        "share": weights[0] / total,
                        "backend": "local",
                        "endpoint_id": None,
                    },
                    {
                        "name": "custom",
                        "weight": weights[1],
                        "share": weights[1] / total,
                        "backend": "local",
                        "endpoint_id": "banking",
                    },
                ],
            }
        ]
    }
