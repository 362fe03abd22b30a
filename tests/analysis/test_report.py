"""The analysis report on records built in memory: counts, intervals, phases, decisions."""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any

import numpy as np
import pytest
from traffic import INFO, Traffic

from gateway.analysis.model import ExperimentInfo
from gateway.analysis.observations import OutcomeTable
from gateway.analysis.report import build_report
from gateway.analysis.text_report import render_text
from gateway.control.guardrails import Guardrails
from gateway.outcomes.record import CATEGORIES, Role, category
from gateway.stats.clustered import UnitSums, difference_interval
from gateway.stats.clustered import quantile_interval as clustered_quantile_interval
from gateway.stats.proportions import clustered_wilson_interval, wilson_interval
from gateway.stats.wer import corpus_wer


def variants(report: dict[str, Any], phase: int = 0) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in report["phases"][phase]["variants"]}


def test_counts_rates_and_wer_add_up() -> None:
    traffic = Traffic()
    traffic.ab(30, base_error=0.3, custom_error=0.05)
    traffic.utterance("custom", 100, status="NoMatch", text="")
    traffic.failure("custom", 101, "Error", "upstream_close_1011")
    traffic.failure("custom", 102, "TooManyRequests", "upstream_http_429")
    report = traffic.report()
    json.dumps(report, allow_nan=False)  # JSON-ready: no NaN or Infinity anywhere

    custom = variants(report)["custom"]
    assert (custom["units"], custom["sessions"], custom["outcomes"]) == (33, 33, 33)
    assert (custom["utterances"], custom["labelled"]) == (31, 31)
    rates = custom["rates"]
    assert {name: rates[name]["count"] for name in rates} == {
        "success": 30,
        "no_match": 1,
        "error": 1,
        "cancellation": 1,
    }
    # One outcome per unit: Wilson's interval, with Student's quantile for 33 units.
    one_each = UnitSums.independent(30, 33)
    assert rates["success"]["ci"] == pytest.approx(list(clustered_wilson_interval(one_each)))
    low, high = wilson_interval(30, 33, 0.95)
    assert rates["success"]["ci"][0] < low
    assert rates["success"]["ci"][1] > high

    expected = corpus_wer(
        (traffic.labels[r.record_id].text, r.text or "")
        for r in traffic.records
        if r.variant == "custom" and r.record_id in traffic.labels
    )
    wer = custom["wer"]
    assert wer["wer"] == pytest.approx(expected.wer)
    assert (wer["substitutions"], wer["deletions"], wer["insertions"]) == (
        expected.substitutions,
        expected.deletions,
        expected.insertions,
    )
    assert wer["ci"][0] <= wer["wer"] <= wer["ci"][1]


def test_categories_follow_the_documented_rules() -> None:
    traffic = Traffic()
    assert category(traffic.utterance("a", 0)) == "success"
    for status in ("NoMatch", "InitialSilenceTimeout", "BabbleTimeout"):
        assert category(traffic.utterance("a", 0, status=status)) == "no_match"
    assert category(traffic.failure("a", 0, "Error", "upstream_unreachable")) == "error"
    assert category(traffic.failure("a", 0, "Error", "upstream_http_503")) == "error"
    assert category(traffic.failure("a", 0, "Error", "upstream_http_401")) == "cancellation"
    assert category(traffic.failure("a", 0, "BadRequest", "upstream_close_1007")) == "cancellation"
    # Ended by the gateway, not the model: a limit or a shutdown.
    assert category(traffic.failure("a", 0, "Error", "limit_idle_timeout")) == "cancellation"
    assert category(traffic.failure("a", 0, "Error", "gateway_shutdown")) == "cancellation"


def test_forced_and_shadow_records_stay_out_of_the_comparison() -> None:
    traffic = Traffic()
    traffic.ab(5, 0.2, 0.2)
    traffic.utterance("custom", 20, forced=True)
    traffic.utterance("custom", 21, role=Role.SHADOW, shadow_drops=0)
    traffic.utterance(None, 22, phase=None)  # the default route
    custom = variants(traffic.report())["custom"]
    assert (custom["outcomes"], custom["forced"]) == (5, 1)


