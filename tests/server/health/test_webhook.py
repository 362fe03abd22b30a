"""The alert webhook against a real local receiver: delivery, retries, timeouts, a full queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from gateway.health.alerts import Alert
from gateway.server.health.webhook import Webhook, origin


def alert(n: int = 1) -> Alert:
    return Alert(
        experiment="banking",
        variant="custom",
        kind="canary_matches_base",
        message=f"custom answers as the base model ({n})",
        detail={"rounds": n},
        at="2026-12-07T10:00:00.000Z",
    )


@dataclass
class Receiver:
    """A webhook receiver whose answers are scripted: one status (or a delay) per request."""

    script: list[int | float] = field(default_factory=list)  # int: status; float: sleep s
    bodies: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.times.append(time.monotonic())
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, float):
            await asyncio.sleep(step)
            step = 200
        if step == 200:
            self.bodies.append(await request.json())
        return web.Response(status=step)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/secret-path", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    found.url = f"http://user:pw@127.0.0.1:{port}/hooks/secret-path?token=abc"
    yield found
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - the webhook signals nothing to await
            await asyncio.sleep(0.01)


async def test_an_alert_is_posted_as_json(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    hook = Webhook(http, receiver.url, timeout_s=2.0, attempts=3)
    hook.start()
    assert hook.send(alert())
    await until(lambda: hook.delivered == 1)
    await hook.close()
    (body,) = receiver.bodies
    assert body == {"text": alert().message, **alert().to_dict()}
    assert body["kind"] == "canary_matches_base"
    assert hook.failed == 0


async def test_a_server_error_is_retried_with_backoff(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receiver.script = [500, 503]
    hook = Webhook(http, receiver.url, timeout_s=2.0, attempts=3, backoff_s=0.1)
    hook.start()
    hook.send(alert())
    await until(lambda: hook.delivered == 1)
    await hook.close()
    assert len(receiver.times) == 3
    gaps = [b - a for a, b in zip(receiver.times, receiver.times[1:], strict=False)]
    assert gaps[0] >= 0.09  # 0.1 s,
    assert gaps[1] >= 0.19  # then doubled
    assert len(receiver.bodies) == 1


async def test_a_refusal_is_final_and_attempts_are_bounded(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receiver.script = [404, 500, 500, 500]
    hook = Webhook(http, receiver.url, timeout_s=2.0, attempts=3, backoff_s=0.01)
    hook.start()
    hook.send(alert(1))  # 404: not asked again
    hook.send(alert(2))  # three 500s: given up after the third
    await until(lambda: hook.failed == 2)
    hook.send(alert(3))  # the loop goes on after failures
    await until(lambda: hook.delivered == 1)
    await hook.close()
    assert len(receiver.times) == 5
    assert [b["detail"]["rounds"] for b in receiver.bodies] == [3]


async def test_each_attempt_has_its_own_timeout(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receiver.script = [1.0]  # the first request hangs past the timeout
    hook = Webhook(http, receiver.url, timeout_s=0.2, attempts=2, backoff_s=0.01)
    hook.start()
    started = time.monotonic()
    hook.send(alert())
    await until(lambda: hook.delivered == 1)
    assert time.monotonic() - started < 0.9
    assert len(receiver.times) == 2
    await hook.close()


async def test_send_never_waits_and_a_full_queue_drops(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receiver.script = [0.5]
    hook = Webhook(http, receiver.url, timeout_s=2.0, attempts=1, queue_size=2)
    hook.start()
    hook.send(alert(1))
    await until(lambda: len(receiver.times) == 1)  # the first is being posted, slowly
    started = time.monotonic()
    results = [hook.send(alert(n)) for n in (2, 3, 4)]
    assert time.monotonic() - started < 0.05
    assert results == [True, True, False]
    assert hook.dropped == 1
    await until(lambda: hook.delivered == 3)
    await hook.close()
    assert [b["detail"]["rounds"] for b in receiver.bodies] == [1, 2, 3]


async def test_close_drains_briefly_then_gives_up(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receiver.script = [5.0]
    hook = Webhook(http, receiver.url, timeout_s=10.0, attempts=1)
    hook.start()
    hook.send(alert())
    await until(lambda: len(receiver.times) == 1)
    started = time.monotonic()
    await hook.close(grace_s=0.2)
    assert time.monotonic() - started < 1.0
    assert hook.delivered == 0


def test_logs_name_the_receiver_by_origin_only() -> None:
    url = "https://user:pw@hooks.example.com:8443/services/T0/B0/XYZ?token=abc"
    assert origin(url) == "https://hooks.example.com:8443"
    assert origin("http://hooks.example.com/x") == "http://hooks.example.com"


async def test_an_unreachable_receiver_fails_without_raising_or_logging_secrets(
    http: aiohttp.ClientSession,
) -> None:
    url = "http://127.0.0.1:9/s3cret-path?key=s3cret"
    hook = Webhook(http, url, timeout_s=0.5, attempts=2, backoff_s=0.01)
    with capture_logs() as logs:
        hook.start()
        hook.send(alert())
        await until(lambda: hook.failed == 1)
        await hook.close()
    assert hook.delivered == 0
    (failure,) = [e for e in logs if e["event"] == "health_webhook_failed"]
    assert failure["webhook"] == "http://127.0.0.1:9"
    assert failure["attempts"] == 2
    assert "s3cret" not in repr(logs)
