"""Shared pieces of the relay benchmarks: the processes under test, /proc sampling, percentiles.

`Services` starts an instant emulator, a gateway routing 100 % of traffic to it and,
optionally, nginx as a plain reverse proxy to the same emulator, so that every target of a
run shares one backend. With `pin=True` the gateway gets a CPU of its own and everything
else (emulator, nginx, the load generators, this process) the remaining ones. CPU and RSS
are read from /proc, so Linux only.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from _verdict import Load
from nginx import Nginx, nginx_binary  # bench/ is sys.path[0] when a bench script runs

from gateway.tools.local_services import LocalEmulator, LocalGateway

if TYPE_CHECKING:
    from _bare_backend import LocalBareBackend

CLIENT_KEY = "bench-client-key-0123456789"
PSEUDONYM_KEY = "bench-pseudonym-key-0123456789"
# The admin token of a gateway variant with a store (its analysis is polled with it).
ADMIN_TOKEN = "bench-admin-token-0123456789"  # noqa: S105 (a loopback gateway's)
USP_PATH = "/speech/recognition/conversation/cognitiveservices/v1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The named figure of bench/hot_path.py that every relay result is stated next to (and
# divided by): one audio frame through aiohttp's reader, the relay and the masked write, in
# user space, in a tight loop. Stable on a noisy machine; 6.4-7 us on the reference machine.
HOT_PATH_FIGURE = "= audio frame, user space, no syscalls or wake-up"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of one process, all its threads, not its children, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name may contain spaces; the fields after its closing ")" do not.
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def thread_waits_ns(pid: int) -> dict[int, tuple[int, int]]:
    """Per thread of the process: (nanoseconds it spent runnable but waiting for a CPU, how
    many times it was put on one), the second and third fields of
    /proc/<pid>/task/<tid>/schedstat (-1 for a count the kernel does not give). On a quiet
    machine the wait is near zero; on a busy one it is latency that the process, not the
    code under test, suffered. Empty when the process is gone or the kernel has no
    schedstat."""
    waits: dict[int, tuple[int, int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return waits
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as stat:
                fields = stat.read().split()
            waits[int(tid)] = (int(fields[1]), int(fields[2]) if len(fields) > 2 else -1)
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return waits


def waited_s(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    """Seconds the process's threads waited for a CPU between two `thread_waits_ns` readings:
    threads started in between count from zero, threads that ended in between are lost
    (an undercount, never an overcount). NaN when nothing could be read."""
    if not after:
        return math.nan
    return sum(ns - before.get(tid, (0, 0))[0] for tid, (ns, _) in after.items()) / 1e9


def wait_per_slice_us(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
) -> float:
    """The mean wait, in microseconds, each time a thread of the process was put on a CPU
    (after a wake-up or a preemption): what a message arriving at a waiting process waited
    on average (many short waits and a few long ones give the same share of the window, not
    the same delay). NaN when nothing could be read, the kernel gives no count, or it never
    ran."""
    if not after or any(n < 0 for _, n in after.values()):
        return math.nan
    slices = sum(n - before.get(tid, (0, 0))[1] for tid, (_, n) in after.items())
    return waited_s(before, after) * 1e6 / slices if slices > 0 else math.nan


def quiet_gc() -> None:
    """Tune a harness process's garbage collector as `serve` tunes the gateway's
    (`gateway.server.serve.tune_gc`): start-up's objects frozen out of the collector's view,
    and a young generation of 50,000 allocations, which makes full collections (a walk
    over every live stream's objects, milliseconds at a thousand streams, a tail that lands
    on direct's and the gateway's latencies alike) rare. The load generators call it when
    their streams are due to start, the bare backend once it listens."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), in seconds."""
    return sum(cpu_times(pid))


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat: every process counts,
    including whatever else runs on the machine, so a run can say how quiet it was."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already part of user time
    return float(total - idle), float(total)


