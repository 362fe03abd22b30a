"""Numbers in words and back: the spoken forms used by the lexical text and by ITN.

`number_to_words` and `ordinal_to_words` spell integers 0 ≤ n < 10**12 the way the lexical
(spoken) form writes them: no "and", no hyphens ("two hundred five", "twenty third").

`inverse_normalize` is the inverse text normalisation (ITN) of a lexical word sequence. Each
maximal run of number words is parsed as one cardinal ("two hundred fifty"), optionally ended
by an ordinal word ("twenty third"); "a" counts as one only directly before "hundred",
"thousand", "million" or "billion". The run's digits are:

* for two or more single digit words in a row, those digits ("nine one one" → "911");
* otherwise the parsed value, plus "point" and digit words as a decimal part
  ("one point five" → "1.5"); no thousands separators ("1200").

and the run is written as:

1. "$<digits>" when followed by "dollar"/"dollars" (both words become "$250"), with
   "and <1..99> cent(s)" after it as the decimal part ("… dollars and fifty cents" → "$250.50");
2. "<digits>%" when followed by "percent";
3. "<digits><st|nd|rd|th>" when it ends in an ordinal ("twenty third" → "23rd");
4. "<digits>" otherwise.

Except that a single number word below ten ("one", "zero", "first") stays a word under rules
3 and 4, because "I have 1 question" reads oddly; "five percent" still gives "5%".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = (
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_LIMIT = 10**12

# Irregular ordinals; every other ordinal is the cardinal + "th" ("twenty" → "twentieth").
_IRREGULAR_ORDINALS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}

_VALUES: dict[str, int] = {
    **{w: i for i, w in enumerate(_UNITS)},
    **{w: 10 + i for i, w in enumerate(_TEENS)},
    **{w: 10 * i for i, w in enumerate(_TENS) if w},
    "hundred": 100,
    **{w: v for v, w in _SCALES},
}


def _ordinal_word(cardinal: str) -> str:
    if cardinal in _IRREGULAR_ORDINALS:
        return _IRREGULAR_ORDINALS[cardinal]
    if cardinal.endswith("y"):
        return cardinal[:-1] + "ieth"
    return cardinal + "th"


_ORDINALS: dict[str, str] = {_ordinal_word(w): w for w in _VALUES}
_CURRENCY = frozenset({"dollar", "dollars"})
_CENTS = frozenset({"cent", "cents"})
_SCALE_WORDS = frozenset({"hundred", "thousand", "million", "billion"})


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_UNITS[hundreds], "hundred"]
    if rest >= 20:
        words.append(_TENS[rest // 10])
        if rest % 10:
            words.append(_UNITS[rest % 10])
    elif rest >= 10:
        words.append(_TEENS[rest - 10])
    elif rest:
        words.append(_UNITS[rest])
    return words


def number_to_words(n: int) -> str:
    """Spell 0 ≤ n < 10**12 in lexical form: 1023 → "one thousand twenty three"."""
    if not 0 <= n < _LIMIT:
        raise ValueError(f"number out of range [0, 10**12): {n}")
    if n == 0:
        return "zero"
    words: list[str] = []
    for scale, name in _SCALES:
        count, n = divmod(n, scale)
        if count:
            words += [*_below_thousand(count), name]
    words += _below_thousand(n)
    return " ".join(words)


def ordinal_to_words(n: int) -> str:
    """Spell the ordinal of 0 ≤ n < 10**12: 23 → "twenty third", 100 → "one hundredth"."""
    *head, last = number_to_words(n).split()
    return " ".join([*head, _ordinal_word(last)])


def ordinal_suffix(n: int) -> str:
    """The English ordinal suffix for n: "st", "nd", "rd" or "th" (11–13 take "th")."""
    if n % 100 in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


@dataclass(frozen=True, slots=True)
class _Number:
    value: int
    end: int  # index after the last word of the run
    ordinal: bool


def _parse_cardinal(words: Sequence[str], start: int) -> _Number | None:
    """The longest valid number starting at `start`, or None when none starts there."""
    total, group, last_scale = 0, 0, _LIMIT
    state = "start"  # start | scale | units | hundred | tens | closed | zero
    i = start
    while i < len(words):
        word = words[i]
        ordinal = word in _ORDINALS
        word = _ORDINALS.get(word, word)
        if word == "a" and i == start and i + 1 < len(words) and words[i + 1] in _SCALE_WORDS:
            word = "one"
        value = _VALUES.get(word)
        if value is None:
            break
        if value == 0:
            if state != "start":
                break
            state = "zero"
        elif value < 10:
            if state not in ("start", "scale", "hundred", "tens"):
                break
            state = "units" if state in ("start", "scale") else "closed"
            group += value
        elif value < 20 or (value < 100 and value % 10 == 0):
            if state not in ("start", "scale", "hundred"):
                break
            state = "tens" if value >= 20 else "closed"
            group += value
        elif value == 100:
            if state != "units":
                break
            state, group = "hundred", group * 100
        else:  # thousand, million, billion: must shrink, and follow a non-empty group
            if state in ("start", "scale", "zero") or value >= last_scale:
                break
            total, group, last_scale, state = total + group * value, 0, value, "scale"
        i += 1
        if ordinal:
            return _Number(total + group, i, True)
    if i == start:
        return None
    return _Number(total + group, i, False)


def _digit_run_end(words: Sequence[str], start: int) -> int:
    """End of the run of single digit words at `start`, leaving out a digit that a scale
    word after the run belongs to ("four five hundred" → the run is just "four")."""
    end = start
    while end < len(words) and words[end] in _UNITS:
        end += 1
    if end < len(words) and words[end] in _SCALE_WORDS and end > start:
        end -= 1
    return end


def _digits(words: Sequence[str]) -> str:
    return "".join(str(_VALUES[w]) for w in words)


def _cents(words: Sequence[str], start: int) -> tuple[int, int] | None:
    """Parse "and <1..99> cents" at `start`: (cents, index after "cents") or None."""
    if start >= len(words) or words[start] != "and":
        return None
    number = _parse_cardinal(words, start + 1)
    if number is None or number.ordinal or not 0 < number.value < 100:
        return None
    if number.end < len(words) and words[number.end] in _CENTS:
        return number.value, number.end + 1
    return None


def inverse_normalize(words: Sequence[str]) -> str:
    """Rewrite runs of number words as digits by the module's rules; other words unchanged."""
    lowered = [w.lower() for w in words]
    out: list[str] = []
    i = 0
    while i < len(lowered):
        digits_end = _digit_run_end(lowered, i)
        number = _parse_cardinal(lowered, i)
        if number is None:
            out.append(words[i])
            i += 1
            continue
        if digits_end - i >= 2:
            text, end, ordinal = _digits(lowered[i:digits_end]), digits_end, False
        else:
            text, end, ordinal = str(number.value), number.end, number.ordinal
        small = end - i == 1 and number.value < 10
        if not ordinal and end < len(lowered) and lowered[end] == "point":
            fraction_end = _digit_run_end(lowered, end + 1)
            if fraction_end > end + 1:
                text = f"{text}.{_digits(lowered[end + 1 : fraction_end])}"
                end, small = fraction_end, False
        following = lowered[end] if end < len(lowered) else ""
        if not ordinal and following in _CURRENCY:
            end += 1
            cents = _cents(lowered, end)
            if cents is not None:
                text, end = f"{text}.{cents[0]:02d}", cents[1]
            out.append("$" + text)
        elif not ordinal and following == "percent":
            out.append(text + "%")
            end += 1
        elif small:
            out.append(words[i])
        elif ordinal:
            out.append(text + ordinal_suffix(number.value))
        else:
            out.append(text)
        i = end
    return " ".join(out)
