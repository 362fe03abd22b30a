"""CR/LF injection: what the gateway forwards to a backend can never split into extra
headers or requests.

The backend is a bare TCP server that records each request head byte for byte. Clients
send REST requests and WebSocket upgrades whose query parameters (language, format, unit,
variant, connection id, unknown names), headers (X-ConnectionId, User-Agent, Content-Type,
Pronunciation-Assessment, the unit header) and paths carry CR, LF, `%0d%0a`, NUL, Unicode
line separators and header-splitting payloads. The client gets a clean 4xx or the backend's
503, never a 5xx of the gateway; the backend gets exactly one request per forwarded one,
whose head holds only known header lines, a request line with a percent-encoded query, and
the client's values intact after decoding.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from security_support import (
    CONVERSATION,
    WAV,
    WAV_TYPE,
    RecordingBackend,
    experiment,
    gateway_settings,
    http_request,
    raw_exchange,
    running_gateway,
    server_errors,
)
from support import CLIENT_KEY, QA_KEY

INTERACTIVE = "/speech/recognition/interactive/cognitiveservices/v1"
KEY = ("Ocp-Apim-Subscription-Key", CLIENT_KEY)
UPGRADE = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Protocol", "USP"),
]
# What a forwarded request may carry: the forwarded client headers, the backend's key, and
# what aiohttp's client adds for a POST or a WebSocket upgrade.
ALLOWED_HEADERS = {
    b"host",
    b"user-agent",
    b"x-connectionid",
    b"content-type",
    b"accept",
    b"accept-encoding",
    b"expect",
    b"pronunciation-assessment",
    b"ocp-apim-subscription-key",
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"upgrade",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-protocol",
    b"sec-websocket-extensions",
}
REQUEST_LINE = re.compile(
    rb"(GET|POST) /speech/recognition/(conversation|interactive)/cognitiveservices/v1"
    # RFC 3986 query characters: no space, no control character, no CR or LF.
    rb"(\?[A-Za-z0-9%._~!$&'()*+,;=:@/?-]*)? HTTP/1\.1"
)
INJECTED = "\r\nX-Injected: yes"
SPLIT = "\r\n\r\nGET /evil HTTP/1.1\r\nHost: evil"

# (name, query string as sent, extra header lines as sent, the parameters the backend must
# decode back unchanged: None when the gateway must refuse the request itself)
Case = tuple[str, str, list[tuple[str | bytes, str | bytes]], dict[str, str] | None]
CASES: list[Case] = [
    (
        "language-crlf",
        "language=en-US%0d%0aX-Injected:%20yes",
        [],
        {"language": "en-US" + INJECTED},
    ),
    (
        "format-split",
        "language=en-US&format=simple%0d%0a%0d%0aGET%20/evil%20HTTP/1.1%0d%0aHost:%20evil",
        [],
        {"language": "en-US", "format": "simple" + SPLIT},
    ),
    (
        "name-crlf",
        "language=en-US&%0d%0aX-Injected%3a%20yes=1",
        [],
        {"language": "en-US", INJECTED: "1"},
    ),
    (
        "connection-id-query",
        "language=en-US&X-ConnectionId=ab%0d%0aX-Injected:%20yes",
        [],
        {"language": "en-US", "X-ConnectionId": "ab" + INJECTED},
    ),
    (
        "profanity-lone-lf",
        "language=en-US&profanity=raw%0aX-Injected:%20yes",
        [],
        {"language": "en-US", "profanity": "raw\nX-Injected: yes"},
    ),
    (
        "profanity-lone-cr",
        "language=en-US&profanity=raw%0dX-Injected:%20yes",
        [],
        {"language": "en-US", "profanity": "raw\rX-Injected: yes"},
    ),
    ("nul", "language=en-US%00&format=a%00b", [], {"language": "en-US\x00", "format": "a\x00b"}),
    ("unicode-separators", "language=en-US%E2%80%A8%C2%85", [], {"language": "en-US\u2028\x85"}),
    (
        "header-connection-id",
        "language=en-US",
        [("X-ConnectionId", "abc\r\nX-Injected: yes")],
        {"language": "en-US"},
    ),
    (
        "header-content-type",
        "language=en-US",
        [("Content-Type", f"{WAV_TYPE}\r\nX-Injected: yes")],
        {"language": "en-US"},
    ),
    (
        "header-user-agent-obs-text",
        "language=en-US",
        [("User-Agent", b"SDK\xff\xfe/1.0")],
        {"language": "en-US"},
    ),
    (
        "header-assessment",
        "language=en-US",
        [("Pronunciation-Assessment", "e30=\r\nX-Injected: yes")],
        {"language": "en-US"},
    ),
    (
        "header-unit",
        "language=en-US",
        [("X-Gateway-Unit", "u1\r\nX-Injected: yes")],
        {"language": "en-US"},
    ),
    ("unit-crlf", "language=en-US&gw-unit=u%0d%0aX-Injected:%20yes", [], None),
    ("unit-lf", "language=en-US&gw-unit=u%0a", [], None),
    ("variant-crlf", "language=en-US&gw-variant=a%0d%0aX-Injected:%20yes", [], None),
    ("cid-crlf", "language=en-US&cid=abc%0d%0aX-Injected:%20yes", [], {"language": "en-US"}),
]


def check_head(head: bytes) -> tuple[str, dict[str, str]]:
    """A forwarded head is one request line and known `Name: value` lines; returns the
    path and the decoded query."""
    lines = head.removesuffix(b"\r\n\r\n").split(b"\r\n")
    assert REQUEST_LINE.fullmatch(lines[0]), lines[0]
    names = []
    for line in lines[1:]:
        assert b"\r" not in line, line
        assert b"\n" not in line, line
        name, colon, _value = line.partition(b":")
        assert colon, line
        assert name.lower() in ALLOWED_HEADERS, line
        names.append(name.lower())
    assert names.count(b"host") == 1, head
    assert not any(b"injected" in line.lower() for line in lines[1:]), head
    target = lines[0].split(b" ")[1].decode("ascii")
    parts = urlsplit(target)
    return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))


@pytest.mark.parametrize("upgrade", [False, True], ids=["rest", "websocket"])
async def test_forwarded_values_cannot_inject_headers_or_requests(
    tmp_path: Path, upgrade: bool
) -> None:
    """Each case is refused with 400 or forwarded as exactly one request whose head has no
    line the client wrote and whose query decodes back to the client's exact values."""
    with server_errors() as errors:
        async with RecordingBackend() as backend:
            breaker = {"consecutive_failures": 10_000, "min_attempts": 1_000_000}
            # Everyone on control: a refused challenger would be retried on control (failover),
            # and each forwarded request must be counted once.
            settings = gateway_settings(
                tmp_path, {"alpha": backend.url}, [experiment((100, 0))], breaker=breaker
            )
            forwarded: list[tuple[str, dict[str, str]]] = []
            async with running_gateway(settings) as port:
                for name, query, headers, expected in CASES:
                    method, body = ("GET", b"") if upgrade else ("POST", WAV)
                    own_type = any(n == "Content-Type" for n, _ in headers)
                    plain = [] if own_type else [("Content-Type", WAV_TYPE)]
                    lines = [KEY, *(UPGRADE if upgrade else plain)]
                    request = http_request(method, f"{CONVERSATION}?{query}", lines, body)
                    # Raw header lines are appended as written, CR/LF included.
                    head, _, rest = request.partition(b"\r\n\r\n")
                    extra = b"".join(b"\r\n" + _raw(n) + b": " + _raw(v) for n, v in headers)
                    answer = await raw_exchange(port, head + extra + b"\r\n\r\n" + rest)
                    before = len(forwarded)
                    forwarded = [check_head(h) for h in backend.heads]
                    if expected is None:  # 403: this client may not force a variant at all
                        assert answer.status in (400, 403), (name, answer)
                        assert len(forwarded) == before, name
                        continue
                    assert answer.status == 503, (name, answer)
                    assert len(forwarded) == before + 1, name  # one request, no smuggled one
                    path, params = forwarded[-1]
                    assert path == CONVERSATION, name
                    assert params == expected, name
    assert not errors.unexpected(), errors.unexpected()