def test_a_big_wer_gain_with_healthy_guardrails_ships_custom() -> None:
    traffic = Traffic()
    traffic.ab(40, base_error=0.35, custom_error=0.03)
    report = traffic.report()
    comparison = report["phases"][0]["comparisons"][0]
    assert comparison["wer"]["difference"] < -0.2
    assert comparison["wer"]["always_valid"]["ci"][1] < 0
    # The always-valid interval pays for peeking: it is wider than the fixed-horizon one.
    fixed, always = comparison["wer"]["ci"], comparison["wer"]["always_valid"]["ci"]
    assert always[0] <= fixed[0]
    assert always[1] >= fixed[1]
    assert [g["status"] for g in comparison["guardrails"]] == ["ok", "ok", "ok"]
    assert report["recommendation"]["action"] == "ship_custom"
    assert report["recommendation"]["variant"] == "custom"
    assert "Recommendation: SHIP CUSTOM" in render_text(report)


def test_a_worse_challenger_keeps_base() -> None:
    traffic = Traffic()
    traffic.ab(40, base_error=0.03, custom_error=0.35)
    assert traffic.report()["recommendation"]["action"] == "keep_base"


def test_a_failing_challenger_is_rolled_back_even_when_its_wer_is_better() -> None:
    traffic = Traffic()
    traffic.ab(40, base_error=0.35, custom_error=0.03)
    for i in range(25):
        traffic.failure("custom", 200 + i, "Error", "upstream_close_1011")
    report = traffic.report()
    guardrails = {
        g["metric"]: g["status"] for g in report["phases"][0]["comparisons"][0]["guardrails"]
    }
    assert guardrails["error_rate"] == "regressed"
    assert report["recommendation"]["action"] == "roll_back"
    assert "error_rate" in report["recommendation"]["reason"]


def test_a_slower_challenger_trips_the_latency_guardrail() -> None:
    traffic = Traffic()
    for i in range(40):
        traffic.utterance("base", 2 * i, word_error=0.3, final_latency_ms=300.0 + i)
        traffic.utterance("custom", 2 * i + 1, word_error=0.03, final_latency_ms=900.0 + i)
    report = traffic.report()
    assert report["recommendation"]["action"] == "roll_back"
    assert "final_latency_p50_ms" in report["recommendation"]["reason"]


def test_too_few_labels_keep_collecting_or_ramp_up_below_half_the_traffic() -> None:
    traffic = Traffic()
    traffic.ab(10, base_error=0.35, custom_error=0.03)
    assert traffic.report()["recommendation"]["action"] == "keep_collecting"
    small = ExperimentInfo(control="base", phase="p1", shares={"base": 0.9, "custom": 0.1})
    traffic = Traffic()
    for i in range(90):
        traffic.utterance("base", i, word_error=0.1)
    for i in range(10):
        traffic.utterance("custom", 100 + i, word_error=0.1)
    report = traffic.report(info=small)
    assert report["recommendation"]["action"] == "ramp_up"
    assert "10%" in report["recommendation"]["reason"]


def test_a_broken_split_is_flagged_and_blocks_the_decision() -> None:
    traffic = Traffic()
    for i in range(700):
        traffic.utterance("base", i, word_error=0.3, label=i < 30)
    for i in range(300):
        traffic.utterance("custom", 700 + i, word_error=0.03, label=i < 30)
    report = traffic.report()
    srm = report["phases"][0]["srm"]
    assert srm["status"] == "mismatch"
    assert srm["p_value"] < 1e-6
    assert srm["units"] == {"base": 700, "custom": 300}
    assert report["recommendation"]["action"] == "keep_collecting"
    assert "sample ratio mismatch" in report["recommendation"]["reason"]


def test_an_earlier_phase_is_reported_separately_and_not_srm_checked() -> None:
    traffic = Traffic()
    for i in range(10):
        traffic.utterance("base", i, phase="p0")
        traffic.utterance("custom", 20 + i, phase="p0")
    traffic.ab(30, 0.3, 0.05)
    report = traffic.report()
    phases = [(p["phase"], p["current"], p["srm"]["status"]) for p in report["phases"]]
    assert phases == [("p1", True, "ok"), ("p0", False, "unchecked")]
    only = traffic.report() | {}
    assert only["recommendation"]["phase"] == "p1"
    filtered = build_report("e", traffic.records, traffic.labels, info=INFO, phase="p0")
    assert [p["phase"] for p in filtered["phases"]] == ["p0"]


