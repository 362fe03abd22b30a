"""A shadow's backend is offered the subprotocols the client offered, as the primary's is:
none from the JS SDK, `USP` from the native one (protocol.md §1.2).

One scripted backend records every upgrade request; the primary variant is its `serve`
case on its first port, the shadow variant the same case on its second port, so the port
a request came in on tells the primary's dial from the shadow's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from conftest import gateway_for
from handshake_fidelity_support import PATH, SERVED_TEXT, Received, ScriptedBackend, sdk_once
from support import CLIENT_KEY

from gateway.tools.local_services import LocalGateway

REQUEST_WAIT_S = 15.0
EXPERIMENT = {
    "id": "shadowed",
    "control": "a",
    "shadows": ["b"],
    "variants": [
        {"name": "a", "backend": "primary", "weight": 100},
        {"name": "b", "backend": "shadow", "weight": 0},
    ],
}


@dataclass
class Setup:
    backend: ScriptedBackend
    gateway: LocalGateway

    def seen(self) -> int:
        return len(self.backend.requests("serve"))

    def dials(self, since: int) -> tuple[Received, Received]:
        """The primary's and the shadow's upgrade requests after the first `since` (the
        shadow dials once the client's upgrade is answered: waited for)."""
        deadline = time.monotonic() + REQUEST_WAIT_S
        while len(new := self.backend.requests("serve")[since:]) < 2:
            assert time.monotonic() < deadline, f"the backend got only {new}"
            time.sleep(0.05)
        (primary,) = [r for r in new if r.port == self.backend.port]
        (shadow,) = [r for r in new if r.port == self.backend.other_port]
        return primary, shadow


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("shadow-subprotocols")
    with ScriptedBackend() as backend:
        backends = {
            "primary": backend.url("serve"),
            "shadow": f"ws://127.0.0.1:{backend.other_port}/serve",
        }
        with gateway_for(work, backends, [EXPERIMENT]) as gateway:
            yield Setup(backend, gateway)


async def test_a_client_offering_no_subprotocol_gets_shadows_offered_none(setup: Setup) -> None:
    """The JS SDK offers none: the shadow's backend is offered none, as the primary's."""
    before = setup.seen()
    url = f"{setup.gateway.ws_url}{PATH}?language=en-US&Ocp-Apim-Subscription-Key={CLIENT_KEY}"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        assert ws.protocol is None
        primary, shadow = await asyncio.to_thread(setup.dials, before)
    assert primary.protocols == shadow.protocols == ()


async def test_the_native_sdks_offer_reaches_the_shadow_as_sent(setup: Setup) -> None:
    """The native SDK offers USP: so are both backends, and the session is served."""
    before = setup.seen()
    url = f"{setup.gateway.ws_url}{PATH}"
    run = await asyncio.to_thread(sdk_once, url, CLIENT_KEY)
    assert run.transcript.text == SERVED_TEXT, run.details
    primary, shadow = await asyncio.to_thread(setup.dials, before)
    assert primary.protocols == shadow.protocols == ("USP",)
