"""`speech-gateway export`: outcome records and labels to Parquet files (docs/export.md).

`export --experiment ID --to DIR` copies one experiment from the configured outcome store
(the JSONL file or Redis, as `analyze` reads it) into the export directory: the records it
does not hold yet, and the experiment's current labels. `export --follow --to DIR` runs the
continuous exporter (`gateway.stores.lake_follower`) on the Redis store until SIGTERM or
SIGINT, which stop it after the batch in hand.

The options are defined here and the stores imported only when the command runs, so that
`speech-gateway --help` never loads DuckDB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from gateway.errors import ConfigError
from gateway.tools.cli_options import CLICKHOUSE_URL_ENV

if TYPE_CHECKING:
    from gateway.config.settings import Settings
    from gateway.outcomes.labels import Label
    from gateway.outcomes.ports import OutcomeReader
    from gateway.outcomes.record import OutcomeRecord

CHUNK_RECORDS: Final = 50_000  # records per write of a one-off export (memory stays bounded)


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `speech-gateway export`."""
    parser.add_argument(
        "--experiment",
        action="append",
        metavar="ID",
        help="the experiment to export (with --follow: only these; repeatable; default: every "
        "experiment)",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", type=Path, metavar="DIR", help="the export directory")
    where.add_argument(
        "--to-clickhouse",
        nargs="?",
        const="",
        metavar="URL",
        help="load into a ClickHouse server's outcomes and labels tables (docs/clickhouse.md): "
        "http(s)://[user[:password]@]host[:port][/database]; without URL, from "
        f"{CLICKHOUSE_URL_ENV}",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep exporting new records as they arrive (Redis store; stop with SIGTERM or Ctrl-C)",
    )
    parser.add_argument(
        "--consumer",
        default="exporter",
        metavar="NAME",
        help="--follow: this follower's name in the consumer group (default: exporter); a "
        "restart under the same name resumes its unacknowledged entries",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=5_000,
        metavar="N",
        help="--follow: stream entries per Parquet file (default 5000)",
    )
    parser.add_argument(
        "--labels-every",
        type=_positive_float,
        default=300.0,
        metavar="SECONDS",
        help="--follow: how often the labels files are refreshed (default 300)",
    )


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What a one-off export did."""

    experiment: str
    added: int
    present: int
    labels: int

    def line(self, destination: str) -> str:
        return (
            f"{self.experiment}: {self.added} new outcome record(s), {self.present} already "
            f"exported, {self.labels} label(s) -> {destination}"
        )


class _Writer(Protocol):
    """Where an export goes: `lake.LakeWriter` or `clickhouse_load.ClickHouseLoader`."""

    def append(self, records: list[OutcomeRecord]) -> _Added: ...

    def replace_labels(self, experiment: str, labels: Iterable[Label]) -> int: ...


class _Added(Protocol):
    @property
    def added(self) -> int: ...

    @property
    def present(self) -> int: ...


async def _copy(
    reader: OutcomeReader, writer: _Writer, experiment: str, *, exported_before: bool = False
) -> ExportSummary:
    """One experiment's records (in chunks) and current labels into `writer`; ConfigError
    when the store holds no record of it (unless `exported_before`: then the labels only)."""
    added = present = seen = 0
    chunk: list[OutcomeRecord] = []
    async for record in reader.outcomes(experiment):
        chunk.append(record)
        seen += 1
        if len(chunk) >= CHUNK_RECORDS:
            result = await asyncio.to_thread(writer.append, chunk)
            added, present, chunk = added + result.added, present + result.present, []
    if chunk:
        result = await asyncio.to_thread(writer.append, chunk)
        added, present = added + result.added, present + result.present
    if not seen and not exported_before:
        known = ", ".join(await reader.experiments()) or "none"
        raise ConfigError(
            "--experiment", f"no outcome records of {experiment!r} in the store (has: {known})"
        )
    labels = await reader.labels(experiment)
    count = await asyncio.to_thread(writer.replace_labels, experiment, labels.values())
    return ExportSummary(experiment, added, present, count)


async def export_experiment(reader: OutcomeReader, root: Path, experiment: str) -> ExportSummary:
    """Export one experiment's records (those the directory lacks) and current labels."""
    from gateway.stores.lake import LakeWriter, experiment_folder

    # Exported before: its records may have left the store since (retention); the labels
    # are still refreshed.
    before = experiment_folder(root, experiment).is_dir()
    with LakeWriter(root) as writer:
        return await _copy(reader, writer, experiment, exported_before=before)


async def _export_once(args: argparse.Namespace, settings: Settings) -> list[ExportSummary]:
    from gateway.outcomes.record import InvalidRecordError
    from gateway.stores.factory import open_reader

    summaries = []
    async with open_reader(settings.outcomes, settings.redis.connection()) as reader:
        try:
            for experiment in args.experiment:
                if args.to_clickhouse is not None:
                    summaries.append(await _load(reader, args.to_clickhouse, experiment))
                else:
                    summaries.append(await export_experiment(reader, args.to, experiment))
        except FileNotFoundError as exc:
            raise ConfigError("outcomes.path", f"no outcome file at {exc.filename}") from None
        except InvalidRecordError as exc:
            raise ConfigError("outcomes", f"an invalid record in the store: {exc}") from None
    return summaries


async def _load(reader: OutcomeReader, url: str, experiment: str) -> ExportSummary:
    """`--to-clickhouse`: one experiment into the server's outcomes and labels tables."""
    from gateway.stores.clickhouse_engine import ServerConnection
    from gateway.stores.clickhouse_load import ClickHouseLoader

    con = await asyncio.to_thread(ServerConnection, url)
    try:
        loader = await asyncio.to_thread(ClickHouseLoader, con)
        return await _copy(reader, loader, experiment)
    finally:
        con.close()


async def _follow(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.outcomes.record import InvalidRecordError
    from gateway.stores.factory import redis_keys
    from gateway.stores.failures import translated
    from gateway.stores.lake_follower import LakeFollower
    from gateway.stores.redis_client import connect

    redis = settings.redis.connection()
    with translated("connect"):
        client = await connect(redis.url, cluster=redis.cluster, password=redis.plain_password())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        follower = LakeFollower(
            client,
            redis_keys(redis),
            args.to,
            consumer=args.consumer,
            experiments=args.experiment or (),
            batch_size=args.batch_size,
            labels_every_s=args.labels_every,
        )
        try:
            stats = await follower.run(stop)
        except InvalidRecordError as exc:
            raise ConfigError(
                "outcomes",
                f"an invalid record in the store, left unacknowledged: {exc}",
            ) from None
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await client.aclose()
    print(
        f"stopped: {stats.exported} outcome record(s) exported, {stats.present} already "
        f"there, {stats.acknowledged} stream entries acknowledged -> {args.to}",
        file=sys.stderr,
    )


def export_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run `speech-gateway export`; ConfigError for bad input (the CLI's one line)."""
    destination = str(args.to)
    if args.to_clickhouse is not None:
        if args.follow:
            raise ConfigError("--to-clickhouse", "loads once; --follow writes an export directory")
        args.to_clickhouse = args.to_clickhouse or os.environ.get(CLICKHOUSE_URL_ENV, "")
        if not args.to_clickhouse:
            raise ConfigError(
                "--to-clickhouse", f"give the server's URL, or set {CLICKHOUSE_URL_ENV}"
            )
        from gateway.stores.clickhouse_engine import where

        destination = where(args.to_clickhouse)
    elif args.to.exists() and not args.to.is_dir():
        raise ConfigError("--to", f"{args.to} is not a directory")
    if args.follow:
        if settings.outcomes.store != "redis":
            raise ConfigError(
                "--follow",
                "follows the Redis outcome streams; this configuration's outcomes.store is "
                f"{settings.outcomes.store!r} (export the file with --experiment ID)",
            )
        asyncio.run(_follow(args, settings))
        return 0
    if not args.experiment:
        raise ConfigError("--experiment", "required (or --follow)")
    for summary in asyncio.run(_export_once(args, settings)):
        print(summary.line(destination))
    return 0