class CpuMeter:
    """CPU use of named processes (and of the machine) between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._before: dict[str, tuple[float, float]] = {}
        self._waited: dict[str, dict[int, tuple[int, int]]] = {}
        self._machine: tuple[float, float] = (0.0, 0.0)
        self._wall = 0.0

    def start(self) -> None:
        self._before = {name: cpu_times(pid) for name, pid in self._pids.items()}
        self._waited = {name: thread_waits_ns(pid) for name, pid in self._pids.items()}
        self._machine = machine_busy()
        self._wall = time.monotonic()

    def stop(self) -> dict[str, dict[str, float]]:
        """Per process: user and system seconds, the share of one core and the share of
        the window its threads waited for a CPU (summed over threads); plus `machine`: the
        busy share of all CPUs (1.0 = every core busy) and how many CPUs it has."""
        wall = time.monotonic() - self._wall
        result: dict[str, dict[str, float]] = {}
        for name, pid in self._pids.items():
            user, system = cpu_times(pid)
            user -= self._before[name][0]
            system -= self._before[name][1]
            waits = thread_waits_ns(pid)
            waited = waited_s(self._waited[name], waits)
            main = (
                waits.get(pid, (0, 0))[0] - self._waited[name].get(pid, (0, 0))[0]
                if waits
                else math.nan
            )
            result[name] = {
                "user_s": user,
                "sys_s": system,
                "core_share": (user + system) / wall,
                "cpu_wait_share": waited / wall,
                "cpu_wait_per_slice_us": wait_per_slice_us(self._waited[name], waits),
                "main_thread_wait_share": main / 1e9 / wall,
            }
        busy, total = machine_busy()
        spent = total - self._machine[1]
        share = (busy - self._machine[0]) / spent if spent else math.nan
        result["machine"] = {"busy_share": share, "wall_s": wall, "cpus": os.cpu_count() or 1}
        return result


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (children, theirs, ...), from /proc: a gateway's analysis
    worker, which it starts itself."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def raise_fd_limit(wanted: int = 1 << 18) -> int:
    """Raise RLIMIT_NOFILE (soft, and hard where allowed) towards `wanted`; children started
    afterwards inherit it. 10,000 idle sessions take 20,000+ descriptors in the gateway alone
    (client and backend legs). Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:  # only root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_plan(pin: bool) -> tuple[set[int], set[int]] | None:
    """(gateway CPUs, everything else's CPUs) when pinning is asked for and possible."""
    if not pin:
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[-1]}, set(cpus[:-1])


