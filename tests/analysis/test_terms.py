"""Domain terms: hand-counted recall and precision, unit-clustered intervals, the term list's
errors, and the section's renderers."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from traffic import Traffic

from gateway.analysis.labelled import LabelledResult, labelled_results
from gateway.analysis.terms import (
    MAX_TERMS,
    Tally,
    TermList,
    load_terms,
    parse_terms,
    tally_terms,
    terms_html,
    terms_section,
    terms_text,
)
from gateway.errors import ConfigError
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.stats.wer import Alignment, alignment

TERMS = parse_terms(
    "# banking\nSavings Account\noverdraft\n\ncredit card\n$200\nloan\nmortgage\n", "terms.txt"
)


def record(variant: str = "base", unit: str = "u1", text: str = "") -> OutcomeRecord:
    return OutcomeRecord(
        kind=Kind.UTTERANCE,
        experiment="e",
        phase="p1",
        variant=variant,
        backend="local",
        role=Role.PRIMARY,
        client="app",
        unit=unit,
        unit_source=UnitSource.QUERY,
        session_id="session",
        protocol=Protocol.USP,
        utterance_index=0,
        status="Success",
        text=text,
    )


def result(
    reference: str, hypothesis: str, *, variant: str = "base", unit: str = "u1"
) -> LabelledResult:
    return LabelledResult(
        record(variant, unit, hypothesis), reference, alignment(reference, hypothesis)
    )


def section(
    results: list[LabelledResult], terms: TermList = TERMS, **kwargs: object
) -> dict[str, Any]:
    options: dict[str, object] = {"control": "base", "variants": ["base", "custom"], "alpha": 0.05}
    options.update(kwargs)
    return terms_section(results, terms, **options)  # type: ignore[arg-type]


def rows(found: dict[str, Any], variant: str) -> dict[str, dict[str, Any]]:
    (arm,) = [v for v in found["variants"] if v["name"] == variant]
    return {row["term"]: row for row in arm["terms"]}


# -- matching --------------------------------------------------------------------------------

HAND = [
    # "$200" is said and recognised as the WER sees it; so is the savings account.
    ("send $200 to my savings account", "send two hundred dollars to my savings account"),
    # A term inside a longer phrase is said there; one wrong word and it is not recognised.
    ("my business credit card was declined", "my business credit cart was declined"),
    # Twice said, once recognised (the second loses "account"); "over draft" is not the term.
    (
        "overdraft fee on my savings account and my other savings account",
        "over draft fee on my savings account and my other savings",
    ),
    # An inserted term is recognised but not said.
    ("what is the loan rate", "what is the loan loan rate"),
    ("i want a car", "i want a credit card"),
    # Whole words only: "loans" is not "loan".
    ("loans for students", "loans for students"),
    # Words in between break the term: not recognised, and nothing recognised either.
    ("my savings account", "my savings uh account"),
]


def test_tally_of_single_alignments() -> None:
    inside = tally_terms(alignment(*HAND[1]), TERMS)
    assert inside == {"credit card": Tally(said=1, recognised=0, false=0)}
    inserted = tally_terms(alignment(*HAND[3]), TERMS)
    assert inserted == {"loan": Tally(said=1, recognised=1, false=1)}
    assert tally_terms(alignment(*HAND[5]), TERMS) == {}
    assert tally_terms(alignment(*HAND[6]), TERMS) == {
        "savings account": Tally(said=1, recognised=0, false=0)
    }
    repeated = tally_terms(alignment("loan loan loan", "loan loan"), TERMS)
    assert repeated == {"loan": Tally(said=3, recognised=2, false=0)}
    # A term said but recognised elsewhere in the hypothesis: a miss and a false alarm.
    moved = tally_terms(alignment("overdraft on my card", "over draft on my overdraft"), TERMS)
    assert moved == {"overdraft": Tally(said=1, recognised=0, false=1)}


def test_recall_and_precision_match_hand_counts() -> None:
    found = section([result(ref, hyp) for ref, hyp in HAND])
    base = rows(found, "base")
    counted = {
        term: (row["said"], row["recognised"], row["false"], row["recall"], row["precision"])
        for term, row in base.items()
    }
    assert counted == {
        "savings account": (4, 2, 0, 0.5, 1.0),
        "overdraft": (1, 0, 0, 0.0, None),
        "credit card": (1, 0, 1, 0.0, 0.0),
        "two hundred dollars": (1, 1, 0, 1.0, 1.0),
        "loan": (1, 1, 1, 1.0, 0.5),
        "mortgage": (0, 0, 0, None, None),
    }
    (arm, custom) = found["variants"]
    assert (arm["said"], arm["recognised"], arm["false"]) == (8, 4, 2)
    assert arm["recall"]["value"] == 0.5
    assert arm["precision"]["value"] == pytest.approx(4 / 6)
    # One unit: no spread of units to estimate from, so the interval is the whole range.
    assert arm["recall"]["ci"] == [0.0, 1.0]
    assert custom["said"] == 0
    assert custom["recall"] == {"value": None, "ci": None}
    assert found["never_said"] == ["mortgage"]
    assert found["count"] == 6
    assert found["source"] == "terms.txt"
    json.dumps(found, allow_nan=False)


def test_the_section_reads_the_reports_labelled_results() -> None:
    made = Traffic()
    made.ab(20, base_error=0.5, custom_error=0.0)
    terms = parse_terms("savings account\nretirement account\nfee\n", "t.txt")
    found = section(labelled_results(made.records, made.labels), terms)
    base, custom = found["variants"]
    assert base["utterances"] == custom["utterances"] == 20
    assert custom["recall"]["value"] == 1.0
    assert custom["precision"]["value"] == 1.0
    assert base["recall"]["value"] < 0.8
    assert found["comparisons"][0]["recall"]["difference"] > 0


# -- intervals -------------------------------------------------------------------------------

HIT = alignment("overdraft", "overdraft")
MISS = alignment("overdraft", "over draft")
ONE = parse_terms("overdraft", "one.txt")


@functools.cache
def unit_record(variant: str, unit: str) -> OutcomeRecord:
    return record(variant, unit)


def hits(outcomes: list[tuple[str, bool]], variant: str = "base") -> list[LabelledResult]:
    """One result per (unit, recognised), the record shared per unit (only its unit counts)."""
    return [
        LabelledResult(unit_record(variant, unit), "overdraft", HIT if recognised else MISS)
        for unit, recognised in outcomes
    ]


def width(found: dict[str, Any], variant: str = "base", metric: str = "recall") -> float:
    (arm,) = [v for v in found["variants"] if v["name"] == variant]
    low, high = arm[metric]["ci"]
    return float(high - low)


def test_the_interval_shrinks_with_more_units() -> None:
    few = [(f"u{i}", i % 2 == 0) for i in range(20)]
    many = [(f"u{i}", i % 2 == 0) for i in range(80)]
    narrow = width(section(hits(many), ONE, variants=["base"]))
    wide = width(section(hits(few), ONE, variants=["base"]))
    assert narrow < 0.6 * wide


def test_the_interval_respects_the_unit() -> None:
    """Saying everything twice within each unit adds no independent evidence; saying it
    twice in new units does."""
    base = [(f"u{i}", i % 3 != 0) for i in range(30)]
    same_units = base + base
    new_units = base + [(f"v{i}", ok) for i, (_, ok) in enumerate(base)]
    original = width(section(hits(base), ONE, variants=["base"]))
    doubled_within = width(section(hits(same_units), ONE, variants=["base"]))
    doubled_across = width(section(hits(new_units), ONE, variants=["base"]))
    assert doubled_within == pytest.approx(original, rel=0.1)
    assert doubled_across < 0.8 * original


def simulated_coverage(clustered_by_unit: bool, runs: int = 250) -> float:
    """Units of 6 occurrences whose recall varies from unit to unit (mean 0.7): how often
    the 95 % interval covers 0.7, with the units as given or each utterance its own unit."""
    rng = random.Random(7)
    covered = 0
    for _ in range(runs):
        outcomes = []
        for unit in range(30):
            p = rng.betavariate(1.4, 0.6)  # mean 0.7, strongly clustered
            for index in range(6):
                name = f"u{unit}" if clustered_by_unit else f"u{unit}-{index}"
                outcomes.append((name, rng.random() < p))
        low, high = section(hits(outcomes), ONE, variants=["base"])["variants"][0]["recall"]["ci"]
        covered += low <= 0.7 <= high
    return covered / runs


def test_simulated_coverage_needs_the_units() -> None:
    assert simulated_coverage(clustered_by_unit=True) >= 0.92
    # The same occurrences treated as independent: the interval is far too narrow.
    assert simulated_coverage(clustered_by_unit=False) < 0.85


# -- comparisons -----------------------------------------------------------------------------


def test_terms_recognised_by_the_challenger_and_missed_by_control() -> None:
    results = [
        result("overdraft fee", "over draft fee", variant="base", unit="a1"),
        result("an overdraft", "an over draft", variant="base", unit="a2"),
        result("overdraft limit", "overdraft limit", variant="custom", unit="b1"),
        result("my overdraft", "my overdraft", variant="custom", unit="b2"),
        result("credit card", "credit card", variant="base", unit="a3"),
        result("credit card", "credit cart", variant="custom", unit="b3"),
        result("loan", "loan", variant="base", unit="a4"),
        result("loan", "loan", variant="custom", unit="b4"),
        # Said only in the challenger's utterances: no evidence that control misses it.
        result("savings account", "savings account", variant="custom", unit="b5"),
    ]
    found = section(results)
    (comparison,) = found["comparisons"]
    assert (comparison["variant"], comparison["control"]) == ("custom", "base")
    assert comparison["gained"] == [
        {
            "term": "overdraft",
            "difference": 1.0,
            "challenger": {"said": 2, "recognised": 2, "recall": 1.0},
            "control": {"said": 2, "recognised": 0, "recall": 0.0},
        }
    ]
    assert [entry["term"] for entry in comparison["lost"]] == ["credit card"]
    recall = comparison["recall"]
    assert recall["difference"] == pytest.approx(4 / 5 - 2 / 4)
    low, high = recall["ci"]
    assert low < recall["difference"] < high
    text = "\n".join(terms_text(found))
    assert "Recognised by custom, missed by base: overdraft (custom 2 of 2, base 0 of 2)" in text
    assert "Recognised by base, missed by custom: credit card (base 1 of 1, custom 0 of 1)" in text
    html = terms_html(found)
    assert '<ul class="terms" data-list="gained" data-variant="custom">' in html
    assert '<li data-term="overdraft">' in html


def test_gained_terms_are_ranked_by_the_change_in_recall() -> None:
    results = [result("loan", "loan", variant="custom", unit=f"c{i}") for i in range(2)]
    results += [result("loan", "lone", variant="base", unit="b0")]
    results += [result("loan", "loan", variant="base", unit="b1")]
    results += [result("overdraft", "overdraft", variant="custom", unit="c3")]
    results += [result("overdraft", "over draft", variant="base", unit="b3")]
    (comparison,) = section(results)["comparisons"]
    assert [e["term"] for e in comparison["gained"]] == ["overdraft", "loan"]


# -- the term list ---------------------------------------------------------------------------


def test_a_term_list_is_normalised_and_merged(tmp_path: Path) -> None:
    path = tmp_path / "terms.txt"
    path.write_text(
        "\ufeff# comment\n\nSavings Account\nsavings account\n$200\ntwo hundred dollars\n"
        "  routing number  \n",
        encoding="utf-8",
    )
    terms = load_terms(path)
    assert [t.text for t in terms.terms] == [
        "savings account",
        "two hundred dollars",
        "routing number",
    ]
    assert terms.terms[0].written == "Savings Account"
    assert terms.source == str(path)


@pytest.mark.parametrize(
    ("content", "where", "problem"),
    [
        (b"", "", "no terms"),
        (b"# only a comment\n\n   \n", "", "no terms"),
        (b"overdraft\n%%%\n", ":2", "'%%%' has no words after normalisation"),
        (b"overdraft\nloan\n\xff\xfe bad\n", ":3", "not UTF-8 text"),
        (b"\n".join(f"term{i}".encode() for i in range(MAX_TERMS + 1)), ":1001", "more than"),
    ],
)
def test_a_bad_term_list_is_a_clear_error(
    tmp_path: Path, content: bytes, where: str, problem: str
) -> None:
    path = tmp_path / "terms.txt"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_terms(path)
    assert caught.value.field == f"{path}{where}"
    assert problem in caught.value.problem
    assert "\n" not in str(caught.value)


def test_an_unreadable_term_list_is_a_clear_error(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.txt", tmp_path):
        with pytest.raises(ConfigError, match="cannot read the term list") as caught:
            load_terms(path)
        assert caught.value.field == str(path)


# -- renderers -------------------------------------------------------------------------------


def test_the_renderers_show_rates_and_never_said_terms() -> None:
    found = section([result(ref, hyp) for ref, hyp in HAND])
    text = terms_text(found)
    assert text[0] == "Domain terms (6 terms from terms.txt; 95% intervals by unit)"
    assert any(line.startswith("base") and "50.0% [0.0, 100.0]" in line for line in text)
    assert "Never said: mortgage" in text
    assert any(line.startswith("loan") and "1/1 +1" in line for line in text)
    html = terms_html(found)
    assert 'data-section="terms"' in html
    assert '<table data-table="terms" data-variant="base">' in html
    assert '<tr data-term="mortgage"><td>mortgage</td><td>0</td>' in html
    assert "never said" in html
    assert "6 terms from terms.txt." in html


def test_a_derived_list_and_a_single_term_read_as_english() -> None:
    found = {**section([result("loan", "loan")]), "count": 1, "source": "derived from c.txt"}
    assert terms_text(found)[0] == "Domain terms (1 term derived from c.txt; 95% intervals by unit)"
    assert "1 term derived from c.txt." in terms_html(found)


def test_the_renderers_escape_and_tolerate_anything() -> None:
    found = section([result("loan", "loan", variant="<b>x</b>")], variants=["base", "<b>x</b>"])
    html = terms_html(found)
    assert "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    for broken in (None, {}, {"variants": "x"}, {"variants": [{"terms": 3}], "comparisons": 1}):
        assert isinstance(terms_text(broken), list)
        assert isinstance(terms_html(broken), str)
    assert terms_text(None) == []
    assert terms_html(None) == ""


def test_bad_alpha_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        section([], alpha=0.0)


def test_an_empty_alignment_counts_nothing() -> None:
    empty = Alignment((), (), ())
    assert tally_terms(empty, TERMS) == {}
    found = section([])
    assert found["never_said"] == [t.text for t in TERMS.terms]
    assert found["comparisons"][0]["recall"] == {"difference": None, "ci": None}
