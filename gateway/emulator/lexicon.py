"""Pronunciations for the emulator's dictionaries: CMUdict plus a documented OOV fallback.

`Lexicon.load()` reads PocketSphinx's shipped CMU dictionary (or another file in its format:
"word PH1 PH2 …", alternates as "word(2) …"), keeping every alternate in file order.

A word not in the dictionary gets one pronunciation by analogy:

1. Split the word into pieces, each either a dictionary word of at least three letters, a
   final suffix ("s", "es", "'s", "s'", "ed", "ing"), or a span spelled by letter-to-sound
   rules. The split spells the fewest letters by rule, then has the fewest pieces, then the
   longest pieces first: "cashback" → cash + back, "overdrafts" → overdraft + s.
2. Dictionary pieces use their first pronunciation. Suffixes follow the phone before them:
   "s"/"'s"/"s'" → S after a voiceless consonant, IH Z after a sibilant, Z otherwise; "es" →
   IH Z after a sibilant, Z otherwise; "ed" → IH D after T or D, T after a voiceless
   consonant, D otherwise; "ing" → IH NG.
3. Letter-to-sound spans take the longest grapheme from `_GRAPHEMES` at each position
   ("tch", "ph", "th", "sh", "ch", "ck", "ee", "oo", "ou", "ai", "ay", … then single letters).
   Accents are stripped first; in a span of three or more letters a final "e" after a
   consonant is silent ("tackle"); a leading "y" before a vowel is Y, any other "y" is IY; a
   repeated phone is said once ("ll" → L); letters without a rule and apostrophes are silent.
4. A word left with no phones at all is pronounced AH.

Every phone is one of the acoustic model's 39 CMU phones (`PHONES`), without stress marks.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pocketsphinx

from gateway.errors import ConfigError

Pronunciation = tuple[str, ...]

# The CI phones of PocketSphinx's en-us acoustic model, less SIL and the noise phones.
PHONES = frozenset(
    {
        "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY",
        "F", "G", "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY",
        "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
    }
)  # fmt: skip
_MARKERS = frozenset({"<s>", "</s>", "<sil>"})  # PocketSphinx's filler dictionary has these
_MIN_PIECE = 3  # shorter dictionary "words" are mostly letter names and abbreviations
_VOICELESS = frozenset({"P", "T", "K", "F", "TH"})
_SIBILANTS = frozenset({"S", "Z", "SH", "ZH", "CH", "JH"})
_SUFFIXES = ("ing", "'s", "s'", "es", "ed", "s")
_VOWEL_LETTERS = frozenset("aeiouy")
_GRAPHEMES: Mapping[str, Pronunciation] = MappingProxyType(
    {
        "tch": ("CH",), "igh": ("AY",), "ph": ("F",), "th": ("TH",), "sh": ("SH",),
        "ch": ("CH",), "ck": ("K",), "ng": ("NG",), "qu": ("K", "W"), "wh": ("W",),
        "ee": ("IY",), "ea": ("IY",), "oo": ("UW",), "ou": ("AW",), "ow": ("OW",),
        "ai": ("EY",), "ay": ("EY",), "oi": ("OY",), "oy": ("OY",), "au": ("AO",),
        "aw": ("AO",), "er": ("ER",), "ir": ("ER",), "ur": ("ER",), "ar": ("AA", "R"),
        "or": ("AO", "R"),
        "a": ("AE",), "b": ("B",), "c": ("K",), "d": ("D",), "e": ("EH",), "f": ("F",),
        "g": ("G",), "h": ("HH",), "i": ("IH",), "j": ("JH",), "k": ("K",), "l": ("L",),
        "m": ("M",), "n": ("N",), "o": ("AA",), "p": ("P",), "q": ("K",), "r": ("R",),
        "s": ("S",), "t": ("T",), "u": ("AH",), "v": ("V",), "w": ("W",), "x": ("K", "S"),
        "y": ("IY",), "z": ("Z",),
    }
)  # fmt: skip
_LONGEST_GRAPHEME = max(len(g) for g in _GRAPHEMES)


def default_dictionary_path() -> Path:
    """The CMU dictionary shipped with the pocketsphinx package."""
    return Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"


def _parse_line(line: str, where: str) -> tuple[str, Pronunciation]:
    word, *phones = line.split()
    if word.endswith(")") and "(" in word:  # "word(2)": an alternate of "word"
        word = word[: word.rindex("(")]
    # Other CMUdict releases mark stress ("AH0"); the acoustic model has no stress.
    pron = tuple(p.rstrip("012").upper() for p in phones)
    if not word or not pron:
        raise ConfigError(where, f"expected 'word PHONE …', got {line!r}")
    unknown = sorted(set(pron) - PHONES)
    if unknown:
        raise ConfigError(where, f"unknown phones {unknown} for {word!r}")
    return word.lower(), pron


def _suffix_phones(suffix: str, previous: str | None) -> Pronunciation:
    if suffix == "ing":
        return ("IH", "NG")
    if suffix == "ed":
        if previous in ("T", "D"):
            return ("IH", "D")
        return ("T",) if previous in _VOICELESS else ("D",)
    if previous in _SIBILANTS:
        return ("IH", "Z")
    return ("S",) if suffix != "es" and previous in _VOICELESS else ("Z",)


def letters_to_sounds(letters: str) -> Pronunciation:
    """Pronounce `letters` by the grapheme rules (module docstring, step 3); may be empty."""
    text = "".join(
        c for c in unicodedata.normalize("NFKD", letters.lower()) if not unicodedata.combining(c)
    )
    if len(text) > 2 and text.endswith("e") and text[-2] not in _VOWEL_LETTERS:
        text = text[:-1]
    phones: list[str] = []
    i = 0
    while i < len(text):
        for size in range(min(_LONGEST_GRAPHEME, len(text) - i), 0, -1):
            grapheme = text[i : i + size]
            if grapheme in _GRAPHEMES:
                # A leading "y" before a vowel is the consonant ("yam"), elsewhere a vowel.
                if grapheme == "y" and i == 0 and text[1:2] in _VOWEL_LETTERS:
                    sounds: Pronunciation = ("Y",)
                else:
                    sounds = _GRAPHEMES[grapheme]
                phones += [p for p in sounds if not phones or p != phones[-1]]
                i += size
                break
        else:
            i += 1  # no rule: silent
    return tuple(phones)


@dataclass(frozen=True, slots=True, eq=False)
class Lexicon:
    """Word → pronunciations, read once; use `Lexicon.load`."""

    entries: Mapping[str, tuple[Pronunciation, ...]]

    @classmethod
    def load(cls, path: Path | None = None) -> Lexicon:
        """Read a PocketSphinx/CMU dictionary file (default: the shipped cmudict)."""
        path = path or default_dictionary_path()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), f"cannot read the dictionary: {exc}") from exc
        entries: dict[str, list[Pronunciation]] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0]  # some CMUdict releases carry comments
            if line.strip():
                word, pron = _parse_line(line, f"{path}:{number}")
                prons = entries.setdefault(word, [])
                if pron not in prons:
                    prons.append(pron)
        return cls(MappingProxyType({w: tuple(p) for w, p in entries.items()}))

    def is_known(self, word: str) -> bool:
        """Whether the dictionary itself has `word` (case-insensitive)."""
        return word.lower() in self.entries

    def pronunciations(self, word: str) -> tuple[Pronunciation, ...]:
        """Every dictionary pronunciation of `word`, or the one fallback pronunciation
        (module docstring). Raises ValueError for an empty word or one with whitespace."""
        if not word or any(c.isspace() for c in word):
            raise ValueError(f"not a word: {word!r}")
        known = self.entries.get(word.lower())
        return known if known is not None else (self._by_analogy(word.lower()),)

    def _by_analogy(self, word: str) -> Pronunciation:
        # best[k]: the best split of the word's last k letters as (cost, pieces), where
        # cost = (letters spelled by rule, number of pieces); tuples compare in that order.
        best: list[tuple[tuple[int, int], list[tuple[str, str]]]] = [((0, 0), [])]
        for i in range(len(word) - 1, -1, -1):
            options: list[tuple[tuple[int, int], list[tuple[str, str]]]] = []
            for j in range(len(word), i, -1):  # longest first: ties keep the longer piece
                piece, (rest_cost, rest) = word[i:j], best[len(word) - j]
                if j == len(word) and i > 0 and piece in _SUFFIXES:
                    options.append(((rest_cost[0], rest_cost[1] + 1), [("suffix", piece), *rest]))
                if len(piece) >= _MIN_PIECE and piece in self.entries:
                    options.append(((rest_cost[0], rest_cost[1] + 1), [("word", piece), *rest]))
                spelled = (rest_cost[0] + len(piece), rest_cost[1] + 1)
                options.append((spelled, [("rules", piece), *rest]))
            best.append(min(options, key=lambda option: option[0]))
        phones: list[str] = []
        for kind, piece in best[-1][1]:
            if kind == "word":
                phones += self.entries[piece][0]
            elif kind == "suffix":
                phones += _suffix_phones(piece, phones[-1] if phones else None)
            else:
                phones += letters_to_sounds(piece)
        return tuple(phones) or ("AH",)


def write_dictionary(path: Path, words: Iterable[str], lexicon: Lexicon) -> list[str]:
    """Write a PocketSphinx dictionary with every pronunciation of each word (alternates as
    "word(2)"), sorted; sentence markers are skipped (the filler dictionary has them).
    Returns the sorted words that needed the fallback pronunciation."""
    unique = sorted(set(words) - _MARKERS)
    lines: list[str] = []
    for word in unique:
        for n, pron in enumerate(lexicon.pronunciations(word), start=1):
            lines.append(f"{word if n == 1 else f'{word}({n})'} {' '.join(pron)}")
    path.write_text("\n".join(lines) + "\n" if lines else "", encoding="utf-8")
    return [word for word in unique if not lexicon.is_known(word)]
