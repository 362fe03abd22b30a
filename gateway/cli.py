"""The `speech-gateway` command (also `python -m gateway`): a thin layer over the modules.

Sub-commands: `serve` (the gateway), `emulate` (the local Azure-compatible speech
service), `analyze` (an experiment's report), `plan` (labelled utterances and days a WER
gain needs), `replay` (a labelled dataset through a gateway), `export` (outcomes and
labels to Parquet), `dataset export` (reviewed captures as Custom Speech datasets),
`demo`, `keygen` (a new client key and the digest for the config),
`config validate`, and `admin` (the control plane's verbs, over a gateway's admin API).
Each parses its arguments into settings overrides, configures logging once, and hands
over; errors become one clear line on stderr and exit status 2. `--config FILE` goes
before the sub-command or after it (`speech-gateway serve --config FILE`), for every
sub-command that reads settings. A sub-command imports its code when it runs (the options
are in `gateway.tools.cli_options` and `gateway.tools.export`), so `--help` and `admin`
never load the statistics stack, DuckDB, the settings or the Speech SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from gateway.errors import ConfigError, GatewayError
from gateway.tools.admin_cli import add_admin_parser, admin_command
from gateway.tools.cli_options import (
    add_analyze_arguments,
    add_dataset_arguments,
    add_label_rescore_arguments,
    add_plan_arguments,
    add_replay_arguments,
)
from gateway.tools.export import add_export_arguments

if TYPE_CHECKING:
    from gateway.config.settings import Settings

CONFIG_HELP = (
    "the TOML settings file (default: $SPEECH_GATEWAY_CONFIG, else config/gateway.toml in "
    "the working directory); relative paths in it are relative to its folder"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speech-gateway", description="A/B testing gateway for live speech recognition."
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    _add_config_option(serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--workers",
        default="1",
        metavar="N",
        help="gateway processes sharing the port (default 1: this process); auto or 0: one "
        "per usable core; N > 1 needs the Redis stores (docs/operations.md)",
    )

    commands.add_parser(
        "keygen", help="make a client key or admin token and print its sha256 for the config"
    )

    label = commands.add_parser("label", help="reference transcripts (labels)")
    label_commands = label.add_subparsers(dest="label_command", required=True)
    label_import = label_commands.add_parser(
        "import", help="attach labels from a CSV (record_id,text) or JSON-lines file"
    )
    label_import.add_argument("file", type=Path)
    _add_config_option(label_import)
    label_import.add_argument("--by", help="who labelled (default: your user name)")
    label_import.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip bad lines and unknown record ids instead of importing nothing",
    )
    label_rescore = label_commands.add_parser(
        "rescore",
        help="store current WER counts with labels that lack them (after an upgrade that "
        "changed the text normalisation, or for shadow records that arrived late)",
    )
    add_label_rescore_arguments(label_rescore)
    _add_config_option(label_rescore)

    emulate = commands.add_parser(
        "emulate", help="run a local Azure-compatible speech service (PocketSphinx)"
    )
    _add_config_option(emulate)
    emulate.add_argument("--host")
    emulate.add_argument("--port", type=int)
    emulate.add_argument(
        "--key",
        help="require this subscription key (prefer SPEECH_GATEWAY_EMULATOR__KEY); "
        "without one, no auth (container style)",
    )
    emulate.add_argument(
        "--custom",
        action="append",
        default=[],
        metavar="ENDPOINT_ID=CORPUS_FILE",
        help="add a custom endpoint whose language model is built from CORPUS_FILE",
    )
    emulate.add_argument("--engine", choices=["pocketsphinx", "instant"])
    emulate.add_argument("--instant-text", help="the instant engine's scripted transcript")
    emulate.add_argument("--workers", type=int, help="recogniser processes")
    emulate.add_argument("--max-sessions", type=int, help="concurrent sessions before 429")
    emulate.add_argument("--model-cache", type=Path, help="where built custom models are kept")
    emulate.add_argument("--latency-ms", type=int, help="added latency before each result")
    emulate.add_argument("--failure-rate", type=float, help="share of sessions that fail (0-1)")
    emulate.add_argument("--failure-kind", choices=["http", "close", "usp"])
    emulate.add_argument(
        "--failure-status",
        help="HTTP status (http), close code (close) or RecognitionStatus (usp)",
    )
    emulate.add_argument("--failure-seed", type=int)
    emulate.add_argument(
        "--fallback-after-s",
        type=float,
        help="every custom endpoint silently falls back to the base model this many seconds "
        "after start-up (0: off)",
    )

    analyze = commands.add_parser(
        "analyze", help="analyse an experiment: rates, latency, WER, recommendation"
    )
    add_analyze_arguments(analyze)
    _add_config_option(analyze)

    plan = commands.add_parser(
        "plan", help="labelled utterances and days needed to detect a WER gain"
    )
    add_plan_arguments(plan)
    _add_config_option(plan)

    replay = commands.add_parser(
        "replay", help="replay a labelled dataset through a gateway with the Speech SDK"
    )
    add_replay_arguments(replay)
    _add_config_option(replay)

    export = commands.add_parser(
        "export", help="outcomes and labels to Parquet files (once, or --follow)"
    )
    add_export_arguments(export)
    _add_config_option(export)

    dataset = commands.add_parser(
        "dataset", help="reviewed captures as Custom Speech datasets and a replay set"
    )
    _add_config_option(add_dataset_arguments(dataset))
    add_admin_parser(commands)

    demo = commands.add_parser("demo", help="run the self-contained demo")
    demo.add_argument("--dataset", type=Path, default=Path("data/demo/banking"))
    demo.add_argument("--workdir", type=Path, default=Path("var/demo"))
    demo.add_argument("--concurrency", type=int, default=4)
    _add_config_option(demo)

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    validate = config_commands.add_parser("validate", help="validate a settings file")
    validate.add_argument("file", type=Path, nargs="?", help="the file (or --config FILE)")
    _add_config_option(validate)
    return parser


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    """`--config` after the sub-command too. Its own destination, so that the option given
    before the sub-command is not overwritten by the sub-parser's default."""
    parser.add_argument(
        "--config", dest="command_config", type=Path, metavar="FILE", help=CONFIG_HELP
    )