@contextmanager
def affinity(cpus: set[int] | None) -> Iterator[None]:
    """Run the block (and so the children it starts, which inherit it) on `cpus`."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class PySpy:
    """`py-spy record` of one process for `seconds`, in collapsed-stack ("raw") format.

    Non-blocking by default (the process is never paused, so latencies stay honest; native
    frames are then unavailable and time in C code, uvloop's and aiohttp's Cython included,
    counts towards the nearest Python frame, often just `run_app`). `native=True` pauses
    the process for each sample and unwinds into C.
    py-spy is a tool, not a dependency: `.venv/bin/pip install py-spy`.
    """

    def __init__(
        self, pid: int, out: Path, seconds: float, *, native: bool = False, rate: int = 0
    ) -> None:
        binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(binary).exists():
            raise RuntimeError("py-spy is not installed (.venv/bin/pip install py-spy)")
        self.out = out
        command = [binary, "record", "--pid", str(pid), "--format", "raw"]
        # --native pauses the process for each sample: it sees into uvloop's and aiohttp's
        # C code, at the price of disturbing the latencies of that run.
        command += ["--native"] if native else ["--nonblocking"]
        rate = rate or (100 if native else 250)
        command += ["--rate", str(rate), "--duration", str(max(1, int(seconds)))]
        command += ["--output", str(out)]
        self._proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def wait(self) -> str | None:
        """Wait for the recording to end; an error message if py-spy failed."""
        _out, err = self._proc.communicate(timeout=120)
        if self._proc.returncode != 0 or not self.out.exists():
            return f"py-spy failed ({self._proc.returncode}): {err.strip()[-300:]}"
        return None


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class GatewayVariant:
    """A second gateway process beside the plain one, on the same CPU and in front of the same
    emulator, configured with one thing more: what a comparison in one run measures (its
    windows load one gateway at a time; `Services.only`).

    `capture_share` > 0: the benchmark's client consents and experiment `bench` captures
    that share of sessions (all their utterances, no daily cap in reach) into a local audio
    store in the run's folder. `store`: a folder with a generated `outcomes.jsonl` and
    `labels.jsonl` (bench/synthetic_outcomes.py, experiment `scale`) copied into its file
    store, with `scale` configured (it takes no traffic: `bench` comes first) and an admin
    token (`ADMIN_TOKEN`) to read its analysis with."""

    name: str  # its target's name: "capture", "dashboard"
    capture_share: float = 0.0
    store: Path | None = None


def write_gateway_config(
    path: Path, backend_ws_url: str, outcomes: Path, variant: GatewayVariant | None = None
) -> Path:
    """A gateway config: one client key, one backend, one experiment sending 100 % to it;
    plus what `variant` adds."""
    key_sha256 = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    capture = variant is not None and variant.capture_share > 0
    consent = ", capture_consent = true" if capture else ""
    lines = [
        "[gateway]",
        f'clients = [{{name = "bench", key_sha256 = {_toml(key_sha256)}, '
        f"can_force = false{consent}}}]",
    ]
    scale = variant is not None and variant.store is not None
    if scale:
        # The synthetic records' client, with a key nobody sends: `scale` takes no traffic.
        app_sha256 = hashlib.sha256(os.urandom(32)).hexdigest()
        lines[-1] = lines[-1][:-1] + f', {{name = "app", key_sha256 = {_toml(app_sha256)}}}]'
        token_sha256 = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
        lines.append(f"admin_tokens_sha256 = {{bench = {_toml(token_sha256)}}}")
    lines += [
        # The limits a gateway process puts on one client key (gateway.limits) are
        # far below what the benchmark asks of it: every stream uses the one key.
        "[gateway.limits]",
        "max_sessions_total = 1000000",
        "max_sessions_per_client = 1000000",
        "connections_per_client_per_s = 1000000.0",
        "connection_burst = 1000000",
        "[gateway.backends.emu]",
        f"url = {_toml(backend_ws_url)}",
        "[[gateway.experiments]]",
        'id = "bench"',
        'control = "a"',
        'variants = [{name = "a", backend = "emu", weight = 100}]',
    ]
    if scale:
        lines.append('targeting = {clients = ["bench"]}')
    if capture:
        assert variant is not None
        lines += [
            "[gateway.experiments.capture]",
            f"share = {variant.capture_share!r}",
            "daily_cap = 100000000",
            "[gateway.audio]",
            'store = "local"',
            f"directory = {_toml(str(path.parent / f'audio-{variant.name}'))}",
        ]
    if scale:
        lines += [
            "[[gateway.experiments]]",
            'id = "scale"',
            'control = "base"',
            'targeting = {clients = ["app"]}',
            'variants = [{name = "base", backend = "emu", weight = 50}, '
            '{name = "custom", backend = "emu", weight = 50}]',
        ]
    lines += [
        "[outcomes]",
        f"path = {_toml(str(outcomes))}",
        "[logging]",
        'format = "json"',
        'level = "warning"',
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass(frozen=True, slots=True)
class Target:
    name: str  # "direct", "gateway" or "nginx"
    ws_url: str
    http_url: str


class Services:
    """Emulator (instant), gateway and optional nginx, all on loopback; a context manager.

    With `pin=True` (and 2+ CPUs) the gateway runs alone on the last CPU and the emulator,
    nginx and this process, whose children the load generators are, on the others: the
    gateway then gets a core as it would on a machine of its own, and what it adds is not
    mixed up with the load generators' and emulator's own scheduling delays.

    Each of `variants` is one more gateway process (target and pid named after it), on the
    plain gateway's CPU and in front of the same emulator; `only(name)` is the view of one
    load run that loads that one.
    """

    def __init__(
        self,
        *,
        nginx: bool,
        utterance_ms: int = 3000,
        pin: bool = False,
        variants: Sequence[GatewayVariant] = (),
        backend: str = "emulator",
    ) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
        self._want_nginx = nginx
        self._utterance_ms = utterance_ms
        self._backend = backend
        self.variants = tuple(variants)
        self.gateway_names = ("gateway", *(variant.name for variant in self.variants))
        self.logs = {"gateway": self.work / "gateway.log"}
        self.logs.update({v.name: self.work / v.name / "gateway.log" for v in self.variants})
        self._stack = ExitStack()
        self.gateway_pid = 0
        self.pids: dict[str, int] = {}  # gateway, emulator and nginx (its worker)
        self.targets: list[Target] = []
        self.notes: list[str] = []
        self.fd_limit = raise_fd_limit()
        self.cpus = cpu_plan(pin)
        self.pinning: dict[str, list[int]] | None = None
        if pin and self.cpus is None:
            self.notes.append("pinning skipped: fewer than 2 CPUs")
        elif self.cpus is not None:
            self.pinning = {"gateway": sorted(self.cpus[0]), "others": sorted(self.cpus[1])}

    def __enter__(self) -> Services:
        env = {
            **os.environ,
            "SPEECH_GATEWAY_EMULATOR__INSTANT_UTTERANCE_MS": str(self._utterance_ms),
            # The emulator's default cap (16) would answer most benchmark streams with 429.
            "SPEECH_GATEWAY_EMULATOR__MAX_SESSIONS": "100000",
            "SPEECH_GATEWAY_OUTCOMES__PSEUDONYM_KEY": PSEUDONYM_KEY,
            "SPEECH_GATEWAY_LOGGING__LEVEL": "warning",
        }
        gateway_cpus, other_cpus = self.cpus if self.cpus is not None else (None, None)
        try:
            emulator: LocalEmulator | LocalBareBackend
            if self._backend == "bare":
                # Same answers, half the CPU: bench/_bare_backend.py says why. (Imported
                # here: it imports this module.)
                from _bare_backend import LocalBareBackend

                emulator = LocalBareBackend(self._utterance_ms)
                self.notes.append("backend: bench/_bare_backend.py (the instant engine, bare)")
            else:
                emulator = LocalEmulator(
                    "--engine", "instant", log_path=self.work / "emulator.log", env=env
                )
            with affinity(other_cpus):
                self._stack.enter_context(emulator)
            config = write_gateway_config(
                self.work / "gateway.toml", emulator.ws_url, self.work / "outcomes.jsonl"
            )
            gateway = LocalGateway(config, log_path=self.work / "gateway.log", env=env)
            with affinity(gateway_cpus):
                self._stack.enter_context(gateway)
            # LocalService keeps its Popen private; the benchmark needs the pids for /proc.
            assert gateway._proc is not None
            assert emulator._proc is not None
            self.gateway_pid = gateway._proc.pid
            self.pids = {"gateway": gateway._proc.pid, "emulator": emulator._proc.pid}
            self.targets = [
                Target("direct", emulator.ws_url, emulator.http_url),
                Target("gateway", gateway.ws_url, gateway.http_url),
            ]
            for variant in self.variants:
                self._start_variant(variant, emulator.ws_url, env, gateway_cpus)
            if self._want_nginx:
                if nginx_binary() is None:
                    self.notes.append(
                        "nginx skipped: not installed (apt-get install -y nginx-light)"
                    )
                else:
                    with affinity(other_cpus):
                        proxy = self._stack.enter_context(Nginx(emulator.port, self.work / "nginx"))
                    self.targets.append(Target("nginx", proxy.ws_url, proxy.http_url))
                    self.pids["nginx"] = proxy.pid
            if other_cpus is not None:
                os.sched_setaffinity(0, other_cpus)  # the load generators are our children
        except BaseException:
            self._stack.close()
            raise
        return self

    def only(self, name: str) -> Services:
        """These services as one load run sees them: gateway `name` (the plain one or a
        variant) is its target and pid `gateway`, the other gateways are left out (they idle
        on the same CPU). A comparison loads one gateway process per window this way."""
        view = copy.copy(self)
        chosen = next(t for t in self.targets if t.name == name)
        view.targets = [
            Target("gateway", chosen.ws_url, chosen.http_url) if t.name == name else t
            for t in self.targets
            if t.name == name or t.name not in self.gateway_names
        ]
        view.pids = {
            ("gateway" if key == name else key): pid
            for key, pid in self.pids.items()
            if key == name or key not in self.gateway_names
        }
        view.gateway_pid = self.pids[name]
        view.gateway_names = ("gateway",)
        view.logs = {"gateway": self.logs[name]}
        return view

    def log_tail(self, name: str, lines: int = 20) -> list[str]:
        """The last lines of a gateway's log ("gateway" or a variant's name), if any."""
        try:
            text = self.logs[name].read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        # aiohttp warns of every client's unknown subprotocol list: noise, left out.
        kept = [line for line in text.splitlines() if '"aiohttp.websocket"' not in line]
        return [line[:500] for line in kept[-lines:]]

    def _start_variant(
        self,
        variant: GatewayVariant,
        backend_ws_url: str,
        env: dict[str, str],
        cpus: set[int] | None,
    ) -> None:
        """A second gateway on the plain one's CPU, its file store copied from `variant.store`
        (the gateway appends its own records to it)."""
        folder = self.work / variant.name
        folder.mkdir()
        outcomes = folder / "outcomes.jsonl"
        if variant.store is not None:
            shutil.copyfile(variant.store / "outcomes.jsonl", outcomes)
            shutil.copyfile(variant.store / "labels.jsonl", folder / "labels.jsonl")
        config = write_gateway_config(folder / "gateway.toml", backend_ws_url, outcomes, variant)
        gateway = LocalGateway(config, log_path=folder / "gateway.log", env=env)
        with affinity(cpus):
            self._stack.enter_context(gateway)
        assert gateway._proc is not None
        self.pids[variant.name] = gateway._proc.pid
        self.targets.append(Target(variant.name, gateway.ws_url, gateway.http_url))

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


@dataclass(slots=True)
class WorkerCpu:
    """A load-generator process's own CPU and CPU wait over the measured window (read from
    inside it, so the parent needs no pids of its pool's processes)."""

    user_s: float = 0.0
    sys_s: float = 0.0
    wait_s: float = math.nan
    wait_per_slice_us: float = math.nan
    marks: list[tuple[float, float, dict[int, tuple[int, int]]]] = field(default_factory=list)

    def mark(self) -> None:
        """Call at the window's start and end."""
        times = os.times()
        self.marks.append((times.user, times.system, thread_waits_ns(os.getpid())))
        if len(self.marks) == 2:
            (u0, s0, w0), (u1, s1, w1) = self.marks
            self.user_s, self.sys_s = u1 - u0, s1 - s0
            self.wait_s = waited_s(w0, w1)
            self.wait_per_slice_us = wait_per_slice_us(w0, w1)

    def row(self, wall: float) -> dict[str, float]:
        """The process's row of a `CpuMeter.stop()` result."""
        return {
            "user_s": self.user_s,
            "sys_s": self.sys_s,
            "core_share": (self.user_s + self.sys_s) / wall,
            "cpu_wait_share": self.wait_s / wall,
            "cpu_wait_per_slice_us": self.wait_per_slice_us,
        }


