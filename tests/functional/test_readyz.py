"""/readyz and /healthz of a real gateway process in front of a real redis-server that the
test kills, restarts, freezes and thaws: ready only while every Redis the gateway uses
answers a PING in time, alive throughout."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
from conftest import gateway_for, split_experiment
from control_support import control_gateway
from redis_servers import RedisClusterServers, RedisServer

from gateway.io.server import READY_PING_TIMEOUT_S
from gateway.local_services import LocalEmulator, LocalGateway


async def probe(http: aiohttp.ClientSession, gateway: LocalGateway, path: str) -> tuple[int, str]:
    async with http.get(f"{gateway.http_url}{path}") as response:
        return response.status, await response.text()


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


async def test_ready_follows_the_outcome_redis(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """Outcomes (and, with them, the experiments' state) in Redis: a killed Redis makes the
    gateway unready at once, a restarted one ready again; a frozen one, which accepts
    connections but never answers, is caught by the PING timeout. /healthz stays 200."""
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    with RedisServer(tmp_path / "redis") as server:
        gateway = control_gateway(
            tmp_path / "gw", backends, split_experiment(), redis_url=server.url, prefix="ready"
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
    and named in the answer."""
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    with RedisServer(tmp_path / "redis") as server:
        env = dict(os.environ) | {
            "SPEECH_GATEWAY_GATEWAY__CONTROL__STORE": "redis",
            "SPEECH_GATEWAY_OUTCOMES__REDIS_URL": server.url,
            "SPEECH_GATEWAY_OUTCOMES__REDIS_PREFIX": "ready-control",
        }
        gateway = gateway_for(tmp_path / "gw", backends, [split_experiment()], env=env)
        with gateway:
            async with aiohttp.ClientSession() as http:
                assert await probe(http, gateway, "/readyz") == (200, "ok\n")
                server.kill()
                assert await until_ready_is(http, gateway, 503, 3) == "redis unreachable: control\n"
                server.start()
                await until_ready_is(http, gateway, 200, 10)


async def test_ready_follows_every_primary_of_a_redis_cluster(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """With Redis Cluster each primary holds some experiments' streams: one that is down
    (not the node the gateway was pointed at) makes the gateway unready until it is back."""
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    with RedisClusterServers(tmp_path / "cluster") as cluster:
        env = dict(os.environ) | {
            "SPEECH_GATEWAY_OUTCOMES__STORE": "redis",
            "SPEECH_GATEWAY_OUTCOMES__REDIS_URL": cluster.url,
            "SPEECH_GATEWAY_OUTCOMES__REDIS_CLUSTER": "true",
            "SPEECH_GATEWAY_OUTCOMES__REDIS_PREFIX": "ready-cluster",
            "SPEECH_GATEWAY_OUTCOMES__JOURNAL_DIR": str(tmp_path / "journal"),
        }
        gateway = gateway_for(tmp_path / "gw", backends, [split_experiment()], env=env)
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
