"""The worst utterances: ordering and ties, shadow pairs side by side, safe rendering."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from traffic import Traffic

from gateway.analysis.labelled import labelled_results, shadow_results
from gateway.analysis.worst import worst_html, worst_section, worst_text
from gateway.outcomes.labels import Label
from gateway.outcomes.record import OutcomeRecord, Role


def _said(made: Traffic, variant: str, reference: str, text: str, unit: str = "") -> OutcomeRecord:
    record = made.utterance(variant, len(made.records), unit=unit or None, text=text)
    made.labels[record.record_id] = Label(
        record_id=record.record_id, text=reference, labeller="test", source="import"
    )
    return record


def _section(made: Traffic, **options: Any) -> dict[str, Any]:
    results = labelled_results(made.records, made.labels)
    shadows = shadow_results(made.records, made.labels)
    return worst_section(results, shadows, variants=["base", "custom"], **options)


def test_most_errors_first_then_the_higher_rate_then_the_record_id() -> None:
    made = Traffic()
    ten = "one two three four five six seven eight nine ten"
    many = _said(made, "base", ten, "uh two uh four uh six seven eight nine ten")  # 3 of 10
    dense = _said(made, "base", "one two three four five", "uh uh uh four five")  # 3 of 5
    ties = [_said(made, "base", "one two three four", "uh two three four") for _ in range(3)]
    _said(made, "base", "one two", "one two")  # no error: never among the worst
    _said(made, "custom", "one two", "one")
    section = _section(made)
    base, custom = section["variants"]
    order = [item["record_id"] for item in base["items"]]
    assert order == [
        dense.record_id,
        many.record_id,
        *sorted(record.record_id for record in ties),
    ]
    assert base["utterances"] == 6
    assert base["with_errors"] == 5
    assert [item["errors"] for item in base["items"]] == [3, 3, 1, 1, 1]
    assert base["items"][0]["wer"] == pytest.approx(0.6)
    (only,) = custom["items"]
    assert only["ops"] == [["equal", "one", "one"], ["delete", "two", None]]
    assert only["reference"] == ["one", "two"]
    assert only["audio"] is None
    assert section["shadow_pairs"] == []
    json.dumps(section, allow_nan=False)


def test_top_limits_each_variant_and_must_be_positive() -> None:
    made = Traffic()
    for index in range(5):
        _said(made, "base", "send money now", " ".join(["uh"] * (index + 1)))
    section = _section(made, top=2)
    base, custom = section["variants"]
    assert [item["errors"] for item in base["items"]] == [5, 4]
    assert base["with_errors"] == 5
    assert custom == {"name": "custom", "utterances": 0, "with_errors": 0, "items": []}
    with pytest.raises(ValueError, match="top must be at least 1"):
        _section(made, top=0)


def test_the_aligned_words_carry_every_kind_of_operation() -> None:
    made = Traffic()
    _said(
        made,
        "base",
        "send two hundred dollars to my savings",
        "send to hundred dollars my savings uh",
    )
    (item,) = _section(made)["variants"][0]["items"]
    assert item["ops"] == [
        ["equal", "send", "send"],
        ["substitute", "two", "to"],
        ["equal", "hundred", "hundred"],
        ["equal", "dollars", "dollars"],
        ["delete", "to", None],
        ["equal", "my", "my"],
        ["equal", "savings", "savings"],
        ["insert", None, "uh"],
    ]
    assert (item["substitutions"], item["deletions"], item["insertions"]) == (1, 1, 1)
    text = "\n".join(worst_text(_section(made)))
    assert "send [two->to] hundred dollars -to my savings +uh" in text


def _shadow_of(made: Traffic, primary: OutcomeRecord, variant: str, text: str) -> OutcomeRecord:
    shadow = dataclasses.replace(
        primary,
        record_id=f"{len(made.records):032x}",
        role=Role.SHADOW,
        variant=variant,
        text=text,
    )
    made.records.append(shadow)
    return shadow


def test_shadow_pairs_put_both_alignments_of_the_same_audio_side_by_side() -> None:
    made = Traffic()
    reference = "close my retirement account please"
    small = _said(made, "base", reference, "close my retirement account please")
    _shadow_of(made, small, "custom", "close my retirement count please")  # +1 for the shadow
    large = _said(made, "custom", reference, "close my retirement account please")
    _shadow_of(made, large, "base", "clothes by retirement count")  # +4 for the shadow
    same = _said(made, "base", reference, "close my account please")
    _shadow_of(made, same, "custom", "close my retirement account")  # equal counts: left out
    worse = _said(made, "base", reference, "uh my retirement uh please")
    _shadow_of(made, worse, "custom", "close my retirement account please")  # -2
    section = _section(made)
    pairs = section["shadow_pairs"]
    assert [pair["record_id"] for pair in pairs] == [
        large.record_id,
        worse.record_id,
        small.record_id,
    ]
    assert [pair["difference"] for pair in pairs] == [4, -2, 1]
    first = pairs[0]
    assert first["served"]["variant"] == "custom"
    assert first["shadow"]["variant"] == "base"
    assert first["served"]["errors"] == 0
    assert first["shadow"]["errors"] == 4
    assert first["reference"] == reference.split()
    # Both sides are aligned with the same reference words.
    for side in (first["served"], first["shadow"]):
        said = [ref for _, ref, _ in side["ops"] if ref is not None]
        assert said == reference.split()
    assert first["shadow"]["ops"][0] == ["substitute", "close", "clothes"]
    assert first["audio"] is None
    assert len(_section(made, top=1)["shadow_pairs"]) == 1
    html = worst_html(section)
    row = html.split(f'data-record="{large.record_id}"')[1].split("</tr>")[0]
    assert row.index('data-variant="custom"') < row.index('data-variant="base"')
    assert 'title="said &#x27;close&#x27;, recognised &#x27;clothes&#x27;"' in row
    text = worst_text(section)
    assert any("custom served 0 errors, base shadow 4 errors" in line for line in text)
    assert any(line.strip().startswith("base: [close->clothes]") for line in text)


def test_html_shows_hostile_transcripts_as_text() -> None:
    made = Traffic()
    hostile = "<script>alert('x')</script> don't <img src=x onerror=alert(1)>"
    record = _said(made, "base", "don't pay the bill", hostile)
    section = _section(made)
    html = worst_html(section)
    assert 'data-section="worst"' in html
    assert "<script>" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert f'data-record="{record.record_id}"' in html
    # Every op is a span of its own class; "don't" survives in a title attribute, escaped.
    for css in ("op-equal", "op-sub", "op-ins"):
        assert f'class="{css}"' in html
    assert 'title="recognised as said">don&#x27;t</span>' in html
    # A hand-edited report cannot inject markup or classes either.
    section["variants"][0]["name"] = '"><b>x</b>'
    section["variants"][0]["items"][0]["ops"] = [
        ["insert", None, "<b>bold</b>"],
        ["bogus", "a", "b"],
        "junk",
    ]
    html = worst_html(section)
    assert "<b>" not in html
    assert (
        'class="op-ins" title="recognised &#x27;&lt;b&gt;bold&lt;/b&gt;&#x27;, not said">'
        "+&lt;b&gt;bold&lt;/b&gt;</span>"
    ) in html
    assert "bogus" not in html


def test_empty_and_junk_sections_render_a_note_or_nothing() -> None:
    made = Traffic()
    _said(made, "base", "one two", "one two")
    section = _section(made)
    assert section["variants"][0]["items"] == []
    assert worst_text(section)[1:] == [
        "  base: none of its 1 labelled utterances has an error",
        "  custom: no labelled utterance",
    ]
    assert "base: none of its 1 labelled utterances has an error." in worst_html(section)
    assert worst_text(None) == []
    assert worst_html(None) == ""
    assert worst_html({"variants": 5, "shadow_pairs": "x"}) == ""
    junk = {"variants": [{"name": "v", "items": [{"errors": "many", "ops": 3}]}]}
    assert any("– errors" in line for line in worst_text(junk))
    assert "<td>–" in worst_html(junk)