def _raw(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


async def test_a_non_utf8_forwarded_header_stays_one_header_line(tmp_path: Path) -> None:
    """A forwarded header with non-UTF-8 bytes (obs-text) reaches the backend as one header
    line holding the client's bytes, or those less the undecodable ones, or the client
    gets 400: never a split or a 5xx."""
    value = b"SDK\xff\xfe/1.0 caf\xe9"
    async with RecordingBackend() as backend:
        settings = gateway_settings(tmp_path, {"alpha": backend.url}, [experiment((100, 0))])
        async with running_gateway(settings) as port:
            lines = [KEY, ("Content-Type", WAV_TYPE), ("User-Agent", value)]
            request = http_request("POST", f"{CONVERSATION}?language=en-US", lines, WAV)
            answer = await raw_exchange(port, request)
    if answer.status == 400:
        assert not backend.heads
        return
    assert answer.status == 503, answer
    (head,) = backend.heads
    check_head(head)
    agents = [line for line in head.split(b"\r\n") if line.lower().startswith(b"user-agent:")]
    assert len(agents) == 1, head
    assert agents[0].partition(b": ")[2] in (value, bytes(b for b in value if b < 0x80)), head


async def test_a_qa_client_cannot_inject_through_the_variant(tmp_path: Path) -> None:
    """A QA client (allowed to force) naming a variant with CR/LF gets 400, nothing is sent."""
    async with RecordingBackend() as backend:
        settings = gateway_settings(tmp_path, {"alpha": backend.url})
        async with running_gateway(settings) as port:
            query = "language=en-US&gw-variant=a%0d%0aX-Injected:%20yes"
            lines = [("Ocp-Apim-Subscription-Key", QA_KEY), ("Content-Type", WAV_TYPE)]
            answer = await raw_exchange(
                port, http_request("POST", f"{INTERACTIVE}?{query}", lines, WAV)
            )
    assert answer.status == 400, answer
    assert not backend.heads
