"""Text normalisation for WER scoring and LM corpora, and the Azure-style result forms.

`normalize_words(text)` turns written text into the lexical (spoken) word sequence. The rules,
applied in this order:

1. Unicode NFKC, then lower case; the apostrophes ’ (U+2019) and ʼ (U+02BC) become '.
2. Money: "$" + amount → "<amount> dollars", and non-zero cents (the first two decimal digits)
   → "and <cents> cents": "$1,200.50" → "one thousand two hundred dollars and fifty cents",
   "$200" → "two hundred dollars". Exactly one is singular ("one dollar", "one cent"); zero
   dollars with cents says only the cents ("$0.50" → "fifty cents").
3. Percent: "<number>%" or "<number> %" → "<number> percent" ("5%" → "five percent").
4. Ordinals: digits + st/nd/rd/th → ordinal words ("3rd" → "third", "21st" → "twenty first").
5. Other numbers → words, with "," accepted only as a thousands separator ("1,200") and a
   decimal part read digit by digit ("2.5" → "two point five"). Numbers with a leading zero
   ("007") or of 10**12 and above are read digit by digit ("zero zero seven").
   Number words never contain "and" or hyphens ("two hundred five", "twenty three").
6. "&" → "and".
7. Hyphens and dashes (Unicode class Pd) and "/" become spaces ("e-mail" → "e mail").
8. Apostrophes are kept inside words ("don't", "rock'n'roll") and dropped at word edges
   ("'cause" → "cause"). Letters, combining marks and other numeric characters are kept;
   every other punctuation mark, symbol or control character is deleted without leaving a
   space ("u.s." → "us", "$ 5" → "five dollars" but "#1" → "one").
9. Whitespace is collapsed; the result is the list of the remaining words.

`NORMALISATION_VERSION` names these rules. WER counts stored with labels
(`gateway.outcomes.labels`) record the version that produced them, so that counts made under
other rules are recognised as stale and recomputed (`speech-gateway label rescore`).

`corpus_sentences` applies the same rules to LM training text, one sentence at a time: every
line is a sentence boundary, and so is ".", "!", "?" or ";" followed by whitespace.

`display_text`, `itn_text` and `masked_itn_text` build the service's other result forms from a
lexical word sequence: inverse text normalisation (see `gateway.text.numbers`) and profanity
handling, where a word from `PROFANITY_WORDS` is replaced by asterisks of its length
("masked"), dropped ("removed") or left alone ("raw").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Final, Literal

from gateway.text.numbers import inverse_normalize, number_to_words, ordinal_to_words

Profanity = Literal["masked", "removed", "raw"]

# The version of the rules of `normalize_words` (and everything it calls, such as the number
# words of `gateway.text.numbers`). Bump it with any change that alters what
# `normalize_words` returns for some text: WER counts stored with labels carry it, and counts
# stored under another version are no longer used until `label rescore` recomputes them.
NORMALISATION_VERSION: Final = "1"

# Deliberately small: the emulator only needs to show the three profanity modes working.
PROFANITY_WORDS = frozenset(
    {
        "asshole",
        "bastard",
        "bitch",
        "bullshit",
        "cunt",
        "damn",
        "fuck",
        "fucked",
        "fucker",
        "fucking",
        "motherfucker",
        "shit",
        "shitty",
    }
)

_INTEGER = r"\d{1,3}(?:,\d{3})+|\d+"
_MONEY = re.compile(rf"\$\s?({_INTEGER})(?:\.(\d+))?")
_PERCENT = re.compile(rf"({_INTEGER})(?:\.(\d+))?\s?%")
_ORDINAL = re.compile(rf"({_INTEGER})(?:st|nd|rd|th)\b")
_NUMBER = re.compile(rf"({_INTEGER})(?:\.(\d+))?")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'"})
_NUMBER_LIMIT = 10**12


def _digits_to_words(digits: str) -> str:
    return " ".join(number_to_words(int(d)) for d in digits)


def _integer_words(integer: str) -> str:
    digits = integer.replace(",", "")
    if (len(digits) > 1 and digits.startswith("0")) or int(digits) >= _NUMBER_LIMIT:
        return _digits_to_words(digits)
    return number_to_words(int(digits))


def _number_words(integer: str, fraction: str | None) -> str:
    words = _integer_words(integer)
    return f"{words} point {_digits_to_words(fraction)}" if fraction else words


def _money(match: re.Match[str]) -> str:
    dollars = int(match[1].replace(",", ""))
    cents = int((match[2] or "").ljust(2, "0")[:2])
    parts = []
    if dollars or not cents:
        parts.append(f"{_integer_words(match[1])} dollar{'' if dollars == 1 else 's'}")
    if cents:
        parts.append(f"{number_to_words(cents)} cent{'' if cents == 1 else 's'}")
    return f" {' and '.join(parts)} "


def _ordinal(match: re.Match[str]) -> str:
    value = int(match[1].replace(",", ""))
    return f" {ordinal_to_words(value)} " if value < _NUMBER_LIMIT else match[0]


def _strip_punctuation(text: str) -> str:
    kept: list[str] = []
    for char in text:
        category = unicodedata.category(char)
        if char.isspace() or category == "Pd" or char == "/":
            kept.append(" ")
        elif char == "'" or category[0] in "LMN":
            kept.append(char)
    return "".join(kept)


def normalize_words(text: str) -> list[str]:
    """The lexical words of `text`, by the rules in the module docstring."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    text = _MONEY.sub(_money, text)
    text = _PERCENT.sub(lambda m: f" {_number_words(m[1], m[2])} percent ", text)
    text = _ORDINAL.sub(_ordinal, text)
    text = _NUMBER.sub(lambda m: f" {_number_words(m[1], m[2])} ", text)
    text = _strip_punctuation(text.replace("&", " and "))
    words = (word.strip("'") for word in text.split())
    return [word for word in words if word]