def test_unconfigured_experiment_takes_the_first_variant_as_control() -> None:
    traffic = Traffic()
    traffic.ab(5, 0.3, 0.05)
    report = traffic.report(info=None)
    assert report["control"] == "base"
    assert report["phases"][0]["current"] is None
    assert report["phases"][0]["srm"]["status"] == "unchecked"


def test_shadow_pairs_compare_both_models_on_identical_audio() -> None:
    traffic = Traffic()
    for i in range(25):
        primary = traffic.utterance("base", 2 * i, word_error=0.4)
        reference = traffic.labels[primary.record_id].text
        traffic.utterance(
            "custom",
            2 * i,
            role=Role.SHADOW,
            shadow_drops=0,
            session_id=primary.session_id,
            unit=primary.unit,
            text=reference,  # the shadow got every word right
            label=False,
        )
    report = traffic.report(info=ExperimentInfo(control="base"))
    comparison = report["phases"][0]["comparisons"]
    assert comparison == []  # the custom variant served nobody: no split comparison
    traffic.ab(25, 0.4, 0.0)  # now it also serves some sessions
    comparison = traffic.report()["phases"][0]["comparisons"][0]
    shadow = comparison["shadow"]
    assert shadow["pairs"] == 25
    assert shadow["challenger_wer"] == 0.0
    assert shadow["difference"] == pytest.approx(-shadow["control_wer"])
    assert shadow["ci"][1] < 0


def test_timeline_buckets_count_everything_and_the_effect_band_only_narrows() -> None:
    traffic = Traffic()
    traffic.ab(300, base_error=0.3, custom_error=0.1)  # 600 s of traffic
    phase = traffic.report()["phases"][0]
    timeline = phase["timeline"]
    assert timeline["bucket_seconds"] == 30
    assert sum(b["outcomes"]["custom"] for b in timeline["buckets"]) == 300
    bands = [
        b["cumulative"]["custom"]["ci"] for b in timeline["buckets"] if b["cumulative"]["custom"]
    ]
    assert len(bands) >= 15
    for earlier, later in itertools.pairwise(bands):
        assert later[0] >= earlier[0]
        assert later[1] <= earlier[1]
    assert bands[-1] == phase["comparisons"][0]["wer"]["always_valid"]["ci"]


def test_without_labels_there_is_no_wer_and_no_decision() -> None:
    traffic = Traffic()
    for i in range(30):
        traffic.utterance("base", 2 * i, label=False)
        traffic.utterance("custom", 2 * i + 1, label=False)
    report = traffic.report()
    assert variants(report)["custom"]["wer"] is None
    assert report["phases"][0]["comparisons"][0]["wer"] is None
    assert report["recommendation"]["action"] == "keep_collecting"


def test_hashed_text_counts_as_labelled_but_unscorable() -> None:
    traffic = Traffic()
    traffic.utterance("base", 0, text=None, text_sha256="0" * 64)
    base = variants(traffic.report())["base"]
    assert (base["labelled"], base["unscorable"], base["wer"]) == (1, 1, None)


def test_no_records_give_an_empty_report() -> None:
    report = build_report("e", [], {}, info=INFO)
    assert report["phases"] == []
    assert report["recommendation"]["action"] == "keep_collecting"
    assert "No outcome records" in render_text(report)


def test_the_report_is_deterministic() -> None:
    traffic = Traffic()
    traffic.ab(20, 0.3, 0.1)
    first, second = traffic.report(), traffic.report()
    first.pop("generated_at")
    second.pop("generated_at")
    assert first == second


