"""Segments: WER and outcome rates per locale, client, mode, duration and confidence."""

from __future__ import annotations

import dataclasses
import html
import json
import random
from html.parser import HTMLParser
from typing import Any

import pytest
from traffic import Traffic

from gateway.analysis.labelled import labelled_results
from gateway.analysis.segments import segments_html, segments_section, segments_text

ALPHA = 1.0 - 0.95
Json = dict[str, Any]


def section(made: Traffic, **options: Any) -> Json:
    built = segments_section(
        labelled_results(made.records, made.labels),
        made.records,
        control="base",
        variants=["base", "custom"],
        alpha=ALPHA,
        **options,
    )
    json.dumps(built, allow_nan=False)  # JSON-ready: no NaN or Infinity anywhere
    return built


def segment(built: Json, dimension: str, value: str) -> Json:
    (found,) = [s for s in built["dimensions"][dimension] if s["segment"] == value]
    return found


def speakers(
    made: Traffic,
    variant: str,
    units: int,
    *,
    word_error: float = 0.0,
    error_rate: float = 0.0,
    each: int = 3,
    rng: random.Random | None = None,
    label: bool = True,
    **values: Any,
) -> None:
    """`units` units of `variant`, `each` utterances apiece: labelled results with the given
    word error, or (with probability error_rate) unlabelled recognition errors."""
    start = len(made.records)
    for unit in range(units):
        for index in range(each):
            at = 3 * (start + unit * each + index)
            name = f"{variant}-{values.get('locale', '')}-{values.get('client', '')}-{start}-{unit}"
            if rng is not None and rng.random() < error_rate:
                made.utterance(
                    variant, at, unit=name, label=False, status="Error", text=None, **values
                )
            else:
                made.utterance(variant, at, unit=name, word_error=word_error, label=label, **values)


