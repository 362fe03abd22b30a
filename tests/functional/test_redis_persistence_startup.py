"""A live gateway on a Redis that persists nothing says so once, at start-up, in its log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from conftest import gateway_for, split_experiment
from redis_servers import RedisServer

from gateway.tools.local_services import LocalEmulator

EVENTS = ("outcomes_redis_not_persistent", "outcomes_redis_persistent")


def check_entries(log: Path) -> list[dict[str, Any]]:
    """The persistence check's entries in a gateway's JSON-lines log."""
    entries = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") in EVENTS:
            entries.append(entry)
    return entries


def run_gateway(work: Path, alpha: LocalEmulator, bravo: LocalEmulator, url: str) -> Path:
    """Start a gateway on the Redis store at `url`, wait for its check, stop it: its log."""
    env = {
        **os.environ,
        "SPEECH_GATEWAY_OUTCOMES__STORE": "redis",
        "SPEECH_GATEWAY_REDIS__URL": url,
        "SPEECH_GATEWAY_REDIS__PREFIX": "sgw-persist",
        "SPEECH_GATEWAY_OUTCOMES__JOURNAL_DIR": str(work / "journal"),
        "SPEECH_GATEWAY_LOGGING__FORMAT": "json",
    }
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    log = work / "gateway.log"
    with gateway_for(work, backends, [split_experiment()], env=env):
        deadline = time.monotonic() + 30
        while not check_entries(log) and time.monotonic() < deadline:
            time.sleep(0.1)
    return log


def test_a_gateway_on_redis_without_persistence_warns_once(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    with RedisServer(tmp_path / "redis") as server:
        log = run_gateway(tmp_path / "gw", alpha, bravo, server.url)
    [entry] = check_entries(log)
    assert entry["event"] == "outcomes_redis_not_persistent"
    assert entry["level"] == "warning"
    assert entry["nodes"] == [f"127.0.0.1:{server.port}"]


def test_a_gateway_on_redis_with_aof_does_not_warn(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        log = run_gateway(tmp_path / "gw", alpha, bravo, server.url)
    [entry] = check_entries(log)
    assert entry["event"] == "outcomes_redis_persistent"
    assert entry["level"] == "info"