def test_an_effect_that_reverses_over_time_is_not_shipped() -> None:
    """Early looks favour custom, later ones base: the looks conflict, nothing is decided
    on the early interval (a model changed behind the same endpoint, or drift)."""
    traffic = Traffic()
    for i in range(300):
        traffic.utterance("base", 2 * i, word_error=0.25)
        traffic.utterance("custom", 2 * i + 1, word_error=0.12)
    for i in range(300, 1500):
        traffic.utterance("base", 2 * i, word_error=0.15)
        traffic.utterance("custom", 2 * i + 1, word_error=0.25)
    report = traffic.report()
    wer = report["phases"][0]["comparisons"][0]["wer"]
    assert wer["difference"] > 0
    assert wer["always_valid"]["conflicts"] > 0
    assert report["recommendation"]["action"] == "keep_collecting"
    assert "changed over time" in report["recommendation"]["reason"]


def test_forced_only_phases_and_variants_are_not_compared() -> None:
    traffic = Traffic()
    traffic.utterance("base", 0, forced=True, phase="p0")  # a phase of QA traffic only
    for i in range(30):
        traffic.utterance("base", 10 + i, word_error=0.2)
    traffic.utterance("custom", 50, forced=True)  # the challenger: QA only
    off = ExperimentInfo(control="base", phase="p1", shares={"base": 1.0, "custom": 0.0})
    report = traffic.report(info=off)
    json.dumps(report, allow_nan=False)
    assert [p["phase"] for p in report["phases"]] == ["p1"]
    assert report["phases"][0]["comparisons"] == []
    assert report["recommendation"]["action"] == "keep_collecting"


def test_units_on_a_zero_weight_variant_are_a_mismatch_with_json_safe_numbers() -> None:
    traffic = Traffic()
    traffic.ab(30, 0.2, 0.2)
    off = ExperimentInfo(control="base", phase="p1", shares={"base": 1.0, "custom": 0.0})
    report = traffic.report(info=off)
    srm = report["phases"][0]["srm"]
    assert (srm["status"], srm["p_value"], srm["chi2"]) == ("mismatch", 0.0, None)
    json.dumps(report, allow_nan=False)


def test_hashed_transcripts_explain_why_wer_cannot_decide() -> None:
    traffic = Traffic()
    for i in range(30):
        traffic.utterance("base", 2 * i, text=None, text_sha256="0" * 64)
        traffic.utterance("custom", 2 * i + 1, text=None, text_sha256="1" * 64)
    reason = traffic.report()["recommendation"]["reason"]
    assert "no recognised text" in reason


@pytest.mark.parametrize("seconds", [1, 29, 48, 100, 2900, 86_400, 30 * 86_400, 400 * 86_400])
def test_a_timeline_never_has_more_buckets_than_asked(seconds: int) -> None:
    from gateway.analysis import timeline

    for first in (0.0, 17.3, 86_399.9):
        length = timeline.bucket_seconds(first, first + seconds, 48)
        assert len(timeline.boundaries(first, first + seconds, length)) <= 48


def _clustered_traffic() -> Traffic:
    """30 units an arm, 8 utterances each; a unit either never or always gets a no-match,
    and its latencies sit around its own level (its device and network)."""
    made = Traffic()
    at = 0
    for variant in ("base", "custom"):
        for unit in range(30):
            level = 300.0 + 40.0 * unit
            for _ in range(8):
                made.utterance(
                    variant,
                    at,
                    unit=f"{variant}-{unit}",
                    status="NoMatch" if unit % 2 else "Success",
                    final_latency_ms=level + made.rng.random(),
                )
                at += 1
    return made


def test_rates_and_latency_intervals_are_clustered_by_unit() -> None:
    """Outcomes of one unit go together: the rate and latency intervals are those of the
    units' sums, far wider than if the 240 utterances were independent."""
    report = _clustered_traffic().report()
    [phase] = report["phases"]
    custom = variants(report)["custom"]
    no_match = custom["rates"]["no_match"]
    assert (no_match["count"], no_match["total"]) == (120, 240)
    plain_low, plain_high = wilson_interval(120, 240)
    low, high = no_match["ci"]
    assert high - low > 2.5 * (plain_high - plain_low)
    per_unit = UnitSums.of([8.0 * (u % 2) for u in range(30)], [8.0] * 30)
    assert no_match["ci"] == pytest.approx(list(clustered_wilson_interval(per_unit)))
    [comparison] = phase["comparisons"]
    assert comparison["rates"]["no_match"]["ci"] == pytest.approx(
        list(difference_interval(per_unit, per_unit))
    )
    values = [r.final_latency_ms for r in _clustered_traffic().records if r.variant == "custom"]
    codes = np.repeat(np.arange(30), 8)
    value, low, high = clustered_quantile_interval(np.array(values), codes, 0.9)
    p90 = custom["latency"]["final_latency_ms"]["quantiles"]["p90"]
    assert p90 == {"value": pytest.approx(value), "ci": [pytest.approx(low), pytest.approx(high)]}


