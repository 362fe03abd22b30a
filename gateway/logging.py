"""structlog configuration, done once at start-up by the CLI.

JSON lines when stderr is not a terminal, readable console output when it is. A redaction
processor drops credential-bearing values so that no key, token or credentialed URL reaches
a log line, whatever a caller passes. `logging.level` applies to the gateway's own events
and to the libraries' stdlib loggers (aiohttp, asyncio, redis) alike; the latter are
rendered by the same processors, so every line has the same format.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

_SECRET_NAMES = ("key", "token", "authorization", "secret", "password", "credential")
_REDACTED = "[redacted]"
_URL_FIELDS = ("url", "path_qs")


def is_secret_name(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return any(part in lowered for part in _SECRET_NAMES)


def redact_url(url: str) -> str:
    """The URL with every credential-like query parameter and any userinfo replaced."""
    parts = urlsplit(url)
    query = urlencode(
        [(k, _REDACTED if is_secret_name(k) else v) for k, v in parse_qsl(parts.query, True)]
    )
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _clean(name: str, value: Any) -> Any:
    if is_secret_name(name):
        return _REDACTED
    # A URL under any field name (upstream=, endpoint=, ...) may carry a key or token.
    if isinstance(value, str) and (name in _URL_FIELDS or "://" in value):
        try:
            parts = urlsplit(value)
        except ValueError:  # e.g. a broken IPv6 host: it cannot be cleaned, so drop it
            return _REDACTED
        if name in _URL_FIELDS or (parts.scheme and parts.netloc and " " not in value):
            return redact_url(value)
    # Header maps are logged as a whole; their credential headers must not slip through.
    if isinstance(value, Mapping):
        return {key: _clean(str(key), item) for key, item in value.items()}
    return value


def _redact(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for name in list(event):
        if name != "event":
            event[name] = _clean(name, event[name])
    return event


class _NoRawRequests(logging.Filter):
    """aiohttp logs a request it cannot parse with the offending bytes (the request line or
    a header line), which may carry a key or token (protocol.md §1.2): only what went
    wrong is kept, and as a warning, since a client's malformed request is no server
    error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _is_http_processing_error(exc):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
            record.msg = "malformed HTTP request from %s refused: %s (HTTP %s)"
            record.args = (remote, type(exc).__name__, getattr(exc, "code", None))
            record.exc_info = None
            record.exc_text = None
            # aiohttp reports it as an error (or, for a first request that is no HTTP at
            # all, at debug): at most a warning.
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _is_http_processing_error(exc: BaseException) -> bool:
    """Whether `exc` is aiohttp's `HttpProcessingError` (or a subclass), known by name so
    that logging, which every module imports, does not import aiohttp."""
    return any(
        cls.__name__ == "HttpProcessingError" and cls.__module__ == "aiohttp.http_exceptions"
        for cls in type(exc).__mro__
    )


_NO_RAW_REQUESTS = _NoRawRequests()


class _CurrentStderr(io.TextIOBase):
    """Writes to whatever `sys.stderr` is at the time of writing, not at configuration:
    a host (or a test harness) that swaps stderr later must not leave logging writing to a
    closed stream."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto"
) -> None:
    """Configure structlog and the stdlib root logger (aiohttp, asyncio and redis log
    through it); both filter at `level`. Calling it again replaces the configuration."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line (message and newline together): several processes (the
        # workers of `serve --workers N`) share one stderr, and print()'s two writes let
        # their lines interleave.
        logger_factory=structlog.WriteLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        # Not cached: a later configure_logging (a CLI command run in-process, structlog's
        # capture_logs in tests) must reach module-level loggers that were already used.
        cache_logger_on_first_use=False,
    )
    _configure_stdlib(numeric, renderer)
    # aiohttp's access log would print full request lines, query strings included.
    logging.getLogger("aiohttp.access").disabled = True
    logging.getLogger("aiohttp.server").addFilter(_NO_RAW_REQUESTS)  # added once, however often


class _StdlibHandler(logging.StreamHandler[TextIO]):
    """The one handler this module puts on the root logger (found again by its type, so
    that a second configuration replaces it instead of doubling every line)."""


def _configure_stdlib(level: int, renderer: Any) -> None:
    """Stdlib records at `level` and above, rendered as structlog's events are: the message
    as `event`, plus `level`, `logger` and `timestamp`, through the same redaction."""
    handler = _StdlibHandler(cast(TextIO, _CurrentStderr()))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _redact,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