def add_generators(cpu: dict[str, dict[str, float]], workers: Sequence[WorkerCpu]) -> None:
    """Put each load generator's row (`generator-<i>`) and their sum (`loadgen`, for CPU per
    frame or request) into a `CpuMeter.stop()` result."""
    wall = cpu["machine"]["wall_s"]
    for index, worker in enumerate(workers):
        cpu[f"generator-{index}"] = worker.row(wall)
    user = sum(worker.user_s for worker in workers)
    system = sum(worker.sys_s for worker in workers)
    cpu["loadgen"] = {"user_s": user, "sys_s": system, "core_share": (user + system) / wall}


def harness_loads(cpu: dict[str, dict[str, float]]) -> dict[str, Load]:
    """The harness's processes of a `CpuMeter.stop()` result with `add_generators`: the
    emulator, nginx and each load generator (not their sum, not the gateway)."""
    return {
        name: harness_load(row)
        for name, row in cpu.items()
        if name in ("emulator", "nginx") or name.startswith("generator-")
    }


def harness_load(row: dict[str, float]) -> Load:
    """One process's row of a `CpuMeter.stop()` result, judged as the harness's."""
    return Load(
        row["core_share"],
        row.get("cpu_wait_share", math.nan),
        row.get("cpu_wait_per_slice_us", math.nan),
    )


