"""Benchmark: outcome records per second the sinks sustain, and CPU per outcome.

Starts its own redis-server (no persistence) on a free loopback port unless --redis-url is
given, builds realistic records up front, then submits them as fast as one event loop can
and waits for the sink to finish writing. Reports wall-clock throughput and this process's
CPU time per outcome (submit + batching + serialising + the Redis round trips), which is
what outcome logging costs a gateway process.

    .venv/bin/python bench/outcome_sink.py --records 200000
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path

from gateway.outcomes.ports import OutcomeSink
from gateway.outcomes.record import OutcomeRecord
from gateway.stores.jsonl_sink import LINGER_S, JsonlSink
from gateway.stores.keys import RedisKeys
from gateway.stores.redis_client import connect
from gateway.stores.redis_sink import RedisSink


def records(count: int, experiments: int) -> list[OutcomeRecord]:
    return [
        OutcomeRecord(
            kind="utterance",
            experiment=f"exp-{n % experiments}",
            phase="p-0123456789",
            variant="custom" if n % 2 else "base",
            backend="azure",
            role="primary",
            client="app",
            unit=f"{n % 5000:032x}",
            unit_source="query",
            session_id=f"{n // 10:032x}",
            protocol="usp",
            mode="conversation",
            locale="en-us",
            turn_id=f"{n // 10:032x}",
            utterance_index=n % 10,
            status="Success",
            audio_offset_ms=1000.0 * (n % 10),
            audio_duration_ms=2500.0,
            first_hypothesis_ms=180.5,
            final_latency_ms=420.25,
            total_ms=2900.75,
            text="I would like to transfer two hundred dollars to my savings account.",
            confidence=0.91,
            word_count=12,
        )
        for n in range(count)
    ]


async def measure(sink: OutcomeSink, items: list[OutcomeRecord]) -> tuple[float, float]:
    await sink.start()
    cpu, wall = time.process_time(), time.perf_counter()
    for index, record in enumerate(items):
        sink.submit(record)
        if index % 1000 == 999:
            await asyncio.sleep(0)  # let the writer run, as a busy gateway's loop would
    await sink.close()
    return time.perf_counter() - wall, time.process_time() - cpu


async def trickle(sink: JsonlSink, items: list[OutcomeRecord], rate: float) -> float:
    """CPU per record (µs, the whole process) with records submitted one by one at `rate`
    per second, as a gateway's sessions hand them over: the writer's wake-ups and thread
    hand-offs, not its throughput."""
    await sink.start()
    loop = asyncio.get_running_loop()
    cpu, start = time.process_time(), loop.time()
    for index, record in enumerate(items):
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sink.submit(record)
    await sink.close()
    return (time.process_time() - cpu) / len(items) * 1e6


def paced(items: list[OutcomeRecord], work: Path, rate: float, rounds: int) -> None:
    """The JSONL sink without and with its linger, alternating, at a steady rate."""
    print(f"JSONL sink at {rate:,.0f} records/s, {len(items)} records a run, CPU us/record")
    print(f"{'round':<6} {'no linger':>10} {f'linger {LINGER_S * 1000:.0f} ms':>14}")
    for round_ in range(1, rounds + 1):
        costs = [
            asyncio.run(
                trickle(JsonlSink(work / f"paced-{linger}.jsonl", linger_s=linger), items, rate)
            )
            for linger in (0.0, LINGER_S)
        ]
        print(f"{round_:<6} {costs[0]:>10.1f} {costs[1]:>14.1f}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--experiments", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--redis-url", help="an existing Redis (default: start one)")
    parser.add_argument(
        "--rate",
        type=float,
        help="instead: submit --records one by one at this many per second to the JSONL "
        "sink, without and with its linger, and print CPU per record",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternations with --rate")
    args = parser.parse_args()
    if args.rate is not None:
        work = Path(tempfile.mkdtemp(prefix="sink-bench-"))
        try:
            paced(records(args.records, args.experiments), work, args.rate, args.rounds)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    started = time.process_time()
    items = records(args.records, args.experiments)
    build_us = (time.process_time() - started) / len(items) * 1e6
    work = Path(tempfile.mkdtemp(prefix="sink-bench-"))
    server = None
    url = args.redis_url
    if url is None:
        port = free_port()
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.5)
    try:
        print(f"{args.records} records, {args.experiments} experiments, batch {args.batch}")
        print(f"building and validating a record: {build_us:.1f} us CPU")
        print(f"{'sink':<8} {'records/s':>10} {'CPU us/record':>14}")
        sinks: dict[str, OutcomeSink] = {
            "jsonl": JsonlSink(work / "out.jsonl", queue_size=len(items), batch_size=args.batch),
            "redis": RedisSink(
                partial(connect, url, cluster=False),
                RedisKeys(prefix=f"bench-{time.time_ns()}"),
                work / "journal",
                queue_size=len(items),
                batch_size=args.batch,
            ),
        }
        for name, sink in sinks.items():
            wall, cpu = asyncio.run(measure(sink, items))
            print(f"{name:<8} {len(items) / wall:>10,.0f} {cpu / len(items) * 1e6:>14.1f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
