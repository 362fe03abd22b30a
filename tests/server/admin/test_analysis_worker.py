"""The live report's analysis process, on a real gateway app with the embedded file store:
computed in a spawned worker process, shared by concurrent requests, a dead worker answered
with 503 and replaced, store failures and corrupt records answered as before."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs
from support import write_gateway_config
from traffic import Traffic

from gateway.config.settings import OutcomeSettings, RedisConnection, load_settings
from gateway.control.model import hash_key
from gateway.server.admin.analysis import ANALYSES, REUSE_PER_COMPUTE_S, fresh_until
from gateway.server.admin.analysis_worker import (
    WORKER_NICENESS,
    AnalysisWorkerFailed,
    OutcomeStore,
)
from gateway.server.app import create_gateway_app

TOKEN = "analysis-worker-admin-token-5b1d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
EXPERIMENT = {
    "id": "e",
    "control": "base",
    "variants": [
        {"name": "base", "backend": "alpha", "weight": 50},
        {"name": "custom", "backend": "bravo", "weight": 50},
    ],
}


def gateway_app(tmp_path: Path, **experiment: Any) -> web.Application:
    """A whole gateway app (not started) whose outcome file holds a small A/B experiment."""
    outcomes = tmp_path / "outcomes.jsonl"
    traffic = Traffic()
    traffic.ab(20, base_error=0.2, custom_error=0.0)
    outcomes.write_text("".join(record.to_json() + "\n" for record in traffic.records))
    config = write_gateway_config(
        tmp_path / "gateway.toml",
        backends={"alpha": "ws://127.0.0.1:9", "bravo": "ws://127.0.0.1:9"},
        experiments=[{**EXPERIMENT, **experiment}],
        outcomes=outcomes,
        admin_tokens_sha256={"analyst": hash_key(TOKEN)},
    )
    return create_gateway_app(load_settings(config))


async def analysis(client: Client, query: str = "") -> tuple[int, Any]:
    response = await client.get(f"/admin/experiments/e/analysis{query}", headers=AUTH)
    return response.status, await response.json()


def children() -> set[int | None]:
    return {child.pid for child in multiprocessing.active_children()}


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 10 s")


async def until_running(app: web.Application, count: int) -> None:
    """Until `count` reports are under way, and handed to the worker."""
    await until(lambda: len(app[ANALYSES].running) >= count)
    await asyncio.sleep(0.1)


async def test_the_report_is_computed_in_a_child_process(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """The report comes from a spawned child of the gateway's process, kept for the next one."""
    app = gateway_app(tmp_path)
    client = await aiohttp_client(app)
    worker = app[ANALYSES].worker
    assert worker.pid is None  # started by the first report, not before
    status, report = await analysis(client)
    assert status == 200
    variants = {v["name"]: v["outcomes"] for v in report["phases"][0]["variants"]}
    assert variants == {"base": 20, "custom": 20}
    pid = worker.pid
    assert pid is not None
    assert pid != os.getpid()
    assert pid in children()
    # It yields the CPU to the relays: every thread in the idle scheduling class (Linux),
    # and a lower priority than its gateway's.
    niceness = min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, pid) == niceness
    threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    assert {os.sched_getscheduler(tid) for tid in threads} == {os.SCHED_IDLE}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    status, _ = await analysis(client, "?phase=p1")
    assert status == 200
    assert worker.pid == pid


