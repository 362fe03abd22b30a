"""Where the errors are: planted word errors come out ranked with their hand-counted shares,
changes between arms are judged per 1,000 reference words, and the export round-trips."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest
from traffic import Traffic

from gateway.analysis.labelled import LabelledResult, labelled_results
from gateway.analysis.word_errors import (
    EXPORT_FIELDS,
    alignment_rows,
    words_html,
    words_section,
    words_text,
    write_alignments,
)
from gateway.errors import ConfigError
from gateway.stats.wer import WerCounts, alignment


def results(made: Traffic, variant: str, n: int, reference: str, hypothesis: str) -> list[Any]:
    """n labelled results of one variant, each its own unit, with a known alignment."""
    found = []
    for _ in range(n):
        record = made.utterance(variant, len(made.records), text=hypothesis, label=False)
        found.append(LabelledResult(record, reference, alignment(reference, hypothesis)))
    return found


BALANCE = "what is my available balance today"
FEE = "why was i charged a fee last month"


def planted() -> list[LabelledResult]:
    """31 errors of the base model: substitutions 9 + 4 + 2, deletions 5 + 3, insertions 6 + 2."""
    made = Traffic()
    return [
        *results(made, "base", 2, FEE, "why was i charged a free last month"),
        *results(made, "base", 3, "close my card", "close card"),
        *results(made, "base", 2, "check my balance", "um check my balance"),
        *results(made, "base", 4, "close my account please", "close my count please"),
        *results(made, "base", 5, "send the money please", "send the money"),
        *results(made, "base", 6, "check my balance", "uh check my balance"),
        *results(made, "base", 9, BALANCE, "what is my available ballots today"),
        *results(made, "base", 7, BALANCE, BALANCE),
    ]


def test_planted_errors_are_ranked_first_with_hand_counted_shares() -> None:
    section = words_section(planted(), control="base", variants=["base"])
    (base,) = section["variants"]
    assert (base["name"], base["utterances"], base["errors"]) == ("base", 38, 31)
    # 16 x 6 + 2 x 8 + 3 x 3 + 8 x 3 + 4 x 4 + 5 x 4 reference words
    assert base["reference_words"] == 96 + 16 + 9 + 24 + 16 + 20
    assert base["substitutions"] == [
        {"reference": "balance", "hypothesis": "ballots", "count": 9, "share": 9 / 31},
        {"reference": "account", "hypothesis": "count", "count": 4, "share": 4 / 31},
        {"reference": "fee", "hypothesis": "free", "count": 2, "share": 2 / 31},
    ]
    assert base["deletions"] == [
        {"word": "please", "count": 5, "share": 5 / 31},
        {"word": "my", "count": 3, "share": 3 / 31},
    ]
    assert base["insertions"] == [
        {"word": "uh", "count": 6, "share": 6 / 31},
        {"word": "um", "count": 2, "share": 2 / 31},
    ]
    assert base["distinct"] == {"substitutions": 3, "deletions": 2, "insertions": 2}
    assert section["changes"] == []


def test_the_lists_keep_the_top_keys_and_count_the_rest() -> None:
    (base,) = words_section(planted(), control="base", variants=["base"], top=1)["variants"]
    assert [e["hypothesis"] for e in base["substitutions"]] == ["ballots"]
    assert [e["word"] for e in base["deletions"]] == ["please"]
    assert base["distinct"]["substitutions"] == 3
    with pytest.raises(ValueError, match="top must be a positive integer, got 0"):
        words_section(planted(), control="base", variants=["base"], top=0)


def test_ties_are_broken_alphabetically_whatever_the_input_order() -> None:
    made = Traffic()
    found = [
        *results(made, "base", 2, "zebra crossing", "zebras crossing"),
        *results(made, "base", 2, "apple pie", "apples pie"),
        *results(made, "base", 2, "send it", "send"),
        *results(made, "base", 2, "send all", "send"),
    ]
    first = words_section(found, control="base", variants=["base"])
    (base,) = first["variants"]
    assert [e["reference"] for e in base["substitutions"]] == ["apple", "zebra"]
    assert [e["word"] for e in base["deletions"]] == ["all", "it"]
    shuffled = list(found)
    random.Random(3).shuffle(shuffled)
    assert words_section(shuffled, control="base", variants=["base"]) == first


def arms() -> list[LabelledResult]:
    """Control: 200 reference words; challenger: 400 (module doc: rates per 1,000 words)."""
    made = Traffic()
    hello = "hello there"
    control = [
        *results(made, "base", 10, BALANCE, "what is my available ballots today"),  # 60 words
        *results(made, "base", 2, FEE, "why was i charged a free last month"),  # 16
        *results(made, "base", 3, "send the money please", "send the money"),  # 12
        *results(made, "base", 4, "close my card", "close card"),  # 12
        *results(made, "base", 50, hello, hello),  # 100
    ]
    challenger = [
        *results(made, "custom", 20, BALANCE, BALANCE),  # 120 words
        *results(made, "custom", 6, "send the money please", "send the money"),  # 24
        *results(made, "custom", 8, "check my balance", "check my balances"),  # 24
        *results(made, "custom", 1, FEE, "why was i charged a free last month"),  # 8
        *results(made, "custom", 1, "close my card", "close card"),  # 3
        *results(made, "custom", 1, "close my card", "close my card"),  # 3
        *results(made, "custom", 4, hello, "uh hello there"),  # 8
        *results(made, "custom", 105, hello, hello),  # 210
    ]
    return control + challenger


def test_fixed_and_introduced_errors_are_judged_per_thousand_reference_words() -> None:
    section = words_section(arms(), control="base", variants=["base", "custom"])
    assert [v["reference_words"] for v in section["variants"]] == [200, 400]
    (change,) = section["changes"]
    assert change["challenger"] == "custom"
    assert change["note"] is None
    assert change["fixed"] == [
        {
            "kind": "substitution",
            "reference": "balance",
            "hypothesis": "ballots",
            "control_count": 10,
            "challenger_count": 0,
            "control_per_1000": pytest.approx(50.0),
            "challenger_per_1000": 0.0,
            "difference_per_1000": pytest.approx(-50.0),
        },
        {
            "kind": "deletion",
            "reference": "my",
            "hypothesis": None,
            "control_count": 4,
            "challenger_count": 1,
            "control_per_1000": pytest.approx(20.0),
            "challenger_per_1000": pytest.approx(2.5),
            "difference_per_1000": pytest.approx(-17.5),
        },
    ]
    introduced = [(e["kind"], e["reference"], e["hypothesis"]) for e in change["introduced"]]
    assert introduced == [("substitution", "balance", "balances"), ("insertion", None, "uh")]
    assert [e["difference_per_1000"] for e in change["introduced"]] == pytest.approx([20.0, 10.0])
    # "please" is deleted 6 times by custom and 3 times by base: twice the count, but in twice
    # the words, so the same rate and no change; "fee -> free" is too rare in base (2 < 3).
    listed = {(e["reference"], e["hypothesis"]) for e in change["fixed"] + change["introduced"]}
    assert ("please", None) not in listed
    assert ("fee", "free") not in listed


def test_an_empty_input_gives_empty_lists_and_says_so() -> None:
    section = words_section([], control="base", variants=["base", "custom"])
    for variant in section["variants"]:
        assert variant["utterances"] == variant["errors"] == variant["reference_words"] == 0
        assert variant["substitutions"] == variant["deletions"] == variant["insertions"] == []
    (change,) = section["changes"]
    assert (change["fixed"], change["introduced"]) == ([], [])
    assert change["note"] == "no labelled reference words in either arm"
    assert "base: no labelled utterances" in words_text(section)
    assert "custom: no labelled utterances" in words_text(section)
    assert "not compared: no labelled reference words in either arm" in "\n".join(
        words_text(section)
    )
    html = words_html(section)
    assert html.count('<p class="no-data">No labelled utterances.</p>') == 2
    assert json.loads(json.dumps(section, allow_nan=False)) == section
    assert words_text(None) == []
    assert words_html(None) == ""


def test_a_challenger_without_labels_is_not_compared() -> None:
    section = words_section(planted(), control="base", variants=["base", "custom"])
    (change,) = section["changes"]
    assert change["note"] == "no labelled reference words in custom"


def test_the_totals_are_the_reports_wer_counts() -> None:
    made = Traffic()
    made.ab(40, base_error=0.3, custom_error=0.1)
    found = labelled_results(made.records, made.labels)
    section = words_section(found, control="base", variants=["base", "custom"])
    (phase,) = made.report()["phases"]
    for variant, entry in zip(phase["variants"], section["variants"], strict=True):
        wer = variant["wer"]
        assert entry["name"] == variant["name"]
        assert entry["errors"] == wer["substitutions"] + wer["deletions"] + wer["insertions"]
        # Traffic replaces words by "uh": every substitution recognises "uh".
        assert {e["hypothesis"] for e in entry["substitutions"]} <= {"uh"}
        total = sum((r.alignment.counts for r in found if r.variant == entry["name"]), WerCounts())
        assert entry["reference_words"] == total.reference_words


def test_the_renderers_show_the_ranked_errors_and_the_changes() -> None:
    section = words_section(arms(), control="base", variants=["base", "custom"])
    text = "\n".join(words_text(section))
    assert "balance -> ballots" in text
    assert "fixed:" in text
    assert "introduced:" in text
    assert "deleted: my" in text
    assert "inserted: uh" in text
    html = words_html(section)
    assert 'data-section="words"' in html
    assert '<tr data-reference="balance" data-hypothesis="ballots">' in html
    assert 'data-table="fixed" data-challenger="custom"' in html
    assert 'data-table="introduced" data-challenger="custom"' in html
    assert '<span class="status ok">-50.0</span>' in html
    assert '<span class="status bad">+20.0</span>' in html


def test_the_html_escapes_every_word_and_name_of_a_hand_edited_report() -> None:
    section = words_section(planted(), control="base", variants=["base"])
    section["variants"][0]["name"] = "<b>base</b>"
    section["variants"][0]["substitutions"][0]["hypothesis"] = '<script>"x"</script>'
    section["variants"][0]["deletions"][0]["word"] = "a&b"
    html = words_html(section)
    assert "<script>" not in html
    assert "<b>" not in html
    assert "&lt;script&gt;&quot;x&quot;&lt;/script&gt;" in html
    assert "a&amp;b" in html
    assert "&lt;b&gt;base&lt;/b&gt;" in html
    # Anything unexpected renders, never raises.
    assert words_text({"variants": [{"name": 1, "substitutions": "x"}]}) == [
        "Where the errors are (the most frequent per variant; share = of the variant's errors)",
        "1: no labelled utterances",
    ]
    assert "No labelled utterances" in words_html({"variants": [None]})


def test_alignment_rows_carry_the_aligned_operations() -> None:
    made = Traffic()
    (found,) = results(made, "custom", 1, "Send $200 please", "uh send two hundred dollar")
    (row,) = alignment_rows([found])
    assert row == {
        "record_id": found.record.record_id,
        "variant": "custom",
        "phase": "p1",
        "unit": found.record.unit,
        "reference": "send two hundred dollars please",
        "hypothesis": "uh send two hundred dollar",
        "substitutions": 1,
        "deletions": 1,
        "insertions": 1,
        "hits": 3,
        "ops": [
            ["insert", None, "uh"],
            ["equal", "send", "send"],
            ["equal", "two", "two"],
            ["equal", "hundred", "hundred"],
            ["substitute", "dollars", "dollar"],
            ["delete", "please", None],
        ],
    }
    assert list(row) == list(EXPORT_FIELDS)


def test_both_file_formats_round_trip(tmp_path: Path) -> None:
    rows = list(alignment_rows(arms() + planted()))
    assert write_alignments(tmp_path / "a.jsonl", rows) == len(rows)
    lines = (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows

    assert write_alignments(tmp_path / "a.CSV", iter(rows)) == len(rows)
    with (tmp_path / "a.CSV").open(encoding="utf-8", newline="") as found:
        back = list(csv.DictReader(found))
    assert len(back) == len(rows)
    for read, row in zip(back, rows, strict=True):
        assert list(read) == list(EXPORT_FIELDS)
        counts = ("substitutions", "deletions", "insertions", "hits")
        assert {k: int(read[k]) for k in counts} == {k: row[k] for k in counts}
        assert json.loads(read["ops"]) == row["ops"]
        assert {k: read[k] for k in ("record_id", "variant", "phase", "unit")} == {
            k: row[k] for k in ("record_id", "variant", "phase", "unit")
        }
        assert (read["reference"], read["hypothesis"]) == (row["reference"], row["hypothesis"])


def test_a_phase_less_record_exports_an_empty_phase_cell(tmp_path: Path) -> None:
    made = Traffic()
    record = made.utterance("base", 0, text="hello", label=False, phase=None)
    row = next(alignment_rows([LabelledResult(record, "hello", alignment("hello", "hello"))]))
    assert row["phase"] is None
    write_alignments(tmp_path / "a.csv", [row])
    with (tmp_path / "a.csv").open(encoding="utf-8", newline="") as found:
        (read,) = csv.DictReader(found)
    assert read["phase"] == ""
    assert json.loads(read["ops"]) == [["equal", "hello", "hello"]]


def test_an_unknown_extension_or_an_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--alignments: expected a file name ending in .jsonl"):
        write_alignments(tmp_path / "a.txt", [])
    assert not (tmp_path / "a.txt").exists()
    with pytest.raises(ConfigError) as raised:
        write_alignments(tmp_path / "missing" / "a.jsonl", [])
    assert raised.value.field == "--alignments"
    assert "cannot write" in raised.value.problem
    assert "No such file" in raised.value.problem
