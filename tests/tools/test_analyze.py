"""`speech-gateway analyze` against the file store and a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from traffic import Traffic

from gateway.cli import main
from gateway.config.gateway_config import build_gateway_config
from gateway.config.settings import load_settings
from gateway.logging import configure_logging
from gateway.outcomes.labels import LabelInput
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.stores.keys import RECORD_FIELD, RedisKeys
from gateway.stores.redis_label_store import RedisLabelStore
from gateway.stores.redis_sink import RedisSink


def traffic() -> Traffic:
    made = Traffic()
    # 60 units an arm: enough for the WER test and for every guardrail to have its data.
    made.ab(60, base_error=0.35, custom_error=0.03)
    return made


def write_file_store(folder: Path, made: Traffic) -> Path:
    (folder / "out.jsonl").write_text("".join(r.to_json() + "\n" for r in made.records))
    (folder / "labels.jsonl").write_text(
        "".join(label.to_json() + "\n" for label in made.labels.values())
    )
    config = folder / "c.toml"
    config.write_text('[outcomes]\npath = "out.jsonl"\n')
    return config


def test_analyze_prints_tables_and_writes_json_and_html(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_file_store(tmp_path, traffic())
    argv = ["--config", str(config), "analyze", "--experiment", "e", "--control", "base"]
    assert main([*argv, "--json", "r.json", "--html", "r.html"]) == 0
    out = capsys.readouterr().out
    assert "Experiment e (control: base)" in out
    assert "Recommendation: SHIP CUSTOM" in out
    assert "HTML report:" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["recommendation"]["action"] == "ship_custom"
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")

    assert main([*argv, "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["experiment"] == "e"


def test_analyze_window_phase_and_confidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_file_store(tmp_path, traffic())
    base = ["--config", str(config), "analyze", "--experiment", "e", "--json", "-"]
    # The traffic runs from 12:00:00 for 120 s: a window of its first 20 s.
    window = ["--since", "2026-11-21T12:00:00Z", "--until", "2026-11-21T12:00:20Z"]
    assert main([*base, *window, "--confidence", "0.9"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["confidence"] == 0.9
    assert sum(v["outcomes"] for v in report["phases"][0]["variants"]) == 20
    assert main([*base, "--phase", "nope"]) == 0
    assert json.loads(capsys.readouterr().out)["phases"] == []


def test_analyze_refuses_bad_input_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[outcomes]\npath = "missing.jsonl"\n')
    assert main(["--config", "c.toml", "analyze", "--experiment", "e"]) == 2
    assert "no outcome file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config", "c.toml", "analyze", "--experiment", "e", "--since", "2026-01-01"])
    assert "time zone" in capsys.readouterr().err


@pytest.fixture
async def redis_keys() -> AsyncIterator[RedisKeys]:
    """A key prefix of this test's own on the shared test Redis, removed after."""
    keys = RedisKeys(prefix=f"sgw-test-{uuid.uuid4().hex}")
    yield keys
    client = Redis(host="127.0.0.1", port=6379)
    doomed = [key async for key in client.scan_iter(match=f"{keys.prefix}:*")]
    if doomed:
        await client.delete(*doomed)
    await client.aclose()


