"""Outcomes in Redis through a live gateway: Redis dies or freezes, sessions never notice."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from conftest import gateway_for, split_experiment
from redis_servers import RedisClusterServers, RedisServer
from support import CLIENT_KEY, read_pcm, silence, write_wav

from gateway.control.model import hash_key
from gateway.outcomes.record import OutcomeRecord
from gateway.stores.keys import RECORD_FIELD, RedisKeys
from gateway.tools.local_services import LocalEmulator, LocalGateway
from gateway.tools.speech_client import Transcript, speech_config, transcribe_file

PATH = "/speech/recognition/conversation/cognitiveservices/v1"
PREFIX = "sgw-func"
SESSIONS = 12
ADMIN = "admin-token-for-labels-0123"


@pytest.fixture
def long_wav(tmp_path: Path) -> Path:
    """About 12 s of audio: four 3-second windows of the instant engine."""
    item = Path(__file__).resolve().parents[2] / "data/demo/banking/audio/banking-001.wav"
    return write_wav(tmp_path / "long.wav", (read_pcm(item) + silence(0.5)) * 3)


@dataclass
class Store:
    """A Redis to write outcomes to: one server, or a cluster and its experiment's node."""

    url: str
    cluster: bool
    node: RedisServer  # the server holding the experiment's keys

    def client(self) -> redis.Redis | redis.RedisCluster:
        if self.cluster:
            return redis.RedisCluster.from_url(self.url)
        return redis.Redis.from_url(self.url)

    def restart(self) -> None:
        self.node.restart()


@pytest.fixture(params=["single", "cluster"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A single Redis server, or a 3-node Redis Cluster, on loopback, with AOF persistence."""
    if request.param == "single":
        with RedisServer(tmp_path / "redis", appendonly=True) as server:
            yield Store(server.url, False, server)
        return
    with RedisClusterServers(tmp_path / "cluster") as cluster:
        owner = cluster.node_for_key(RedisKeys(PREFIX).outcomes("ab"))
        yield Store(cluster.url, True, owner)


def redis_gateway(
    work: Path, alpha: LocalEmulator, bravo: LocalEmulator, store: Store
) -> LocalGateway:
    env = {
        **os.environ,
        "SPEECH_GATEWAY_OUTCOMES__STORE": "redis",
        "SPEECH_GATEWAY_REDIS__URL": store.url,
        "SPEECH_GATEWAY_REDIS__CLUSTER": "true" if store.cluster else "false",
        "SPEECH_GATEWAY_REDIS__PREFIX": PREFIX,
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


def stream_records(store: Store) -> list[OutcomeRecord]:
    client = store.client()
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
    store: Store,
    long_wav: Path,
    tmp_path: Path,
) -> None:
    """Redis killed mid-way and restarted: sessions see nothing; every outcome arrives once."""
    started = threading.Event()

    def outage() -> None:
        started.wait(60)
        store.node.kill()
        time.sleep(3)
        store.restart()

    chaos = threading.Thread(target=outage)
    with redis_gateway(tmp_path / "gw", alpha, bravo, store) as gateway:
        chaos.start()
        transcripts = run_sessions(gateway, long_wav, started)
        chaos.join()
        expected = expected_utterances(transcripts)
        wait_for(lambda: len(stream_records(store)) >= expected)
    records = stream_records(store)  # after a graceful stop: nothing pending
    assert len(records) == expected
    assert len({r.record_id for r in records}) == expected
    log = (tmp_path / "gw" / "gateway.log").read_text()
    assert "outcomes_redis_unavailable" in log


def test_redis_frozen_then_thawed_delivers_everything(
    alpha: LocalEmulator,
    bravo: LocalEmulator,
    store: Store,
    long_wav: Path,
    tmp_path: Path,
) -> None:
    """Redis frozen (SIGSTOP) during sessions: they complete normally; outcomes flow after."""
    started = threading.Event()
    with redis_gateway(tmp_path / "gw", alpha, bravo, store) as gateway:
        freezer = threading.Thread(target=lambda: (started.wait(60), store.node.stop()))
        freezer.start()
        transcripts = run_sessions(gateway, long_wav, started)
        freezer.join()
        expected = expected_utterances(transcripts)
        store.node.cont()
        wait_for(lambda: len(stream_records(store)) >= expected)
        records = stream_records(store)
    assert len(records) == expected
    assert len({r.record_id for r in records}) == expected
    # A relay waiting on the frozen Redis would add the sink's 5 s write timeout: results
    # stayed far below it, so outcome logging was off the hot path.
    latencies = [r.final_latency_ms for r in records if r.final_latency_ms is not None]
    assert latencies
    assert max(latencies) < 2500


def test_labels_attach_to_outcomes_in_redis_through_the_gateway(
    alpha: LocalEmulator,
    bravo: LocalEmulator,
    store: Store,
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

    with redis_gateway(tmp_path / "gw", alpha, bravo, store) as gateway:
        transcribe_file(speech_config(f"{gateway.ws_url}{PATH}", CLIENT_KEY), long_wav)
        wait_for(lambda: len(stream_records(store)) > 0)
        record = stream_records(store)[0]
        label = {"record_id": record.record_id, "text": "The reference words."}
        status, body = post(gateway, label, ADMIN)
        assert status == 200, body
        assert post(gateway, label, ADMIN)[0] == 200  # a relabel: last wins
        assert post(gateway, {"record_id": "f" * 32, "text": "x"}, ADMIN)[0] == 422
        assert post(gateway, label, "not-the-admin-token")[0] == 401
        assert post(gateway, label, CLIENT_KEY)[0] == 401
    client = store.client()
    try:
        stored = client.hget(RedisKeys(PREFIX).labels("ab"), record.record_id)
        audit = client.xlen(RedisKeys(PREFIX).label_audit("ab"))
    finally:
        client.close()
    assert stored is not None
    assert json.loads(stored)["text"] == "The reference words."
    assert json.loads(stored)["labeller"] == "reviewer"
    assert audit == 2
