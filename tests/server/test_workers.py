"""`speech-gateway serve --workers N` as real processes: two workers on one port in front of
an instant emulator, with the Redis stores on a private redis-server. A worker killed with
SIGKILL is replaced while the other serves on; `/metrics` shows every worker's sessions
under a `worker` label; SIGTERM drains both and the supervisor exits 0 with every outcome
stored; a supervisor that dies takes its workers down; a combination that cannot be shared
is refused with exit status 2, and a worker that cannot start makes the supervisor give up
with exit status 1 and one line."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis_servers import RedisServer
from support import CLIENT_KEY, silence, write_gateway_config

from gateway.errors import ConfigError
from gateway.outcomes.record import OutcomeRecord
from gateway.server.workers import parse_workers
from gateway.stores.keys import RECORD_FIELD, RedisKeys
from gateway.tools.local_services import LocalEmulator, LocalGateway, free_port

TEXT = "Workers answer here."
PREFIX = "sgw-workers"
PATH = "/speech/recognition/conversation/cognitiveservices/v1"
EXPERIMENT = {
    "id": "w",
    "control": "a",
    "variants": [{"name": "a", "backend": "alpha", "weight": 1}],
}
# Enough connections that both workers get some: SO_REUSEPORT hashes each connection's
# addresses and ports, so all of them on one worker has a chance of 2 x 2^-24.
SESSIONS = 24


def _wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(silence(0.3))
    return buffer.getvalue()


WAV = _wav()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmulator]:
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    with LocalEmulator("--engine", "instant", "--instant-text", TEXT, log_path=log) as running:
        yield running


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


def _config(work: Path, emulator: LocalEmulator, **gateway: object) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    return write_gateway_config(
        work / "gateway.toml",
        backends={"alpha": emulator.ws_url},
        experiments=[EXPERIMENT],
        outcomes=work / "outcomes.jsonl",
        **gateway,
    )


def _redis_env(work: Path, redis_server: RedisServer, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "SPEECH_GATEWAY_OUTCOMES__STORE": "redis",
        "SPEECH_GATEWAY_REDIS__URL": redis_server.url,
        "SPEECH_GATEWAY_REDIS__PREFIX": prefix,
        "SPEECH_GATEWAY_OUTCOMES__JOURNAL_DIR": str(work / "journal"),
    }


def _gateway(
    work: Path, emulator: LocalEmulator, redis_server: RedisServer, prefix: str, **gateway: object
) -> LocalGateway:
    return LocalGateway(
        _config(work, emulator, drain={"grace_s": 5, "close_timeout_s": 2}, **gateway),
        "--workers",
        "2",
        log_path=work / "gateway.log",
        env=_redis_env(work, redis_server, prefix),
    )


def _slowly(seconds: float) -> Iterator[bytes]:
    """The WAV in chunks spread over `seconds`: a request still in flight meanwhile."""
    chunks = [WAV[i : i + 1000] for i in range(0, len(WAV), 1000)]
    for chunk in chunks:
        time.sleep(seconds / len(chunks))
        yield chunk


def recognize(gateway: LocalGateway, *, body_s: float = 0.0) -> int:
    """One REST short-audio request on a new connection (its body sent over `body_s`
    seconds, chunked); its HTTP status."""
    request = urllib.request.Request(
        f"{gateway.http_url}{PATH}?language=en-US",
        data=_slowly(body_s) if body_s else WAV,
        headers={
            "Ocp-Apim-Subscription-Key": CLIENT_KEY,
            "Content-Type": "audio/wav; codecs=audio/pcm; samplerate=16000",
            "Connection": "close",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = json.loads(answer.read())
            assert body["DisplayText"] == TEXT
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def metrics(gateway: LocalGateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The gateway's /metrics as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"{gateway.http_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def metrics_value(gateway: LocalGateway, name: str) -> float:
    """A series summed over its labels (every worker's)."""
    return sum(value for (sample, _labels), value in metrics(gateway).items() if sample == name)


def sessions_by_worker(gateway: LocalGateway) -> dict[str, float]:
    counts: dict[str, float] = {}
    for (name, labels), value in metrics(gateway).items():
        if name == "speech_gateway_sessions_started_total":
            worker = dict(labels)["worker"]
            counts[worker] = counts.get(worker, 0) + value
    return counts


def log_events(work: Path, event: str) -> list[dict[str, Any]]:
    lines = (work / "gateway.log").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in events if e.get("event") == event]


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def stored_records(redis_server: RedisServer, prefix: str) -> list[OutcomeRecord]:
    client = redis_server.client()
    try:
        entries = client.xrange(RedisKeys(prefix).outcomes("w"))
    finally:
        client.close()
    return [OutcomeRecord.from_json(fields[RECORD_FIELD.encode()]) for _id, fields in entries]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_share_the_port_merge_metrics_and_drain_on_sigterm(
    emulator: LocalEmulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Sessions land on both workers, /metrics counts each under its worker label (summing
    to the sessions made), and SIGTERM drains both: exit 0, every outcome in Redis."""
    gateway = _gateway(tmp_path, emulator, redis_server, f"{PREFIX}-drain").start()
    code = None
    try:
        assert [recognize(gateway) for _ in range(SESSIONS)] == [200] * SESSIONS
        counts = sessions_by_worker(gateway)
        assert set(counts) == {"0", "1"}
        assert all(count > 0 for count in counts.values()), counts
        assert sum(counts.values()) == SESSIONS
        scraped = metrics(gateway)
        assert scraped[("speech_gateway_workers", ())] == 2
        assert scraped[("speech_gateway_worker_metrics_missing", ())] == 0
        with ThreadPoolExecutor(max_workers=1) as pool:
            in_flight = pool.submit(recognize, gateway, body_s=2.0)
            wait_for(lambda: metrics_value(gateway, "speech_gateway_sessions_live") == 1)
            code = gateway.stop()  # SIGTERM while the request's body still comes
            assert in_flight.result() == 200
    finally:
        stopped = gateway.stop()  # None: stopped already
        code = code if stopped is None else stopped
    assert code == 0
    records = stored_records(redis_server, f"{PREFIX}-drain")
    assert len(records) == SESSIONS + 1
    assert len({r.session_id for r in records}) == SESSIONS + 1
    assert len(log_events(tmp_path, "gateway_stopped")) == 2


def test_a_sigterm_to_every_process_at_once_keeps_the_grace_period(
    emulator: LocalEmulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    """An init system sends SIGTERM to every process of the group, and the supervisor
    forwards its own a moment later: a worker must not take that for a second signal. The
    request in flight still completes within the grace period; nothing cuts it."""
    gateway = _gateway(tmp_path, emulator, redis_server, f"{PREFIX}-group").start()
    code = None
    try:
        wait_for(lambda: len(log_events(tmp_path, "worker_ready")) == 2)
        workers = [int(e["pid"]) for e in log_events(tmp_path, "worker_started")]
        assert gateway.pid is not None
        with ThreadPoolExecutor(max_workers=1) as pool:
            in_flight = pool.submit(recognize, gateway, body_s=2.0)
            wait_for(lambda: metrics_value(gateway, "speech_gateway_sessions_live") == 1)
            for pid in [gateway.pid, *workers]:
                os.kill(pid, signal.SIGTERM)
            assert in_flight.result() == 200
    finally:
        code = gateway.stop()
    assert code == 0
    assert log_events(tmp_path, "drain_grace_cut") == []
    assert len(stored_records(redis_server, f"{PREFIX}-group")) == 1


def test_a_killed_worker_is_replaced_while_the_other_serves(
    emulator: LocalEmulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    """SIGKILL on one worker: requests keep succeeding on the other, a new process takes
    its place (its metrics come back, its restart counted), and the gateway still drains."""
    gateway = _gateway(tmp_path, emulator, redis_server, f"{PREFIX}-kill").start()
    try:
        wait_for(lambda: len(log_events(tmp_path, "worker_ready")) == 2)
        victim = next(e for e in log_events(tmp_path, "worker_started") if e["worker"] == 1)
        os.kill(int(victim["pid"]), signal.SIGKILL)
        # Connections the kernel queued on the victim before it died are reset (the SDKs
        # reconnect); once it is gone, every new one goes to the other worker.
        wait_for(lambda: bool(log_events(tmp_path, "worker_exited")))
        assert [recognize(gateway) for _ in range(8)] == [200] * 8  # during
        wait_for(lambda: len(log_events(tmp_path, "worker_ready")) == 3)
        replacement = log_events(tmp_path, "worker_started")[-1]
        assert replacement["worker"] == 1
        assert replacement["pid"] != victim["pid"]
        exited = log_events(tmp_path, "worker_exited")
        assert [(e["worker"], e["status"]) for e in exited] == [(1, -signal.SIGKILL)]

        def replaced_in_metrics() -> bool:
            scraped = metrics(gateway)
            return (
                scraped[("speech_gateway_worker_metrics_missing", ())] == 0
                and scraped[("speech_gateway_worker_restarts", (("worker", "1"),))] == 1
            )

        wait_for(replaced_in_metrics)
        assert [recognize(gateway) for _ in range(SESSIONS)] == [200] * SESSIONS  # after
        assert set(sessions_by_worker(gateway)) == {"0", "1"}
    finally:
        code = gateway.stop()
    assert code == 0
    assert len(stored_records(redis_server, f"{PREFIX}-kill")) == 8 + SESSIONS


def test_workers_drain_when_the_supervisor_dies(
    emulator: LocalEmulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A supervisor killed with SIGKILL leaves no orphan serving: each worker sees its
    lifeline close, drains as on SIGTERM and exits."""
    gateway = _gateway(tmp_path, emulator, redis_server, f"{PREFIX}-orphan").start()
    try:
        wait_for(lambda: len(log_events(tmp_path, "worker_ready")) == 2)
        supervisor = int(log_events(tmp_path, "workers_starting")[0]["pid"])
        workers = [int(e["pid"]) for e in log_events(tmp_path, "worker_started")]
        assert recognize(gateway) == 200
        os.kill(supervisor, signal.SIGKILL)
        wait_for(lambda: not any(alive(pid) for pid in workers))
        assert len(log_events(tmp_path, "supervisor_gone")) == 2
        assert len(log_events(tmp_path, "gateway_stopped")) == 2
        runtime = Path(log_events(tmp_path, "workers_starting")[0]["runtime_dir"])
        wait_for(lambda: not runtime.exists())  # removed by the last worker out
    finally:
        gateway.stop()
    assert len(stored_records(redis_server, f"{PREFIX}-orphan")) == 1


def _serve(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway", "--config", str(config), "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, 'outcomes.store = "file"'),
        (
            {
                "SPEECH_GATEWAY_OUTCOMES__STORE": "redis",
                "SPEECH_GATEWAY_GATEWAY__CONTROL__STORE": "file",
            },
            'gateway.control.store = "file"',
        ),
    ],
)
def test_workers_refuse_stores_they_cannot_share(
    emulator: LocalEmulator, tmp_path: Path, env: dict[str, str], names: str
) -> None:
    """Several workers on a one-process store: exit status 2 and one line naming it."""
    config = _config(tmp_path, emulator, port=free_port())
    result = _serve(config, "--workers", "2", env={**os.environ, **env})
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("speech-gateway: --workers 2: ")
    assert names in lines[0]


