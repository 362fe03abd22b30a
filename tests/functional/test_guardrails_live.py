"""Guardrails on live traffic through two gateway replicas sharing Redis: a challenger that
fails 30 % of its sessions is rolled back within a bounded number of sessions, exactly once;
a challenger as good as control is never rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from conftest import ALPHA, BRAVO, split_experiment
from control_support import (
    admin,
    answered_by,
    control_gateway,
    failed,
    metric,
    metrics_text,
    sessions,
    view,
    wait_for_phase,
)
from redis.asyncio import Redis
from redis_servers import RedisServer

from gateway.control.guardrails import ArmCounts
from gateway.tools.local_services import LocalEmulator, LocalGateway

BATCH = 20
MAX_SESSIONS = 400  # bound on sessions before the rollback (about 70 per arm are needed)
GUARDRAILS = {"max_error_rate_increase": 0.05, "min_outcomes": 20}


def flaky(tmp_path: Path, text: str, rate: float, seed: int) -> LocalEmulator:
    return LocalEmulator(
        "--engine",
        "instant",
        "--instant-text",
        text,
        "--failure-rate",
        str(rate),
        "--failure-kind",
        "usp",
        "--failure-status",
        "Error",
        "--failure-seed",
        str(seed),
        log_path=tmp_path / f"emulator-{seed}.log",
    )


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with RedisServer(tmp_path / "redis") as server:
        yield server.url


def replicas(
    tmp_path: Path, control_url: str, challenger_url: str, redis_url: str
) -> tuple[LocalGateway, LocalGateway]:
    backends = {"alpha": control_url, "bravo": challenger_url}
    experiment = split_experiment(guardrails=GUARDRAILS)
    settings = {"redis_url": redis_url, "control": {"guardrail_interval_s": 0.2}}
    return (
        control_gateway(tmp_path / "a", backends, experiment, **settings),  # type: ignore[arg-type]
        control_gateway(tmp_path / "b", backends, experiment, **settings),  # type: ignore[arg-type]
    )


async def test_a_failing_challenger_is_rolled_back_once_within_bounded_sessions(
    alpha: LocalEmulator, tmp_path: Path, redis_url: str
) -> None:
    with flaky(tmp_path, BRAVO, 0.3, seed=11) as challenger:
        a, b = replicas(tmp_path, alpha.ws_url, challenger.ws_url, redis_url)
        with a, b:
            async with aiohttp.ClientSession() as http:
                sent = 0
                while (await view(http, a))["version"] == 0:
                    assert sent < MAX_SESSIONS, "no rollback"
                    results = await sessions(http, [a, b], [f"u-{sent + i}" for i in range(BATCH)])
                    sent += BATCH
                    assert not any(failed(r) for r in results if answered_by(r) == "alpha")
                # The other replica serves the rollback once the change notice reaches it.
                await wait_for_phase(http, b, (await view(http, a))["phase"])
                state = await view(http, b)
                assert [v["weight"] for v in state["variants"]] == [50.0, 0.0]
                assert state["updated_by"] == "guardrail"
                status, audit = await admin(http, a, "GET", "/admin/experiments/ab/audit")
                assert status == 200
                [entry] = audit["entries"]  # one rollback, although both replicas test
                assert (entry["actor"], entry["action"]) == ("guardrail", "rollback")
                assert entry["reason"].startswith("b: error rate")
                assert entry["detail"]["variants"] == ["b"]
                assert entry["detail"]["breaches"][0]["variant"] == "b"
                assert entry["detail"]["breaches"][0]["guardrail"] == "error_rate"
                rollbacks = [
                    metric(
                        await metrics_text(http, g),
                        "speech_gateway_guardrail_rollbacks_total",
                        experiment="ab",
                        variant="b",
                        guardrail="error_rate",
                    )
                    for g in (a, b)
                ]
                assert sorted(rollbacks) == [0.0, 1.0]
                await check_unit_sums(redis_url, entry["detail"]["phase"])
                # New sessions all go to control now, in the new phase.
                after = await sessions(http, [a, b], [f"later-{i}" for i in range(10)])
                assert {answered_by(r) for r in after} == {"alpha"}
    logs = (tmp_path / "a" / "gateway.log").read_text() + (
        tmp_path / "b" / "gateway.log"
    ).read_text()
    assert logs.count('"event": "guardrail_rollback"') == 1


async def check_unit_sums(redis_url: str, phase: str) -> None:
    """The counts the rollback was decided on carry sums over units that cover every
    outcome, so the live test was the clustered one."""
    async with Redis.from_url(redis_url) as redis:
        keys = [key async for key in redis.scan_iter(match=f"*:guard:{phase}")]
        [key] = keys
        assert await redis.exists(key + b":units")
        stored = {f.decode(): int(v) for f, v in (await redis.hgetall(key)).items()}
    for variant in ("a", "b"):
        fields = {f.split("|", 1)[1]: v for f, v in stored.items() if f.startswith(f"{variant}|")}
        counts = ArmCounts.from_fields(fields)
        assert counts.rate_sums() is not None
        assert 20 <= counts.unit_sums[0] <= counts.outcomes


async def test_a_challenger_as_good_as_control_is_never_rolled_back(
    tmp_path: Path, redis_url: str
) -> None:
    """Both arms fail 10 % of sessions. Three runs (a fresh phase each) of 300 sessions:
    the sequential test sees every outcome of both replicas and never trips."""
    with (
        flaky(tmp_path, ALPHA, 0.1, seed=1) as control,
        flaky(tmp_path, BRAVO, 0.1, seed=2) as challenger,
    ):
        a, b = replicas(tmp_path, control.ws_url, challenger.ws_url, redis_url)
        with a, b:
            async with aiohttp.ClientSession() as http:
                failures = 0
                for run in range(3):
                    status, changed = await admin(
                        http,
                        a,
                        "PUT",
                        "/admin/experiments/ab/weights",
                        {"weights": {"a": 50, "b": 50 + run}},  # a new phase each run
                    )
                    assert status == 200, changed
                    for start in range(0, 300, BATCH):
                        units = [f"r{run}-{start + i}" for i in range(BATCH)]
                        results = await sessions(http, [a, b], units)
                        failures += sum(failed(r) for r in results)
                    state = await view(http, b)
                    assert state["updated_by"] == "ops"
                    assert state["variants"][1]["weight"] == 50 + run
                assert 40 < failures < 160  # the arms did fail about 10 % of 900 sessions
                status, audit = await admin(http, a, "GET", "/admin/experiments/ab/audit")
                assert [e["action"] for e in audit["entries"]] == ["set_weights"] * 3