async def test_analyze_reads_the_redis_store(
    redis_keys: RedisKeys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Earlier tests' main() left logging on their (closed) captured stderr.
    configure_logging("warning", "json")
    made = traffic()

    async def connect() -> Redis:
        return Redis(host="127.0.0.1", port=6379)

    sink = RedisSink(connect, redis_keys, tmp_path / "journal")
    try:
        assert await sink.deliver(made.records) == len(made.records)
    finally:
        await sink.close()
    client = Redis(host="127.0.0.1", port=6379)
    try:
        store = RedisLabelStore(client, redis_keys)
        inputs = [LabelInput(rid, label.text) for rid, label in made.labels.items()]
        result = await store.put(inputs, "tester", "import")
        assert result.committed
    finally:
        await client.aclose()
    capsys.readouterr()  # the sink's own log lines
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(
        '[outcomes]\nstore = "redis"\njournal_dir = "journal"\n'
        f'[redis]\nprefix = "{redis_keys.prefix}"\n'
    )
    argv = ["--config", "c.toml", "analyze", "--experiment", "e", "--control", "base"]
    # main() runs its own event loop: call it from a worker thread, off this test's loop.
    assert await asyncio.to_thread(main, [*argv, "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    variants = {v["name"]: v for v in report["phases"][0]["variants"]}
    assert variants["custom"]["labelled"] == 60
    assert report["recommendation"]["action"] == "ship_custom"


def test_json_on_stdout_stays_json_with_an_html_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_file_store(tmp_path, traffic())
    argv = ["--config", str(config), "analyze", "--experiment", "e", "--json", "-"]
    assert main([*argv, "--html", "r.html"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["experiment"] == "e"
    assert "HTML report:" in captured.err


def test_the_written_control_is_used_when_the_config_cannot_be_fully_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backend key file that exists only on the gateway host: the analyst's machine cannot
    build the gateway config, but the experiment's control is still the written one."""
    monkeypatch.chdir(tmp_path)
    made = Traffic()
    for i in range(5):
        made.utterance("standard", 2 * i)
        made.utterance("custom", 2 * i + 1)
    write_file_store(tmp_path, made)
    (tmp_path / "c.toml").write_text(
        '[gateway.backends.azure]\nurl = "wss://westus.stt.speech.microsoft.com"\n'
        'key_file = "/nonexistent/key"\n'
        "[[gateway.experiments]]\n"
        'id = "e"\ncontrol = "standard"\n'
        'variants = [{ name = "standard", backend = "azure", weight = 50 },'
        ' { name = "custom", backend = "azure", endpoint_id = "x", weight = 50 }]\n'
        '[outcomes]\npath = "out.jsonl"\n'
    )
    assert main(["--config", "c.toml", "analyze", "--experiment", "e", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["control"] == "standard"
    assert report["control_guessed"] is False
    assert main(["--config", "c.toml", "analyze", "--experiment", "other", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["control_guessed"] is False  # no records


def _corrupt(record_json: str, value: str) -> tuple[str, str]:
    """The record's JSON line with its final latency replaced by `value` (raw JSON text),
    and its record id."""
    data = json.loads(record_json)
    line = record_json.replace(
        f'"final_latency_ms":{json.dumps(data["final_latency_ms"])}',
        f'"final_latency_ms":{value}',
    )
    assert line != record_json
    return line, data["record_id"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1.7e308", "1e400"])
def test_a_bad_record_in_the_file_store_is_one_line_naming_it(
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    made = traffic()
    config = write_file_store(tmp_path, made)
    lines = (tmp_path / "out.jsonl").read_text().splitlines(keepends=True)
    # Two bad records, as a tool that wrote 1.7e308 would: the first one is named.
    for at in (7, 9):
        bad, record_id = _corrupt(lines[at].rstrip("\n"), value)
        lines[at] = bad + "\n"
        if at == 7:
            first = record_id
    (tmp_path / "out.jsonl").write_text("".join(lines))
    argv = ["--config", str(config), "analyze", "--experiment", "e", "--json", "-"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    error = captured.err.strip()
    assert "\n" not in error
    assert "Traceback" not in error
    assert error.startswith("speech-gateway: outcomes: an invalid record in the store: ")
    assert "out.jsonl:8: " in error
    assert f"record {first}" in error
    assert "final_latency_ms" in error or "not a valid number" in error


async def test_a_bad_record_in_the_redis_store_is_one_line_naming_it(
    redis_keys: RedisKeys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("warning", "json")
    made = traffic()
    client = Redis(host="127.0.0.1", port=6379)
    try:
        key = redis_keys.outcomes("e")
        for number, record in enumerate(made.records):
            line = record.to_json()
            if number == 4:
                line, bad_id = _corrupt(line, "1.7e308")
            await client.xadd(key, {RECORD_FIELD: line})
    finally:
        await client.aclose()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(
        '[outcomes]\nstore = "redis"\njournal_dir = "journal"\n'
        f'[redis]\nprefix = "{redis_keys.prefix}"\n'
    )
    argv = ["--config", "c.toml", "analyze", "--experiment", "e", "--control", "base"]
    assert await asyncio.to_thread(main, [*argv, "--json", "-"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    error = captured.err.strip()
    assert "\n" not in error
    assert "Traceback" not in error
    assert f"{key} " in error
    assert f"record {bad_id}: field 'final_latency_ms'" in error
    assert "expected at most 1e+15, got 1.7e+308" in error


def test_analyze_with_redis_unreachable_is_one_line_and_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("warning", "json")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(
        '[outcomes]\nstore = "redis"\njournal_dir = "journal"\n'
        '[redis]\nurl = "redis://127.0.0.1:1/0"\n'  # nothing listens on port 1
    )
    assert main(["--config", "c.toml", "analyze", "--experiment", "e"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("speech-gateway: connect: ")
    assert "Traceback" not in err


def test_analyze_scores_the_configured_canary_set_and_takes_a_drift_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The experiment's canary references come from its configured set; the configured split
    is a shipped one (5 % holdout), so the report has a drift section in the asked windows."""
    monkeypatch.chdir(tmp_path)
    made = traffic()
    reference = "what is my available balance today"
    for variant, text in (("base", "what is my balance today"), ("custom", reference)):
        made.records.append(
            OutcomeRecord(
                kind=Kind.UTTERANCE,
                timestamp="2026-11-21T12:00:30.000Z",
                experiment="e",
                phase=None,  # replaced below: the configured phase's id
                variant=variant,
                backend="local",
                role=Role.CANARY,
                client="_canary",
                unit="balance",
                unit_source=UnitSource.CANARY,
                session_id=f"canary-{variant}",
                protocol=Protocol.USP,
                status="Success",
                text=text,
                final_latency_ms=400.0,
            )
        )
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "balance.wav").write_bytes(b"")
    (canary / "manifest.jsonl").write_text(
        json.dumps({"id": "balance", "audio": "balance.wav", "text": reference}) + "\n"
    )
    config = (
        '[gateway.backends.local]\nurl = "ws://127.0.0.1:5000"\n'
        "[[gateway.experiments]]\n"
        'id = "e"\ncontrol = "base"\n'
        'variants = [{ name = "base", backend = "local", weight = 5 },'
        ' { name = "custom", backend = "local", weight = 95 }]\n'
        '[gateway.experiments.canary]\ndataset = "canary"\n'
    )
    (tmp_path / "c.toml").write_text(config)
    phase = build_gateway_config(load_settings(tmp_path / "c.toml").gateway).experiments[0].phase
    made.records = [dataclasses.replace(r, phase=phase) for r in made.records]
    write_file_store(tmp_path, made)  # writes its own c.toml: the store's section alone
    (tmp_path / "c.toml").write_text(config + '[outcomes]\npath = "out.jsonl"\n')
    argv = ["--config", "c.toml", "analyze", "--experiment", "e"]
    assert main([*argv, "--drift-window", "30m", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    base, custom = report["canary"]["variants"]
    assert (base["name"], base["phases"][0]["wer"]) == ("base", pytest.approx(1 / 6))
    assert (custom["name"], custom["phases"][0]["wer"]) == ("custom", 0.0)
    drift = report["drift"]
    assert (drift["shipped"], drift["holdout"], drift["window_seconds"]) == ("custom", "base", 1800)
    assert report["settings"]["drift_window_s"] == 1800
    # Canaries never count: the variants' outcomes are the traffic's alone.
    assert sum(v["outcomes"] for v in report["phases"][0]["variants"]) == 120

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Canaries (1 items; never part of the evidence)" in out
    assert "Drift after the decision" in out

    with pytest.raises(SystemExit):
        main([*argv, "--drift-window", "1 week"])
    assert "not a duration" in capsys.readouterr().err


def test_analyze_takes_terms_and_synonyms_and_exports_alignments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--terms and --synonyms reach the error analysis; --alignments writes a row per
    labelled utterance (JSON lines), and a bad term list is one line and status 2."""
    monkeypatch.chdir(tmp_path)
    made = traffic()
    write_file_store(tmp_path, made)
    (tmp_path / "terms.txt").write_text("available balance\nsavings account\n")
    (tmp_path / "synonyms.txt").write_text("okay = ok\n")
    argv = ["--config", "c.toml", "analyze", "--experiment", "e"]
    lists = ["--terms", "terms.txt", "--synonyms", "synonyms.txt"]
    assert main([*argv, *lists, "--alignments", "rows.jsonl", "--json", "-"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["errors"]["terms"]["source"].endswith("terms.txt")
    assert report["errors"]["style"]["synonyms"] is not None
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == len(made.labels)
    assert f"alignments: {len(rows)} rows in rows.jsonl" in captured.err
    (tmp_path / "empty.txt").write_text("# nothing but a comment\n")
    assert main([*argv, "--terms", "empty.txt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "empty.txt" in err
    # The export's format is checked before the store is read.
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--alignments", "rows.txt"])
    assert exited.value.code == 2
    assert "expected a file name ending in .jsonl or .csv" in capsys.readouterr().err
    assert not (tmp_path / "rows.txt").exists()


def test_analyze_derives_terms_from_a_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--terms-corpus derives the term list by the documented rule; with --terms it is a usage
    error, since only one list is analysed."""
    monkeypatch.chdir(tmp_path)
    write_file_store(tmp_path, traffic())
    (tmp_path / "corpus.txt").write_text("Open a savings account.\n" * 3)
    argv = ["--config", "c.toml", "analyze", "--experiment", "e"]
    assert main([*argv, "--terms-corpus", "corpus.txt", "--json", "-"]) == 0
    terms = json.loads(capsys.readouterr().out)["errors"]["terms"]
    assert terms["source"] == "derived from corpus.txt"
    assert [t["term"] for t in terms["variants"][0]["terms"]] == ["savings account"]
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--terms-corpus", "corpus.txt", "--terms", "corpus.txt"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