def corpus_sentences(text: str) -> list[list[str]]:
    """Split corpus text into sentences (module docstring) and normalise each; drop empty ones."""
    sentences: list[list[str]] = []
    for line in text.splitlines():
        for sentence in _SENTENCE_END.split(line):
            words = normalize_words(sentence)
            if words:
                sentences.append(words)
    return sentences


def _apply_profanity(tokens: Sequence[str], profanity: Profanity) -> list[str]:
    if profanity == "raw":
        return list(tokens)
    if profanity == "masked":
        return ["*" * len(t) if t.lower() in PROFANITY_WORDS else t for t in tokens]
    if profanity == "removed":
        return [t for t in tokens if t.lower() not in PROFANITY_WORDS]
    raise ValueError(f"unknown profanity option: {profanity!r}")


def itn_text(words: Sequence[str]) -> str:
    """The ITN form: numbers as digits ("$250", "5%"), lower case, no sentence punctuation."""
    return inverse_normalize(words).lower()


def masked_itn_text(words: Sequence[str], profanity: Profanity = "masked") -> str:
    """The ITN form with profanity masked, removed or kept (`profanity`)."""
    return " ".join(_apply_profanity(itn_text(words).split(), profanity))


def display_text(lexical_words: Sequence[str], profanity: Profanity = "masked") -> str:
    """The Display form: ITN, profanity handling, "I" capitalised, first letter upper case,
    final period. An empty result stays empty (no lone ".")."""
    tokens = _apply_profanity(inverse_normalize(lexical_words).lower().split(), profanity)
    # "i", "i'm", "i'll" …: the pronoun is the only word English always capitalises.
    tokens = ["I" + t[1:] if t == "i" or t.startswith("i'") else t for t in tokens]
    if not tokens:
        return ""
    text = " ".join(tokens)
    return text[0].upper() + text[1:] + "."
