"""Tests for gateway.emulator.lexicon: CMUdict loading, OOV fallback, dictionary files."""

from __future__ import annotations

from pathlib import Path

import pocketsphinx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.emulator.language_model import write_arpa
from gateway.emulator.lexicon import (
    PHONES,
    Lexicon,
    default_dictionary_path,
    letters_to_sounds,
    write_dictionary,
)
from gateway.errors import ConfigError

# The 39 CMU phones without stress, as listed in CMUdict's documentation.
CMU_PHONES = {
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY",
    "F", "G", "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY",
    "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
}  # fmt: skip


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return Lexicon.load()


def _small_lexicon(tmp_path: Path, text: str) -> Lexicon:
    path = tmp_path / "small.dict"
    path.write_text(text, encoding="utf-8")
    return Lexicon.load(path)


def _acoustic_model_phones() -> set[str]:
    """The CI phone names stored in the shipped acoustic model's binary mdef."""
    mdef = Path(pocketsphinx.get_model_path()) / "en-us" / "en-us" / "mdef"
    data = mdef.read_bytes()
    start, names = data.index(b"+NSN+\x00"), set()
    while (end := data.index(b"\x00", start)) > start:
        name = data[start:end].decode("ascii")
        if not name.replace("+", "").isalpha():
            break
        names.add(name)
        start = end + 1
    return names


def test_phone_set_matches_the_acoustic_model() -> None:
    """PHONES is exactly the acoustic model's phones less SIL and the noise phones."""
    assert set(PHONES) == CMU_PHONES
    assert _acoustic_model_phones() == CMU_PHONES | {"SIL", "+NSN+", "+SPN+"}


def test_shipped_dictionary_keeps_alternates(lexicon: Lexicon) -> None:
    """Known words return every dictionary pronunciation in file order."""
    assert default_dictionary_path().is_file()
    assert lexicon.is_known("hello")
    assert lexicon.pronunciations("hello") == (("HH", "AH", "L", "OW"), ("HH", "EH", "L", "OW"))
    assert lexicon.pronunciations("Cash") == (("K", "AE", "SH"),)


def test_custom_dictionary_format(tmp_path: Path) -> None:
    """Alternates merge under one word, stress marks and comments are dropped."""
    small = _small_lexicon(tmp_path, "Read R IY1 D\nread(2) R EH1 D # past\n\nread(3) R IY D\n")
    assert small.pronunciations("read") == (("R", "IY", "D"), ("R", "EH", "D"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [("hello HH AH L Q\n", "unknown phones"), ("lonely\n", "expected")],
)
def test_bad_dictionary_lines_are_config_errors(tmp_path: Path, text: str, problem: str) -> None:
    """A bad line raises ConfigError naming the file and line."""
    with pytest.raises(ConfigError, match=problem) as error:
        _small_lexicon(tmp_path, text)
    assert error.value.field.endswith("small.dict:1")


def test_missing_dictionary_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable dictionary file raises ConfigError naming it."""
    with pytest.raises(ConfigError, match="cannot read"):
        Lexicon.load(tmp_path / "absent.dict")


def test_compound_by_analogy(lexicon: Lexicon) -> None:
    """An OOV compound is spelled from its dictionary pieces."""
    assert not lexicon.is_known("cashback")
    assert lexicon.pronunciations("cashback") == (("K", "AE", "SH", "B", "AE", "K"),)
    assert lexicon.pronunciations("fintech") == (("F", "IH", "N", "T", "EH", "K"),)


@pytest.mark.parametrize(
    ("word", "phones"),
    [
        ("overdrafts", "OW V ER D R AE F T S"),
        ("boxes", "B AA K S IH Z"),
        ("tomatoes", "T AH M EY T OW Z"),
        ("painted", "P EY N T IH D"),
        ("kicked", "K IH K T"),
        ("played", "P L EY D"),
        ("playing", "P L EY IH NG"),
        ("player's", "P L EY ER Z"),
        ("overdraftcheck", "OW V ER D R AE F T CH EH K"),
    ],
)
def test_suffixes_follow_the_stem(tmp_path: Path, word: str, phones: str) -> None:
    """Suffix phones depend on the stem's last phone, per the documented table."""
    small = _small_lexicon(
        tmp_path,
        "overdraft OW V ER D R AE F T\nbox B AA K S\ntomato T AH M EY T OW\npaint P EY N T\n"
        "kick K IH K\nplay P L EY\nplayer P L EY ER\ncheck CH EH K\ns EH S\n",
    )
    assert small.pronunciations(word) == (tuple(phones.split()),)


@pytest.mark.parametrize(
    ("letters", "phones"),
    [
        ("zorblat", "Z AO R B L AE T"),
        ("phish", "F IH SH"),
        ("yeet", "Y IY T"),
        ("tackle", "T AE K L"),
        ("quay", "K W EY"),
        ("café", "K AE F"),
        ("'", ""),
    ],
)
def test_letter_to_sound_rules(letters: str, phones: str) -> None:
    """Graphemes, digraphs, silent final e and merged doubles follow the rules table."""
    assert letters_to_sounds(letters) == tuple(phones.split())


def test_unpronounceable_word_still_gets_a_phone(lexicon: Lexicon) -> None:
    """A word with no letter rule at all falls back to AH."""
    assert lexicon.pronunciations("日本") == (("AH",),)


@pytest.mark.parametrize("word", ["", "two words"])
def test_non_words_are_rejected(lexicon: Lexicon, word: str) -> None:
    """Empty words and words with whitespace raise ValueError."""
    with pytest.raises(ValueError, match="not a word"):
        lexicon.pronunciations(word)


@given(st.text(alphabet=st.characters(categories=["L"]) | st.just("'"), min_size=1, max_size=15))
def test_any_word_gets_valid_phones(lexicon: Lexicon, word: str) -> None:
    """Every word of letters and apostrophes gets pronunciations of model phones only."""
    prons = lexicon.pronunciations(word)
    assert prons
    for pron in prons:
        assert pron
        assert set(pron) <= CMU_PHONES


def test_write_dictionary_format(tmp_path: Path, lexicon: Lexicon) -> None:
    """Entries are sorted, alternates are numbered from (2), and OOV words are reported."""
    path = tmp_path / "out.dict"
    oov = write_dictionary(path, ["zorblat", "hello", "cashback", "hello", "<s>"], lexicon)
    assert oov == ["cashback", "zorblat"]
    assert path.read_text(encoding="utf-8").splitlines() == [
        "cashback K AE SH B AE K",
        "hello HH AH L OW",
        "hello(2) HH EH L OW",
        "zorblat Z AO R B L AA T",  # z (by rule) + orb + lat
    ]


def test_pocketsphinx_accepts_dictionary_with_oov_words(tmp_path: Path, lexicon: Lexicon) -> None:
    """A decoder loads a model and dictionary built for OOV words and knows their phones."""
    sentences = [["check", "my", "cashback"], ["fintech", "zorblat", "overdrafts"]]
    words = sorted({w for s in sentences for w in s})
    write_arpa(tmp_path / "tiny.lm", sentences, order=2)
    oov = write_dictionary(tmp_path / "tiny.dict", words, lexicon)
    assert oov == ["cashback", "fintech", "zorblat"]
    decoder = pocketsphinx.Decoder(
        lm=str(tmp_path / "tiny.lm"), dict=str(tmp_path / "tiny.dict"), loglevel="FATAL"
    )
    for word in words:
        assert decoder.lookup_word(word) == " ".join(lexicon.pronunciations(word)[0])