class Cells(HTMLParser):
    """The rows of an HTML fragment: (attributes of the row, the cells' text)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[dict[str, str | None], list[str]]] = []
        self.warnings: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append((dict(attrs), []))
        elif tag == "td":
            self.rows[-1][1].append("")
        elif tag == "p" and ("class", "warning") in attrs:
            self.warnings.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        if self.rows and self.rows[-1][1]:
            self.rows[-1][1][-1] += data


def test_a_locale_where_the_better_challenger_regresses_is_called_out() -> None:
    made = Traffic()
    speakers(made, "base", 60, word_error=0.3, locale="en-US")
    speakers(made, "custom", 60, word_error=0.05, locale="en-US")
    speakers(made, "base", 30, word_error=0.05, locale="de-DE")
    speakers(made, "custom", 30, word_error=0.4, locale="de-DE")
    built = section(made)

    assert built["overall"]["custom"]["wer"] < -0.02  # better overall
    (call_out,) = built["call_outs"]
    assert (call_out["dimension"], call_out["segment"], call_out["metric"]) == (
        "locale",
        "de-DE",
        "wer",
    )
    german = segment(built, "locale", "de-DE")
    difference = german["comparisons"]["custom"]["wer"]
    assert difference["ci"][0] > 0.2
    assert call_out["difference"] == difference["difference"]
    assert "custom is worse than base on WER for locale de-DE" in call_out["message"]
    # The planted regression is the only one: en-US shows the challenger better.
    english = segment(built, "locale", "en-US")["comparisons"]["custom"]["wer"]
    assert english["ci"][1] < 0
    # The counts: 60 units x 3 utterances of each arm in en-US.
    base = segment(built, "locale", "en-US")["variants"]["base"]
    assert (base["units"], base["utterances"], base["outcomes"]) == (60, 180, 180)

    lines = segments_text(built)
    assert any(line.startswith("  ! custom is worse") for line in lines)
    fragment = segments_html(built)
    parsed = Cells()
    parsed.feed(fragment)
    (warning,) = parsed.warnings
    assert (warning["data-dimension"], warning["data-segment"]) == ("locale", "de-DE")
    (row,) = [attrs for attrs, _ in parsed.rows if attrs.get("class") == "called-out"]
    assert (row["data-segment"], row["data-variant"]) == ("de-DE", "custom")


def test_a_client_with_more_errors_under_the_better_challenger_is_called_out() -> None:
    made, rng = Traffic(), random.Random(7)
    speakers(made, "base", 100, error_rate=0.2, each=5, rng=rng, client="app")
    speakers(made, "custom", 100, error_rate=0.02, each=5, rng=rng, client="app")
    speakers(made, "base", 30, error_rate=0.0, each=5, rng=rng, client="kiosk")
    speakers(made, "custom", 30, error_rate=0.3, each=5, rng=rng, client="kiosk")
    built = section(made)

    assert built["overall"]["custom"]["error_rate"] < 0
    (call_out,) = built["call_outs"]
    assert (call_out["dimension"], call_out["segment"], call_out["metric"]) == (
        "client",
        "kiosk",
        "error_rate",
    )
    kiosk = segment(built, "client", "kiosk")
    custom = kiosk["variants"]["custom"]["error_rate"]
    assert custom["total"] == 150
    assert custom["count"] == round(custom["rate"] * 150)
    assert kiosk["variants"]["base"]["error_rate"]["count"] == 0


def test_call_outs_follow_the_intervals_not_the_noise_of_small_segments() -> None:
    """Simulated experiments where custom has fewer errors overall (app, 150 units: 15 % ->
    5 %) and the small kiosk client (25 units) is either unchanged (5 % in both arms) or
    planted worse (5 % -> 30 %). The unchanged kiosk's estimate is worse by chance in about
    half the runs; its interval in about 2.5 % (a one-sided miss of a 95 % interval)."""
    runs = 20
    noise = false_alarms = found = 0
    for run in range(runs):
        rng = random.Random(run)
        for kiosk_custom in (0.05, 0.30):
            made = Traffic(seed=run)
            for variant, app, kiosk in (("base", 0.15, 0.05), ("custom", 0.05, kiosk_custom)):
                for client, rate, units in (("app", app, 150), ("kiosk", kiosk, 25)):
                    speakers(
                        made,
                        variant,
                        units,
                        error_rate=rate,
                        each=4,
                        rng=rng,
                        label=False,
                        client=client,
                    )
            built = section(made)
            assert built["overall"]["custom"]["error_rate"] < 0
            difference = segment(built, "client", "kiosk")["comparisons"]["custom"]
            if kiosk_custom == 0.05:
                noise += difference["error_rate"]["difference"] > 0
                false_alarms += len(built["call_outs"])
            else:
                found += [c["segment"] for c in built["call_outs"]] == ["kiosk"]
    assert noise >= 3  # a rule on the estimate would have called these out
    assert false_alarms <= 3
    assert found >= 0.9 * runs


def test_a_segment_with_few_units_is_too_small_and_has_no_interval() -> None:
    made = Traffic()
    speakers(made, "base", 25, word_error=0.2, locale="en-US")
    speakers(made, "custom", 25, word_error=0.1, locale="en-US")
    speakers(made, "base", 5, word_error=0.0, locale="fr-FR")
    speakers(made, "custom", 5, word_error=0.9, locale="fr-FR")  # far worse, yet too few
    built = section(made)

    french = segment(built, "locale", "fr-FR")
    assert french["too_small"] is True
    for variant in french["variants"].values():
        assert variant["units"] == 5
        for metric in ("wer", "error_rate", "no_match_rate"):
            assert variant[metric]["ci"] is None
            assert variant[metric]["too_small"] is True
    comparison = french["comparisons"]["custom"]
    assert comparison["too_small"] is True
    assert comparison["wer"]["difference"] > 0.5
    assert comparison["wer"]["ci"] is None
    assert built["call_outs"] == []  # no interval, so no call-out
    english = segment(built, "locale", "en-US")
    assert english["too_small"] is False
    assert english["comparisons"]["custom"]["wer"]["ci"] is not None

    (row,) = [line for line in segments_text(built) if line.split()[:2] == ["fr-FR", "custom"]]
    assert "too few units" in row
    parsed = Cells()
    parsed.feed(segments_html(built))
    french_rows = [(a, c) for a, c in parsed.rows if a.get("data-segment") == "fr-FR"]
    assert [a["data-too-small"] for a, _ in french_rows] == ["true", "true"]
    assert all("too few units" in cell for _, cells in french_rows for cell in cells[5:8])


def test_a_smaller_minimum_gives_the_small_segment_its_intervals() -> None:
    made = Traffic()
    speakers(made, "base", 5, word_error=0.1, locale="fr-FR")
    speakers(made, "custom", 5, word_error=0.1, locale="fr-FR")
    french = segment(section(made, min_units=5), "locale", "fr-FR")
    assert french["too_small"] is False
    assert french["comparisons"]["custom"]["wer"]["ci"] is not None


def test_unknown_values_fall_in_their_own_segment() -> None:
    made = Traffic()
    made.utterance("base", 0, locale="en-US", mode="conversation", audio_duration_ms=1500.0)
    made.utterance("custom", 1, locale=None, mode=None, audio_duration_ms=None)
    made.failure("custom", 2, "Error", "upstream_close_1011")  # no audio duration
    built = section(made)

    for dimension, known in (("locale", "en-US"), ("mode", "conversation")):
        assert [s["segment"] for s in built["dimensions"][dimension]] == [known, "unknown"]
        unknown = segment(built, dimension, "unknown")
        assert unknown["variants"]["custom"]["outcomes"] == 2
        assert unknown["variants"]["custom"]["utterances"] == 1
        assert unknown["variants"]["base"]["outcomes"] == 0
    durations = built["dimensions"]["duration"]
    assert [s["segment"] for s in durations] == ["<2 s", "2-5 s", "5-10 s", ">=10 s", "unknown"]
    unknown = segment(built, "duration", "unknown")["variants"]["custom"]
    assert unknown["error_rate"]["count"] == 1
    assert unknown["error_rate"]["total"] == 2
    assert segment(built, "duration", "<2 s")["variants"]["base"]["utterances"] == 1
    # An empty bucket is listed, too small, with nothing measured.
    empty = segment(built, "duration", ">=10 s")
    assert empty["too_small"] is True
    assert empty["variants"]["base"] == {
        "units": 0,
        "utterances": 0,
        "outcomes": 0,
        "wer": None,
        "error_rate": None,
        "no_match_rate": None,
    }
    assert empty["comparisons"]["custom"] == {
        "too_small": True,
        "wer": None,
        "error_rate": None,
        "no_match_rate": None,
    }
    assert segment(built, "client", "app")["variants"]["custom"]["outcomes"] == 2
    lines = segments_text(built)
    (row,) = [line for line in lines if line.startswith(">=10 s")]
    assert row.split()[-2:] == ["no", "utterances"]
    # A segment where one arm has nothing: the difference is missing for too few units.
    (row,) = [line for line in lines if line.split()[:2] == ["<2", "s"] and "custom" in line]
    assert " ".join(row.split()).endswith("too few units too few units too few units")


def test_durations_and_confidences_are_bucketed_at_their_bounds() -> None:
    made = Traffic()
    for at, (duration, confidence) in enumerate(
        [
            (1999.0, 0.49),
            (2000.0, 0.5),
            (4999.0, 0.69),
            (5000.0, 0.7),
            (9999.0, 0.89),
            (10000.0, 0.9),
            (60000.0, 1.0),
            (0.0, None),
        ]
    ):
        made.utterance("base", at, audio_duration_ms=duration, confidence=confidence)
    built = section(made)

    durations = {
        s["segment"]: s["variants"]["base"]["utterances"] for s in built["dimensions"]["duration"]
    }
    assert durations == {"<2 s": 2, "2-5 s": 2, "5-10 s": 2, ">=10 s": 2}
    confidences = built["dimensions"]["confidence"]
    assert {s["segment"]: s["variants"]["base"]["utterances"] for s in confidences} == {
        "<0.5": 1,
        "0.5-0.7": 2,
        "0.7-0.9": 2,
        ">=0.9": 2,
        "unknown": 1,
    }
    # Confidence belongs to results: no outcome rates in that dimension.
    for found in confidences:
        assert found["variants"]["base"]["outcomes"] is None
        assert found["variants"]["base"]["error_rate"] is None
        assert found["comparisons"]["custom"]["error_rate"] is None
    assert "-" in segments_text(built)[-1]


def test_one_segment_holding_all_traffic_has_the_reports_intervals() -> None:
    made, rng = Traffic(seed=3), random.Random(3)
    speakers(made, "base", 30, word_error=0.25, error_rate=0.1, each=4, rng=rng)
    speakers(made, "custom", 30, word_error=0.1, error_rate=0.05, each=4, rng=rng)
    made.failure("custom", 10_000, "Error", "upstream_close_1011")
    made.utterance("custom", 10_001, status="NoMatch", text="", label=False)
    report = made.report()
    built = section(made)

    (phase,) = report["phases"]
    (comparison,) = phase["comparisons"]
    (whole,) = built["dimensions"]["client"]  # every record is client "app"
    assert whole["segment"] == "app"
    assert whole["too_small"] is False
    for variant in phase["variants"]:
        ours = whole["variants"][variant["name"]]
        assert ours["units"] == variant["units"]
        assert ours["outcomes"] == variant["outcomes"]
        assert ours["wer"]["value"] == pytest.approx(variant["wer"]["wer"])
        assert ours["wer"]["ci"] == variant["wer"]["ci"]
        assert ours["utterances"] == variant["wer"]["utterances"]
        for name, category in (("error_rate", "error"), ("no_match_rate", "no_match")):
            assert ours[name]["ci"] == variant["rates"][category]["ci"]
            assert ours[name]["count"] == variant["rates"][category]["count"]
    ours = whole["comparisons"]["custom"]
    assert ours["wer"]["difference"] == pytest.approx(comparison["wer"]["difference"])
    assert ours["wer"]["ci"] == comparison["wer"]["ci"]
    assert ours["error_rate"]["ci"] == comparison["rates"]["error"]["ci"]
    assert ours["no_match_rate"]["ci"] == comparison["rates"]["no_match"]["ci"]
    assert built["overall"]["custom"]["wer"] == pytest.approx(comparison["wer"]["difference"])


def test_forced_failed_over_and_retried_records_are_no_outcomes() -> None:
    made = Traffic()
    made.utterance("base", 0, locale="en-US")
    made.utterance("custom", 1, locale="en-US", forced=True)
    made.utterance("base", 2, locale="en-US", failover_from="custom")
    failed = made.failure("custom", 3, "Error", "upstream_close_1011")
    # The client retried the failed attempt a second later: its user saw no error.
    made.records[-1] = dataclasses.replace(failed, client_session="c1", locale="en-US")
    made.utterance("custom", 4, unit=failed.unit, client_session="c1", locale="en-US")
    built = section(made)

    english = segment(built, "locale", "en-US")
    assert english["variants"]["base"]["outcomes"] == 1
    assert english["variants"]["base"]["utterances"] == 1
    custom = english["variants"]["custom"]
    assert (custom["outcomes"], custom["utterances"], custom["error_rate"]["count"]) == (1, 1, 0)


def test_bad_arguments_are_refused_with_a_reason() -> None:
    made = Traffic()
    made.utterance("base", 0)
    results = labelled_results(made.records, made.labels)
    with pytest.raises(ValueError, match="control 'gold' is not among the variants"):
        segments_section(results, made.records, control="gold", variants=["base"], alpha=ALPHA)
    with pytest.raises(ValueError, match="min_units must be at least 2"):
        segments_section(
            results, made.records, control="base", variants=["base"], alpha=ALPHA, min_units=1
        )
    with pytest.raises(ValueError, match="alpha must be in"):
        segments_section(results, made.records, control="base", variants=["base"], alpha=1.5)


def test_no_traffic_and_damaged_sections_render_without_a_traceback() -> None:
    built = section(Traffic())
    assert built["call_outs"] == []
    assert built["dimensions"]["locale"] == []
    assert [s["segment"] for s in built["dimensions"]["duration"]] == [
        "<2 s",
        "2-5 s",
        "5-10 s",
        ">=10 s",
    ]
    text = segments_text(built)
    assert "  no labelled results or outcomes" in text
    assert "No labelled results or outcomes." in segments_html(built)
    for value in (None, {}, {"dimensions": "x"}, {"dimensions": {"locale": [1, "x", None]}}):
        assert isinstance(segments_text(value), list)
        assert isinstance(segments_html(value), str)
    assert segments_text(None) == []
    assert segments_html(None) == ""


def test_strings_from_the_records_are_escaped_in_the_html() -> None:
    made = Traffic()
    made.utterance("base", 0, locale='<script>"x"</script>')
    fragment = segments_html(section(made))
    assert "<script>" not in fragment
    assert html.escape('<script>"x"</script>', quote=True) in fragment
