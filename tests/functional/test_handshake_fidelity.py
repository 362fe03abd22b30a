"""Through the gateway, the SDK and the backend see of each other what they see directly.

Each case runs the real native SDK (or, for the JS SDK's handshake, a client that sends
exactly what the JS SDK sends, protocol.md §1.2) once straight at a scripted backend and
once through a gateway in front of it, and compares what each side got: the SDK's error
code, error details and number of connection attempts (counted by the backend), the
backend's view of the upgrade request (subprotocols offered, header names, connection ids).
The deviations docs/gateway.md justifies are asserted as such.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from conftest import gateway_for
from handshake_fidelity_support import (
    BODY_NOTE,
    PATH,
    SERVED_TEXT,
    STEADY_BREAKER,
    ScriptedBackend,
    SdkRun,
    counted,
    gateway_experiment,
    key_env,
    normalized_details,
    sdk_once,
)
from multidict import CIMultiDictProxy
from support import BACKEND_KEY, QA_KEY, read_outcomes

from gateway.outcomes.record import Kind, OutcomeRecord
from gateway.server.relay.upstream import FOLLOWED_REDIRECTS, REDACTED
from gateway.tools.local_services import LocalGateway

REFUSED = ["status_400", "status_404", "status_500", "status_502"]
REDIRECTS = [
    "redirect_302_same",
    "redirect_303_same",
    "redirect_301_same",
    "redirect_307_same",
    "redirect_308_same",
    "redirect_307_http",
    "redirect_307_other",
]
CASES = ["serve", *REFUSED, "echo_key", *REDIRECTS, "drop"]
TIMEOUT = aiohttp.ClientTimeout(total=60)
RECORDS_WAIT_S = 15.0


@dataclass
class Setup:
    backend: ScriptedBackend
    gateway: LocalGateway
    outcomes: Path

    def direct(self, case: str) -> tuple[SdkRun, int]:
        url = f"{self.backend.url(case)}{PATH}"
        return counted(self.backend, case, lambda: sdk_once(url, BACKEND_KEY))

    def through(self, case: str) -> tuple[SdkRun, int]:
        url = f"{self.gateway.ws_url}{PATH}"
        return counted(self.backend, case, lambda: sdk_once(url, QA_KEY, case))

    def records(self, case: str) -> list[OutcomeRecord]:
        return [r for r in read_outcomes(self.outcomes) if r.variant == case]

    def failures(self, case: str, count: int) -> list[tuple[Kind, str | None]]:
        """The case's records once `count` are written (the sink writes asynchronously)."""
        deadline = time.monotonic() + RECORDS_WAIT_S
        while len(records := self.records(case)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return [(r.kind, r.error_code) for r in records]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("handshake-fidelity")
    with ScriptedBackend() as backend:
        backends = {case: backend.url(case) for case in CASES}
        env = {**os.environ, **key_env(CASES, BACKEND_KEY)}
        gateway = gateway_for(
            work, backends, [gateway_experiment(CASES)], env=env, breaker=STEADY_BREAKER
        )
        with gateway:
            yield Setup(backend, gateway, work / "outcomes.jsonl")


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", REFUSED)
async def test_a_refusal_reaches_the_sdk_as_directly_body_included(setup: Setup, case: str) -> None:
    """400, 404, 500, 502: the same error code, the same error details (the backend's
    headers and body included) and as many connection attempts as directly."""
    direct, direct_attempts = await asyncio.to_thread(setup.direct, case)
    through, through_attempts = await asyncio.to_thread(setup.through, case)
    assert direct.code is not None, direct
    assert through.code == direct.code, through
    assert BODY_NOTE in through.details
    assert normalized_details(through.details) == normalized_details(direct.details)
    assert through_attempts == direct_attempts
    status = case.removeprefix("status_")
    expected = [(Kind.SESSION_FAILURE, f"upstream_http_{status}")] * through_attempts
    assert setup.failures(case, through_attempts) == expected


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes


async def upgrade_answer(url: str, headers: dict[str, str] | None = None) -> Answer:
    """The answer to a plain upgrade request, as the SDK's HTTP layer would read it."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Protocol": "USP",
        **(headers or {}),
    }
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.get(url, headers=request) as response,
    ):
        return Answer(
            response.status, response.reason or "", response.headers, await response.read()
        )


async def test_a_refusal_keeps_its_body_and_headers_less_cookies_and_credentials(
    setup: Setup,
) -> None:
    """The client gets the backend's status, reason, body and end-to-end headers, but not
    its cookies, and every credential the gateway sent upstream is redacted."""
    gateway = f"{setup.gateway.http_url}{PATH}?language=en-US&gw-variant="
    key = {"Ocp-Apim-Subscription-Key": QA_KEY}
    direct = await upgrade_answer(f"{setup.backend.http_url('status_502')}{PATH}")
    through = await upgrade_answer(gateway + "status_502", key)
    assert (through.status, through.reason, through.body) == (502, "Bad Gateway", direct.body)
    assert BODY_NOTE.encode() in through.body
    for name in ("apim-request-id", "X-RequestId", "X-Backend-Note", "Content-Type"):
        assert through.headers.get(name) == direct.headers[name], name
    assert "Set-Cookie" in direct.headers
    assert "Set-Cookie" not in through.headers
    echoed = await upgrade_answer(gateway + "echo_key", key)
    assert echoed.status == 400
    assert echoed.body == f"you sent the key {REDACTED}".encode()
    assert echoed.headers["X-Echo-Key"] == REDACTED


# -- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in REDIRECTS if not c.endswith("_other")])
async def test_a_redirect_reaches_the_sdk_as_directly(setup: Setup, case: str) -> None:
    """302 and 303 the SDK never follows (ConnectionFailure, retried); 301, 307 and 308 to a
    ws:// URL on the backend's own origin it follows, and so does the gateway; to an http://
    URL it cannot follow them (307: RuntimeError, retried)."""
    served = setup.backend.requests("serve")
    direct, direct_attempts = await asyncio.to_thread(setup.direct, case)
    served_directly = len(setup.backend.requests("serve")) - len(served)
    through, through_attempts = await asyncio.to_thread(setup.through, case)
    served_through = len(setup.backend.requests("serve")) - len(served) - served_directly
    assert (through.code, through_attempts) == (direct.code, direct_attempts), through
    assert [r.text for r in through.transcript.recognized] == [
        r.text for r in direct.transcript.recognized
    ]
    assert served_through == served_directly
    status = case.split("_")[1]
    if case.endswith("_same") and int(status) in FOLLOWED_REDIRECTS:
        assert direct.transcript.text == SERVED_TEXT  # and so through the gateway (above)
    elif case.endswith("_http"):
        # Directly the SDK names the Location's scheme; through the gateway it gets no
        # Location at all: another sentence, the same error code and retries.
        assert "scheme" in direct.details
        assert "scheme" in through.details
    else:
        assert normalized_details(through.details) == normalized_details(direct.details)
        expected = [(Kind.SESSION_FAILURE, f"upstream_http_{status}")] * through_attempts
        assert setup.failures(case, through_attempts) == expected


async def test_a_redirect_off_the_backends_origin_is_not_followed(setup: Setup) -> None:
    """A 307 to another host: directly the SDK follows it; the gateway neither follows it
    with the backend's key nor passes its Location on, so the SDK fails as after a 307
    without a usable Location (RuntimeError, retried), and the other origin never hears of
    the gateway."""
    case = "redirect_307_other"
    elsewhere = [r for r in setup.backend.requests("serve") if r.port == setup.backend.other_port]
    direct, _ = await asyncio.to_thread(setup.direct, case)
    assert direct.transcript.text == SERVED_TEXT  # followed to the other port
    through, attempts = await asyncio.to_thread(setup.through, case)
    assert through.code == "RuntimeError", through
    assert attempts == 5
    now_elsewhere = [
        r for r in setup.backend.requests("serve") if r.port == setup.backend.other_port
    ]
    assert len(now_elsewhere) == len(elsewhere) + 1  # the direct run's only
    gateway = f"{setup.gateway.http_url}{PATH}?language=en-US&gw-variant={case}"
    answer = await upgrade_answer(gateway, {"Ocp-Apim-Subscription-Key": QA_KEY})
    assert (answer.status, answer.body) == (307, b"")
    assert "Location" not in answer.headers
    assert str(setup.backend.other_port) not in str(answer.headers)


# -- what the backend sees -------------------------------------------------------------------


def query(received_path_qs: str) -> dict[str, str]:
    """The query of a request, less the credentials (the gateway puts its own)."""
    pairs = parse_qsl(urlsplit(received_path_qs).query)
    return {n: v for n, v in pairs if n.lower() not in ("ocp-apim-subscription-key",)}


async def js_style_upgrade(
    url: str, key: str, connection_id: str, variant: str | None = None
) -> str | None:
    """The JS SDK's upgrade (protocol.md §1.2): no subprotocol, the key and both connection
    ids as headers and again in the query, no Accept/User-Agent of the client library.
    Returns the subprotocol the server chose."""
    params = "?language=en-US&format=simple"
    if variant is not None:
        params += f"&gw-variant={variant}"
    params += f"&Ocp-Apim-Subscription-Key={key}"
    params += f"&X-ConnectionId={connection_id}&connectionId={connection_id}"
    headers = {
        "Ocp-Apim-Subscription-Key": key,
        "X-ConnectionId": connection_id,
        "connectionId": connection_id,
    }
    skipped = ("Accept", "Accept-Encoding", "User-Agent")
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT, skip_auto_headers=skipped) as http,
        http.ws_connect(url + params, headers=headers) as ws,
    ):
        return ws.protocol


async def test_the_js_sdks_upgrade_reaches_the_backend_as_sent(setup: Setup) -> None:
    """No subprotocol offered, so none offered upstream and none chosen; `connectionId` and
    `X-ConnectionId` arrive as header and query parameter with the client's names."""
    direct_id, through_id = "95B25A38E76441CB801B1A4BF8B3DB8C", "0A1B2C3D4E5F60718293A4B5C6D7E8F9"
    before = len(setup.backend.requests("serve"))
    chosen_direct = await js_style_upgrade(
        f"{setup.backend.url('serve')}{PATH}", BACKEND_KEY, direct_id
    )
    gateway_url = f"{setup.gateway.ws_url}{PATH}"
    chosen_through = await js_style_upgrade(gateway_url, QA_KEY, through_id, variant="serve")
    direct, through = setup.backend.requests("serve")[before:]
    assert chosen_direct is chosen_through is None
    assert direct.protocols == through.protocols == ()
    assert through.header_names() == direct.header_names()
    for name in ("connectionId", "X-ConnectionId"):
        assert any(n == name for n, _ in through.headers), name
        assert through.header(name) == through_id
    assert through.header("Ocp-Apim-Subscription-Key") == BACKEND_KEY
    direct_query = {n: v.replace(direct_id, through_id) for n, v in query(direct.path_qs).items()}
    assert query(through.path_qs) == direct_query


async def test_the_native_sdks_upgrade_reaches_the_backend_as_sent(setup: Setup) -> None:
    """The native SDK offers USP: the backend gets that offer and the same header names as
    from the SDK directly (nothing of the gateway's HTTP client added), and the session
    is served both ways."""
    before = len(setup.backend.requests("serve"))
    direct, _ = await asyncio.to_thread(setup.direct, "serve")
    through, _ = await asyncio.to_thread(setup.through, "serve")
    assert direct.transcript.text == through.transcript.text == SERVED_TEXT
    seen_direct, seen_through = setup.backend.requests("serve")[before:]
    assert seen_direct.protocols == seen_through.protocols == ("USP",)
    assert seen_through.header_names() == seen_direct.header_names()
    assert seen_through.header("User-Agent") == seen_direct.header("User-Agent")


# -- a dropped connection --------------------------------------------------------------------


DROPPED = (
    "Failure while sending a frame over the WebSocket connection.",
    "WebSocket operation failed.",
)


async def test_a_backend_dropping_the_connection_drops_the_clients(setup: Setup) -> None:
    """No close frame from the backend, none to the client: ConnectionFailure with the same
    details and retries as directly, and one `upstream_lost` record per attempt."""
    direct, direct_attempts = await asyncio.to_thread(setup.direct, "drop")
    through, through_attempts = await asyncio.to_thread(setup.through, "drop")
    assert direct.code == "ConnectionFailure", direct
    assert through.code == direct.code, through
    # The SDK reports a dropped connection as a failed send or a failed read, whichever of
    # its I/O meets the drop first: a race in the SDK, directly as through the gateway.
    for seen in (direct, through):
        assert normalized_details(seen.details).startswith(DROPPED), seen
    assert through_attempts == direct_attempts
    expected = [(Kind.SESSION_FAILURE, "upstream_lost")] * through_attempts
    assert setup.failures("drop", through_attempts) == expected