def test_guardrails_test_the_configured_limits_on_units() -> None:
    """With the experiment's guardrails configured, the analysis tests those (here the error
    rate only, +5 points), always-valid and over units: 30 % errors against none regress."""
    made = Traffic()
    for i in range(120):
        made.utterance("base", 2 * i, unit=f"b{i % 40}")
        if i % 10 < 3:
            made.failure("custom", 2 * i + 1, "Error", "upstream_error")
        else:
            made.utterance("custom", 2 * i + 1, unit=f"c{i % 40}")
    configured = Guardrails(max_error_rate_increase=0.05, min_outcomes=20)
    report = made.report(info=dataclasses.replace(INFO, guardrails=configured))
    [comparison] = report["phases"][0]["comparisons"]
    [check] = comparison["guardrails"]
    assert check["metric"] == "error_rate"
    assert check["status"] == "regressed"
    assert "margin +5.0 pp" in check["detail"]
    assert report["recommendation"]["action"] == "roll_back"
    # Unconfigured: the analysis' own guardrails, with the error rate among them.
    default = {
        c["metric"]: c["status"] for c in made.report()["phases"][0]["comparisons"][0]["guardrails"]
    }
    assert default["error_rate"] == "regressed"


def _prefix_table(size: int, seed: int) -> OutcomeTable:
    rng = np.random.default_rng(seed)
    return OutcomeTable(
        at=np.sort(rng.uniform(0, 1000, size)),
        units=rng.integers(0, size // 3 + 1, size).astype(np.intp),
        categories=rng.integers(0, len(CATEGORIES), size).astype(np.intp),
        latencies={
            "first_hypothesis_ms": rng.uniform(100, 500, size),
            "final_latency_ms": rng.uniform(200, 900, size),
        },
        confidences=rng.uniform(0, 1, size),
    )


def _from_scratch(table: OutcomeTable, name: str, stop: int) -> UnitSums:
    units = table.units[:stop]
    if not units.size:
        return UnitSums()
    hits = (table.categories[:stop] == CATEGORIES.index(name)).astype(np.float64)
    n = np.bincount(units).astype(np.float64)
    x = np.bincount(units, weights=hits, minlength=n.size)
    return UnitSums.of(x[n > 0], n[n > 0])


def test_prefix_sums_equal_the_sums_from_scratch() -> None:
    """An outcome table's per-unit sums of a growing prefix (the looks), kept up to date as
    the prefix grows, are the sums from scratch: looks in time order, a look repeated, a
    shorter one after a longer, the whole table."""
    table = _prefix_table(5000, seed=1)
    stops = [0, 1, 17, 17, 900, 2500, 4999, 5000, 300, 301, None, 4000]
    for name in CATEGORIES:
        for stop in stops:
            expected = _from_scratch(table, name, len(table) if stop is None else stop)
            assert table.rate_sums(name, stop) == expected, (name, stop)
    # Every category at each look in turn, as the guardrails ask (the categories' prefixes
    # share the counts of the outcomes a look adds).
    table = _prefix_table(5000, seed=2)
    for stop in stops:
        for name in CATEGORIES:
            expected = _from_scratch(table, name, len(table) if stop is None else stop)
            assert table.rate_sums(name, stop) == expected, (name, stop)


def test_an_empty_table_has_no_sums() -> None:
    """No outcomes: no units, zero sums."""
    assert OutcomeTable.of(()).rate_sums("success") == UnitSums()
