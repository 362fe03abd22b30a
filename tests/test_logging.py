"""Tests for gateway.logging: URL redaction, the redaction processor and JSON output."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import structlog

from gateway.logging import configure_logging, get_logger, is_secret_name, redact_url

KEY = "emulator-secret-key-0123"
TOKEN = "1700000600.c2lnbmF0dXJl"
JS_URL = (
    "wss://westus.stt.speech.microsoft.com/stt/speech/universal/v2"
    f"?language=en-US&format=simple&Ocp-Apim-Subscription-Key={KEY}"
    "&X-ConnectionId=95B25A38E76441CB801B1A4BF8B3DB8C"
)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo configure_logging's global changes after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger("aiohttp.access")
    disabled = access.disabled
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        access.disabled = disabled


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> pytest.CaptureFixture[str]:
    """Captured stderr; tests configure JSON logging in their body, once capture is live."""
    return capsys


def json_mode() -> None:
    # Logging is configured inside the test, once capsys has replaced sys.stderr.
    configure_logging("info", "json")


def lines(capture: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    err = capture.readouterr().err
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def test_redact_url_hides_the_subscription_key() -> None:
    """The JS SDK's query-string key is replaced; every other parameter is kept."""
    redacted = redact_url(JS_URL)
    assert KEY not in redacted
    params = query(redacted)
    assert params["Ocp-Apim-Subscription-Key"] == ["[redacted]"]
    assert params["language"] == ["en-US"]
    assert params["format"] == ["simple"]
    assert params["X-ConnectionId"] == ["95B25A38E76441CB801B1A4BF8B3DB8C"]
    parts = urlsplit(redacted)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "wss",
        "westus.stt.speech.microsoft.com",
        "/stt/speech/universal/v2",
    )


def test_redact_url_hides_authorization_and_token() -> None:
    """Authorization=Bearer … and token= query parameters are replaced."""
    url = f"ws://127.0.0.1:5000/v1?Authorization=Bearer%20{TOKEN}&token={TOKEN}&cid=banking"
    redacted = redact_url(url)
    assert TOKEN not in redacted
    params = query(redacted)
    assert params["Authorization"] == ["[redacted]"]
    assert params["token"] == ["[redacted]"]
    assert params["cid"] == ["banking"]


def test_redact_url_drops_userinfo() -> None:
    """user:password@ is removed from the host part; port, path and fragment stay."""
    redacted = redact_url("https://alice:pa55word@example.com:8443/sts/v1.0/issueToken#frag")
    assert redacted == "https://example.com:8443/sts/v1.0/issueToken#frag"


def test_redact_url_leaves_clean_urls_alone() -> None:
    """A URL without credentials comes back unchanged."""
    url = "ws://127.0.0.1:5000/speech/recognition/conversation/cognitiveservices/v1?language=en-us"
    assert redact_url(url) == url
    assert redact_url("/stt/speech/universal/v2") == "/stt/speech/universal/v2"


def test_redact_url_keeps_blank_parameters() -> None:
    """Parameters with empty values survive redaction."""
    assert query(redact_url("/path?cid=&language=en-US")) == {"cid": [""], "language": ["en-US"]}


@pytest.mark.parametrize(
    "name",
    [
        "key",
        "Ocp-Apim-Subscription-Key",
        "Authorization",
        "token",
        "api_token",
        "password",
        "client_secret",
    ],
)
def test_secret_names(name: str) -> None:
    """Names that mention a key, token, authorization, secret or password are secret."""
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["url", "language", "X-ConnectionId", "event", "status"])
def test_non_secret_names(name: str) -> None:
    """Ordinary field names are not treated as secret."""
    assert not is_secret_name(name)


def test_configure_logging_json_emits_json_lines(json_logs: pytest.CaptureFixture[str]) -> None:
    """In json mode each event is one JSON object with event, level, timestamp and fields."""
    json_mode()
    log = get_logger("tests.logging")
    log.info("first_event", answer=42)
    log.warning("second_event")
    first, second = lines(json_logs)
    assert first["event"] == "first_event"
    assert first["answer"] == 42
    assert first["level"] == "info"
    assert first["timestamp"].endswith("Z")
    assert (second["event"], second["level"]) == ("second_event", "warning")


def test_configure_logging_filters_below_the_level(json_logs: pytest.CaptureFixture[str]) -> None:
    """Events below the configured level are not written."""
    json_mode()
    log = get_logger("tests.logging")
    log.debug("too_quiet")
    log.info("loud_enough")
    assert [line["event"] for line in lines(json_logs)] == ["loud_enough"]


def test_processor_redacts_secret_named_fields(json_logs: pytest.CaptureFixture[str]) -> None:
    """Fields named like credentials are replaced whatever their value."""
    json_mode()
    log = get_logger("tests.logging")
    log.info(
        "auth_attempt",
        key=KEY,
        token=TOKEN,
        authorization=f"Bearer {TOKEN}",
        **{"Ocp-Apim-Subscription-Key": KEY},
        worker=3,
    )
    (line,) = lines(json_logs)
    for name in ("key", "token", "authorization", "Ocp-Apim-Subscription-Key"):
        assert line[name] == "[redacted]"
    assert line["worker"] == 3
    assert line["event"] == "auth_attempt"
    assert KEY not in json.dumps(line)
    assert TOKEN not in json.dumps(line)


def test_processor_redacts_urls(json_logs: pytest.CaptureFixture[str]) -> None:
    """url and path_qs fields are logged with their credentials redacted."""
    json_mode()
    log = get_logger("tests.logging")
    log.info("upgrade", url=JS_URL, path_qs=f"/v1?token={TOKEN}&language=en-US")
    (line,) = lines(json_logs)
    assert line["url"] == redact_url(JS_URL)
    assert query(line["path_qs"]) == {"token": ["[redacted]"], "language": ["en-US"]}


