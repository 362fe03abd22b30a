"""Run `speech-gateway emulate` or `serve` as a child process on a free loopback port.

Used by the demo and by tests that need a real emulator or gateway; the child is stopped
with SIGTERM (graceful) and killed if it does not exit in time.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

READY_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalService:
    """A `speech-gateway` sub-command on 127.0.0.1 and a free port, ready when it says so."""

    command = "emulate"
    ready_path = "/ready"
    stop_timeout_s = 15.0  # after SIGTERM, then the child is killed

    def __init__(
        self,
        *args: str,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self._args = args
        self._log_path = log_path
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def pid(self) -> int | None:
        """The process's id while it runs (the supervisor's, with `serve --workers N`)."""
        return None if self._proc is None else self._proc.pid

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> LocalService:
        command = [sys.executable, "-m", "gateway", *self._global_args(), self.command]
        command += ["--host", "127.0.0.1"]
        command += ["--port", str(self.port), *self._args]
        if self._log_path is not None:
            self._log = self._log_path.open("ab")
        output = self._log if self._log is not None else subprocess.DEVNULL
        self._proc = subprocess.Popen(command, stdout=output, stderr=output, env=self._env)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"{self.command} exited with status {self._proc.returncode}")
            try:
                url = f"{self.http_url}{self.ready_path}"
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.command} not ready after {READY_TIMEOUT_S} s")

    def stop(self) -> int | None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        code = self._proc.returncode
        self._proc = None
        return code

    def _global_args(self) -> list[str]:
        return []

    def __enter__(self) -> LocalService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalEmulator(LocalService):
    command = "emulate"
    ready_path = "/ready"


class LocalGateway(LocalService):
    """`speech-gateway --config FILE serve`."""

    command = "serve"
    ready_path = "/readyz"
    # A gateway drains on SIGTERM: live sessions get `gateway.drain.grace_s` (30 s by
    # default) and closing the rest `close_timeout_s` (10 s) before its records are flushed.
    stop_timeout_s = 60.0

    def __init__(
        self,
        config: Path,
        *args: str,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(*args, log_path=log_path, env=env, port=port)
        self.config = config

    def _global_args(self) -> list[str]:
        return ["--config", str(self.config)]
