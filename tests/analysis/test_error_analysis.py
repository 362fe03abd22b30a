"""The report's `errors` section: every part, for the analysed phase, in JSON, text and HTML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from traffic import INFO, Traffic

from gateway.analysis.error_analysis import ErrorInputs, errors_html, errors_text
from gateway.analysis.html_report import render_html
from gateway.analysis.report import build_report
from gateway.analysis.style import parse_synonyms
from gateway.analysis.terms import parse_terms
from gateway.analysis.text_report import render_text

TERMS = parse_terms("available balance\nsavings account\nretirement account\n", "terms.txt")
SYNONYMS = parse_synonyms("okay = ok\n", "synonyms.txt")


def traffic() -> Traffic:
    made = Traffic()
    made.ab(40, base_error=0.4, custom_error=0.05)
    return made


def test_every_part_is_there_for_the_current_phase() -> None:
    report = traffic().report(errors=None)
    assert report["errors"] is not None
    errors = report["errors"]
    assert (errors["phase"], errors["control"]) == ("p1", "base")
    assert errors["terms"] is None  # no term list
    for part in ("words", "segments", "style", "worst"):
        assert errors[part] is not None, part
    json.dumps(report, allow_nan=False)


def test_the_term_list_and_synonyms_reach_their_parts() -> None:
    made = traffic()
    report = made.report(errors=ErrorInputs(terms=TERMS, synonyms=SYNONYMS))
    terms = report["errors"]["terms"]
    names = {v["name"] for v in terms["variants"]}
    assert names == {"base", "custom"}
    assert report["errors"]["style"]["synonyms"] is not None
    text = "\n".join(errors_text(report["errors"]))
    assert "Error analysis (phase p1" in text
    html = errors_html(report["errors"])
    assert 'data-section="errors"' in html
    assert 'data-section="terms"' in html
    # The whole report renders with the section in it.
    assert 'data-section="errors"' in render_html(report)
    assert "Error analysis" in render_text(report)


def test_without_labels_there_is_no_section() -> None:
    made = Traffic()
    for i in range(10):
        made.utterance("base", i, label=False)
        made.utterance("custom", i, label=False)
    report = made.report()
    assert report["errors"] is None
    assert errors_text(None) == []
    assert errors_html(None) == ""


def _documented_section() -> Any:
    """The example `errors` section of docs/error-analysis.md, parsed."""
    page = (Path(__file__).parents[2] / "docs" / "error-analysis.md").read_text()
    block = page.split("```json\n")[-1].split("\n```")[0]
    assert block.startswith('"errors": {')
    return json.loads("{" + block + "}")["errors"]


def test_the_documented_section_has_the_reports_fields() -> None:
    """Each part of the page's example has exactly the keys of a real section's part, and so
    have its first variant and comparison entries: the schema the page gives is the one made."""
    made = traffic()
    real = made.report(errors=ErrorInputs(terms=TERMS, synonyms=SYNONYMS))["errors"]
    documented = _documented_section()
    assert set(documented) == set(real)
    for part in ("words", "terms", "segments", "style", "worst"):
        assert set(documented[part]) == set(real[part]), part
    pairs = [
        ("words", "variants"),
        ("words", "changes"),
        ("terms", "variants"),
        ("terms", "comparisons"),
        ("style", "variants"),
        ("style", "comparisons"),
        ("worst", "variants"),
    ]
    for part, key in pairs:
        doc_entry = documented[part][key][0]
        real_entry = real[part][key][0]
        assert set(doc_entry) == set(real_entry), (part, key)
    doc_item = documented["worst"]["variants"][0]["items"][0]
    assert set(doc_item) == set(real["worst"]["variants"][0]["items"][0])
    doc_segment = documented["segments"]["dimensions"]["duration"][0]
    real_segment = real["segments"]["dimensions"]["duration"][1]
    assert set(doc_segment) == set(real_segment)
    assert set(real["segments"]["dimensions"]) == {
        "locale",
        "client",
        "mode",
        "duration",
        "confidence",
    }


def test_a_selected_phase_without_labels_has_no_section_of_another_phase() -> None:
    """Asked for a phase with no labelled results, the section is null: it never describes
    another phase than the one asked for."""
    made = traffic()
    for i in range(10):
        made.utterance("base", 1000 + i, label=False, phase="p2")
        made.utterance("custom", 2000 + i, label=False, phase="p2")
    selected = build_report("e", made.records, made.labels, info=INFO, phase="p2")
    assert selected["errors"] is None
    assert build_report("e", made.records, made.labels, info=INFO)["errors"]["phase"] == "p1"
