"""`speech-gateway replay` over loopback: the real Speech SDK through a real gateway process
in front of two instant emulators; labels attached by unit; the analysis fetched."""

from __future__ import annotations

import argparse
import io
import json
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import ALPHA, BRAVO, gateway_for, split_experiment
from support import CLIENT_KEY, DOMAINS, read_outcomes, read_pcm, write_wav

from gateway.config.settings import load_settings
from gateway.constants import ADMIN_TOKEN_ENV
from gateway.control.model import hash_key
from gateway.errors import ConfigError, UpstreamRejected, UpstreamUnavailable
from gateway.outcomes.labels import UnitLabel
from gateway.tools.cli_options import CLIENT_KEY_ENV, add_replay_arguments
from gateway.tools.dataset import LabelledUtterance, load_dataset
from gateway.tools.local_services import LocalEmulator, LocalGateway, free_port
from gateway.tools.replay import ProgressBar, ReplayOptions, replay_command, run_replay
from gateway.tools.replay_http import GatewayUrls, LabelTarget, attach_labels, fetch_analysis

ADMIN_TOKEN = "replay-test-admin-token-5d1c"
WRONG_KEY = "not-a-gateway-key-8e2f"
ITEM_SECONDS = 1.5  # under the instant engine's 3 s window: one utterance per item


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six items of real speech (the banking set's first 1.5 s) with their references."""
    folder = tmp_path_factory.mktemp("dataset")
    (folder / "audio").mkdir()
    lines = []
    for item in load_dataset(DOMAINS["banking"])[:6]:
        pcm = read_pcm(item.audio)[: int(16000 * ITEM_SECONDS) * 2]
        write_wav(folder / "audio" / item.audio.name, pcm)
        entry = {"id": item.id, "audio": f"audio/{item.audio.name}", "text": item.text}
        lines.append(json.dumps(entry))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def items(dataset: Path) -> list[LabelledUtterance]:
    return load_dataset(dataset)


@pytest.fixture(scope="module")
def gateway(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalGateway]:
    """A gateway splitting units 50/50 between the alpha and bravo emulators, with an admin
    token; its outcomes go to <work>/outcomes.jsonl."""
    work = tmp_path_factory.mktemp("gateway")
    running = gateway_for(
        work,
        {"alpha": alpha.ws_url, "bravo": bravo.ws_url},
        [split_experiment()],
        admin_tokens_sha256={"replay": hash_key(ADMIN_TOKEN)},
    )
    with running:
        yield running


def outcomes_of(gateway: LocalGateway) -> Path:
    return gateway.config.parent / "outcomes.jsonl"


def get_label(gateway: LocalGateway, record_id: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{gateway.http_url}/labels/{record_id}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_replay_arguments(parser)
    return parser.parse_args(argv)


def test_replay_labels_every_item_under_its_own_unit(
    gateway: LocalGateway, dataset: Path, items: list[LabelledUtterance]
) -> None:
    """Each item is one SDK session under a distinct unit; every reference is attached as
    the label of the record its session made, in the experiment the split chose."""
    progress = io.StringIO()
    options = ReplayOptions(
        dataset=dataset,
        gateway=gateway.http_url,
        key=CLIENT_KEY,
        admin_token=ADMIN_TOKEN,
        concurrency=3,
        unit_prefix="fast-run",
    )
    assert CLIENT_KEY not in repr(options)
    assert ADMIN_TOKEN not in repr(options)
    result = run_replay(options, progress=progress)
    assert result.failures == []
    assert [r.unit for r in result.items] == [f"fast-run-{item.id}" for item in items]
    assert {r.text for r in result.items} <= {ALPHA, BRAVO}
    assert all(r.utterances == 1 and len(r.record_ids) == 1 for r in result.items)
    assert result.labels is not None
    assert (result.labels.attached, result.labels.unresolved, result.labels.error) == (6, (), None)
    assert result.experiments == ("ab",)
    assert "labels: 6 of 6 attached by unit in ab" in result.summary()

    records = {r.record_id: r for r in read_outcomes(outcomes_of(gateway))}
    mine = [records[r.record_ids[0]] for r in result.items]
    assert len({record.unit for record in mine}) == len(items)  # distinct unit pseudonyms
    assert all(record.unit_source == "query" for record in mine)
    for item, replayed in zip(items, result.items, strict=True):
        label = get_label(gateway, replayed.record_ids[0])
        assert (label["text"], label["labeller"]) == (item.text.strip(), "replay")

    lines = progress.getvalue().splitlines()  # not a terminal: a line per 10 %
    assert lines[-1].startswith("replay: 6/6 (100 %), 0 failed")
    assert len(lines) == 6


def test_realtime_pace_streams_at_the_speed_of_speech(
    gateway: LocalGateway, dataset: Path, items: list[LabelledUtterance]
) -> None:
    """With real-time pacing a session lasts at least about as long as its audio, and the
    gateway's ws:// URL works as well as its http:// one."""
    options = ReplayOptions(
        dataset=dataset,
        gateway=gateway.ws_url,
        key=CLIENT_KEY,
        concurrency=2,
        pace="realtime",
        unit_prefix="rt",
    )
    result = run_replay(options, items=items[:2])
    assert result.failures == []
    for replayed in result.items:
        assert replayed.text in (ALPHA, BRAVO)
        assert replayed.audio_seconds == pytest.approx(ITEM_SECONDS, abs=0.01)
        assert replayed.seconds >= 0.8 * replayed.audio_seconds
    assert result.labels is None
    assert "labels: not attached (no admin token)" in result.summary()


def test_replay_without_admin_token_warns_and_succeeds(
    gateway: LocalGateway,
    dataset: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without an admin token the sessions run, a warning says labels were not attached
    (so no WER), and the exit status is 0; the key from the environment is never printed."""
    monkeypatch.setenv(CLIENT_KEY_ENV, CLIENT_KEY)
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    args = parse(str(dataset), "--gateway", gateway.http_url, "--concurrency", "6")
    assert replay_command(args, load_settings(None)) == 0
    out, err = capsys.readouterr()
    assert "6 ok, 0 failed" in out
    assert "labels: not attached" in out
    assert "warning: no admin token" in err
    assert "WER cannot be computed" in err
    assert CLIENT_KEY not in out + err


def test_bad_key_gives_a_failure_summary_and_exit_status_1(
    gateway: LocalGateway, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key the gateway does not know fails every session with AuthenticationFailure, said
    once in the summary; nothing is labelled; exit status 1; the key is never printed."""
    args = parse(
        str(dataset),
        "--gateway",
        gateway.http_url,
        "--key",
        WRONG_KEY,
        "--admin-token",
        ADMIN_TOKEN,
        "--concurrency",
        "6",
    )
    assert replay_command(args, load_settings(None)) == 1
    out, err = capsys.readouterr()
    assert "0 ok, 6 failed" in out
    assert "6 x AuthenticationFailure (first: banking-" in out
    assert "labels: 0 of 0 attached" in out
    assert WRONG_KEY not in out + err
    assert ADMIN_TOKEN not in out + err


def test_replay_command_prints_the_analysis(
    gateway: LocalGateway, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With an admin token (from the environment) the command attaches the labels and
    prints the analysis of the experiment they landed in."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
        args = parse(
            str(dataset), "--gateway", gateway.ws_url, "--key", CLIENT_KEY, "--concurrency", "6"
        )
        assert replay_command(args, load_settings(None)) == 0
    out, err = capsys.readouterr()
    assert "labels: 6 of 6 attached by unit in ab" in out
    assert "Experiment ab" in out
    assert "unavailable" not in err


def test_unresolved_units_are_retried_then_reported(gateway: LocalGateway) -> None:
    """A unit whose records never arrive is retried until the wait is over and reported as
    unresolved; the others are labelled meanwhile."""
    ghost = LabelTarget("ghost", UnitLabel("no-such-unit-anywhere", "nothing"))
    result = attach_labels(gateway.http_url, ADMIN_TOKEN, [ghost], wait_s=0.5)
    assert (result.attached, result.unresolved, result.error) == (0, ("ghost",), None)
    refused = attach_labels(gateway.http_url, "wrong-token", [ghost], wait_s=0.5)
    assert refused.error == "the gateway refused the admin token (401)"


def test_fetch_analysis_failures_are_clear(gateway: LocalGateway) -> None:
    """A bad token, an unknown experiment and an unreachable gateway each raise an error
    saying so; a good request returns the report."""
    assert fetch_analysis(gateway.http_url, ADMIN_TOKEN, "ab")["experiment"] == "ab"
    with pytest.raises(UpstreamRejected) as caught:
        fetch_analysis(gateway.http_url, "wrong-token", "ab")
    assert caught.value.status == 401
    with pytest.raises(UpstreamRejected) as caught:
        fetch_analysis(gateway.http_url, ADMIN_TOKEN, "nope")
    assert caught.value.status == 404
    assert "no experiment 'nope'" in caught.value.detail
    with pytest.raises(UpstreamUnavailable, match="cannot reach the gateway"):
        fetch_analysis(f"http://127.0.0.1:{free_port()}", ADMIN_TOKEN, "ab")


# -- without sessions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "ws", "http"),
    [
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("ws://127.0.0.1:8080/", "ws://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://gw.example.com", "wss://gw.example.com", "https://gw.example.com"),
        ("WSS://gw.example.com:443", "wss://gw.example.com:443", "https://gw.example.com:443"),
    ],
)
def test_gateway_url_in_either_form(url: str, ws: str, http: str) -> None:
    """The gateway's root URL may be given for the SDK (ws) or for HTTP; both are derived."""
    assert GatewayUrls.parse(url) == GatewayUrls(ws, http)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("127.0.0.1:8080", "expected a ws://, wss://, http:// or https:// URL"),
        ("ftp://host", "expected a ws://"),
        ("http://", "expected a ws://"),
        ("ws://host/speech/recognition/conversation/cognitiveservices/v1", "root URL"),
        ("http://host?x=1", "root URL"),
        ("http://user:secret@host", "must not carry credentials"),
    ],
)
def test_bad_gateway_url_names_the_option(url: str, problem: str) -> None:
    """A URL that is not a gateway root is refused naming --gateway."""
    with pytest.raises(ConfigError) as caught:
        GatewayUrls.parse(url)
    assert caught.value.field == "--gateway"
    assert problem in caught.value.problem
    assert "secret" not in str(caught.value)


def test_bad_options_and_items_fail_before_any_session(
    dataset: Path, items: list[LabelledUtterance], tmp_path: Path
) -> None:
    """Options and items that cannot work are ConfigErrors naming what is wrong."""
    good = ReplayOptions(dataset=dataset, gateway="http://127.0.0.1:1", key=CLIENT_KEY)

    def field(given: list[LabelledUtterance] = items, **changes: Any) -> str:
        with pytest.raises(ConfigError) as caught:
            run_replay(replace(good, **changes), items=given)
        return caught.value.field

    assert field(key="") == "--key"
    assert field(gateway="127.0.0.1:8080") == "--gateway"
    assert field(concurrency=0) == "--concurrency"
    assert field(pace="slow") == "--pace"
    assert field(path="speech") == "--path"
    assert field(experiment="a b") == "--experiment"
    assert field([]) == "dataset"
    assert field([items[0], items[0]]) == f"dataset item {items[0].id!r}"
    assert field(unit_prefix="x" * 250) == f"unit of item {items[0].id!r}"
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\0" * 64)
    assert field([LabelledUtterance("s", stereo, "x")]) == str(stereo)
    with pytest.raises(ConfigError) as caught:  # the dataset itself is read by default
        run_replay(replace(good, dataset=tmp_path / "absent"))
    assert caught.value.field.endswith("manifest.jsonl")


def test_progress_bar_redraws_one_line_on_a_terminal() -> None:
    """On a terminal the bar is one line redrawn in place (done/total, failures, elapsed),
    ended by a newline."""
    stream = io.StringIO()
    ticks = iter([0.0, 0.0, 5.0, 65.0])
    bar = ProgressBar(stream, 4, tty=True, clock=lambda: next(ticks))
    bar.update(1, 0)
    bar.update(4, 1)
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 3
    assert "\rreplay [------------------------] 0/4  0:00" in text
    assert "\rreplay [######------------------] 1/4  0:05" in text
    assert text.endswith("\rreplay [########################] 4/4, 1 failed  1:05\n")
