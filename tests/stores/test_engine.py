"""The SQL engine computes exactly what `observe` computes from records, and the report built
on it is the record path's report: on JSON lines, on a Parquet export, in any record order,
with retries, fail-overs, forced sessions, shadows, canaries and labels with and without
stored counts."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.analysis.engine_port import AnalysisWindow
from gateway.analysis.model import AnalysisOptions, ExperimentInfo
from gateway.analysis.observations import PhaseObservations, observe
from gateway.analysis.report import analyze, build_report
from gateway.errors import EngineUnreadable
from gateway.outcomes.label_scores import score_targets, scored
from gateway.outcomes.labels import Label
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.stores import engine as engine_module
from gateway.stores.engine import MEMORY_LIMIT_MIN, DuckDbEngine, category_sql, memory_limit
from gateway.stores.jsonl_lines import records_by_id
from gateway.stores.lake import append_outcomes, lake_sources
from gateway.stores.reader import FileReader

START = datetime(2026, 11, 2, 8, tzinfo=UTC)
WORDS = ["please", "send", "two", "hundred", "dollars", "to", "my", "savings", "account", "today"]
COUNTS = (
    "units",
    "sessions",
    "forced",
    "failed_over",
    "failed_attempts",
    "client_sessions",
    "retried_client_sessions",
    "failed_client_sessions",
    "utterances",
    "labelled",
    "unscorable",
)


def _stamp(seconds: float) -> str:
    moment = START + timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def traffic(seed: int) -> tuple[list[OutcomeRecord], dict[str, Label]]:
    """Two phases, three variants, every kind of record the observations treat apart."""
    rng = random.Random(seed)
    records: list[OutcomeRecord] = []
    labels: dict[str, Label] = {}
    for u in range(60):
        unit = f"{u:032x}"
        phase = "p1" if u < 40 else "p2"
        variant = ("base", "custom", "third")[u % 3]
        at = rng.uniform(0, 3600) + (0 if phase == "p1" else 4000)
        client_session = None if u % 7 == 0 else f"{u + 1000:032x}"
        for attempt in range(rng.choice((1, 1, 2))):
            session = f"{u:016x}{attempt:016x}"
            forced = u % 11 == 0
            failover = "custom" if (variant == "base" and u % 5 == 0) else None
            for index in range(rng.randint(1, 4)):
                at += rng.choice((0.0, 0.5, 3.0))  # equal timestamps too
                roll = rng.random()
                failure = roll < 0.15
                status = "Success"
                error_code = None
                if failure:
                    status = rng.choice(("Error", "TooManyRequests", "Error"))
                    error_code = rng.choice(("upstream_close_1011", "limit_sessions", None))
                elif roll > 0.9:
                    status = "NoMatch"
                text = None if failure or status != "Success" else " ".join(WORDS[: 3 + index])
                if text is not None and rng.random() < 0.2:
                    text = text.replace("two", "to")
                if text is not None and u % 13 == 0:
                    text = None  # privacy: labelled but unscorable
                common: dict[str, Any] = {
                    "kind": Kind.SESSION_FAILURE if failure else Kind.UTTERANCE,
                    "timestamp": _stamp(at),
                    "experiment": "e",
                    "phase": phase,
                    "variant": "base" if failover else variant,
                    "backend": variant,
                    "forced": forced,
                    "client": rng.choice(("app", "web")),
                    "unit": unit,
                    "unit_source": UnitSource.QUERY,
                    "session_id": session,
                    "protocol": Protocol.USP,
                    "locale": "en-us",
                    "utterance_index": None if failure else index,
                    "status": status,
                    "error_code": error_code,
                    "audio_offset_ms": None if failure else index * 4000.0,
                    "audio_duration_ms": None if failure else 3000.0,
                    "first_hypothesis_ms": None if failure else rng.uniform(100, 400),
                    "final_latency_ms": None if failure or rng.random() < 0.1 else 300.0 + u,
                    "text": text,
                    "confidence": None if failure else round(rng.uniform(0.4, 1.0), 3),
                    "word_count": None if failure else 3 + index,
                    "failover_from": failover,
                    "client_session": client_session,
                }
                primary = OutcomeRecord(role=Role.PRIMARY, **common)
                records.append(primary)
                if not failure and variant == "custom" and not forced:
                    shadow = {**common, "variant": "third", "backend": "third"}
                    shadow["text"] = None if text is None else text.replace("send", "sent")
                    records.append(OutcomeRecord(role=Role.SHADOW, shadow_drops=0, **shadow))
                if not failure and rng.random() < 0.6:
                    label = Label(
                        record_id=primary.record_id,
                        text=" ".join(WORDS[: 3 + index]),
                        labeller="test",
                        source="import",
                    )
                    labels[primary.record_id] = label
                if failure:
                    break
            at += rng.choice((1.0, 60.0, 500.0))  # retried within the gap, or not
    for k in range(5):  # canaries and another experiment's records are no evidence
        records.append(
            OutcomeRecord(
                kind=Kind.UTTERANCE,
                timestamp=_stamp(100.0 + k),
                experiment="e",
                phase="p1",
                variant="base",
                backend="base",
                role=Role.CANARY,
                client="_canary",
                unit=f"item-{k}",
                unit_source=UnitSource.CANARY,
                session_id=f"canary{k}",
                protocol=Protocol.USP,
                status="Success",
                text="hello",
            )
        )
    other = records[0]
    records.append(OutcomeRecord(**{**_fields(other), "record_id": "f" * 32, "experiment": "x"}))
    rng.shuffle(records)
    # Half the labels carry their counts, as the label stores write them.
    by_id = {r.record_id: r for r in records}
    for rid in list(labels)[::2]:
        labels[rid] = scored(labels[rid], score_targets(by_id[rid], records))
    return records, labels


def _fields(record: OutcomeRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def write_jsonl(path: Path, records: list[OutcomeRecord]) -> None:
    lines = [r.to_json() + "\n" for r in records]
    lines.append(lines[3])  # a record delivered twice counts once
    path.write_text("".join(lines), encoding="ascii")


def assert_same(ours: dict[str, PhaseObservations], theirs: dict[str, PhaseObservations]) -> None:
    assert ours.keys() == theirs.keys()
    for key, a in ours.items():
        b = theirs[key]
        assert (a.first, a.last) == (b.first, b.last)
        assert a.shadow_pairs == b.shadow_pairs
        assert a.variants.keys() == b.variants.keys()
        for name, x in a.variants.items():
            y = b.variants[name]
            assert x.backends == y.backends
            assert [getattr(x, c) for c in COUNTS] == [getattr(y, c) for c in COUNTS], name
            for table in ("table", "scores"):
                tx, ty = getattr(x, table), getattr(y, table)
                for column in (c for c in tx.__dataclass_fields__ if not c.startswith("_")):
                    vx, vy = getattr(tx, column), getattr(ty, column)
                    if isinstance(vx, dict):
                        for metric in vx:
                            assert np.array_equal(vx[metric], vy[metric], equal_nan=True)
                    else:
                        assert np.array_equal(vx, vy, equal_nan=True), (name, table, column)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_engine_observes_what_the_records_show(tmp_path: Path, seed: int) -> None:
    records, labels = traffic(seed)
    write_jsonl(tmp_path / "outcomes.jsonl", records)
    engine = DuckDbEngine.jsonl(tmp_path / "outcomes.jsonl")
    evidence = [r for r in records if r.experiment == "e"]
    found = engine.observations(AnalysisWindow("e"), labels)
    assert_same(observe(evidence, labels), found)
    # Some of everything was there to count.
    variants = [v for p in found.values() for v in p.variants.values()]
    for count in COUNTS:
        assert any(getattr(v, count) for v in variants), count
    assert any(p.shadow_pairs for p in found.values())


def test_a_window_selects_the_same_records(tmp_path: Path) -> None:
    records, labels = traffic(4)
    write_jsonl(tmp_path / "outcomes.jsonl", records)
    since, until = START + timedelta(seconds=900), START + timedelta(seconds=4600)
    inside = [
        r
        for r in records
        if r.experiment == "e" and since <= datetime.fromisoformat(r.timestamp) < until
    ]
    found = DuckDbEngine.jsonl(tmp_path / "outcomes.jsonl").observations(
        AnalysisWindow("e", since, until), labels
    )
    assert_same(observe(inside, labels), found)


def test_the_report_on_the_engine_is_the_record_paths(tmp_path: Path) -> None:
    records, labels = traffic(5)
    write_jsonl(tmp_path / "outcomes.jsonl", records)
    (tmp_path / "labels.jsonl").write_text(
        "".join(label.to_json() + "\n" for label in labels.values()), encoding="ascii"
    )
    reader = FileReader(tmp_path / "outcomes.jsonl", tmp_path / "labels.jsonl")
    info = ExperimentInfo(control="base", phase="p2", shares={"base": 0.5, "custom": 0.5})
    options = AnalysisOptions(resamples=200, error_labelled=30)  # the error analysis samples

    def report(engine: DuckDbEngine | None) -> dict[str, Any]:
        found = asyncio.run(analyze(reader, "e", info=info, options=options, engine=engine))
        found.pop("generated_at")
        return found

    ours = report(DuckDbEngine.jsonl(tmp_path / "outcomes.jsonl"))
    assert ours == report(None)
    assert ours["errors"]["sample"]["labelled_in_window"] > 30
    assert ours["phases"][0]["comparisons"]
    assert ours["canary"] is None or isinstance(ours["canary"], dict)


def test_parquet_export_gives_the_same_observations(tmp_path: Path) -> None:
    records, labels = traffic(6)
    append_outcomes(tmp_path / "lake", records)
    sources = lake_sources(tmp_path / "lake", "e")
    found = DuckDbEngine.parquet(sources.outcomes).observations(AnalysisWindow("e"), labels)
    assert_same(observe([r for r in records if r.experiment == "e"], labels), found)


def test_records_are_read_whole_by_their_ids_or_again_when_the_lines_say_them_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records, _ = traffic(8)
    path = tmp_path / "outcomes.jsonl"
    write_jsonl(path, records)  # with a record twice, in the same line
    expected = sorted(
        (r for r in records if r.experiment == "e"), key=lambda r: (r.timestamp, r.record_id)
    )
    results: list[list[OutcomeRecord] | None] = []

    def recorded(path: Path, ids: list[str]) -> list[OutcomeRecord] | None:
        results.append(found := records_by_id(path, ids))
        return found

    monkeypatch.setattr(engine_module, "records_by_id", recorded)
    engine = DuckDbEngine.jsonl(path)
    assert engine.records(AnalysisWindow("e"), None) == expected
    assert results[-1] is not None  # read by their ids
    # Blank lines, and a line with spaces in it (valid JSON): read again by DuckDB.
    lines = path.read_text(encoding="ascii").splitlines(keepends=True)
    spaced = lines[5].replace('"record_id":"', '"record_id": "')
    path.write_text("".join([*lines[:5], "\n", " \n", spaced, *lines[6:]]), encoding="ascii")
    assert engine.records(AnalysisWindow("e"), None) == expected
    assert results[-1] is None
    # A record twice in different lines, a missing file: not read by id either.
    twice = lines[7].replace('"locale":"en-us"', '"locale":"en-gb"')
    assert twice != lines[7]
    path.write_text("".join([*lines, twice]), encoding="ascii")
    assert records_by_id(path, [records[7].record_id]) is None
    assert records_by_id(path, [records[6].record_id]) == [records[6]]
    assert records_by_id(tmp_path / "missing.jsonl", [records[0].record_id]) is None


def test_a_torn_last_line_falls_back_to_the_record_reader(tmp_path: Path) -> None:
    records, labels = traffic(7)
    path = tmp_path / "outcomes.jsonl"
    write_jsonl(path, records)
    with path.open("a", encoding="ascii") as file:
        file.write('{"schema_version":4,"record_id":"')  # a write in progress
    with pytest.raises(EngineUnreadable):
        DuckDbEngine.jsonl(path).observations(AnalysisWindow("e"), labels)
    reader = FileReader(path, tmp_path / "labels.jsonl")
    options = AnalysisOptions(resamples=200)
    engine = DuckDbEngine.jsonl(path)
    ours = asyncio.run(analyze(reader, "e", options=options, engine=engine))
    theirs = asyncio.run(analyze(reader, "e", options=options))
    ours.pop("generated_at")
    theirs.pop("generated_at")
    assert ours == theirs


def test_a_missing_file_is_no_records_when_allowed(tmp_path: Path) -> None:
    reader = FileReader(tmp_path / "none.jsonl", tmp_path / "labels.jsonl")
    engine = DuckDbEngine.jsonl(tmp_path / "none.jsonl")
    report = asyncio.run(analyze(reader, "e", missing_ok=True, engine=engine))
    assert report["phases"] == []
    with pytest.raises(FileNotFoundError):
        asyncio.run(analyze(reader, "e", engine=engine))


def test_the_category_rules_are_the_records(tmp_path: Path) -> None:
    """`category_sql` against `category` on every status and error code in use."""
    import duckdb

    from gateway.outcomes.record import CATEGORIES, category

    rows = []
    for kind in (Kind.UTTERANCE, Kind.SESSION_FAILURE):
        for status in (
            "Success",
            "NoMatch",
            "InitialSilenceTimeout",
            "BabbleTimeout",
            "Error",
            "TooManyRequests",
            "BadRequest",
            "Forbidden",
            "ServiceUnavailable",
        ):
            for code in (
                None,
                "upstream_http_429",
                "limit_sessions",
                "gateway_shutdown",
                "upstream_close_1011",
            ):
                rows.append((kind.value, status, code))
    con = duckdb.connect()
    con.execute("CREATE TABLE t (kind VARCHAR, status VARCHAR, error_code VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    found = con.execute(f"SELECT kind, status, error_code, {category_sql()} FROM t").fetchall()
    for kind, status, code, index in found:
        record = OutcomeRecord(
            kind=Kind(kind),
            experiment="e",
            phase="p",
            variant="v",
            backend="b",
            role=Role.PRIMARY,
            client="c",
            unit="u",
            unit_source=UnitSource.QUERY,
            session_id="s",
            protocol=Protocol.USP,
            status=status,
            error_code=code,
            utterance_index=None if kind == "session_failure" else 0,
        )
        assert CATEGORIES[index] == category(record), (kind, status, code)


def test_the_sample_is_said_in_the_text_and_html(tmp_path: Path) -> None:
    from gateway.analysis.html_report import render_html
    from gateway.analysis.text_report import render_text

    records, labels = traffic(8)
    report = build_report(
        "e",
        [r for r in records if r.experiment == "e"],
        labels,
        options=AnalysisOptions(resamples=200, error_labelled=30),
    )
    sample = report["errors"]["sample"]
    assert 0 < sample["unit_share"] < 1
    assert sample["labelled_in_sample"] < sample["labelled_in_window"]
    assert "A sample of units" in render_text(report)
    assert "A sample of units" in render_html(report)


@pytest.mark.parametrize(
    ("field", "value"),
    [("confidence", "2"), ("final_latency_ms", "NaN"), ("role", '"judge"'), ("unit", '""')],
)
def test_a_record_outside_the_format_is_left_to_the_record_reader(
    tmp_path: Path, field: str, value: str
) -> None:
    records, labels = traffic(9)
    path = tmp_path / "outcomes.jsonl"
    write_jsonl(path, records)
    first = next(r for r in records if r.experiment == "e")
    line = first.to_json().replace(first.record_id, "e" * 32)  # a record of its own
    start = line.index(f'"{field}":') + len(field) + 3
    end = line.index(',"', start)
    with path.open("a", encoding="ascii") as file:
        file.write(line[:start] + value + line[end:] + "\n")
    with pytest.raises(EngineUnreadable, match="outside the documented format"):
        DuckDbEngine.jsonl(path).observations(AnalysisWindow("e"), labels)


def test_the_live_analysis_engine_uses_one_thread(tmp_path: Path) -> None:
    """The analysis process shares the host with the relay: its DuckDB gets one thread."""
    from gateway.config.settings import OutcomeSettings
    from gateway.stores.factory import analysis_engine

    records, _ = traffic(10)
    write_jsonl(tmp_path / "outcomes.jsonl", records)
    engine = analysis_engine(OutcomeSettings(path=tmp_path / "outcomes.jsonl"), threads=1)
    assert isinstance(engine, DuckDbEngine)
    with engine._records(AnalysisWindow("e")) as con:
        row = con.execute("SELECT current_setting('threads')").fetchone()
    assert row is not None
    assert int(row[0]) == 1


def test_the_engine_reads_the_label_file_as_the_label_store_does(tmp_path: Path) -> None:
    """The engine's own reading of the label file (`evidence`) gives the observations of
    the label store's labels: the last valid line of a record wins, a bad line is skipped,
    counts of another normalisation are aligned again, and review labels of held-back
    records are no evidence; it hands over the labels of what it read whole and of `wanted`."""
    records, labels = traffic(12)
    write_jsonl(tmp_path / "outcomes.jsonl", records)
    ids = list(labels)
    lines = [label.to_json() for label in labels.values()]
    first = labels[ids[0]]
    lines.insert(
        0, Label(record_id=ids[0], text="an older text", labeller="t", source="api").to_json()
    )
    lines.append("not json")
    lines.append(lines[1].replace(ids[1], "NOT-AN-ID"))
    stale = scored(labels[ids[2]], score_targets(*_targets(records, ids[2])))
    lines.append(stale.to_json().replace('"normalisation":"', '"normalisation":"0-'))
    review = Label(record_id=ids[3], text="please send two", labeller="r", source="review")
    lines.append(review.to_json())
    (tmp_path / "labels.jsonl").write_text("\n".join(lines) + "\n", encoding="ascii")
    reader = FileReader(tmp_path / "outcomes.jsonl", tmp_path / "labels.jsonl")
    stored = asyncio.run(reader.labels("e"))
    assert stored[ids[0]] == first
    assert stored[ids[3]] == review
    held_back = frozenset({ids[3]})
    headline = {rid: label for rid, label in stored.items() if rid not in held_back}
    engine = DuckDbEngine.jsonl(tmp_path / "outcomes.jsonl")
    found = engine.evidence(AnalysisWindow("e"), 10**6, held_back=held_back, wanted=held_back)
    evidence = [r for r in records if r.experiment == "e"]
    assert_same(observe(evidence, headline), found.observations)
    assert found.sample is None  # all fit: every record is read whole, with its label
    assert found.labels == {
        r.record_id: stored[r.record_id] for r in evidence if r.record_id in stored
    }
    with_sample = engine.evidence(AnalysisWindow("e"), 5, wanted=held_back)
    assert with_sample.sample is not None
    # The reported records' labels and the wanted ones, and those of the records read
    # whole for the shadow pairs: each the label store's.
    reported = {r.record_id for r in with_sample.records} | held_back
    assert {rid for rid in reported if rid in stored} <= with_sample.labels.keys()
    assert all(stored[rid] == label for rid, label in with_sample.labels.items())
    assert len(with_sample.labels) < len(found.labels)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda line: line.replace('"labeller":"', '"labeller":"\\u0007'),  # not printable
        lambda line: line.replace('"labeller":"t"', '"labeller":" "'),  # blank
        lambda line: line.replace('"labeller":"t"', '"labeller":5'),  # not a string
        lambda line: line.replace('"text":"', '"text":"  '),  # not stripped
        lambda line: line.replace('"text":"', '"text":"\\u00a0'),  # not stripped (NBSP)
        lambda line: line.replace('"labelled_at":"', '"labelled_at":"x'),  # not a time
        lambda line: re.sub(r'"labelled_at":"(\d{4})-\d\d', r'"labelled_at":"\1-13', line),
        lambda line: line.replace('"source":"api"', '"source":"API"'),
    ],
)
def test_a_later_line_the_label_store_refuses_does_not_count(
    tmp_path: Path, spoil: Callable[[str], str]
) -> None:
    """A later line of a record that `Label` refuses leaves the earlier label current, on
    the engine's reading as in the label store: it fails the engine's SQL checks, or the
    engine says it cannot read the store (the caller then reads it record by record)."""
    records, labels = traffic(12)
    write_jsonl(tmp_path / "outcomes.jsonl", records)
    evidence = [r for r in records if r.experiment == "e"]
    rid = next(r.record_id for r in evidence if r.record_id in labels and r.text)
    later = Label(record_id=rid, text="a wholly different later text", labeller="t", source="api")
    lines = [label.to_json() for label in labels.values()] + [spoil(later.to_json())]
    (tmp_path / "labels.jsonl").write_text("\n".join(lines) + "\n", encoding="ascii")
    stored = asyncio.run(
        FileReader(tmp_path / "outcomes.jsonl", tmp_path / "labels.jsonl").labels("e")
    )
    assert stored[rid] == labels[rid]
    engine = DuckDbEngine.jsonl(tmp_path / "outcomes.jsonl")
    try:
        found = engine.evidence(AnalysisWindow("e"), 10**6)
    except EngineUnreadable:
        return
    assert_same(observe(evidence, stored), found.observations)
    assert found.labels[rid] == labels[rid]


def _targets(records: list[OutcomeRecord], rid: str) -> tuple[OutcomeRecord, list[OutcomeRecord]]:
    record = next(r for r in records if r.record_id == rid)
    return record, [
        r for r in records if r.role is Role.SHADOW and r.session_id == record.session_id
    ]


def test_an_engine_without_a_label_file_has_no_labels(tmp_path: Path) -> None:
    """No label file (yet): nothing is labelled, nothing fails."""
    records, _ = traffic(14)
    write_jsonl(tmp_path / "outcomes.jsonl", records)
    found = DuckDbEngine.jsonl(tmp_path / "outcomes.jsonl").evidence(AnalysisWindow("e"), 100)
    assert found.labels == {}
    assert_same(observe([r for r in records if r.experiment == "e"], {}), found.observations)


def test_the_memory_limit_keeps_within_a_containers_limit(tmp_path: Path) -> None:
    """A third of the source, at least the minimum, at most half of the container's memory limit
    where one is set (cgroup v2 "max" and v1's huge number mean none)."""
    limit = tmp_path / "memory.max"
    limit.write_text("1000000000\n")
    none = tmp_path / "none"
    none.write_text("max\n")
    big = 10**12
    assert memory_limit(big, [limit]) == 500_000_000
    assert memory_limit(big, [none, tmp_path / "absent"]) > 500_000_000
    assert memory_limit(10, [limit]) == MEMORY_LIMIT_MIN
    assert memory_limit(1_500_000_000, [none]) == 500_000_000