def _config_option(args: argparse.Namespace) -> Path | None:
    """The `--config` given before or after the sub-command; both only if they agree."""
    before: Path | None = args.config
    after: Path | None = getattr(args, "command_config", None)
    if before is not None and after is not None and before != after:
        raise ConfigError("--config", f"given twice, as {before} and as {after}; give it once")
    return after if after is not None else before


def _emulator_overrides(args: argparse.Namespace) -> dict[str, Any]:
    section: dict[str, Any] = {}
    for name in ("host", "port", "key", "engine", "instant_text", "workers", "model_cache"):
        if getattr(args, name) is not None:
            section[name] = getattr(args, name)
    if args.max_sessions is not None:
        section["max_sessions"] = args.max_sessions
    custom: dict[str, Path] = {}
    for item in args.custom:
        endpoint_id, sep, corpus = item.partition("=")
        if not sep or not endpoint_id or not corpus:
            raise ConfigError("--custom", f"{item!r} is not ENDPOINT_ID=CORPUS_FILE")
        custom[endpoint_id] = Path(corpus)
    if custom:
        section["custom"] = custom
    faults = {
        key: value
        for key, value in (
            ("latency_ms", args.latency_ms),
            ("failure_rate", args.failure_rate),
            ("failure_kind", args.failure_kind),
            ("failure_status", args.failure_status),
            ("seed", args.failure_seed),
            ("fallback_after_s", args.fallback_after_s),
        )
        if value is not None
    }
    if faults:
        section["faults"] = faults
    return section


async def _import_labels(settings: Settings, path: Path, by: str | None, skip_invalid: bool) -> str:
    from gateway.stores.factory import open_label_store
    from gateway.stores.label_store import import_labels

    try:
        labeller = by or getpass.getuser()
    except (OSError, KeyError):
        raise ConfigError("--by", "cannot tell who you are: give --by NAME") from None
    async with open_label_store(settings.outcomes, settings.redis.connection()) as store:
        result = await import_labels(path, store, labeller, skip_invalid)
    return result.summary()


# OpenBLAS (numpy's BLAS) runs a thread per core whose workers spin between calls: the
# analysis' vector products (per-unit sums of ~100,000 units) gain nothing from them, and on
# a machine of 2 cores the spinning took 1-2 s of CPU of a 1M-record analysis (16 s in all)
# from DuckDB's threads. Set before numpy is first imported (a sub-command imports it); a
# value the user set is kept.
BLAS_THREADS: Final = ("OPENBLAS_NUM_THREADS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault(*BLAS_THREADS)
    args = _parser().parse_args(argv)
    try:
        if args.command == "admin":  # an HTTP client: no settings, no logging set-up
            return admin_command(args)
        config = _config_option(args)
        if args.command == "config":
            if args.file is not None and config is not None and args.file != config:
                raise ConfigError("--config", f"names {config}, but the file given is {args.file}")
            from gateway.config.gateway_config import build_gateway_config
            from gateway.config.settings import config_path, load_settings

            path = config_path(args.file or config)
            build_gateway_config(load_settings(path).gateway)
            print(f"ok: {path or 'the built-in defaults'} is valid")
            return 0
        if args.command == "keygen":
            from gateway.control.model import hash_key

            key = secrets.token_urlsafe(32)
            print(f"key:        {key}\nkey_sha256: {hash_key(key)}")
            return 0
        overrides: dict[str, Any] = {}
        if args.command == "emulate":
            overrides["emulator"] = _emulator_overrides(args)
        elif args.command == "serve":
            section = {k: v for k in ("host", "port") if (v := getattr(args, k)) is not None}
            overrides["gateway"] = section
        from gateway.config.settings import config_path, load_settings
        from gateway.logging import configure_logging, get_logger

        path = config_path(config)
        settings = load_settings(path, **overrides)
        configure_logging(settings.logging.level, settings.logging.format)
        get_logger("gateway.cli").debug(
            "settings_loaded",
            command=args.command,
            config_file=os.path.abspath(path) if path is not None else None,
        )
        if args.command == "emulate":
            from gateway.emulator.server import run

            run(settings.emulator)
        elif args.command == "serve":
            from gateway.server.workers import parse_workers, run_serve

            return run_serve(settings, parse_workers(args.workers))
        elif args.command == "label" and args.label_command == "rescore":
            from gateway.tools.label_rescore import run_label_rescore

            asyncio.run(run_label_rescore(args, settings))
        elif args.command == "label":
            print(asyncio.run(_import_labels(settings, args.file, args.by, args.skip_invalid)))
        elif args.command == "analyze":
            from gateway.tools.analyze import run_analyze

            asyncio.run(run_analyze(args, settings))
        elif args.command == "plan":
            from gateway.tools.plan import run_plan

            asyncio.run(run_plan(args, settings))
        elif args.command == "replay":
            from gateway.tools.replay import replay_command

            return replay_command(args, settings)
        elif args.command == "export":
            from gateway.tools.export import export_command

            return export_command(args, settings)
        elif args.command == "dataset":
            from gateway.tools.dataset_export import dataset_command

            return dataset_command(args, settings)
        elif args.command == "demo":
            from gateway.tools.demo import run_demo

            run_demo(args.dataset, args.workdir, args.concurrency, print)
    except GatewayError as exc:
        print(f"speech-gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