def test_processor_redacts_urls_under_any_field_name(json_logs: pytest.CaptureFixture[str]) -> None:
    """A credentialed URL is redacted whatever field carries it; ordinary text is untouched."""
    json_mode()
    log = get_logger("tests.logging")
    log.info(
        "forward",
        upstream=JS_URL,
        issuer=f"https://user:{KEY}@example.com/sts",
        reason="text that mentions ws:// in passing?token=x",
    )
    (line,) = lines(json_logs)
    assert KEY not in json.dumps(line)
    assert line["upstream"] == redact_url(JS_URL)
    assert line["issuer"] == "https://example.com/sts"
    assert line["reason"] == "text that mentions ws:// in passing?token=x"


def test_processor_redacts_inside_header_maps(json_logs: pytest.CaptureFixture[str]) -> None:
    """Credential headers inside a logged mapping are redacted, the others kept."""
    json_mode()
    log = get_logger("tests.logging")
    headers = {
        "Ocp-Apim-Subscription-Key": KEY,
        "X-ConnectionId": "abc",
        "Authorization": "Bearer t",
    }
    log.info("handshake", headers=headers)
    (line,) = lines(json_logs)
    assert line["headers"] == {
        "Ocp-Apim-Subscription-Key": "[redacted]",
        "X-ConnectionId": "abc",
        "Authorization": "[redacted]",
    }
    assert headers["Ocp-Apim-Subscription-Key"] == KEY


def test_processor_survives_an_unparsable_url(json_logs: pytest.CaptureFixture[str]) -> None:
    """A URL field that cannot be parsed is dropped, not allowed to break logging."""
    json_mode()
    log = get_logger("tests.logging")
    log.info("odd", url=f"http://[::1?key={KEY}")
    (line,) = lines(json_logs)
    assert line["url"] == "[redacted]"


def test_processor_redacts_bound_and_context_values(json_logs: pytest.CaptureFixture[str]) -> None:
    """Values bound to a logger or put in contextvars are redacted as well."""
    json_mode()
    json_mode()
    log = get_logger("tests.logging").bind(key=KEY)
    with structlog.contextvars.bound_contextvars(token=TOKEN):
        log.info("bound")
    (line,) = lines(json_logs)
    assert (line["key"], line["token"]) == ("[redacted]", "[redacted]")


def test_console_mode_is_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    """Console mode renders readable text, still redacted."""
    configure_logging("info", "console")
    get_logger("tests.logging").info("console_event", key=KEY)
    err = capsys.readouterr().err
    assert "console_event" in err
    assert KEY not in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


def test_auto_mode_writes_json_when_stderr_is_not_a_terminal(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    """auto picks JSON lines for a non-terminal stderr and silences aiohttp's access log."""
    configure_logging("warning", "auto")
    get_logger("tests.logging").warning("auto_event")
    (line,) = lines(json_logs)
    assert (line["event"], line["level"]) == ("auto_event", "warning")
    assert logging.getLogger("aiohttp.access").disabled


def test_logs_follow_stderr_when_it_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Logging configured while one stderr was current keeps working after that stream is
    closed and replaced (a harness capturing output per test, an embedding host)."""
    import io

    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging("info", "json")
    get_logger("test").info("before_swap")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    get_logger("test").info("after_swap")
    assert json.loads(second.getvalue())["event"] == "after_swap"
    structlog.reset_defaults()


@pytest.mark.parametrize(("level", "shown"), [("debug", True), ("info", False)])
def test_debug_events_follow_the_level(
    json_logs: pytest.CaptureFixture[str], level: str, shown: bool
) -> None:
    """At `debug` the gateway's debug events and the libraries' (aiohttp's, through the
    stdlib) are written, as JSON lines like every other; at `info` neither is."""
    configure_logging(level, "json")
    get_logger("tests.logging").debug("gateway_detail", worker=1)
    logging.getLogger("aiohttp.client").debug("library detail %s", "here")
    get_logger("tests.logging").info("always")
    found = lines(json_logs)
    events = [(line["event"], line["level"]) for line in found]
    expected = [("gateway_detail", "debug"), ("library detail here", "debug")] if shown else []
    assert events == [*expected, ("always", "info")]
    if shown:
        assert found[1]["logger"] == "aiohttp.client"
        assert found[1]["timestamp"].endswith("Z")


def test_configuring_again_replaces_the_library_handler(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    """Configuring again replaces the stdlib handler and level instead of adding a second
    handler: one line per record, at the new level."""
    configure_logging("debug", "json")
    configure_logging("warning", "json")
    logging.getLogger("redis.connection").warning("reconnecting")
    logging.getLogger("redis.connection").info("quiet at warning")
    (line,) = lines(json_logs)
    assert (line["event"], line["level"], line["logger"]) == (
        "reconnecting",
        "warning",
        "redis.connection",
    )


WRITER = """\
import os
from gateway.logging import configure_logging, get_logger

configure_logging("info", "json")
log = get_logger("many")
for i in range(10000):
    log.info("line_" + "x" * 50, n=i, pid=os.getpid())
"""


def test_processes_sharing_stderr_never_interleave_their_lines(tmp_path: Path) -> None:
    """The workers of `serve --workers N` share one stderr: every JSON line is written whole,
    so two processes logging at once leave only whole lines."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    out = tmp_path / "shared.log"
    with out.open("ab") as shared:
        writers = [subprocess.Popen([sys.executable, str(script)], stderr=shared) for _ in range(2)]
        assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 20000
    for line in lines:
        json.loads(line)
