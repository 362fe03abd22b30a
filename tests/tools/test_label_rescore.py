"""Tests for gateway.tools.label_rescore: `speech-gateway label rescore` on both stores."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from support import minimal_outcome

from gateway.cli import main
from gateway.outcomes.labels import Label, LabelInput, stored_counts
from gateway.outcomes.record import OutcomeRecord
from gateway.stats.wer import WerCounts
from gateway.stores.keys import RedisKeys
from gateway.stores.redis_client import connect
from gateway.stores.redis_sink import RedisSink
from gateway.text import normalize


def records() -> list[OutcomeRecord]:
    """Two experiments' records with text, one record each."""
    first = dataclasses.replace(minimal_outcome(), text="pay my bill")
    second = dataclasses.replace(minimal_outcome(), experiment="cd", text="two hundred dollars")
    return [first, second]


def old_label(record: OutcomeRecord, text: str) -> str:
    """A label line as a version without stored counts wrote it."""
    return LabelInput(record.record_id, text).label("alice", "import").to_json()


@pytest.fixture
def file_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[OutcomeRecord]:
    """A file store (c.toml in the working directory) holding old, unscored labels."""
    monkeypatch.chdir(tmp_path)
    made = records()
    (tmp_path / "out.jsonl").write_text("".join(r.to_json() + "\n" for r in made))
    lines = [old_label(made[0], "pay my bill"), old_label(made[1], "$200")]
    (tmp_path / "labels.jsonl").write_text("".join(line + "\n" for line in lines))
    (tmp_path / "c.toml").write_text('[outcomes]\npath = "out.jsonl"\n')
    return made


def current_labels(folder: Path) -> dict[str, Label]:
    lines = (folder / "labels.jsonl").read_text().splitlines()
    return {label.record_id: label for label in map(Label.from_json, lines)}


def test_rescore_all_scores_old_labels_then_finds_nothing_to_do(
    file_store: list[OutcomeRecord], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--all` scores every experiment's unscored labels and says so; a second run rescores
    nothing."""
    assert main(["--config", "c.toml", "label", "rescore", "--all"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "ab: 1 labels, 1 rescored, 0 already current, 0 without their record",
        "cd: 1 labels, 1 rescored, 0 already current, 0 without their record",
    ]
    labels = current_labels(tmp_path)
    first, second = (r.record_id for r in file_store)
    assert stored_counts(labels[first], first) == WerCounts(hits=3)
    assert stored_counts(labels[second], second) == WerCounts(hits=3)
    assert main(["--config", "c.toml", "label", "rescore", "--experiment", "cd"]) == 0
    assert capsys.readouterr().out.startswith("cd: 1 labels, 0 rescored, 1 already current")


def test_rescore_after_a_normalisation_change(
    file_store: list[OutcomeRecord],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After the normalisation version changes, the same command recomputes every label's
    counts under the new version."""
    assert main(["--config", "c.toml", "label", "rescore", "--all"]) == 0
    monkeypatch.setattr(normalize, "NORMALISATION_VERSION", "test-next")
    assert main(["label", "rescore", "--experiment", "ab", "--config", "c.toml"]) == 0
    assert "ab: 1 labels, 1 rescored" in capsys.readouterr().out
    first = file_store[0].record_id
    assert current_labels(tmp_path)[first].normalisation == "test-next"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--experiment", "nope"], "--experiment: no outcome records in experiment 'nope' "),
        (["--experiment", "bad id!"], "--experiment: expected an experiment id"),
    ],
)
def test_bad_experiments_exit_2_with_one_line(
    file_store: list[OutcomeRecord],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    """An invalid or unknown experiment is one line on stderr, exit status 2, nothing
    written."""
    before = (tmp_path / "labels.jsonl").read_bytes()
    assert main(["--config", "c.toml", "label", "rescore", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"speech-gateway: {message}")
    assert err.count("\n") == 1
    assert (tmp_path / "labels.jsonl").read_bytes() == before


@pytest.mark.parametrize("argv", [[], ["--all", "--experiment", "ab"]])
def test_rescore_needs_either_experiment_or_all(
    file_store: list[OutcomeRecord], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Without --experiment or --all, or with both, the command is refused with status 2."""
    with pytest.raises(SystemExit) as exited:
        main(["--config", "c.toml", "label", "rescore", *argv])
    assert exited.value.code == 2
    assert "--experiment" in capsys.readouterr().err


@pytest.fixture
async def redis_keys() -> AsyncIterator[RedisKeys]:
    """A key prefix of this test's own in the shared test Redis, removed after."""
    keys = RedisKeys(prefix=f"sgw-test-{uuid.uuid4().hex}")
    yield keys
    client = Redis(host="127.0.0.1", port=6379)
    doomed = [key async for key in client.scan_iter(match=f"{keys.prefix}:*")]
    if doomed:
        await client.delete(*doomed)
    await client.aclose()


async def test_rescore_on_the_redis_store(
    redis_keys: RedisKeys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the Redis store, old labels in an experiment's hash are scored in place."""
    made = records()
    factory = functools.partial(connect, "redis://127.0.0.1:6379", cluster=False)
    async with RedisSink(factory, redis_keys, tmp_path / "journal") as sink:
        await sink.deliver(made)
    client = Redis(host="127.0.0.1", port=6379)
    try:
        await client.hset(redis_keys.labels("ab"), made[0].record_id, old_label(made[0], "pay"))
        monkeypatch.chdir(tmp_path)
        (tmp_path / "c.toml").write_text(
            '[outcomes]\nstore = "redis"\njournal_dir = "journal"\n'
            f'[redis]\nprefix = "{redis_keys.prefix}"\n'
        )
        capsys.readouterr()
        # main() runs its own event loop: call it from a worker thread, off this test's loop.
        argv = ["--config", "c.toml", "label", "rescore", "--experiment", "ab"]
        assert await asyncio.to_thread(main, argv) == 0
        assert "ab: 1 labels, 1 rescored" in capsys.readouterr().out
        stored = await client.hget(redis_keys.labels("ab"), made[0].record_id)
    finally:
        await client.aclose()
    assert stored is not None
    label = Label.from_json(stored)
    assert stored_counts(label, made[0].record_id) == WerCounts(insertions=2, hits=1)
    assert json.loads(stored)["normalisation"] == normalize.NORMALISATION_VERSION
