"""Domain terms derived from a custom model's training corpus, by a documented rule.

A Custom Speech model is trained on a plain-text corpus: sentences of the domain, one a line.
Its recurring multi-word phrases are what the model was trained to get right ("savings
account", "gold credit card"), so they make a term list when nobody wrote one. The rule
(`derive_terms`), on the corpus's lines after the WER's normalisation:

1. candidates are the phrases of 2 or 3 consecutive words of a line in which every word is a
   content word: not in `FUNCTION_WORDS` (English articles, pronouns, prepositions,
   auxiliaries, numbers, time words and the like), and not a single letter;
2. a candidate is kept when at least `min_lines` lines (default 3) contain it;
3. a kept phrase that occurs only inside one longer kept phrase (it is in exactly as many
   lines as the longer one) is dropped: "gold credit" goes, "gold credit card" stays;
4. the kept phrases are ranked by the lines that contain them (ties alphabetically) and the
   first `limit` (default 200) are the term list, in that order.

Single words are never derived: without a general-language baseline a frequent word of the
corpus ("pay", "monday") is as likely generic as domain-specific. Name single-word terms in a
term file instead. The derived list is reported like a file's, with `source` saying where it
came from, so it can be reviewed and, if wanted, saved as a term file and edited.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from gateway.analysis.terms import Term, TermList, load_terms, read_text_file
from gateway.errors import ConfigError
from gateway.text.normalize import normalize_words

MIN_LINES: Final = 3
LIMIT: Final = 200
LENGTHS: Final = (2, 3)  # words in a derived term

# Words that never start, end or sit inside a derived term (after normalisation, which
# spells numbers out): function words, numbers and time words, which recur in any corpus.
_FUNCTION_WORDS_TEXT: Final = """
    a about above after again against all also am an and any are as at away be because been
    before being below between both but by can cannot could did do does doing done down during
    each early either else ever every few for from further get gets getting got had has have
    having he her here hers him his how however i if in into is it its just late less let like
    many may me might mine more most much must my near need needs neither never new next no nor
    old not now of off often on once only or other our ours out over own per please quite
    rather really right same she should since so some someone something soon still such than
    that the their theirs them then there these they this those though through to too under
    until up upon us used very want wants was we were what when where which while who whom
    whose why will with within without would yes yet you your yours zero one two three four
    five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen
    eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand
    million billion first second third last dollar dollars cent cents percent today tomorrow
    yesterday morning afternoon evening night day days week weeks month months year years
    monday tuesday wednesday thursday friday saturday sunday january february march april june
    july august september october november december
"""
FUNCTION_WORDS: Final = frozenset(_FUNCTION_WORDS_TEXT.split())


def derive_terms(
    lines: Iterable[str], source: str, *, min_lines: int = MIN_LINES, limit: int = LIMIT
) -> TermList:
    """The term list the rule (module doc) derives from a corpus's lines; `source` names the
    corpus in the report and in errors. A corpus that yields no term is a ConfigError."""
    if min_lines < 1 or limit < 1:
        raise ValueError(f"min_lines and limit must be at least 1, got {min_lines}, {limit}")
    counts: Counter[tuple[str, ...]] = Counter()
    for line in lines:
        counts.update(_phrases(normalize_words(line)))
    kept = {phrase: n for phrase, n in counts.items() if n >= min_lines}
    inside = _only_inside_longer(kept)
    ranked = sorted(
        (phrase for phrase in kept if phrase not in inside),
        key=lambda phrase: (-kept[phrase], phrase),
    )[:limit]
    if not ranked:
        raise ConfigError(
            source,
            f"the corpus yields no terms (no phrase of {LENGTHS[0]}-{LENGTHS[-1]} content "
            f"words in at least {min_lines} lines)",
        )
    terms = tuple(Term(phrase, " ".join(phrase)) for phrase in ranked)
    return TermList(terms, f"derived from {source}")


def load_corpus_terms(path: str | Path) -> TermList:
    """The terms derived from a corpus file (UTF-8 text, a sentence a line)."""
    text = read_text_file(path, "corpus")
    return derive_terms(text.splitlines(), str(path))


def _phrases(words: Sequence[str]) -> set[tuple[str, ...]]:
    """The candidate phrases of one line, each once (a line counts a phrase once)."""
    found: set[tuple[str, ...]] = set()
    for length in LENGTHS:
        for start in range(len(words) - length + 1):
            phrase = tuple(words[start : start + length])
            if all(_content(word) for word in phrase):
                found.add(phrase)
    return found


def _content(word: str) -> bool:
    return len(word) > 1 and word not in FUNCTION_WORDS


def _only_inside_longer(kept: dict[tuple[str, ...], int]) -> set[tuple[str, ...]]:
    """Kept phrases in exactly as many lines as a longer kept phrase that contains them."""
    inside: set[tuple[str, ...]] = set()
    for longer, count in kept.items():
        for length in LENGTHS:
            if length >= len(longer):
                continue
            for start in range(len(longer) - length + 1):
                part = longer[start : start + length]
                if kept.get(part) == count:
                    inside.add(part)
    return inside


def experiment_terms(terms: str | Path | None, corpus: str | Path | None) -> TermList | None:
    """An experiment's term list: its term file, else the terms derived from its corpus,
    else None. A file that cannot be used is a ConfigError naming it."""
    if terms is not None:
        return load_terms(terms)
    return None if corpus is None else load_corpus_terms(corpus)
