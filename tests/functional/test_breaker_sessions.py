"""Client sessions, not SDK retries, with the real Speech SDK through the gateway.

The native SDK tries a failing connection 5 times under one X-ConnectionId. One such
session must not open a backend's circuit breaker (default settings); several failing
sessions open it as soon as before. A challenger that fails half of its attempts, which the
SDK retries, shows its users (almost) no errors: the records keep every attempt, the live
guardrail counts what users saw, and the analysis reports both rates.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from conftest import BRAVO, split_experiment
from control_support import PATH, PCM, admin, control_gateway, metric, metrics_text
from redis_servers import RedisServer
from support import CLIENT_KEY, write_wav

from gateway.analysis.report import build_report
from gateway.control.retries import RETRY_HOLD_S
from gateway.outcomes.record import Kind, OutcomeRecord, Role
from gateway.stores.counter_store import SEPARATOR, guard_key
from gateway.stores.jsonl_sink import read_jsonl
from gateway.stores.keys import RECORD_FIELD, RedisKeys
from gateway.tools.local_services import LocalEmulator, LocalGateway
from gateway.tools.speech_client import Transcript, speech_config, transcribe_file

PREFIX = "sgw-retries"


def failing(
    tmp_path: Path, kind: str, status: str, rate: float = 1.0, seed: int = 3
) -> LocalEmulator:
    """An instant emulator that fails `rate` of its sessions the way `kind`/`status` say."""
    return LocalEmulator(
        "--engine",
        "instant",
        "--instant-text",
        BRAVO,
        "--failure-rate",
        str(rate),
        "--failure-kind",
        kind,
        "--failure-status",
        status,
        "--failure-seed",
        str(seed),
        log_path=tmp_path / f"emulator-{kind}-{status}.log",
    )


def recognize_once(gateway: LocalGateway, wav: Path) -> Transcript:
    """One SDK session (a fresh recognizer, so a fresh X-ConnectionId), recognize_once."""
    config = speech_config(f"{gateway.ws_url}{PATH}", CLIENT_KEY)
    return transcribe_file(config, wav, continuous=False, timeout_s=60)


async def sdk_sessions(gateway: LocalGateway, wav: Path, count: int) -> list[Transcript]:
    """`count` SDK sessions at once."""
    return list(
        await asyncio.gather(
            *(asyncio.to_thread(recognize_once, gateway, wav) for _ in range(count))
        )
    )


async def breaker(http: aiohttp.ClientSession, gateway: LocalGateway, name: str) -> Any:
    status, answer = await admin(http, gateway, "GET", "/admin/backends")
    assert status == 200, answer
    return {b["name"]: b["breaker"] for b in answer["backends"]}[name]


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "speech.wav", PCM)


async def test_one_sdk_session_of_five_attempts_does_not_open_the_breaker(
    tmp_path: Path, wav: Path
) -> None:
    """Default breaker settings, a backend answering 503: the SDK tries 5 times and reports
    ServiceUnavailable, the breaker counts one failing client session and stays closed.
    The 5 attempts are 5 records with one client_session and 5 session ids."""
    work = tmp_path / "gw"
    with failing(tmp_path, "http", "503") as down:
        backends = {"alpha": down.ws_url, "bravo": down.ws_url}
        # Everything to control: there is nothing to fail over to.
        with control_gateway(work, backends, split_experiment((100, 0))) as gateway:
            [transcript] = await sdk_sessions(gateway, wav, 1)
            assert transcript.error_code == "ServiceUnavailable", transcript.error_details
            async with aiohttp.ClientSession() as http:
                state = await breaker(http, gateway, "alpha")
                text = await metrics_text(http, gateway)
    assert state["state"] == "closed"
    assert (state["consecutive_failures"], state["window_failures"]) == (1, 1)
    assert state["window_attempts"] == 1
    assert (
        metric(text, "speech_gateway_breaker_transitions_total", backend="alpha", state="open") == 0
    )
    records = list(read_jsonl(work / "outcomes.jsonl"))
    assert [r.error_code for r in records] == ["upstream_http_503"] * 5
    assert len({r.session_id for r in records}) == 5
    [client_session] = {r.client_session for r in records}
    assert client_session is not None
    assert len(client_session) == 32
    # No unit given: the connection id stands in, pseudonymised alike.
    assert {r.unit for r in records} == {client_session}


async def test_several_failing_sdk_sessions_open_the_breaker_as_before(
    tmp_path: Path, wav: Path
) -> None:
    """consecutive_failures failing client sessions open it, one fewer does not: the 5th
    session's first attempt opens it, and its retries are refused without a dial."""
    work = tmp_path / "gw"
    with failing(tmp_path, "http", "503") as down:
        backends = {"alpha": down.ws_url, "bravo": down.ws_url}
        with control_gateway(work, backends, split_experiment((100, 0))) as gateway:
            async with aiohttp.ClientSession() as http:
                first = await sdk_sessions(gateway, wav, 4)
                assert {t.error_code for t in first} == {"ServiceUnavailable"}
                state = await breaker(http, gateway, "alpha")
                assert (state["state"], state["consecutive_failures"]) == ("closed", 4)
                [last] = await sdk_sessions(gateway, wav, 1)
                assert last.error_code is not None
                state = await breaker(http, gateway, "alpha")
                assert (state["state"], state["opened"]) == ("open", 1)
    codes = Counter(r.error_code for r in read_jsonl(work / "outcomes.jsonl"))
    # 4 sessions x 5 dials; the 5th: one dial that opened it, 4 retries refused.
    assert codes == {"upstream_http_503": 21, "breaker_open": 4}


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with RedisServer(tmp_path / "redis") as server:
        yield server.url


