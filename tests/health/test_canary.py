"""Tests for gateway.health.canary: loading canary sets, scoring answers as the analysis
scores WER, round results, and the canary records (which no evidence counts)."""

from __future__ import annotations

import json
import random
import struct
import wave
from pathlib import Path

import pytest
from support import DATA, read_pcm, silence, write_wav

from gateway.analysis.observations import observe
from gateway.errors import ConfigError
from gateway.health.canary import (
    CANARY_CLIENT,
    CanaryAnswer,
    CanarySet,
    CanaryTarget,
    RoundResult,
    canary_record,
    failed_answer,
    load_references,
    scored_answer,
)
from gateway.outcomes.labels import Label
from gateway.outcomes.pairing import pair_shadows, unpaired
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.stats.wer import align

CANARY_SET = DATA / "canary"
TARGET = CanaryTarget("ab", "p-1", "custom", "local", "conversation", "en-us")


def write_set(folder: Path, rows: list[dict[str, str]], lines: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines if lines is not None else [json.dumps(row) for row in rows])
    (folder / "manifest.jsonl").write_text(text + "\n", encoding="utf-8")
    return folder


def load_error(folder: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        CanarySet.load(folder)
    return caught.value


# -- loading --------------------------------------------------------------------------------


def test_the_demo_canary_set_loads_and_agrees_with_the_banking_set() -> None:
    """data/canary points into the banking set: same ids, same texts, the same PCM."""
    canary = CanarySet.load(CANARY_SET)
    lines = (DATA / "demo" / "banking" / "manifest.jsonl").read_text(encoding="utf-8")
    banking = {row["id"]: row for row in map(json.loads, lines.splitlines())}
    assert 6 <= len(canary.items) <= 10
    for item in canary.items:
        assert item.text == banking[item.id]["text"]
        assert item.pcm == read_pcm(DATA / "demo" / "banking" / banking[item.id]["audio"])
    assert canary.references() == load_references(CANARY_SET)
    assert canary.references() == {item.id: item.text for item in canary.items}


def test_the_pcm_is_the_data_chunk_only(tmp_path: Path) -> None:
    """Chunks after `data` (e.g. LIST) are not audio; an odd trailing byte is dropped."""
    pcm = bytes(random.Random(1).randrange(256) for _ in range(3200))
    path = write_wav(tmp_path / "a.wav", pcm)
    with path.open("ab") as out:
        out.write(b"LIST" + struct.pack("<I", 4) + b"INFO")
    write_set(tmp_path, [{"id": "a", "audio": "a.wav", "text": "hello"}])
    (item,) = CanarySet.load(tmp_path).items
    assert item.pcm == pcm


def test_audio_in_a_subfolder_and_extra_fields_are_fine(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    write_wav(tmp_path / "audio" / "a.wav", silence(0.5))
    rows = [{"id": "a", "audio": "audio/a.wav", "text": "hello", "voice": "en-us"}]
    (item,) = CanarySet.load(write_set(tmp_path, rows)).items
    assert (item.id, item.text, len(item.pcm)) == ("a", "hello", 16000)


@pytest.mark.parametrize(
    ("lines", "where", "problem"),
    [
        (["{"], ":1", "not JSON"),
        (["[1, 2]"], ":1", "JSON object"),
        (['{"audio": "a.wav", "text": "x"}'], ":1", "'id'"),
        (['{"id": "a", "text": "x"}'], ":1", "'audio'"),
        (['{"id": "a", "audio": "a.wav", "text": 3}'], ":1", "'text'"),
        (['{"id": " ", "audio": "a.wav", "text": "x"}'], ":1", "'id'"),
        (['{"id": "a\\u0000", "audio": "a.wav", "text": "x"}'], ":1", "printable"),
        (['{"id": "a", "audio": "nope.wav", "text": "x"}'], ":1", "does not exist"),
        (
            [
                '{"id": "a", "audio": "a.wav", "text": "x"}',
                "",
                '{"id": "a", "audio": "a.wav", "text": "y"}',
            ],
            ":3",
            "duplicate id",
        ),
        ([""], "manifest.jsonl", "lists no utterances"),
    ],
)
def test_a_bad_manifest_names_file_and_line(
    tmp_path: Path, lines: list[str], where: str, problem: str
) -> None:
    write_wav(tmp_path / "a.wav", silence(0.5))
    write_set(tmp_path, [], lines)
    error = load_error(tmp_path)
    assert error.field.endswith(where)
    assert "manifest.jsonl" in error.field
    assert problem in error.problem
    with pytest.raises(ConfigError):
        load_references(tmp_path)


def test_a_missing_folder_or_manifest_is_a_config_error(tmp_path: Path) -> None:
    assert "is not a folder" in load_error(tmp_path / "missing").problem
    assert "cannot read manifest" in load_error(tmp_path).problem


def test_load_references_does_not_read_the_audio(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"not a wav at all")
    write_set(tmp_path, [{"id": "a", "audio": "a.wav", "text": "hello"}])
    assert load_references(tmp_path) == {"a": "hello"}
    error = load_error(tmp_path)
    assert error.field == str(tmp_path / "a.wav")
    assert "not a usable WAV" in error.problem


@pytest.mark.parametrize(
    ("rate", "channels", "width", "problem"),
    [(8000, 1, 2, "8000 Hz"), (16000, 2, 2, "2 channels"), (16000, 1, 1, "8-bit")],
)
def test_audio_other_than_16k_16bit_mono_is_refused(
    tmp_path: Path, rate: int, channels: int, width: int, problem: str
) -> None:
    with wave.open(str(tmp_path / "a.wav"), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(b"\0" * 3200)
    write_set(tmp_path, [{"id": "a", "audio": "a.wav", "text": "hello"}])
    error = load_error(tmp_path)
    assert problem in error.problem
    assert "16 kHz 16-bit mono" in error.problem


def test_a_wav_without_audio_is_refused(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", b"")
    write_set(tmp_path, [{"id": "a", "audio": "a.wav", "text": "hello"}])
    assert "no audio" in load_error(tmp_path).problem


# -- scoring --------------------------------------------------------------------------------


def test_an_answer_is_scored_with_the_documented_normalisation() -> None:
    """ "$300" and "three hundred dollars" are the same words, as in the analysis."""
    reference = "I want to move three hundred dollars from savings to checking."
    answer = scored_answer("a", reference, "I want to move $300 from savings to checking", 120.0)
    assert (answer.errors, answer.words, answer.latency_ms, answer.error_code) == (
        0,
        11,
        120.0,
        None,
    )
    wrong = scored_answer("a", reference, "I want to move from saving to checking")
    counts = align(reference, "I want to move from saving to checking")
    assert (wrong.errors, wrong.words) == (counts.errors, counts.reference_words)
    assert (wrong.errors, wrong.words) == (4, 11)


def test_nothing_recognised_is_all_deletions_and_a_failure_counts_nothing() -> None:
    silent = scored_answer("a", "hello there world", None)
    assert (silent.text, silent.errors, silent.words) == ("", 3, 3)
    failure = failed_answer("a", "hello there world", "upstream_timeout")
    assert (failure.text, failure.errors, failure.words) == (None, 0, 3)
    assert failure.error_code == "upstream_timeout"


def labelled_primaries(
    pairs: list[tuple[str, str]],
) -> tuple[list[OutcomeRecord], dict[str, Label]]:
    records, labels = [], {}
    for index, (_reference, hypothesis) in enumerate(pairs):
        record = OutcomeRecord(
            kind=Kind.UTTERANCE,
            experiment="ab",
            phase="p-1",
            variant="custom",
            backend="local",
            role=Role.PRIMARY,
            client="app",
            unit=f"u{index}",
            unit_source=UnitSource.QUERY,
            session_id=f"s{index}",
            protocol=Protocol.USP,
            status="Success",
            text=hypothesis,
        )
        records.append(record)
    for record, (reference, _) in zip(records, pairs, strict=True):
        labels[record.record_id] = Label(
            record_id=record.record_id, text=reference, labeller="t", source="api"
        )
    return records, labels


def test_a_rounds_wer_equals_the_analysis_wer_on_the_same_texts() -> None:
    """The same (reference, hypothesis) pairs as labelled primary outcomes: the analysis's
    corpus WER is exactly the round's WER."""
    generator = random.Random(7)
    references = [item.text for item in CanarySet.load(CANARY_SET).items]
    vocabulary = sorted({word for text in references for word in text.split()})
    pairs = []
    for reference in references:
        words = reference.split()
        for _ in range(generator.randrange(4)):
            position = generator.randrange(len(words))
            action = generator.choice(["sub", "del", "ins"])
            if action == "sub":
                words[position] = generator.choice(vocabulary)
            elif action == "del" and len(words) > 1:
                del words[position]
            else:
                words.insert(position, generator.choice(vocabulary))
        pairs.append((reference, " ".join(words)))
    records, labels = labelled_primaries(pairs)
    (phase,) = observe(records, labels).values()
    analysis = phase.variants["custom"].scores.totals()
    answers = tuple(scored_answer(f"i{n}", ref, hyp) for n, (ref, hyp) in enumerate(pairs))
    result = RoundResult("ab", "p-1", "custom", "local", "banking", "2026-01-01T00:00:00Z", answers)
    assert analysis.errors > 0
    assert result.wer == pytest.approx(analysis.wer, abs=0, rel=1e-12)


def test_round_result_properties() -> None:
    answers = (
        CanaryAnswer("a", "x", 1, 4, 100.0, None),
        CanaryAnswer("b", None, 0, 6, None, "upstream_unreachable"),
        CanaryAnswer("c", "y", 2, 6, 300.0, None),
        CanaryAnswer("d", "z", 0, 2, 200.0, None),
    )
    result = RoundResult("ab", "p-1", "custom", "local", None, "2026-01-01T00:00:00Z", answers)
    assert [a.item_id for a in result.answered] == ["a", "c", "d"]
    assert result.wer == pytest.approx(3 / 12)  # the failed item's words do not count
    assert not result.failed
    assert result.latency_ms() == 200.0
    two = RoundResult("ab", "p-1", "custom", "local", None, "t", answers[:1] + answers[2:3])
    assert two.latency_ms() == 200.0  # the mean of the middle two
    failed = RoundResult("ab", "p-1", "custom", "local", None, "t", answers[1:2])
    assert failed.failed
    assert failed.wer is None
    assert failed.latency_ms() is None


# -- records --------------------------------------------------------------------------------


def test_an_answered_canary_is_an_utterance_record_with_its_text() -> None:
    answer = scored_answer("banking-001", "hello world", "Hello world.", 150.0)
    record = canary_record(
        TARGET,
        answer,
        session_id="0" * 32,
        status="Success",
        turn_id="1" * 32,
        audio_duration_ms=2000.0,
        first_hypothesis_ms=300.0,
        total_ms=2150.0,
        confidence=0.9,
    )
    assert (record.kind, record.role, record.unit_source) == (
        Kind.UTTERANCE,
        Role.CANARY,
        UnitSource.CANARY,
    )
    assert (record.client, record.unit, record.text, record.word_count) == (
        CANARY_CLIENT,
        "banking-001",
        "Hello world.",
        2,
    )
    assert (record.experiment, record.phase, record.variant, record.backend) == (
        "ab",
        "p-1",
        "custom",
        "local",
    )
    assert (record.final_latency_ms, record.error_code, record.utterance_index) == (150.0, None, 0)
    assert OutcomeRecord.from_json(record.to_json()) == record


def test_a_failed_canary_is_a_session_failure_record() -> None:
    answer = failed_answer("banking-001", "hello world", "upstream_unreachable")
    record = canary_record(
        TARGET, answer, session_id="0" * 32, status="Error", error_detail="ClientConnectorError"
    )
    assert (record.kind, record.status, record.error_code) == (
        Kind.SESSION_FAILURE,
        "Error",
        "upstream_unreachable",
    )
    assert (record.text, record.final_latency_ms, record.utterance_index) == (None, None, None)
    assert OutcomeRecord.from_json(record.to_json()) == record


def test_canary_records_are_no_ones_shadow_partner() -> None:
    """A canary record in the same session as a primary is not paired with it."""
    primary = OutcomeRecord(
        kind=Kind.UTTERANCE,
        experiment="ab",
        phase="p-1",
        variant="base",
        backend="local",
        role=Role.PRIMARY,
        client="app",
        unit="u",
        unit_source=UnitSource.QUERY,
        session_id="0" * 32,
        protocol=Protocol.USP,
        status="Success",
        audio_offset_ms=0.0,
        audio_duration_ms=2000.0,
        text="hello world",
    )
    canary = canary_record(
        TARGET,
        scored_answer("a", "hello world", "hello world"),
        session_id="0" * 32,
        status="Success",
        audio_duration_ms=2000.0,
    )
    assert pair_shadows([primary, canary]) == []
    assert unpaired([primary, canary]) == [primary]
