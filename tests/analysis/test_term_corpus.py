"""Terms derived from a training corpus: the documented rule, on corpora with a known answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.analysis.term_corpus import (
    FUNCTION_WORDS,
    derive_terms,
    experiment_terms,
    load_corpus_terms,
)
from gateway.errors import ConfigError

DEMO_CORPUS = Path(__file__).parents[2] / "data" / "demo" / "banking" / "corpus.txt"


def texts(lines: list[str], **options: int) -> list[str]:
    return [term.text for term in derive_terms(lines, "corpus.txt", **options).terms]


def test_phrases_in_enough_lines_are_ranked_by_their_lines() -> None:
    corpus = [
        "Open a savings account.",
        "Close my savings account today.",
        "Is my savings account open?",
        "My credit card was declined.",
        "The credit card is blocked.",
        "Order a credit card for me.",
        "Where is my credit card?",
        "A wire transfer, please.",  # twice only: below the minimum of three lines
        "Send a wire transfer.",
    ]
    assert texts(corpus) == ["credit card", "savings account"]
    assert texts(corpus, min_lines=2) == ["credit card", "savings account", "wire transfer"]
    assert texts(corpus, limit=1) == ["credit card"]


def test_a_line_counts_a_phrase_once_and_ties_go_alphabetically() -> None:
    corpus = ["debit card debit card debit card", "zebra fund", "zebra fund", "zebra fund"]
    with pytest.raises(ConfigError, match="no terms"):
        derive_terms(corpus[:1], "c.txt")
    assert texts(["debit card", "debit card", "debit card", *corpus[1:]]) == [
        "debit card",
        "zebra fund",
    ]


def test_function_words_numbers_and_time_words_never_make_a_term() -> None:
    corpus = ["I want to pay fifty dollars on Monday morning."] * 5
    with pytest.raises(ConfigError, match=r"corpus\.txt: the corpus yields no terms"):
        derive_terms(corpus, "corpus.txt")
    # "$50" is normalised to number words, which are function words here.
    assert {"fifty", "dollars", "monday", "morning", "want"} <= FUNCTION_WORDS


def test_a_phrase_only_inside_a_longer_one_goes_and_a_more_frequent_one_stays() -> None:
    gold = ["Cancel my gold credit card."] * 3
    plain = ["My credit card is lost."] * 2
    # "gold credit" is in exactly the lines of "gold credit card": only the longer stays;
    # "credit card" is in more lines, so it stays too.
    assert texts([*gold, *plain]) == ["credit card", "gold credit card"]
    assert texts(gold) == ["gold credit card"]


def test_single_words_are_never_derived() -> None:
    with pytest.raises(ConfigError, match="no terms"):
        derive_terms(["Overdraft.", "Overdraft!", "Overdraft?", "Mortgage", "Mortgage"], "c")


def test_the_demo_corpus_gives_the_banking_products() -> None:
    found = load_corpus_terms(DEMO_CORPUS)
    assert found.source == f"derived from {DEMO_CORPUS}"
    names = [term.text for term in found.terms]
    # docs/error-analysis.md gives these figures.
    assert (len(names), names[:3]) == (43, ["checking account", "credit card", "savings account"])
    assert {"gold credit card", "debit card", "retirement account", "interest rate"} <= set(names)
    assert all(2 <= len(term.words) <= 3 for term in found.terms)


def test_a_bad_corpus_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the corpus"):
        load_corpus_terms(tmp_path / "absent.txt")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.txt:1: not UTF-8"):
        load_corpus_terms(latin)
    with pytest.raises(ValueError, match="at least 1"):
        derive_terms([], "c", min_lines=0)


def test_the_term_file_wins_over_the_corpus(tmp_path: Path) -> None:
    terms = tmp_path / "terms.txt"
    terms.write_text("overdraft\n", encoding="utf-8")
    chosen = experiment_terms(terms, DEMO_CORPUS)
    assert chosen is not None
    assert [t.text for t in chosen.terms] == ["overdraft"]
    derived = experiment_terms(None, DEMO_CORPUS)
    assert derived is not None
    assert derived.source.startswith("derived from")
    assert experiment_terms(None, None) is None