def gateway_load(cpu: dict[str, dict[str, float]], name: str = "gateway") -> Load:
    """The gateway's event-loop thread only: its sink's writer thread competing with it for
    the one pinned core is the gateway's own doing, not the harness's or the machine's."""
    row = cpu[name]
    return Load(row["core_share"], row.get("main_thread_wait_share", math.nan))


def calibrate_hot_path(cpus: set[int] | None, n: int = 10_000, repeats: int = 5) -> dict[str, Any]:
    """`bench/hot_path.py` for a second or two, on `cpus` (the gateway's CPU with --pin), in a
    process of its own: the machine's speed at the relay's own code, so that results from
    different machines compare as ratios to `HOT_PATH_FIGURE`. Best of `repeats`, so a
    neighbour's noise raises it less than it raises any latency."""
    with tempfile.TemporaryDirectory(prefix="hot-path-") as work:
        out = Path(work) / "hot.json"
        command = [sys.executable, str(Path(__file__).with_name("hot_path.py"))]
        command += ["-n", str(n), "--repeats", str(repeats), "--json", str(out)]
        started = time.monotonic()
        with affinity(cpus):
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=120)
        steps: dict[str, float] = json.loads(out.read_text(encoding="utf-8"))
    return {
        "figure": HOT_PATH_FIGURE,
        "us": steps[HOT_PATH_FIGURE],
        "seconds": time.monotonic() - started,
        "cpus": sorted(cpus) if cpus is not None else None,
        "steps": steps,
    }


def per_hot_path(value_us: float, hot_path: dict[str, Any]) -> float:
    """A per-frame (per-request) cost or an added latency in microseconds as a multiple of
    this machine's hot-path figure."""
    figure = float(hot_path["us"])
    return value_us / figure if figure > 0 else math.nan


def print_cpu(cpu: dict[str, dict[str, float]]) -> None:
    """One line per process: its share of a core, user/sys split."""
    parts = []
    for name, row in cpu.items():
        if name == "machine":
            continue
        waited = row.get("cpu_wait_share")
        wait = f", waited for a CPU {100 * waited:.1f} %" if waited is not None else ""
        per_slice = row.get("cpu_wait_per_slice_us")
        if per_slice is not None and not math.isnan(per_slice):
            wait += f", {per_slice:.0f} us each time scheduled"
        parts.append(
            f"{name} {100 * row['core_share']:.0f} % "
            f"({row['user_s']:.1f} s user + {row['sys_s']:.1f} s sys{wait})"
        )
    machine = cpu.get("machine")
    if machine is not None:
        parts.append(f"machine {100 * machine['busy_share']:.0f} % busy (all CPUs, everyone)")
    print("CPU in the window: " + "; ".join(parts))
