"""The options of the analysis and replay commands, light to import.

`speech-gateway` builds every sub-command's parser before it knows which one runs, so the
options live here, apart from the commands' code: `--help`, `admin` and the other commands
never load the statistics stack (numpy, scipy) or the Speech SDK for them. A value that
needs heavy code to check (a window length, an ISO time) imports it when the option is given.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Final, Literal, get_args

from gateway.analysis.model import AnalysisOptions, parse_moment
from gateway.constants import ADMIN_TOKEN_ENV
from gateway.errors import ConfigError

Pace = Literal["fast", "realtime"]
PACES: Final[tuple[Pace, ...]] = get_args(Pace)
DEFAULT_PATH: Final = "/speech/recognition/conversation/cognitiveservices/v1"
DEFAULT_UNIT_PARAM: Final = "gw-unit"
CLIENT_KEY_ENV: Final = "SPEECH_GATEWAY_CLIENT_KEY"
CLICKHOUSE_URL_ENV: Final = "SPEECH_GATEWAY_CLICKHOUSE_URL"


def add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `speech-gateway analyze` (docs/analysis.md)."""
    parser.add_argument("--experiment", required=True, help="the experiment id")
    parser.add_argument(
        "--since", type=_moment, help="ISO-8601 start (inclusive), e.g. 2026-01-31T00:00Z"
    )
    parser.add_argument("--until", type=_moment, help="ISO-8601 end (exclusive)")
    parser.add_argument("--phase", help="only this phase (default: every phase)")
    parser.add_argument("--control", help="the control variant (default: from the config)")
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="write the report as JSON ('-': stdout)"
    )
    parser.add_argument(
        "--html", type=Path, metavar="FILE", help="write a self-contained HTML report"
    )
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (0.95)")
    parser.add_argument(
        "--min-labelled",
        type=int,
        default=AnalysisOptions().min_labelled,
        help="labelled utterances per arm before WER decides (20)",
    )
    terms = parser.add_mutually_exclusive_group()
    terms.add_argument(
        "--terms",
        type=Path,
        metavar="FILE",
        help="the domain terms of the error analysis, one a line (default: the experiment's "
        "terms or terms_corpus setting)",
    )
    terms.add_argument(
        "--terms-corpus",
        type=Path,
        metavar="FILE",
        help="derive the domain terms from a custom model's training corpus, a sentence a line",
    )
    parser.add_argument(
        "--synonyms",
        type=Path,
        metavar="FILE",
        help="equivalent forms, `okay = ok` a line (default: the experiment's synonyms setting)",
    )
    parser.add_argument(
        "--engine",
        choices=("duckdb", "clickhouse", "records"),
        default="duckdb",
        help="duckdb: SQL over the file store or export (default; the Redis store is read "
        "record by record); clickhouse: SQL on a ClickHouse server's outcomes table "
        "(--clickhouse-url), or in process over an export (--lake, needs chdb); records: "
        "read record by record",
    )
    parser.add_argument(
        "--clickhouse-url",
        metavar="URL",
        help="--engine clickhouse: http(s)://[user[:password]@]host[:port][/database] (prefer "
        f"the environment for a password: {CLICKHOUSE_URL_ENV})",
    )
    parser.add_argument(
        "--clickhouse-table",
        default="outcomes",
        metavar="TABLE",
        help="--engine clickhouse: the outcome table, TABLE or DATABASE.TABLE (default: outcomes)",
    )
    parser.add_argument(
        "--lake",
        type=Path,
        metavar="DIR",
        help="analyse a Parquet export (speech-gateway export) instead of the configured store",
    )
    parser.add_argument(
        "--alignments",
        type=_alignments,
        metavar="FILE",
        help="write one row per labelled utterance and variant with its aligned words "
        "(.jsonl or .csv)",
    )
    parser.add_argument(
        "--drift-window",
        type=_window,
        default=AnalysisOptions().drift_window_s,
        metavar="LENGTH",
        help="the drift section's window after a ship: 1d, 12h, 30m ... (1d)",
    )


