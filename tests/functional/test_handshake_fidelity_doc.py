"""docs/gateway.md's failure table, row by row, against a running gateway and the real SDK.

Each row of "Failures, as the SDK sees them" says in its "the SDK gets" cell what the
native SDK reports: `<cases> → <ErrorCode> (retried|not retried)` per case, one error code
for the whole row, or "served"; and in its "outcome" cell the record each session leaves.
Every case a row names is played through a gateway in front of a scripted backend with
the real SDK, and what the SDK reported, how often it tried and what the gateway recorded
are compared with the row. A row without a scenario here, or a scenario without its row,
fails as well, and so do the constants the notes under the table state (the headers
withheld, the body bound, the redirects followed), read against `gateway.server.relay.upstream`.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import azure.cognitiveservices.speech as speechsdk
import pytest
from conftest import gateway_for
from docs_markdown import backticked, doc, section, tables
from handshake_fidelity_support import (
    PATH,
    STEADY_BREAKER,
    ScriptedBackend,
    SdkRun,
    gateway_experiment,
    key_env,
    sdk_once,
)
from support import BACKEND_KEY, QA_KEY, read_outcomes

from gateway.errors import CloseCode
from gateway.outcomes.record import Kind
from gateway.protocol.usp import encode_binary, encode_text, new_request_id
from gateway.protocol.wav import wave_header
from gateway.server.relay.upstream import (
    FOLLOWED_REDIRECTS,
    HOP_BY_HOP_HEADERS,
    MAX_REDIRECTS,
    MAX_REFUSAL_BODY,
    REDACTED,
    WITHHELD_HEADERS,
)
from gateway.tools.local_services import free_port

HEADING = "Failures, as the SDK sees them (protocol.md §5.3)"
ATTEMPTS = 5  # what "retried" means for the native SDK: 5 connection attempts in all
CODES = frozenset(speechsdk.CancellationErrorCode.__members__)
_PAIR = re.compile(
    r"(?P<keys>\w+(?:/\w+)*) → (?P<code>[A-Za-z]+)(?: \((?P<retry>not retried|retried)\))?"
)
_CODE = re.compile(
    rf"\b(?P<code>{'|'.join(sorted(CODES))})\b(?: \((?P<retry>not retried|retried)\))?"
)


def _followed(status: str) -> str:
    return f"redirect_{status}_same"


def _not_followed(status: str) -> str:
    if status.startswith("2"):
        return f"status_{status}"
    # 301, 307, 308 the gateway would follow on the backend's origin: these go elsewhere.
    where = "other" if int(status) in FOLLOWED_REDIRECTS else "same"
    return f"redirect_{status}_{where}"


# The first cell of each row, and the scripted case (handshake_fidelity_support) of a key.
SCENARIOS: dict[str, Callable[[str], str]] = {
    "refuses the upgrade with an error status (4xx, 5xx)": lambda status: f"status_{status}",
    "redirects the upgrade with 301, 307 or 308 to a `ws://` or `wss://` URL on its own "
    "origin (scheme, host, port)": _followed,
    "answers the upgrade with any other 2xx or 3xx status, or redirects it elsewhere": (
        _not_followed
    ),
    "answers 101 without a valid WebSocket handshake": lambda _: "bad_handshake",
    "closes the WebSocket with a code": lambda code: f"close_{code}",
    "drops the connection without a close frame": lambda _: "drop",
    "unreachable": lambda _: "unreachable",
    "no handshake within `connect_timeout_s`": lambda _: "silent",
    "answers with an error status phrase": lambda status: f"phrase_{status.lower()}",
}


@dataclass(frozen=True, slots=True)
class Expected:
    """What a row says of one of its cases."""

    key: str  # the status, close code or phrase status the case stands for ("" for none)
    case: str
    code: str | None  # the SDK's CancellationErrorCode; None: served
    retried: bool | None  # None: the row does not say


@dataclass(frozen=True, slots=True)
class Row:
    backend: str
    sdk: str
    outcome: str

    def expectations(self) -> list[Expected]:
        scenario = SCENARIOS[self.backend]
        pairs = list(_PAIR.finditer(self.sdk))
        if pairs:
            return [
                Expected(key, scenario(key), m["code"], _retried(m["retry"]))
                for m in pairs
                for key in m["keys"].split("/")
            ]
        if self.sdk.startswith("served"):
            statuses = re.findall(r"\b\d{3}\b", self.backend)
            return [Expected(s, scenario(s), None, None) for s in statuses]
        match = _CODE.search(self.sdk)
        assert match is not None, f"no SDK error code in {self.sdk!r}"
        return [Expected("", scenario(""), match["code"], _retried(match["retry"]))]

    def error_code(self, key: str) -> str | None:
        """The outcome's error code for the case of `key`; None: no failure record."""
        codes = [c for c in backticked(self.outcome) if c != "session_failure"]
        if not codes:
            assert self.outcome.startswith("none"), self.outcome
            return None
        (template,) = codes
        return re.sub(r"<[^>]+>", key, template)


def _retried(note: str | None) -> bool | None:
    return None if note is None else note == "retried"


def failure_rows() -> list[Row]:
    (table,) = tables(section(doc("gateway.md"), HEADING))
    return [Row(r["backend"], r["the SDK gets"], r["outcome"]) for r in table]


ROWS = failure_rows()


def test_every_row_has_a_scenario_and_every_scenario_a_row() -> None:
    assert [row.backend for row in ROWS] == list(SCENARIOS)
    for row in ROWS:
        assert row.expectations(), row
        for expected in row.expectations():
            assert expected.code is None or expected.code in CODES, expected


# -- the notes under the table ---------------------------------------------------------------


