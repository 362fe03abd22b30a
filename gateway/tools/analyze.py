"""`speech-gateway analyze`: one experiment's report from the configured outcome store, or
from a Parquet export (`--lake`).

The store (file or Redis) and the experiment's control, current split, canary set, term
list and synonyms come from the same settings the gateway runs with. The report goes to the
terminal as tables, and on request to a JSON file (docs/analysis.md) and a self-contained
HTML file; `--alignments` writes every labelled utterance's word alignment
(docs/error-analysis.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from gateway.analysis.engine_port import EvidenceSource
from gateway.analysis.error_analysis import ErrorInputs
from gateway.analysis.labelled import labelled_results
from gateway.analysis.model import AnalysisOptions, ExperimentInfo, Json
from gateway.analysis.report import analyze
from gateway.analysis.review_report import ReviewInputs
from gateway.analysis.style import load_synonyms
from gateway.analysis.term_corpus import experiment_terms
from gateway.analysis.text_report import render_text
from gateway.analysis.word_errors import alignment_rows, write_alignments
from gateway.config.gateway_config import build_gateway_config
from gateway.config.settings import Settings
from gateway.control.model import Experiment
from gateway.errors import ConfigError, StoreUnavailable
from gateway.health.canary import load_references
from gateway.outcomes.ports import OutcomeReader
from gateway.outcomes.record import InvalidRecordError
from gateway.tools.cli_options import CLICKHOUSE_URL_ENV


def experiment_info(
    settings: Settings, experiment: str, control: str | None
) -> ExperimentInfo | None:
    """The configured control and current split of `experiment`; None if it is not configured.

    `--control` wins over the configuration; without either, the report names the first
    variant (alphabetically) as control and says so.
    """
    info: ExperimentInfo | None = None
    try:
        config = build_gateway_config(settings.gateway)
    except ConfigError:
        # E.g. backend keys absent where the analyst works: the control still comes from
        # the settings as written; the current phase and shares need the full validation.
        written = next((e for e in settings.gateway.experiments if e.id == experiment), None)
        if written is not None:
            info = ExperimentInfo(
                control=written.control, min_wer_gain=written.min_wer_gain_points / 100
            )
    else:
        found = next((e for e in config.experiments if e.id == experiment), None)
        if found is not None:
            info = ExperimentInfo.of(found)
    if control is not None:
        if info is None:
            return ExperimentInfo(control=control)
        return ExperimentInfo(
            control=control,
            phase=info.phase,
            shares=info.shares,
            min_wer_gain=info.min_wer_gain,
            guardrails=info.guardrails,
        )
    return info


def canary_references(settings: Settings, experiment: str) -> dict[str, str] | None:
    """The reference transcripts of the experiment's canary set (item id -> text); None when
    it has none, or the configuration cannot be validated here (the set's folder is checked
    with the rest of it)."""
    try:
        config = build_gateway_config(settings.gateway)
    except ConfigError:
        return None
    found = next((e for e in config.experiments if e.id == experiment), None)
    if found is None or found.canary is None:
        return None
    return load_references(found.canary.dataset)


def error_inputs(
    settings: Settings,
    experiment: str,
    terms: Path | None,
    synonyms: Path | None,
    terms_corpus: Path | None = None,
) -> ErrorInputs:
    """The error analysis's term list (a file, or derived from a corpus) and synonyms: the
    options', else the experiment's settings (when the configuration validates here); a bad
    file is a ConfigError naming it."""
    configured: Experiment | None = None
    if (terms is None and terms_corpus is None) or synonyms is None:
        try:
            config = build_gateway_config(settings.gateway)
        except ConfigError:
            config = None
        if config is not None:
            configured = next((e for e in config.experiments if e.id == experiment), None)
    if terms is None and terms_corpus is None and configured is not None:
        terms, terms_corpus = configured.terms, configured.terms_corpus
    synonyms = synonyms or (configured.synonyms if configured is not None else None)
    return ErrorInputs(
        terms=experiment_terms(terms, terms_corpus),
        synonyms=None if synonyms is None else load_synonyms(synonyms),
    )


@asynccontextmanager
async def _reader(
    settings: Settings, args: argparse.Namespace
) -> AsyncIterator[tuple[OutcomeReader, EvidenceSource | None]]:
    """The configured store's reader and engine, or those of a Parquet export (`--lake`);
    no engine with `--engine records`; ClickHouse with `--engine clickhouse`: a server's
    outcome table (labels from the store), or chdb over the export."""
    from gateway.stores.factory import (
        analysis_engine,
        clickhouse_engine,
        clickhouse_lake_engine,
        open_reader,
    )

    lake: Path | None = args.lake
    url = args.clickhouse_url or os.environ.get(CLICKHOUSE_URL_ENV) or None
    if args.engine != "clickhouse" and args.clickhouse_url:
        raise ConfigError("--clickhouse-url", "goes with --engine clickhouse")
    if lake is not None:
        from gateway.stores.engine import LakeReader

        if args.engine == "clickhouse" and args.clickhouse_url:
            raise ConfigError(
                "--clickhouse-url",
                "reads a server's outcome table; --lake reads an export (with ClickHouse in "
                "process): give one of them",
            )
        if not await asyncio.to_thread(lake.is_dir):
            raise ConfigError("--lake", f"no export directory at {lake}")
        reader = LakeReader(lake)
        engine: EvidenceSource | None = None
        if args.engine == "duckdb":
            engine = reader.engine(args.experiment)
        elif args.engine == "clickhouse":
            engine = clickhouse_lake_engine(lake, args.experiment)
        yield reader, engine
        return
    async with open_reader(settings.outcomes, settings.redis.connection()) as store:
        if args.engine == "clickhouse":
            if url is None:
                raise ConfigError(
                    "--clickhouse-url",
                    f"required with --engine clickhouse (or {CLICKHOUSE_URL_ENV}, or --lake DIR)",
                )
            yield store, clickhouse_engine(url, args.clickhouse_table)
        else:
            yield store, analysis_engine(settings.outcomes) if args.engine == "duckdb" else None


async def review_inputs(
    settings: Settings, experiment: str, reader: OutcomeReader
) -> ReviewInputs | None:
    """The review section's inputs from the configured audio store and the preferences
    beside the outcomes (`gateway.server.admin.review.review_inputs`). A store that cannot be
    read is said in one line on stderr, and the report is made without the section."""
    from gateway.server.admin.review import review_inputs as read_inputs

    try:
        return await read_inputs(
            settings.gateway.audio,
            settings.outcomes.path,
            settings.redis.prefix,
            experiment,
            reader,
        )
    except (ConfigError, StoreUnavailable) as exc:
        print(f"speech-gateway: no review section: {exc}", file=sys.stderr)
        return None


async def run_analyze(args: argparse.Namespace, settings: Settings) -> Json:
    options = AnalysisOptions(
        confidence=args.confidence,
        min_labelled=args.min_labelled,
        drift_window_s=args.drift_window,
    )
    info = experiment_info(settings, args.experiment, args.control)
    references = canary_references(settings, args.experiment)
    inputs = error_inputs(settings, args.experiment, args.terms, args.synonyms, args.terms_corpus)
    async with _reader(settings, args) as (reader, engine):
        reviews = (
            None
            if args.lake is not None
            else await review_inputs(settings, args.experiment, reader)
        )
        try:
            report = await analyze(
                reader,
                args.experiment,
                info=info,
                since=args.since,
                until=args.until,
                phase=args.phase,
                options=options,
                canary_references=references,
                errors=inputs,
                engine=engine,
                reviews=reviews,
            )
            if args.alignments is not None:
                await export_alignments(reader, args)
        except FileNotFoundError as exc:
            raise ConfigError("outcomes.path", f"no outcome file at {exc.filename}") from None
        except InvalidRecordError as exc:
            # A record written by something other than the gateway, or corrupted since:
            # name it, so it can be fixed or removed, rather than analyse around it.
            raise ConfigError("outcomes", f"an invalid record in the store: {exc}") from None
    write_outputs(report, args.json, args.html)
    return report


async def export_alignments(reader: OutcomeReader, args: argparse.Namespace) -> None:
    """`--alignments FILE`: every labelled utterance of the window (and phase) with its
    aligned words, one row per utterance and variant."""
    records = [
        record
        async for record in reader.outcomes(args.experiment, args.since, args.until)
        if args.phase is None or record.phase == args.phase
    ]
    labels = await reader.labels(args.experiment)
    rows = write_alignments(args.alignments, alignment_rows(labelled_results(records, labels)))
    to_stdout = args.json is not None and str(args.json) == "-"
    print(
        f"alignments: {rows} rows in {args.alignments}",
        file=sys.stderr if to_stdout else sys.stdout,
    )


def write_outputs(report: Json, json_path: Path | None, html_path: Path | None) -> None:
    """The terminal table (unless JSON goes to stdout), then the requested files."""
    to_stdout = json_path is not None and str(json_path) == "-"
    # With the JSON on stdout, everything else goes to stderr: stdout stays valid JSON.
    say = sys.stderr if to_stdout else sys.stdout
    if to_stdout:
        sys.stdout.write(report_json(report))
    else:
        print(render_text(report))
    if json_path is not None and not to_stdout:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(report_json(report), encoding="utf-8")
        print(f"JSON report: {json_path}", file=say)
    if html_path is not None:
        from gateway.analysis.html_report import render_html

        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(report), encoding="utf-8")
        print(f"HTML report: {html_path.resolve()}", file=say)


def report_json(report: Json) -> str:
    """The report as indented JSON text; strict: NaN or Infinity is a bug, not output."""
    return json.dumps(report, indent=2, allow_nan=False) + "\n"
