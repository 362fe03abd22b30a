"""Style versus substance: raw, normalised and synonym-equal WER, and the synonyms file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from traffic import Traffic

from gateway.analysis.labelled import LabelledResult, labelled_results
from gateway.analysis.model import AnalysisOptions
from gateway.analysis.style import (
    load_synonyms,
    parse_synonyms,
    raw_words,
    style_html,
    style_section,
    style_text,
)
from gateway.errors import ConfigError
from gateway.outcomes.labels import Label

REFERENCE = "send two hundred dollars to my savings account"


def _results(made: Traffic) -> list[LabelledResult]:
    return labelled_results(made.records, made.labels)


def _said(made: Traffic, variant: str, unit: str, reference: str, text: str) -> None:
    """One labelled utterance: `reference` said, `text` recognised."""
    record = made.utterance(variant, len(made.records), unit=unit, text=text)
    made.labels[record.record_id] = Label(
        record_id=record.record_id, text=reference, labeller="test", source="import"
    )


def test_raw_words_lower_case_and_strip_edge_punctuation_only() -> None:
    assert raw_words("Hello, World!") == ["hello", "world"]
    assert raw_words("Send $200 to my e-mail, «please» …") == [
        "send",
        "$200",
        "to",
        "my",
        "e-mail",
        "please",
    ]
    assert raw_words("Don't go to the U.S.") == ["don't", "go", "to", "the", "u.s"]
    assert raw_words("  ... -- ") == []


def test_normalisation_only_differences_are_all_style_and_no_substance() -> None:
    made = Traffic()
    for unit in range(30):
        # The same substantive error in both arms in every third unit ("savings" -> "saving").
        wrong = unit % 3 == 0
        said = REFERENCE.replace("savings", "saving") if wrong else REFERENCE
        formatted = (
            "Send $200 to my saving account." if wrong else "Send $200 to my savings account."
        )
        _said(made, "base", f"b{unit}", REFERENCE, said)
        _said(made, "custom", f"c{unit}", REFERENCE, formatted)
    section = style_section(
        _results(made), control="base", variants=["base", "custom"], options=AnalysisOptions()
    )
    base, custom = section["variants"]
    assert section["levels"] == ["raw", "normalised"]
    assert section["substance_level"] == "normalised"
    assert base["normalised"]["errors"] == custom["normalised"]["errors"] == 10
    assert base["raw"]["errors"] == 10
    # "$200" for "two hundred dollars": one substitution and two deletions per utterance.
    assert custom["raw"]["errors"] == 10 + 30 * 3
    assert custom["removed_by_normalisation"] == pytest.approx(90 / 100)
    assert base["removed_by_normalisation"] == 0.0
    (comparison,) = section["comparisons"]
    assert comparison["substance_difference"] == 0.0
    assert comparison["normalised"]["difference"] == 0.0
    assert comparison["style_difference"] == pytest.approx(comparison["raw"]["difference"])
    assert comparison["raw"]["difference"] == pytest.approx(100 / 240 - 10 / 240)
    low, high = comparison["raw"]["ci"]
    assert 0 < low <= comparison["raw"]["difference"] <= high
    json.dumps(section, allow_nan=False)


def test_the_normalised_level_is_the_headline_wer_with_the_same_interval() -> None:
    made = Traffic(seed=3)
    made.ab(40, base_error=0.3, custom_error=0.1)
    report = made.report(resamples=500)
    section = style_section(
        _results(made),
        control="base",
        variants=["base", "custom"],
        options=AnalysisOptions(resamples=500),
    )
    (phase,) = report["phases"]
    for headline, variant in zip(phase["variants"], section["variants"], strict=True):
        assert variant["name"] == headline["name"]
        assert variant["normalised"]["wer"] == pytest.approx(headline["wer"]["wer"])
        assert variant["normalised"]["ci"] is not None
        assert variant["normalised"]["ci"] == pytest.approx(headline["wer"]["ci"])
    (headline_comparison,) = phase["comparisons"]
    (comparison,) = section["comparisons"]
    assert comparison["normalised"]["difference"] == pytest.approx(
        headline_comparison["wer"]["difference"]
    )
    assert comparison["normalised"]["ci"] is not None
    assert comparison["normalised"]["ci"] == pytest.approx(headline_comparison["wer"]["ci"])


def _write(tmp_path: Path, text: str, name: str = "synonyms.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_synonyms_apply_to_both_arms_alike(tmp_path: Path) -> None:
    made = Traffic()
    for unit in range(10):
        _said(made, "base", f"b{unit}", "okay send it", "okay send it")
        _said(made, "custom", f"c{unit}", "okay send it", "OK, send it")
        # And the other way round: "ok" said, "okay" recognised.
        _said(made, "base", f"b{unit}", "ok thanks", "okay thanks")
        _said(made, "custom", f"c{unit}", "ok thanks", "ok thanks")
    results = _results(made)
    without = style_section(results, control="base", variants=["base", "custom"])
    base, custom = without["variants"]
    assert without["synonyms"] is None
    assert base["synonyms"] is None
    assert base["normalised"]["substitutions"] == custom["normalised"]["substitutions"] == 10
    synonyms = load_synonyms(_write(tmp_path, "# equal forms\nokay = ok = o k  # spelled\n"))
    section = style_section(results, control="base", variants=["base", "custom"], synonyms=synonyms)
    base, custom = section["variants"]
    assert section["levels"] == ["raw", "normalised", "synonyms"]
    assert section["synonyms"] == {"file": "synonyms.txt", "groups": 1, "forms": 3}
    assert base["synonyms"]["errors"] == custom["synonyms"]["errors"] == 0
    # Raw: 10 "okay" -> "ok" (custom) or "ok" -> "okay" (base) substitutions each.
    assert base["raw"]["errors"] == custom["raw"]["errors"] == 10
    assert base["removed_by_normalisation"] == 0.0
    assert base["removed_by_synonyms"] == 1.0
    (comparison,) = section["comparisons"]
    assert section["substance_level"] == "synonyms"
    assert comparison["substance_difference"] == 0.0
    assert comparison["style_difference"] == 0.0


def test_one_ok_against_okay_costs_one_substitution_without_the_file_and_nothing_with_it(
    tmp_path: Path,
) -> None:
    made = Traffic()
    for unit in range(5):
        _said(made, "base", f"b{unit}", "okay send it", "okay send it")
        _said(made, "custom", f"c{unit}", "okay send it", "ok send it")
    results = _results(made)
    synonyms = load_synonyms(_write(tmp_path, "okay = ok\n"))
    section = style_section(results, control="base", variants=["base", "custom"], synonyms=synonyms)
    _, custom = section["variants"]
    assert custom["normalised"]["substitutions"] == 5
    assert custom["synonyms"]["errors"] == 0
    (comparison,) = section["comparisons"]
    assert comparison["normalised"]["difference"] == pytest.approx(5 / 15)
    assert comparison["substance_difference"] == 0.0
    assert comparison["style_difference"] == pytest.approx(5 / 15)


def test_the_longest_form_is_replaced_first_and_forms_are_normalised(tmp_path: Path) -> None:
    synonyms = load_synonyms(
        _write(tmp_path, "atm = a t m\ntee = t\nemail = e-mail\npercent = per cent\n")
    )
    assert synonyms.words("the A T M and a t") == ["the", "atm", "and", "a", "tee"]
    assert synonyms.words("my E-Mail") == ["my", "email"]
    assert synonyms.words("5 per cent") == ["five", "percent"]
    assert synonyms.words("5%") == ["five", "percent"]
    assert synonyms.groups == 4


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("okay ok\n", 1, "has no '='"),
        ("# a comment\nokay = \n", 2, "form 2 is empty"),
        ("= ok\n", 1, "form 1 is empty"),
        ("okay == ok\n", 1, "form 2 is empty"),
        ("percent = %\n", 1, "no words after the documented normalisation"),
        ("okay = ok = OK\n", 1, "equal already"),
        ("okay = ok\n\nfine = OK\n", 3, "already in the group of line 1"),
        ("okay = ok\nok = alright\n", 2, "already in the group of line 1"),
    ],
)
def test_every_bad_line_is_a_config_error_naming_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_synonyms(path)
    assert caught.value.field == f"{path}:{line}"
    assert message in caught.value.problem


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   # and another\n"])
def test_a_file_without_groups_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match="holds no synonym groups") as caught:
        load_synonyms(path)
    assert caught.value.field == str(path)


def test_a_missing_or_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.txt"
    with pytest.raises(ConfigError, match="cannot read the synonyms file") as caught:
        load_synonyms(missing)
    assert caught.value.field == str(missing)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 = cafe\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_synonyms(latin)


def test_a_bom_is_allowed_and_the_demo_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffokay = ok\n".encode())
    assert load_synonyms(path).words("OK") == ["okay"]
    assert parse_synonyms("okay = ok", "inline").source == "inline"
    demo = Path(__file__).parents[2] / "data" / "lexicon" / "synonyms.txt"
    assert load_synonyms(demo).groups >= 2


def test_variants_without_results_and_a_missing_control_render_without_error() -> None:
    made = Traffic()
    _said(made, "custom", "c0", "okay send it", "ok send it")
    section = style_section(_results(made), control="base", variants=["base", "custom"])
    base, custom = section["variants"]
    assert base["utterances"] == 0
    assert base["raw"] is None
    assert base["normalised"] is None
    assert base["removed_by_normalisation"] is None
    assert custom["normalised"]["ci"] is None  # one unit: no interval
    assert section["comparisons"] == []
    lines = style_text(section)
    assert any(line.startswith("base") and "–" in line for line in lines)
    assert 'data-variant="base"' in style_html(section)
    json.dumps(section, allow_nan=False)


def _rendered_section(tmp_path: Path) -> dict[str, Any]:
    made = Traffic()
    for unit in range(6):
        _said(made, "base", f"b{unit}", "okay send it", "okay send it")
        _said(made, "custom", f"c{unit}", "okay send it", "OK, send it")
    synonyms = load_synonyms(_write(tmp_path, "okay = ok\n", name="<b>syn&.txt"))
    return style_section(
        _results(made), control="base", variants=["base", "custom"], synonyms=synonyms
    )


def test_text_shows_each_level_and_the_style_and_substance_parts(tmp_path: Path) -> None:
    lines = style_text(_rendered_section(tmp_path))
    text = "\n".join(lines)
    assert "raw WER" in text
    assert "normalised WER" in text
    assert "+ synonyms WER" in text
    (difference,) = [line for line in lines if line.startswith("custom - base")]
    # Every unit alike, so each interval is a single point.
    assert re.split(r"\s{2,}", difference)[1:] == [
        "+33.3 pp [+33.3, +33.3]",
        "+33.3 pp [+33.3, +33.3]",
        "+0.0 pp [+0.0, +0.0]",
        "+0.0 pp",
        "+33.3 pp",
    ]


def test_html_escapes_every_string_and_tolerates_junk(tmp_path: Path) -> None:
    section = _rendered_section(tmp_path)
    section["variants"][1]["name"] = "<script>alert(1)</script>"
    html = style_html(section)
    assert 'data-section="style"' in html
    assert "<script>" not in html
    assert "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;syn&amp;.txt" in html
    assert style_html(None) == ""
    assert style_text(None) == []
    assert style_html({"variants": "junk"}) == ""
    junk = {"levels": ["raw", "bogus"], "variants": [{"name": 3, "raw": {"wer": "x"}}]}
    assert "3" in "\n".join(style_text(junk))
    assert "<td>3</td>" in style_html(junk)
