"""Many concurrent sessions through one gateway process: no hidden connection cap."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from conftest import gateway_for
from support import CLIENT_KEY, read_outcomes

from gateway.tools.local_services import LocalEmulator

SESSIONS = 150  # past aiohttp's default pool of 100 connections per client session
PATH = "/speech/recognition/conversation/cognitiveservices/v1"


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmulator]:
    """An instant emulator that admits far more sessions than the test opens."""
    log = tmp_path_factory.mktemp("roomy") / "emulator.log"
    with LocalEmulator("--engine", "instant", "--max-sessions", "1000", log_path=log) as running:
        yield running


async def hold_sessions(url: str, count: int) -> list[int]:
    """Open `count` sessions at once and keep them all open; the upgrade status of each."""
    # The client must not cap its own connections either.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        statuses: list[int] = []

        async def one(unit: int) -> None:
            try:
                ws = await http.ws_connect(
                    f"{url}?language=en-US&gw-unit=u{unit}",
                    headers={"Ocp-Apim-Subscription-Key": CLIENT_KEY},
                    timeout=aiohttp.ClientWSTimeout(ws_close=5),
                )
            except aiohttp.WSServerHandshakeError as exc:
                statuses.append(exc.status)
                return
            sockets.append(ws)
            statuses.append(101)

        async with asyncio.timeout(60):
            await asyncio.gather(*(one(n) for n in range(count)))
        for ws in sockets:
            await ws.close()
        return statuses


def test_more_than_a_hundred_concurrent_sessions_all_reach_their_backend(
    roomy: LocalEmulator, tmp_path: Path
) -> None:
    """Every gateway session holds an upstream WebSocket while it lives; with a pooled
    client capped at 100 connections, session 101 would wait and fail at the connect
    timeout. All 150 open, concurrently, and reach the backend within the connect timeout."""
    experiment = {
        "id": "one",
        "control": "a",
        "variants": [{"name": "a", "backend": "roomy", "weight": 100}],
    }
    with gateway_for(
        tmp_path, {"roomy": roomy.ws_url}, [experiment], connect_timeout_s=3.0
    ) as gateway:
        statuses = asyncio.run(hold_sessions(f"{gateway.ws_url}{PATH}", SESSIONS))
    assert statuses.count(101) == SESSIONS, sorted(set(statuses))
    # A session whose backend cannot be reached still gets its upgrade (and then an Error
    # phrase): the outcome records tell whether each one really reached the backend.
    failures = [r.error_code for r in read_outcomes(tmp_path / "outcomes.jsonl")]
    assert failures == []