def _window(value: str) -> int:
    from gateway.analysis.drift import parse_window

    try:
        return parse_window(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _alignments(value: str) -> Path:
    from gateway.analysis.word_errors import alignments_format

    try:
        alignments_format(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None
    return Path(value)


def _moment(value: str) -> datetime:
    try:
        return parse_moment(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `speech-gateway plan` (docs/analysis.md#planning)."""
    data = parser.add_argument_group("from an experiment's data so far")
    data.add_argument("--experiment", help="the experiment id (its outcome store and config)")
    data.add_argument("--variant", help="the challenger (default: each)")
    data.add_argument("--control", help="the control variant (default: from the config)")
    stated = parser.add_argument_group("from stated assumptions (without --experiment)")
    stated.add_argument("--base-wer", type=float, metavar="PCT", help="control WER, in %%")
    stated.add_argument(
        "--units-per-day", type=float, help="new units (users, devices) a day, all arms"
    )
    stated.add_argument(
        "--labelled-share", type=float, default=1.0, help="share of utterances labelled (1.0)"
    )
    stated.add_argument(
        "--utterances-per-unit", type=float, default=5.0, help="utterances a unit speaks (5)"
    )
    stated.add_argument(
        "--words-per-utterance", type=float, default=8.0, help="reference words (8)"
    )
    within = stated.add_mutually_exclusive_group()
    within.add_argument(
        "--icc", type=float, default=0.0, help="within-unit correlation of word errors (0)"
    )
    within.add_argument("--design-effect", type=float, help="the design effect, instead of --icc")
    stated.add_argument("--challengers", type=int, default=1, help="challengers (1)")
    gain = parser.add_mutually_exclusive_group()
    gain.add_argument("--gain-points", type=float, nargs="+", help="WER gains, in points")
    gain.add_argument(
        "--gain-relative",
        type=float,
        nargs="+",
        metavar="PCT",
        help="WER gains relative to the control's WER, in %% (default: 5 10 20)",
    )
    parser.add_argument("--power", type=float, default=0.8, help="the chance to detect (0.8)")
    parser.add_argument("--confidence", type=float, default=0.95, help="1 - alpha (0.95)")
    parser.add_argument(
        "--min-gain-points",
        type=float,
        help="the minimum gain worth shipping (default: the experiment's "
        "min_wer_gain_points, else 0)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write JSON ('-': stdout)")


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `speech-gateway replay` (docs/replay.md)."""
    parser.add_argument("dataset", type=Path, help="a folder with manifest.jsonl and WAV files")
    parser.add_argument(
        "--gateway",
        help="the gateway's root URL, ws(s):// or http(s):// "
        "(default: the configured gateway.host and gateway.port)",
    )
    parser.add_argument(
        "--key", help=f"a gateway client key (prefer the environment: {CLIENT_KEY_ENV})"
    )
    parser.add_argument(
        "--admin-token",
        help=f"an admin token, to attach labels and read the analysis ({ADMIN_TOKEN_ENV})",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="sessions at a time (4)")
    parser.add_argument(
        "--pace", choices=PACES, default="fast", help="fast: as the SDK reads files (default)"
    )
    parser.add_argument(
        "--unit-prefix", help="unit ids are PREFIX-<item id> (default: a random run id)"
    )
    parser.add_argument("--path", default=DEFAULT_PATH, help="the recognition path")
    parser.add_argument("--language", default="en-US", help="the recognition language")
    parser.add_argument(
        "--unit-param", default=DEFAULT_UNIT_PARAM, help="the experiment's unit parameter"
    )
    parser.add_argument(
        "--experiment", help="label in, and analyse, this experiment only (default: any)"
    )
    parser.add_argument("--no-analysis", action="store_true", help="do not print the analysis")


def add_label_rescore_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `speech-gateway label rescore` (docs/labels.md#stored-wer-counts)."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--experiment",
        action="append",
        metavar="ID",
        help="rescore the labels of this experiment (repeatable; _default for the default route)",
    )
    which.add_argument("--all", action="store_true", help="rescore every experiment's labels")


DEFAULT_TEST_SHARE: Final = 0.2
DEFAULT_SEED: Final = "speech-gateway"


def add_dataset_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The actions of `speech-gateway dataset` (docs/review.md#dataset-export); returns the
    `export` action's parser."""
    actions = parser.add_subparsers(dest="dataset_action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="reviewed captures as Custom Speech train/test zips and a replay test set",
    )
    export.add_argument("--experiment", required=True, help="the experiment whose captures")
    export.add_argument("--out", type=Path, required=True, help="a new or empty folder")
    export.add_argument(
        "--test-share",
        type=float,
        default=DEFAULT_TEST_SHARE,
        help=f"the share of units in the test part, 0 to below 1 (default {DEFAULT_TEST_SHARE})",
    )
    export.add_argument(
        "--seed", default=DEFAULT_SEED, help="the split's seed (the same seed, the same split)"
    )
    return export
