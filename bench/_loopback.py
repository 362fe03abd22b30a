"""A benchmark's own service on a free loopback port, and the URLs that reach it."""

from __future__ import annotations

from gateway.tools.local_services import free_port


class LoopbackPort:
    """A free port on 127.0.0.1, chosen at construction, as `ws_url` and `http_url`."""

    def __init__(self) -> None:
        self.port = free_port()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
