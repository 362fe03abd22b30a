"""/readyz and /healthz of a real gateway process in front of a real redis-server that the
test kills, restarts, freezes and thaws. By default the gateway stays ready through a Redis
outage (it serves on, and names the outage in the answer and the metrics); with
`gateway.ready_requires_redis` it is ready only while every Redis it uses answers a PING in
time. Alive throughout."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
from conftest import gateway_for, split_experiment
from control_support import control_gateway
from redis_servers import RedisClusterServers, RedisServer
from support import CLIENT_KEY, silence

from gateway.server.app import READY_PING_TIMEOUT_S
from gateway.tools.local_services import LocalEmulator, LocalGateway
from gateway.tools.usp_client import recognize

PATH = "/speech/recognition/conversation/cognitiveservices/v1"


async def probe(http: aiohttp.ClientSession, gateway: LocalGateway, path: str) -> tuple[int, str]:
    async with http.get(f"{gateway.http_url}{path}") as response:
        return response.status, await response.text()


async def until_body_is(
    http: aiohttp.ClientSession, gateway: LocalGateway, body: str, timeout_s: float
) -> None:
    """Poll /readyz until it answers 200 with `body`."""
    deadline = time.monotonic() + timeout_s
    while (got := await probe(http, gateway, "/readyz")) != (200, body):
        assert time.monotonic() < deadline, f"/readyz still {got} after {timeout_s} s"
        await asyncio.sleep(0.1)


async def metric(http: aiohttp.ClientSession, gateway: LocalGateway, name: str) -> float:
    """The value of an unlabelled series in /metrics."""
    _status, text = await probe(http, gateway, "/metrics")
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


async def until_metric_is(
    http: aiohttp.ClientSession, gateway: LocalGateway, name: str, value: float
) -> None:
    deadline = time.monotonic() + 10
    while await metric(http, gateway, name) != value:
        assert time.monotonic() < deadline, f"{name} never became {value}"
        await asyncio.sleep(0.1)


async def served(http: aiohttp.ClientSession, gateway: LocalGateway) -> list[str]:
    """The texts of one recognition through the gateway."""
    url = f"{gateway.ws_url}{PATH}?language=en-US&gw-unit=someone"
    headers = {"Ocp-Apim-Subscription-Key": CLIENT_KEY}
    result = await recognize(http, url, silence(0.3), headers=headers)
    return list(result.texts())


async def until_ready_is(
    http: aiohttp.ClientSession, gateway: LocalGateway, status: int, timeout_s: float
) -> str:
    """Poll /readyz until it answers `status`; its body then."""
    deadline = time.monotonic() + timeout_s
    while True:
        got, body = await probe(http, gateway, "/readyz")
        if got == status:
            return body
        assert time.monotonic() < deadline, f"/readyz still {got} ({body!r}) after {timeout_s} s"
        await asyncio.sleep(0.1)


async def test_ready_through_a_redis_outage_by_default(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """Outcomes and the experiments' state in Redis, `ready_requires_redis` left at its
    default: a killed or frozen Redis leaves the gateway ready (200, naming the outage) and
    serving sessions, while the metrics report the state store down; once Redis is back
    the answer is plain `ok` again."""
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    degraded = "ok, degraded: redis unreachable: outcomes\n"
    up = "speech_gateway_control_store_up"
    with RedisServer(tmp_path / "redis") as server:
        gateway = control_gateway(
            tmp_path / "gw", backends, split_experiment(), redis_url=server.url, prefix="up"
        )
        with gateway:
            async with aiohttp.ClientSession() as http:
                assert await probe(http, gateway, "/readyz") == (200, "ok\n")
                assert await metric(http, gateway, up) == 1

                server.kill()
                await until_body_is(http, gateway, degraded, 3)
                await until_metric_is(http, gateway, up, 0)
                assert await served(http, gateway)  # the gateway serves on
                assert await probe(http, gateway, "/readyz") == (200, degraded)

                server.start()
                await until_body_is(http, gateway, "ok\n", 10)
                await until_metric_is(http, gateway, up, 1)

                server.stop()  # frozen: caught by the PING timeout, still ready
                try:
                    started = time.monotonic()
                    assert await probe(http, gateway, "/readyz") == (200, degraded)
                    assert time.monotonic() - started < READY_PING_TIMEOUT_S + 1.0
                finally:
                    server.cont()
                await until_body_is(http, gateway, "ok\n", 10)


async def test_ready_follows_the_outcome_redis(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """With `ready_requires_redis`, outcomes (and, with them, the experiments' state) in
    Redis: a killed Redis makes the gateway unready at once, a restarted one ready again; a
    frozen one, which accepts connections but never answers, is caught by the PING timeout.
    /healthz stays 200."""
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    with RedisServer(tmp_path / "redis") as server:
        gateway = control_gateway(
            tmp_path / "gw",
            backends,
            split_experiment(),
            redis_url=server.url,
            prefix="ready",
            ready_requires_redis=True,
        )
        with gateway:
            async with aiohttp.ClientSession() as http:
                assert await probe(http, gateway, "/readyz") == (200, "ok\n")

                server.kill()
                body = await until_ready_is(http, gateway, 503, 3)
                assert body == "redis unreachable: outcomes\n"
                assert await probe(http, gateway, "/healthz") == (200, "ok\n")

                server.start()
                await until_ready_is(http, gateway, 200, 10)

                server.stop()  # frozen
                try:
                    started = time.monotonic()
                    got = await probe(http, gateway, "/readyz")
                    answered_in = time.monotonic() - started
                    assert got == (503, "redis unreachable: outcomes\n")
                    assert answered_in < READY_PING_TIMEOUT_S + 1.0
                    assert await probe(http, gateway, "/healthz") == (200, "ok\n")
                finally:
                    server.cont()
                await until_ready_is(http, gateway, 200, 10)


async def test_ready_follows_a_control_store_of_its_own(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """Outcomes in a file but the experiments' state in Redis: that Redis is checked too,
    and named in the answer (503 with `ready_requires_redis`, else a degraded 200)."""
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    with RedisServer(tmp_path / "redis") as server:
        env = dict(os.environ) | {
            "SPEECH_GATEWAY_GATEWAY__CONTROL__STORE": "redis",
            "SPEECH_GATEWAY_REDIS__URL": server.url,
            "SPEECH_GATEWAY_REDIS__PREFIX": "ready-control",
        }
        for required in (True, False):
            work = tmp_path / f"gw-{required}"
            gateway = gateway_for(
                work, backends, [split_experiment()], env=env, ready_requires_redis=required
            )
            with gateway:
                async with aiohttp.ClientSession() as http:
                    assert await probe(http, gateway, "/readyz") == (200, "ok\n")
                    server.kill()
                    if required:
                        body = await until_ready_is(http, gateway, 503, 3)
                        assert body == "redis unreachable: control\n"
                    else:
                        degraded = "ok, degraded: redis unreachable: control\n"
                        await until_body_is(http, gateway, degraded, 3)
                    server.start()
                    await until_body_is(http, gateway, "ok\n", 10)


async def test_ready_follows_every_primary_of_a_redis_cluster(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """With Redis Cluster each primary holds some experiments' streams: with
    `ready_requires_redis`, one that is down (not the node the gateway was pointed at) makes
    the gateway unready until it is back."""
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    with RedisClusterServers(tmp_path / "cluster") as cluster:
        env = dict(os.environ) | {
            "SPEECH_GATEWAY_OUTCOMES__STORE": "redis",
            "SPEECH_GATEWAY_REDIS__URL": cluster.url,
            "SPEECH_GATEWAY_REDIS__CLUSTER": "true",
            "SPEECH_GATEWAY_REDIS__PREFIX": "ready-cluster",
            "SPEECH_GATEWAY_OUTCOMES__JOURNAL_DIR": str(tmp_path / "journal"),
        }
        gateway = gateway_for(
            tmp_path / "gw", backends, [split_experiment()], env=env, ready_requires_redis=True
        )
        with gateway:
            async with aiohttp.ClientSession() as http:
                assert await probe(http, gateway, "/readyz") == (200, "ok\n")
                node = cluster.nodes[-1]
                node.kill()
                assert await until_ready_is(http, gateway, 503, 5) == (
                    "redis unreachable: outcomes\n"
                )
                node.start()
                cluster.wait_ok()
                await until_ready_is(http, gateway, 200, 15)
