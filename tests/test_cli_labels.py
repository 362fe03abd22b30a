"""`speech-gateway label import` against the file store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import minimal_outcome

from gateway.cli import main
from gateway.outcomes.record import OutcomeRecord


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, OutcomeRecord]:
    monkeypatch.chdir(tmp_path)
    record = minimal_outcome()
    (tmp_path / "out.jsonl").write_text(record.to_json() + "\n")
    path = tmp_path / "c.toml"
    path.write_text('[outcomes]\npath = "out.jsonl"\n')
    return path, record


def test_import_attaches_labels_and_names_the_labeller(
    config: tuple[Path, OutcomeRecord], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CSV import stores each label beside the outcomes with who labelled it."""
    path, record = config
    (tmp_path / "labels.csv").write_text(f"record_id,text\n{record.record_id},hello world\n")
    assert main(["--config", str(path), "label", "import", "labels.csv", "--by", "alice"]) == 0
    assert "1 new" in capsys.readouterr().out
    (stored,) = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert (stored["record_id"], stored["text"], stored["labeller"]) == (
        record.record_id,
        "hello world",
        "alice",
    )


def test_import_with_a_bad_line_imports_nothing_and_names_the_line(
    config: tuple[Path, OutcomeRecord], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file with one bad line is refused whole, with the file and line in the message."""
    path, record = config
    bad = f"record_id,text\n{record.record_id},hello\nnot-an-id,x\n"
    (tmp_path / "bad.csv").write_text(bad)
    assert main(["--config", str(path), "label", "import", "bad.csv", "--by", "bob"]) == 2
    assert "bad.csv:3" in capsys.readouterr().err
    assert not (tmp_path / "labels.jsonl").exists() or not (tmp_path / "labels.jsonl").read_text()
