"""Real redis-server processes on loopback for tests: one server, or a 3-node cluster;
and the few helpers the Redis tests share (records with known ids, reading streams back).

Tests start their own servers on free ports (never the shared Redis on 6379) so that they
can kill, freeze and restart them. Every process is killed and reaped on exit.

    with RedisServer(tmp_path) as server:            # redis://127.0.0.1:<port>
        server.kill(); server.restart()               # same port and dir; AOF keeps the data
        server.stop(); server.cont()                  # SIGSTOP / SIGCONT: a frozen Redis

    with RedisClusterServers(tmp_path) as cluster:    # 3 primaries, no replicas
        node = cluster.node_for_key("sgw:{exp}:outcomes")
        node.kill(); node.restart(); cluster.wait_ok()  # nodes.conf and AOF are kept
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.crc import key_slot

from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.stores.keys import RECORD_FIELD

AsyncClient = AsyncRedis | AsyncRedisCluster

REDIS_SERVER = "redis-server"
REDIS_CLI = "redis-cli"
READY_TIMEOUT_S = 30.0


def free_port(*, cluster_bus: bool = False) -> int:
    """A loopback port that is free now (and, for a cluster node, its bus port + 10000)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not cluster_bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


def _ping(port: int) -> bytes:
    """One raw PING: b"+PONG" (or b"-NOAUTH ..." with a password) once the server serves,
    b"-LOADING ..." while it loads its AOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(128).strip()


class RedisServer:
    """One redis-server process on 127.0.0.1, with its data and log in `directory`."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.appendonly = appendonly
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.appendonly
            else ["--appendonly", "no"]
        )
        return [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *persistence,
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
            *self.extra_args,
        ]

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.stopped = False
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise

    def wait_ready(self) -> None:
        """Until the server answers PING (an AOF is loaded by then)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.process is not None and self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{log}")
            try:
                if _ping(self.port).startswith((b"+PONG", b"-NOAUTH")):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown work (acknowledged writes are in the AOF)."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        self.process = None
        self.stopped = False

    def stop(self) -> None:
        """SIGSTOP: the server freezes; connections are accepted by the kernel, never served."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        """SIGCONT: the frozen server resumes."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.stopped = False

    def restart(self) -> None:
        """Kill if running, then start again on the same port with the same directory."""
        self.kill()
        self.start()

    def client(self) -> redis.Redis:
        """A synchronous admin client (close it: use it as a context manager)."""
        return redis.Redis(port=self.port, socket_timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


class RedisClusterServers:
    """`nodes` cluster primaries (no replicas) on loopback, each with its own directory.

    Nodes keep their `nodes.conf` and AOF in their directory, so `node.restart()` brings a
    node back with its slots and data. The node timeout is short (`node_timeout_ms`) so that
    a killed node is marked failed, and a restarted one accepted again, within seconds.
    """

    def __init__(self, directory: Path, *, nodes: int = 3, node_timeout_ms: int = 1000) -> None:
        self.directory = directory
        self.nodes: list[RedisServer] = []
        for _ in range(nodes):
            port = free_port(cluster_bus=True)
            self.nodes.append(
                RedisServer(
                    directory / f"node-{port}",
                    port=port,
                    appendonly=True,
                    extra_args=(
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        str(node_timeout_ms),
                    ),
                )
            )

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        create = ["--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(
            [REDIS_CLI, *create],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        self.wait_ok()

    def wait_ok(self) -> None:
        """Until every node answers and says `cluster_state:ok` with all slots assigned."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if all(self._is_ok(node) for node in self.nodes):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    @staticmethod
    def _is_ok(node: RedisServer) -> bool:
        try:
            with node.client() as client:
                info: Any = client.execute_command("CLUSTER", "INFO")
        except (redis.RedisError, OSError):
            return False
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text and "cluster_slots_ok:16384" in text

    def node_for_key(self, key: str) -> RedisServer:
        """The primary that serves `key`'s slot."""
        slot = key_slot(key.encode())
        with self.nodes[0].client() as client:
            ranges: Any = client.execute_command("CLUSTER", "SLOTS")
        for start, end, primary, *_replicas in ranges:
            if start <= slot <= end:
                port = int(primary[1])
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"slot {slot} is not served")

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


# -- building records and reading back what a sink stored ---------------------------------


def outcome(n: int, experiment: str | None = "checkout") -> OutcomeRecord:
    """A valid utterance record whose record_id is `n` in hex (so tests can name it)."""
    return OutcomeRecord(
        record_id=f"{n:032x}",
        kind=Kind.UTTERANCE,
        experiment=experiment,
        phase="1" if experiment else None,
        variant="base",
        backend="westus",
        role=Role.PRIMARY,
        client="shop-app",
        unit="5f2b0c3e8a1d4e6f9a7b3c2d1e0f4a5b",
        unit_source=UnitSource.QUERY,
        session_id=f"session-{n // 10}",
        protocol=Protocol.USP,
        utterance_index=n % 10,
        status="Success",
        audio_offset_ms=1000.0 * (n % 10),
        audio_duration_ms=900.0,
        text=f"utterance number {n}",
        word_count=3,
    )


async def stream_ids(client: AsyncClient, key: str) -> list[str]:
    """The record_ids in a stream, in stream order (reads the record JSON of field "r")."""
    ids: list[str] = []
    start = "-"
    while True:
        entries = await client.xrange(key, min=start, count=10_000)
        for _entry_id, fields in entries:
            ids.append(json.loads(fields[RECORD_FIELD.encode()])["record_id"])
        if len(entries) < 10_000:
            return ids
        start = "(" + entries[-1][0].decode()


async def until(condition: Callable[[], bool], limit_s: float = 60.0) -> None:
    """Wait (polling) until the condition holds; fail after `limit_s` seconds."""
    async with asyncio.timeout(limit_s):
        while not condition():  # noqa: ASYNC110 - the sink signals nothing a test could await
            await asyncio.sleep(0.01)
