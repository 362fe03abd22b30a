"""Outcomes in Redis through a live gateway: Redis dies or freezes, sessions never notice."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from conftest import gateway_for, split_experiment
from redis_servers import RedisServer
from support import CLIENT_KEY, read_pcm, silence, write_wav

from gateway.constants import RECORD_FIELD, RedisKeys
from gateway.control.model import hash_key
from gateway.local_services import LocalEmulator, LocalGateway
from gateway.outcomes.record import OutcomeRecord
from gateway.speech_client import Transcript, speech_config, transcribe_file

PATH = "/speech/recognition/conversation/cognitiveservices/v1"
PREFIX = "sgw-func"
SESSIONS = 12
ADMIN = "admin-token-for-labels-0123"


@pytest.fixture
def long_wav(tmp_path: Path) -> Path:
    """About 12 s of audio: four 3-second windows of the instant engine."""
    item = Path(__file__).resolve().parents[2] / "data/demo/banking/audio/banking-001.wav"
    return write_wav(tmp_path / "long.wav", (read_pcm(item) + silence(0.5)) * 3)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        yield server


def redis_gateway(work: Path, alpha: LocalEmulator, bravo: LocalEmulator, url: str) -> LocalGateway:
    env = {
        **os.environ,
        "SPEECH_GATEWAY_OUTCOMES__STORE": "redis",
        "SPEECH_GATEWAY_OUTCOMES__REDIS_URL": url,
        "SPEECH_GATEWAY_OUTCOMES__REDIS_PREFIX": PREFIX,
        "SPEECH_GATEWAY_OUTCOMES__JOURNAL_DIR": str(work / "journal"),
        "SPEECH_GATEWAY_GATEWAY__ADMIN_TOKENS_SHA256": json.dumps({"reviewer": hash_key(ADMIN)}),
    }
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    return gateway_for(work, backends, [split_experiment()], env=env)


def run_sessions(gateway: LocalGateway, wav: Path, during: threading.Event) -> list[Transcript]:
    """SESSIONS continuous SDK sessions, four at a time; `during` is set once they run."""

    def one(index: int) -> Transcript:
        config = speech_config(f"{gateway.ws_url}{PATH}", CLIENT_KEY)
        if index == 2:
            during.set()
        return transcribe_file(config, wav)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(SESSIONS)))


def stream_records(url: str) -> list[OutcomeRecord]:
    client = redis.Redis.from_url(url)
    try:
        entries = client.xrange(RedisKeys(PREFIX).outcomes("ab"))
    finally:
        client.close()
    return [OutcomeRecord.from_json(fields[RECORD_FIELD.encode()]) for _id, fields in entries]


def expected_utterances(transcripts: list[Transcript]) -> int:
    for transcript in transcripts:
        assert transcript.error_code is None, transcript.error_details
        assert transcript.canceled_reason == "EndOfStream"
    return sum(len(t.recognized) for t in transcripts)


def wait_for(condition: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_redis_killed_and_restarted_loses_and_duplicates_nothing(
    alpha: LocalEmulator,
    bravo: LocalEmulator,
    redis_server: RedisServer,
    long_wav: Path,
    tmp_path: Path,
) -> None:
    """Redis killed mid-way and restarted: sessions see nothing; every outcome arrives once."""
    started = threading.Event()

    def outage() -> None:
        started.wait(60)
        redis_server.kill()
        time.sleep(3)
        redis_server.restart()

    chaos = threading.Thread(target=outage)
    with redis_gateway(tmp_path / "gw", alpha, bravo, redis_server.url) as gateway:
        chaos.start()
        transcripts = run_sessions(gateway, long_wav, started)
        chaos.join()
        expected = expected_utterances(transcripts)
        wait_for(lambda: len(stream_records(redis_server.url)) >= expected)
    records = stream_records(redis_server.url)  # after a graceful stop: nothing pending
    assert len(records) == expected
    assert len({r.record_id for r in records}) == expected
    log = (tmp_path / "gw" / "gateway.log").read_text()
    assert "outcomes_redis_unavailable" in log


def test_redis_frozen_then_thawed_delivers_everything(
    alpha: LocalEmulator,
    bravo: LocalEmulator,
    redis_server: RedisServer,
    long_wav: Path,
    tmp_path: Path,
) -> None:
    """Redis frozen (SIGSTOP) during sessions: they complete normally; outcomes flow after."""
    started = threading.Event()
    with redis_gateway(tmp_path / "gw", alpha, bravo, redis_server.url) as gateway:
        freezer = threading.Thread(target=lambda: (started.wait(60), redis_server.stop()))
        freezer.start()
        transcripts = run_sessions(gateway, long_wav, started)
        freezer.join()
        expected = expected_utterances(transcripts)
        redis_server.cont()
        wait_for(lambda: len(stream_records(redis_server.url)) >= expected)
        records = stream_records(redis_server.url)
    assert len(records) == expected
    assert len({r.record_id for r in records}) == expected


def test_labels_attach_to_outcomes_in_redis_through_the_gateway(
    alpha: LocalEmulator,
    bravo: LocalEmulator,
    redis_server: RedisServer,
    long_wav: Path,
    tmp_path: Path,
) -> None:
    """Labels posted to the gateway attach to Redis outcomes; unknown ids and bad tokens fail."""
    import urllib.error
    import urllib.request

    def post(gateway: LocalGateway, body: object, token: str) -> tuple[int, dict[str, object]]:
        request = urllib.request.Request(
            f"{gateway.http_url}/labels",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, {}

    with redis_gateway(tmp_path / "gw", alpha, bravo, redis_server.url) as gateway:
        transcribe_file(speech_config(f"{gateway.ws_url}{PATH}", CLIENT_KEY), long_wav)
        wait_for(lambda: len(stream_records(redis_server.url)) > 0)
        record = stream_records(redis_server.url)[0]
        label = {"record_id": record.record_id, "text": "The reference words."}
        status, body = post(gateway, label, ADMIN)
        assert status == 200, body
        assert post(gateway, label, ADMIN)[0] == 200  # a relabel: last wins
        assert post(gateway, {"record_id": "f" * 32, "text": "x"}, ADMIN)[0] == 422
        assert post(gateway, label, "not-the-admin-token")[0] == 401
        assert post(gateway, label, CLIENT_KEY)[0] == 401
    client = redis.Redis.from_url(redis_server.url)
    try:
        stored = client.hget(RedisKeys(PREFIX).labels("ab"), record.record_id)
        audit = client.xlen(RedisKeys(PREFIX).label_audit("ab"))
    finally:
        client.close()
    assert stored is not None
    assert json.loads(stored)["text"] == "The reference words."
    assert json.loads(stored)["labeller"] == "reviewer"
    assert audit == 2
