"""Shared pieces of the relay benchmarks: the processes under test, /proc sampling, percentiles.

`Services` starts an instant emulator, a gateway routing 100 % of traffic to it and,
optionally, nginx as a plain reverse proxy to the same emulator, so that every target of a
run shares one backend. CPU and RSS are read from /proc/<pid>, so Linux only.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from nginx import Nginx, nginx_binary  # bench/ is sys.path[0] when a bench script runs

from gateway.local_services import LocalEmulator, LocalGateway

CLIENT_KEY = "bench-client-key-0123456789"
PSEUDONYM_KEY = "bench-pseudonym-key-0123456789"
USP_PATH = "/speech/recognition/conversation/cognitiveservices/v1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name may contain spaces; the fields after its closing ")" do not.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def write_gateway_config(path: Path, backend_ws_url: str, outcomes: Path) -> Path:
    """A gateway config: one client key, one backend, one experiment sending 100 % to it."""

    def toml(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    key_sha256 = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    path.write_text(
        "\n".join(
            [
                "[gateway]",
                f'clients = [{{name = "bench", key_sha256 = {toml(key_sha256)}, '
                "can_force = false}]",
                'experiments = [{id = "bench", control = "a", variants = ['
                '{name = "a", backend = "emu", weight = 100}]}]',
                "[gateway.backends.emu]",
                f"url = {toml(backend_ws_url)}",
                "[outcomes]",
                f"path = {toml(str(outcomes))}",
                "[logging]",
                'format = "json"',
                'level = "warning"',
                "",
            ]
        ),
        encoding="utf-8",
    )
    return path


@dataclass(frozen=True, slots=True)
class Target:
    name: str  # "direct", "gateway" or "nginx"
    ws_url: str
    http_url: str


class Services:
    """Emulator (instant), gateway and optional nginx, all on loopback; a context manager."""

    def __init__(self, *, nginx: bool, utterance_ms: int = 3000) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
        self._want_nginx = nginx
        self._utterance_ms = utterance_ms
        self._stack = ExitStack()
        self.gateway_pid = 0
        self.targets: list[Target] = []
        self.notes: list[str] = []

    def __enter__(self) -> Services:
        env = {
            **os.environ,
            "SPEECH_GATEWAY_EMULATOR__INSTANT_UTTERANCE_MS": str(self._utterance_ms),
            # The emulator's default cap (16) would answer most benchmark streams with 429.
            "SPEECH_GATEWAY_EMULATOR__MAX_SESSIONS": "100000",
            "SPEECH_GATEWAY_OUTCOMES__PSEUDONYM_KEY": PSEUDONYM_KEY,
            "SPEECH_GATEWAY_LOGGING__LEVEL": "warning",
        }
        try:
            emulator = LocalEmulator(
                "--engine", "instant", log_path=self.work / "emulator.log", env=env
            )
            self._stack.enter_context(emulator)
            config = write_gateway_config(
                self.work / "gateway.toml", emulator.ws_url, self.work / "outcomes.jsonl"
            )
            gateway = LocalGateway(config, log_path=self.work / "gateway.log", env=env)
            self._stack.enter_context(gateway)
            # LocalService keeps its Popen private; the benchmark needs the pid for /proc.
            assert gateway._proc is not None
            self.gateway_pid = gateway._proc.pid
            self.targets = [
                Target("direct", emulator.ws_url, emulator.http_url),
                Target("gateway", gateway.ws_url, gateway.http_url),
            ]
            if self._want_nginx:
                if nginx_binary() is None:
                    self.notes.append(
                        "nginx skipped: not installed (apt-get install -y nginx-light)"
                    )
                else:
                    proxy = self._stack.enter_context(Nginx(emulator.port, self.work / "nginx"))
                    self.targets.append(Target("nginx", proxy.ws_url, proxy.http_url))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()
        if exc is None:
            shutil.rmtree(self.work, ignore_errors=True)
        else:  # keep the services' logs for whoever debugs the failure
            print(f"logs kept in {self.work}", file=sys.stderr)


def fmt_ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"