def test_a_worker_that_cannot_start_makes_the_supervisor_give_up(
    emulator: LocalEmulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Worker 1's journal directory cannot be made (a file is in its way): after its
    start-up attempts, backing off, the supervisor stops worker 0 and exits 1 with one
    line on stderr."""
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "worker-1").write_text("in the way\n", encoding="utf-8")
    config = _config(tmp_path, emulator, port=free_port())
    env = _redis_env(tmp_path, redis_server, f"{PREFIX}-fail")
    env["SPEECH_GATEWAY_LOGGING__LEVEL"] = "error"
    started = time.monotonic()
    result = _serve(config, "--workers", "2", env=env)
    assert result.returncode == 1
    assert 0.5 + 1 + 2 + 4 <= time.monotonic() - started < 45  # backed off, then gave up
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("speech-gateway: worker 1 failed at start-up 5 times in a row")
    assert sum(line.startswith("speech-gateway:") for line in lines) == 1


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("1", 1),
        ("3", 3),
        ("auto", len(os.sched_getaffinity(0))),
        ("0", len(os.sched_getaffinity(0))),
    ],
)
def test_workers_argument(text: str, count: int) -> None:
    """`--workers`: a count, or auto / 0 for the cores this process may use."""
    assert parse_workers(text) == count


def test_workers_argument_refuses_what_is_not_a_count() -> None:
    """A bad `--workers` is a ConfigError naming the option (exit status 2 from the CLI)."""
    with pytest.raises(ConfigError, match="--workers"):
        parse_workers("many")
    with pytest.raises(ConfigError, match="--workers"):
        parse_workers("-2")


def test_serving_freezes_start_up_objects_and_raises_the_first_gc_threshold() -> None:
    """`tune_gc`, run by every serving process once started (here in a child process, so
    that the test process's collector is left as it is)."""
    code = (
        "import gc; from gateway.server.serve import tune_gc, GC_GEN0_THRESHOLD; tune_gc(); "
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count(); "
        "assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
