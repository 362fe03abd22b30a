"""Shared helpers of the control-plane tests: gateways with an admin token, quick sessions."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
from conftest import ALPHA, BRAVO, gateway_for
from support import CLIENT_KEY, silence

from gateway.control.model import hash_key
from gateway.tools.local_services import LocalGateway
from gateway.tools.usp_client import TurnResult, recognize

PATH = "/speech/recognition/conversation/cognitiveservices/v1"
ADMIN = "control-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
PCM = silence(2.5)  # one instant-engine utterance (it makes one per 3 s of audio or less)
ANSWERS = {ALPHA: "alpha", BRAVO: "bravo"}


def control_gateway(
    work: Path,
    backends: dict[str, str],
    experiment: dict[str, object],
    *,
    redis_url: str | None = None,
    prefix: str = "sgw-control",
    **gateway: object,
) -> LocalGateway:
    """A gateway process (not started) with the ADMIN token; outcomes and experiment state
    in Redis when `redis_url` is given, else in files under `work`."""
    env = dict(os.environ)
    if redis_url is not None:
        env |= {
            "SPEECH_GATEWAY_OUTCOMES__STORE": "redis",
            "SPEECH_GATEWAY_REDIS__URL": redis_url,
            "SPEECH_GATEWAY_REDIS__PREFIX": prefix,
            "SPEECH_GATEWAY_OUTCOMES__JOURNAL_DIR": str(work / "journal"),
        }
    return gateway_for(
        work,
        backends,
        [experiment],
        env=env,
        admin_tokens_sha256={"ops": hash_key(ADMIN)},
        **gateway,
    )


async def admin(
    http: aiohttp.ClientSession,
    gateway: LocalGateway,
    method: str,
    path: str,
    body: object = None,
    *,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Call the admin API; (status, JSON answer)."""
    async with http.request(
        method,
        f"{gateway.http_url}{path}",
        json=body,
        headers=AUTH if headers is None else headers,
    ) as response:
        return response.status, await response.json()


async def view(http: aiohttp.ClientSession, gateway: LocalGateway, experiment: str = "ab") -> Any:
    status, answer = await admin(http, gateway, "GET", f"/admin/experiments/{experiment}")
    assert status == 200, answer
    return answer


async def wait_for_phase(
    http: aiohttp.ClientSession, gateway: LocalGateway, phase: str, timeout_s: float = 5.0
) -> float:
    """Seconds until `gateway` serves `phase` (polled every 10 ms)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if (await view(http, gateway))["phase"] == phase:
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    raise AssertionError(f"phase {phase} not served within {timeout_s} s")


async def session(
    http: aiohttp.ClientSession, gateway: LocalGateway, unit: str, *, pace_s: float = 0.0
) -> TurnResult:
    """One quick USP session for `unit`."""
    return await recognize(
        http,
        f"{gateway.ws_url}{PATH}?gw-unit={unit}",
        PCM,
        headers={"Ocp-Apim-Subscription-Key": CLIENT_KEY},
        frame_interval_s=pace_s,
    )


def answered_by(result: TurnResult) -> str | None:
    """ "alpha" or "bravo" from the session's recognised text; None if it got no text."""
    for text in result.texts():
        if text in ANSWERS:
            return ANSWERS[text]
    return None


def failed(result: TurnResult) -> bool:
    return any(p.get("RecognitionStatus") == "Error" for p in result.phrases())


async def sessions(
    http: aiohttp.ClientSession, gateways: list[LocalGateway], units: Iterable[str]
) -> list[TurnResult]:
    """Sessions for `units`, all at once, spread over `gateways` in turn."""
    return list(
        await asyncio.gather(
            *(session(http, gateways[i % len(gateways)], u) for i, u in enumerate(units))
        )
    )


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in an exposition text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        metric_name, _, label_text = sample.partition("{")
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if metric_name == name and got == wanted:
            return float(value)
    return 0.0


async def metrics_text(http: aiohttp.ClientSession, gateway: LocalGateway) -> str:
    async with http.get(f"{gateway.http_url}/metrics") as response:
        assert response.status == 200
        return await response.text()


def audit_json(entries: list[dict[str, Any]]) -> str:
    return json.dumps(entries, indent=1)
