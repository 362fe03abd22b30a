"""Experiment state shared by two gateway processes through a real Redis: a change on one
replica is served by the other within a second, survives Redis restarts, and never moves
a session already in flight."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import redis
from conftest import split_experiment
from control_support import (
    admin,
    answered_by,
    control_gateway,
    session,
    sessions,
    view,
    wait_for_phase,
)
from redis_servers import RedisServer

from gateway.stores.control_store import ControlKeys
from gateway.stores.jsonl_sink import read_jsonl
from gateway.tools.local_services import LocalEmulator

PREFIX = "sgw-replicas"


async def test_a_change_on_one_replica_reaches_the_other_and_survives_redis_restarts(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    experiment = split_experiment()
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        replica = {"redis_url": server.url, "prefix": PREFIX}
        with (
            control_gateway(tmp_path / "a", backends, experiment, **replica) as a,
            control_gateway(tmp_path / "b", backends, experiment, **replica) as b,
        ):
            async with aiohttp.ClientSession() as http:
                status, changed = await admin(
                    http,
                    a,
                    "PUT",
                    "/admin/experiments/ab/weights",
                    {"weights": {"a": 0, "b": 100}, "reason": "all to b"},
                )
                assert status == 200, changed
                assert changed["version"] == 1
                assert changed["updated_by"] == "ops"
                elapsed = await wait_for_phase(http, b, changed["phase"])
                assert elapsed < 1.0
                on_b = await view(http, b)
                assert [v["share"] for v in on_b["variants"]] == [0.0, 1.0]
                # B routes its new sessions by the new split.
                results = await sessions(http, [b], [f"unit-{i}" for i in range(8)])
                assert {answered_by(r) for r in results} == {"bravo"}

                # Redis killed and restarted with its AOF: nothing is lost, and a replica
                # that starts afterwards loads the current state.
                server.kill()
                server.restart()
                with control_gateway(tmp_path / "c", backends, experiment, **replica) as c:
                    on_c = await view(http, c)
                    assert on_c["phase"] == changed["phase"]
                    assert on_c["version"] == 1
                    status, audit = await admin(http, c, "GET", "/admin/experiments/ab/audit")
                    assert status == 200
                    assert [e["action"] for e in audit["entries"]] == ["set_weights"]
                    assert audit["entries"][0]["reason"] == "all to b"
                    assert audit["entries"][0]["before"]["weights"] == {"a": 50.0, "b": 50.0}

                # Redis back without its data (no persistence): the replicas write back
                # the state they hold, within the reconciliation interval.
                client = redis.Redis.from_url(server.url)
                try:
                    client.flushall()
                    keys = ControlKeys(PREFIX)
                    deadline = time.monotonic() + 5
                    while client.hget(keys.version, "ab") is None:
                        assert time.monotonic() < deadline, "the state was not written back"
                        await asyncio.sleep(0.05)
                    assert int(client.hget(keys.version, "ab") or 0) == 1
                finally:
                    client.close()
                # ... and a change after that continues from version 1 on every replica.
                status, paused = await admin(http, b, "POST", "/admin/experiments/ab/pause")
                assert status == 200, paused
                assert paused["version"] == 2
                await wait_for_phase(http, a, paused["phase"])


async def test_sessions_in_flight_keep_their_variant_and_phase(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """A real-time session that started on b ends on b, in the old phase, although the
    weights moved everything to a while it ran; the next session goes to a."""
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    with control_gateway(tmp_path / "gw", backends, split_experiment((0, 100))) as gateway:
        async with aiohttp.ClientSession() as http:
            before = (await view(http, gateway))["phase"]
            running = asyncio.ensure_future(session(http, gateway, "long", pace_s=0.1))
            await asyncio.sleep(1.0)  # a third of its audio is through
            status, changed = await admin(
                http, gateway, "PUT", "/admin/experiments/ab/weights", {"weights": {"a": 1, "b": 0}}
            )
            assert status == 200
            assert not running.done()
            assert answered_by(await running) == "bravo"
            assert answered_by(await session(http, gateway, "long")) == "alpha"
    by_session: dict[str, set[tuple[str | None, str | None]]] = {}
    for record in read_jsonl(tmp_path / "gw" / "outcomes.jsonl"):
        by_session.setdefault(record.session_id, set()).add((record.variant, record.phase))
    assert list(by_session.values()) == [{("b", before)}, {("a", changed["phase"])}]