async def test_concurrent_requests_for_one_report_share_one_computation(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """Clients asking for the same report while it is computed all get that computation."""
    app = gateway_app(tmp_path)
    client = await aiohttp_client(app)
    worker = app[ANALYSES].worker
    busy = asyncio.ensure_future(worker.run(time.sleep, 1.0))  # the report must queue
    first = asyncio.ensure_future(analysis(client))
    await until_running(app, 1)
    rest = [asyncio.ensure_future(analysis(client)) for _ in range(4)]
    await asyncio.sleep(0.2)  # every request is in, the worker still asleep
    assert not busy.done()
    assert len(app[ANALYSES].running) == 1
    answers = await asyncio.gather(first, *rest)
    await busy
    assert {status for status, _ in answers} == {200}
    assert all(report == answers[0][1] for _, report in answers)


def test_a_slow_report_is_reused_for_longer() -> None:
    """A report is reused for cache_s, or for REUSE_PER_COMPUTE_S times its computing time
    when that is longer: a continuously watched large experiment keeps the analysis process
    busy a bounded share of the time."""
    assert fresh_until(100.0, 0.1, 2.0) == 102.0
    assert fresh_until(100.0, 3.0, 2.0) == 100.0 + 3.0 * REUSE_PER_COMPUTE_S


async def test_a_report_that_took_long_is_not_recomputed_at_once(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """With no fixed reuse time, a report that took about a second (waiting for the worker)
    is answered from the cache to the next request, and computed again once that is over."""
    app = gateway_app(tmp_path)
    analyses = app[ANALYSES]
    analyses.cache_s = 0.0
    client = await aiohttp_client(app)
    computations = 0
    compute = analyses.worker.compute

    async def counted(*args: Any) -> Any:
        nonlocal computations
        computations += 1
        computed = await compute(*args)
        return dataclasses.replace(computed, seconds=0.5)

    analyses.worker.compute = counted  # type: ignore[method-assign]
    status, first = await analysis(client)
    again_status, again = await analysis(client)
    assert (status, again_status, computations) == (200, 200, 1)
    assert again == first
    await asyncio.sleep(0.5 * REUSE_PER_COMPUTE_S)
    status, _ = await analysis(client)
    assert (status, computations) == (200, 2)
    # A change of the experiment is a new report at once, however long the last is reused.
    response = await client.post("/admin/experiments/e/pause", headers=AUTH, json={})
    assert response.status == 200, await response.text()
    status, _ = await analysis(client)
    assert (status, computations) == (200, 3)


async def test_a_killed_worker_fails_its_reports_with_503_and_is_replaced(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """SIGKILL to the worker: the report it held gets 503, the next one a fresh worker."""
    app = gateway_app(tmp_path)
    client = await aiohttp_client(app)
    worker = app[ANALYSES].worker
    assert await worker.run(os.getpid) == worker.pid  # started
    busy = asyncio.ensure_future(worker.run(time.sleep, 30.0))
    waiting = asyncio.ensure_future(analysis(client))
    await until_running(app, 1)
    old = worker.pid
    assert old is not None
    with capture_logs() as logs:
        os.kill(old, signal.SIGKILL)
        status, body = await waiting
    assert status == 503
    assert body["error"] == "the analysis worker failed; try again"
    assert [log["event"] for log in logs] == ["analysis_worker_failed"]
    with pytest.raises(AnalysisWorkerFailed):
        await busy
    status, _ = await analysis(client, "?phase=p1")
    assert status == 200
    assert worker.pid not in (None, old)
    assert old not in children()


async def test_a_worker_killed_while_idle_is_replaced(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """A worker that died between reports costs at most one 503; then a fresh one serves."""
    app = gateway_app(tmp_path)
    client = await aiohttp_client(app)
    worker = app[ANALYSES].worker
    assert (await analysis(client))[0] == 200
    old = worker.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    await until(lambda: old not in children())  # reaped
    first, _ = await analysis(client, "?phase=p1")
    assert first in (200, 503)
    status, _ = await analysis(client, "?phase=p2")
    assert status == 200
    assert worker.pid not in (None, old)


async def test_the_worker_stops_with_the_app(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    """App cleanup stops the worker, even while it computes."""
    app = gateway_app(tmp_path)
    client = await aiohttp_client(app)
    worker = app[ANALYSES].worker
    assert await worker.run(os.getpid) == worker.pid
    busy = asyncio.ensure_future(worker.run(time.sleep, 30.0))
    await asyncio.sleep(0.1)
    pid = worker.pid
    started = time.monotonic()
    await client.close()
    assert time.monotonic() - started < 10
    assert pid not in children()
    with pytest.raises(AnalysisWorkerFailed):
        await busy


async def test_an_unreachable_store_is_503_and_a_corrupt_record_500(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """The worker's store failures are answered as the in-process analysis answered them."""
    app = gateway_app(tmp_path)
    client = await aiohttp_client(app)
    analyses = app[ANALYSES]
    file_store = analyses.store
    outcomes = tmp_path / "outcomes.jsonl"
    with outcomes.open("a") as file:
        file.write('{"kind": "utterance", "final_latency_ms": "soon"}\n')
    status, body = await analysis(client)
    assert status == 500
    assert body["error"].startswith("the outcome store holds a record that cannot be read: ")
    assert "outcomes.jsonl:41" in body["error"]
    # A Redis store where no Redis listens (port 9, discard): the worker cannot connect.
    nowhere = RedisConnection(url="redis://127.0.0.1:9/0", prefix="nowhere")
    analyses.store = OutcomeStore(OutcomeSettings(store="redis"), nowhere)
    status, body = await analysis(client, "?phase=p1")
    assert status == 503
    assert body["error"] == "the outcome store is unavailable; try again later"
    analyses.store = file_store


async def test_an_unreadable_term_list_is_logged_and_left_out(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """A term list damaged after start-up: the report goes without it, the gateway logs why."""
    terms = tmp_path / "terms.txt"
    terms.write_text("balance\nsavings\n")
    app = gateway_app(tmp_path, terms=str(terms))
    client = await aiohttp_client(app)
    terms.write_bytes(b"\xff\xfe not text\n")
    with capture_logs() as logs:
        status, report = await analysis(client)
    assert status == 200
    assert "phases" in report
    (logged,) = [log for log in logs if log["event"] == "analysis_terms_unreadable"]
    assert logged["experiment"] == "e"
    assert "terms.txt" in logged["error"]


def test_the_gateway_does_not_import_the_analysis() -> None:
    """Building the gateway's app imports neither the report nor scipy.stats: they are the
    analysis process's, so no gateway pays for them and no request waits for their import."""
    code = (
        "import sys, gateway.server.app\n"
        "print(sorted(m for m in ('gateway.analysis.report', 'scipy.stats') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


ORPHAN = """\
import asyncio, os, sys, time
from gateway.server.admin.analysis_worker import AnalysisWorker

async def main():
    worker = AnalysisWorker()
    await worker.run(os.getpid)
    print(worker.pid, flush=True)
    time.sleep(120)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_the_worker_leaves_when_its_gateway_is_killed(tmp_path: Path) -> None:
    """A gateway process killed outright never closes its pool: the analysis process sees
    its parent go and exits, instead of waiting on its queue forever under init."""
    script = tmp_path / "gateway_like.py"
    script.write_text(ORPHAN, encoding="utf-8")
    with subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    ) as parent:
        _kill_it_and_watch_its_analysis_process(parent)


def _kill_it_and_watch_its_analysis_process(parent: subprocess.Popen[str]) -> None:
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _running(child):
            time.sleep(0.05)
        assert not _running(child), f"analysis process {child} outlived its gateway"
    finally:
        if parent.poll() is None:
            parent.kill()


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: it has exited and waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_the_live_report_has_the_review_section(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """Captures in the configured audio store reach the live report's review section."""
    from review_fixtures import tone, wav_bytes

    from gateway.stores.audio_store import (
        Capture,
        CapturedResult,
        CaptureReason,
        CaptureSample,
        LocalAudioStore,
    )

    outcomes = tmp_path / "outcomes.jsonl"
    traffic = Traffic()
    traffic.ab(20, base_error=0.2, custom_error=0.0)
    outcomes.write_text("".join(record.to_json() + "\n" for record in traffic.records))
    (tmp_path / "labels.jsonl").write_text(
        "".join(label.to_json() + "\n" for label in traffic.labels.values())
    )
    primary = next(r for r in traffic.records if r.record_id in traffic.labels and r.text)
    assert primary.variant is not None
    audio = wav_bytes(tone(0.5))
    capture = Capture(
        capture_id="c" * 32,
        experiment="e",
        phase=str(primary.phase),
        unit=primary.unit,
        client=primary.client,
        session_id=primary.session_id,
        utterance_index=0,
        captured_at="2026-12-07T10:00:00.000Z",
        reason=CaptureReason.UNIFORM,
        sample=CaptureSample.UNIFORM,
        primary=CapturedResult(primary.record_id, primary.variant, primary.text),
        duration_ms=500,
        wav_bytes=len(audio),
    )
    await LocalAudioStore(tmp_path / "audio").put(capture, audio)
    config = write_gateway_config(
        tmp_path / "gateway.toml",
        backends={"alpha": "ws://127.0.0.1:9", "bravo": "ws://127.0.0.1:9"},
        experiments=[EXPERIMENT],
        outcomes=outcomes,
        admin_tokens_sha256={"analyst": hash_key(TOKEN)},
        audio={"directory": str(tmp_path / "audio")},
    )
    client = await aiohttp_client(create_gateway_app(load_settings(config)))
    status, report = await analysis(client)
    assert status == 200
    review = report["review"]
    assert review["sample"]["uniform"]["captured"] == 1
    assert review["wer"]["uniform"][0]["variant"] == primary.variant