def notes() -> dict[str, str]:
    """The bullets under the table by their bold title."""
    text = section(doc("gateway.md"), HEADING)
    bullets = re.findall(r"^\* \*\*(.+?)\*\*(.*?)(?=^\* |^\n)", text, re.MULTILINE | re.DOTALL)
    return {title.rstrip("."): body for title, body in bullets}


def test_the_withheld_headers_are_the_codes() -> None:
    """The headers the doc says are not passed on are exactly those the code withholds, and
    those it says the SDK shows are passed on."""
    withheld_text, _, shown_text = notes()["Headers of a refused upgrade"].partition(
        "The native SDK shows"
    )
    withheld = {name.lower() for name in backticked(withheld_text)}
    assert withheld == HOP_BY_HOP_HEADERS | WITHHELD_HEADERS
    shown = {name.lower() for name in backticked(shown_text)}
    assert shown
    assert not shown & withheld


def test_the_stated_bounds_and_redirects_are_the_codes() -> None:
    body = notes()["Size of a refusal's body"]
    match = re.search(r"At most (\d+) KiB", body)
    assert match is not None
    assert int(match.group(1)) * 1024 == MAX_REFUSAL_BODY
    assert f"`{REDACTED}`" in notes()["Credentials in a refusal"]
    followed = next(row for row in ROWS if row.sdk.startswith("served"))
    assert {int(s) for s in re.findall(r"\b\d{3}\b", followed.backend)} == FOLLOWED_REDIRECTS
    hops = re.search(r"at most (\d+) in a row", followed.sdk)
    assert hops is not None
    assert int(hops.group(1)) == MAX_REDIRECTS


# -- each row, played ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend() -> Iterator[ScriptedBackend]:
    with ScriptedBackend() as running:
        yield running


def backend_url(backend: ScriptedBackend, case: str) -> str:
    special = {
        "unreachable": f"ws://127.0.0.1:{free_port()}",  # nobody listens
        "silent": f"ws://127.0.0.1:{backend.silent_port}",
        "bad_handshake": f"ws://127.0.0.1:{backend.bad_handshake_port}",
    }
    return special.get(case, backend.url(case))


@pytest.mark.parametrize("row", ROWS, ids=[row.backend[:40] for row in ROWS])
async def test_the_row_is_what_the_sdk_gets_through_the_gateway(
    row: Row, backend: ScriptedBackend, tmp_path: Path
) -> None:
    expectations = row.expectations()
    cases = [e.case for e in expectations]
    backends = {case: backend_url(backend, case) for case in ["serve", *cases]}
    env = {**os.environ, **key_env(list(backends), BACKEND_KEY)}
    experiment = gateway_experiment(cases)
    gateway = gateway_for(
        tmp_path, backends, [experiment], env=env, breaker=STEADY_BREAKER, connect_timeout_s=1.0
    )
    runs: dict[str, SdkRun] = {}
    with gateway:
        url = f"{gateway.ws_url}{PATH}"
        for case in cases:
            runs[case] = await asyncio.to_thread(sdk_once, url, QA_KEY, case)
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    for expected in expectations:
        run = runs[expected.case]
        mine = [r for r in records if r.variant == expected.case]
        assert run.code == expected.code, (expected, run)
        if expected.code is None:
            assert run.transcript.recognized, (expected, run)
        error_code = row.error_code(expected.key)
        failures = [r.error_code for r in mine if r.kind is Kind.SESSION_FAILURE]
        if error_code is None:
            assert failures == [], expected
            continue
        assert failures, expected
        assert set(failures) == {error_code}, expected
        if expected.retried is not None:  # one record per connection attempt
            assert len(failures) == (ATTEMPTS if expected.retried else 1), expected


# -- malformed client messages ---------------------------------------------------------------


async def first_close(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, list[str]]:
    """Read until the gateway closes: its close code and the paths received before."""
    paths: list[str] = []
    async for message in ws:
        if message.type is aiohttp.WSMsgType.TEXT:
            paths.append(message.data.split("Path:", 1)[1].split("\r\n", 1)[0].strip())
            if paths[-1] == "turn.end":
                await ws.close()
    return ws.close_code, paths


async def test_only_the_message_the_doc_names_may_omit_its_request_id(
    backend: ScriptedBackend, tmp_path: Path
) -> None:
    """The doc's exception (`speech.config` without X-RequestId) is relayed and the turn
    served; a `speech.context` without one closes the session with 1002."""
    match = re.search(r"a missing `X-RequestId` on any message but\s+`([^`]+)`", doc("gateway.md"))
    assert match is not None
    exempt = match.group(1)
    gateway = gateway_for(tmp_path, {"serve": backend.url("serve")}, [gateway_experiment([])])
    headers = {"Ocp-Apim-Subscription-Key": QA_KEY}
    rid = new_request_id()
    context = '{"phraseDetection":{"language":"en-US"}}'
    with gateway:
        url = f"{gateway.ws_url}{PATH}?language=en-US"
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url, headers=headers, protocols=("USP",)) as ws:
                await ws.send_str(encode_text(exempt, None, '{"context":{}}'))
                await ws.send_str(encode_text("speech.context", rid, context))
                await ws.send_bytes(encode_binary("audio", rid, wave_header()))
                await ws.send_bytes(encode_binary("audio", rid, b"\0" * 3200))
                code, paths = await asyncio.wait_for(first_close(ws), 30)
            assert paths[-1] == "turn.end"
            assert code == CloseCode.NORMAL
            async with http.ws_connect(url, headers=headers, protocols=("USP",)) as ws:
                await ws.send_str(f"Path:speech.context\r\n\r\n{context}")
                code, paths = await asyncio.wait_for(first_close(ws), 30)
            assert (code, paths) == (CloseCode.PROTOCOL_ERROR, [])
