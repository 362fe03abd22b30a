"""Two experiments, each with a variant `custom` on a custom endpoint of the same backend:
their breakers are their own. One endpoint failing opens its experiment's breaker and sends
that experiment's sessions to control; the other experiment's sessions stay on their
healthy endpoint.

The backend is a small USP service in the test that tells the endpoints apart by `cid`,
as the service does: `broken-checkout` answers every upgrade with 503, any other endpoint
(and the base model) answers each turn with a phrase naming it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from conftest import gateway_for
from control_support import ADMIN, AUTH, PCM, metric, metrics_text
from support import CLIENT_KEY, QA_KEY

from gateway.control.model import hash_key
from gateway.protocol.usp import decode_binary_head, encode_text
from gateway.stores.jsonl_sink import read_jsonl
from gateway.tools.local_services import free_port
from gateway.tools.usp_client import TurnResult, recognize

PATH = "/speech/recognition/conversation/cognitiveservices/v1?language=en-US"
HEALTHY, BROKEN = "healthy-banking", "broken-checkout"
BREAKER = {"consecutive_failures": 3, "open_s": 60.0}


def experiment(experiment_id: str, endpoint_id: str, client: str) -> dict[str, object]:
    """Every unit of `client` on `custom` (the endpoint), control `base` on the same backend."""
    return {
        "id": experiment_id,
        "control": "base",
        "variants": [
            {"name": "base", "backend": "azure", "weight": 0},
            {"name": "custom", "backend": "azure", "endpoint_id": endpoint_id, "weight": 100},
        ],
        "targeting": {"clients": [client]},
    }


async def serve_usp(request: web.Request) -> web.StreamResponse:
    """503 for the broken endpoint; else one phrase per turn naming the model that served."""
    model = request.query.get("cid", "base")
    if model == BROKEN:
        return web.Response(status=503, text="endpoint unavailable")
    ws = web.WebSocketResponse(protocols=("USP",))
    await ws.prepare(request)
    answered: set[str] = set()
    async for message in ws:
        if message.type is not WSMsgType.BINARY:
            continue
        head = decode_binary_head(message.data)
        rid = head.request_id
        if rid is None or rid in answered:
            continue
        answered.add(rid)
        phrase = {"RecognitionStatus": "Success", "DisplayText": model, "Offset": 0}
        await ws.send_str(encode_text("turn.start", rid, '{"context":{}}'))
        await ws.send_str(encode_text("speech.phrase", rid, json.dumps(phrase | {"Duration": 1})))
        await ws.send_str(encode_text("turn.end", rid, "{}"))
    return ws


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/{rest:.*}", serve_usp)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def session(http: aiohttp.ClientSession, gateway_url: str, key: str, unit: str) -> str:
    """One session's recognised text: the model that answered it."""
    result: TurnResult = await recognize(
        http,
        f"{gateway_url}{PATH}&gw-unit={unit}",
        PCM,
        headers={"Ocp-Apim-Subscription-Key": key},
    )
    (text,) = result.texts()
    return text


async def test_a_failing_custom_endpoint_leaves_another_experiments_endpoint_alone(
    backend: str, tmp_path: Path
) -> None:
    experiments = [experiment("banking", HEALTHY, "app"), experiment("checkout", BROKEN, "qa")]
    gateway = gateway_for(
        tmp_path,
        {"azure": backend},
        experiments,
        breaker=BREAKER,
        admin_tokens_sha256={"ops": hash_key(ADMIN)},
    )
    with gateway:
        async with aiohttp.ClientSession() as http:
            # checkout's endpoint fails: its sessions go to control, and its breaker opens.
            for index in range(4):
                assert await session(http, gateway.ws_url, QA_KEY, f"c{index}") == "base"
            # banking's healthy endpoint of the same variant name keeps every session.
            for index in range(4):
                assert await session(http, gateway.ws_url, CLIENT_KEY, f"b{index}") == HEALTHY
            async with http.get(f"{gateway.http_url}/admin/backends", headers=AUTH) as answer:
                listing = await answer.json()
            text = await metrics_text(http, gateway)
    states = {b["name"]: b["breaker"]["state"] for b in listing["backends"]}
    assert states == {
        "azure": "closed",
        "azure/banking/custom": "closed",
        "azure/checkout/custom": "open",
    }
    assert metric(text, "speech_gateway_breaker_state", backend="azure/checkout/custom") == 2
    failovers = "speech_gateway_failovers_total"
    assert metric(text, failovers, experiment="checkout", variant="custom") == 4
    assert metric(text, failovers, experiment="banking", variant="custom") == 0
    assert HEALTHY not in text
    assert BROKEN not in text
    records = list(read_jsonl(tmp_path / "outcomes.jsonl"))
    served = {(r.experiment, r.variant, r.failover_from) for r in records}
    assert served == {("banking", "custom", None), ("checkout", "base", "custom")}