def stored(
    redis_url: str, phase: str | None = None, variant: str = "b"
) -> tuple[list[OutcomeRecord], dict[str, int]]:
    """The experiment's primary records of `variant` (its Redis stream), and the guardrail
    counts of `phase`."""
    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.xrange(RedisKeys(PREFIX).outcomes("ab"))
        counts = client.hgetall(guard_key(PREFIX, "ab", phase)) if phase else {}
    finally:
        client.close()
    records = [OutcomeRecord.from_json(fields[RECORD_FIELD.encode()]) for _id, fields in entries]
    primary = [r for r in records if r.role is Role.PRIMARY and r.variant == variant]
    return primary, {k.decode(): int(v) for k, v in counts.items()}


async def test_retried_failures_count_as_attempts_not_as_errors_users_saw(
    alpha: LocalEmulator, tmp_path: Path, wav: Path, redis_url: str
) -> None:
    """A challenger that closes half of its sessions with 1011 (the SDK reconnects): every
    attempt is recorded; the live guardrail counts only the errors users saw; the analysis
    reports the attempt failure rate and the user-seen failure rate apart."""
    work = tmp_path / "gw"
    sessions = 12
    guardrails = {"max_error_rate_increase": 0.5, "min_outcomes": 20}
    experiment = split_experiment((0, 100), guardrails=guardrails)
    with failing(tmp_path, "close", "1011", rate=0.5) as flaky:
        backends = {"alpha": alpha.ws_url, "bravo": flaky.ws_url}
        gateway = control_gateway(work, backends, experiment, redis_url=redis_url, prefix=PREFIX)
        with gateway:
            transcripts = await sdk_sessions(gateway, wav, sessions)
    # The gateway has stopped: its drain counted the failures still held.
    seen_errors = sum(t.error_code is not None for t in transcripts)
    records, _ = stored(redis_url)
    failures = [r for r in records if r.kind is Kind.SESSION_FAILURE]
    assert {r.error_code for r in failures} <= {"upstream_close_1011"}
    attempts = {r.session_id for r in records}
    client_sessions = {r.client_session for r in records}
    assert len(client_sessions) == sessions
    # Seed 3 fails 7 of the first 12 draws, so at least 7 attempts failed, whatever the
    # order the concurrent sessions drew in; a user saw at most one per 5 of them.
    assert len(failures) >= 7
    assert len(failures) > seen_errors
    [phase] = {r.phase for r in records}
    _, counts = stored(redis_url, phase)
    results = sum(r.kind is Kind.UTTERANCE for r in records)
    assert counts[f"b{SEPARATOR}error"] == seen_errors
    assert counts[f"b{SEPARATOR}n"] == results + seen_errors

    report = build_report("ab", records, {})
    [variant] = report["phases"][0]["variants"]
    block = variant["failures"]
    assert block["attempts"]["total"] == len(attempts)
    assert block["attempts"]["count"] == len({r.session_id for r in failures})
    assert block["client_sessions"]["total"] == sessions
    assert block["client_sessions"]["count"] == seen_errors
    assert block["client_sessions"]["rate"] < block["attempts"]["rate"]
    assert variant["rates"]["error"]["count"] == seen_errors


async def test_a_failure_users_saw_is_counted_once_when_its_hold_ends(
    tmp_path: Path, wav: Path, redis_url: str
) -> None:
    """A backend answering 503: the SDK's 5 attempts are 5 records, and the live guardrail
    counts one error, the last attempt's, once no retry came within RETRY_HOLD_S, while the
    gateway runs on."""
    work = tmp_path / "gw"
    guardrails = {"max_error_rate_increase": 0.5, "min_outcomes": 20}
    experiment = split_experiment((100, 0), guardrails=guardrails)
    control = {"guardrail_interval_s": 0.2}
    with failing(tmp_path, "http", "503") as down:
        backends = {"alpha": down.ws_url, "bravo": down.ws_url}
        gateway = control_gateway(
            work, backends, experiment, redis_url=redis_url, prefix=PREFIX, control=control
        )
        with gateway:
            [transcript] = await sdk_sessions(gateway, wav, 1)
            assert transcript.error_code == "ServiceUnavailable"
            records, _ = stored(redis_url, variant="a")
            while len(records) < 5:  # the sink writes in batches
                await asyncio.sleep(0.05)
                records, _ = stored(redis_url, variant="a")
            assert len(records) == 5
            [phase] = {r.phase for r in records}
            _, counts = stored(redis_url, phase, variant="a")
            assert counts.get(f"a{SEPARATOR}n", 0) == 0  # held: a retry may still come
            deadline = time.monotonic() + RETRY_HOLD_S + 10.0
            while counts.get(f"a{SEPARATOR}n", 0) == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                _, counts = stored(redis_url, phase, variant="a")
            assert counts[f"a{SEPARATOR}n"] == counts[f"a{SEPARATOR}error"] == 1
