"""The demo: a whole A/B experiment, base model against custom model, on one machine.

Starts the local speech service (PocketSphinx base model plus a custom model adapted from
the demo domain's corpus) and a gateway in front of it with a 50/50 experiment, both as
child processes on free ports with settings made here (no config file, no Redis). Replays
the demo dataset through the gateway with the real Speech SDK, one unit per utterance,
attaching each reference transcript as a label; stops the gateway (which flushes its
outcomes), analyses the experiment from its outcome file, prints the analysis and writes
the JSON and HTML reports. Everything started is stopped again, also on errors.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from gateway.analysis.html_report import render_html
from gateway.analysis.model import ExperimentInfo
from gateway.analysis.report import analyze
from gateway.analysis.text_report import render_text
from gateway.config.gateway import build_gateway_config
from gateway.config.settings import load_settings
from gateway.control.model import hash_key
from gateway.stores.reader import FileReader
from gateway.tools.analyze import error_inputs, report_json
from gateway.tools.dataset import load_dataset
from gateway.tools.local_services import LocalEmulator, LocalGateway
from gateway.tools.replay import ReplayOptions, run_replay

DEFAULT_DATASET = Path("data/demo/banking")
CUSTOM_ID = "banking"
EXPERIMENT = "banking-custom"
# Units "demo-<item id>": with this prefix the 48 demo utterances split 24/24, so every run
# shows the same, balanced experiment (any prefix works; others split e.g. 27/21).
UNIT_PREFIX: Final = "demo"

Json = dict[str, Any]


def _toml(value: object) -> str:
    """A TOML value for the few types the demo config uses (JSON strings are TOML strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def write_demo_config(
    workdir: Path,
    backend_url: str,
    client_key: str,
    admin_token: str,
    lexicon: Mapping[str, Path] | None = None,
) -> Path:
    """The gateway's settings for the demo: one backend, one 50/50 experiment, file store;
    `lexicon`: the experiment's `terms` and `synonyms` files, where the dataset has them."""
    workdir = workdir.absolute()  # a relative path in the file would be relative to workdir
    lines = [
        "[logging]",
        'format = "json"',
        "[gateway]",
        f"admin_tokens_sha256 = {_toml({'demo': hash_key(admin_token)})}",
        "[[gateway.clients]]",
        'name = "demo-replay"',
        f"key_sha256 = {_toml(hash_key(client_key))}",
        "[gateway.backends.local]",
        f"url = {_toml(backend_url)}",
        "[[gateway.experiments]]",
        f"id = {_toml(EXPERIMENT)}",
        'control = "base"',
        "variants = "
        + _toml(
            [
                {"name": "base", "backend": "local", "weight": 50},
                {"name": "custom", "backend": "local", "endpoint_id": CUSTOM_ID, "weight": 50},
            ]
        ),
        *(f"{name} = {_toml(str(path.absolute()))}" for name, path in (lexicon or {}).items()),
        "[outcomes]",
        'store = "file"',
        f"path = {_toml(str(workdir / 'outcomes.jsonl'))}",
        f"generated_key_path = {_toml(str(workdir / 'pseudonym.key'))}",
    ]
    path = workdir / "gateway.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _fresh(workdir: Path) -> None:
    """Remove the previous run's outcomes and reports (the model cache is kept)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in (
        "outcomes.jsonl",
        "labels.jsonl",
        "report.json",
        "report.html",
        "emulator.log",
        "gateway.log",
    ):
        (workdir / name).unlink(missing_ok=True)


def lexicon_of(dataset: Path) -> dict[str, Path]:
    """The error analysis's files of a dataset: `data/lexicon/<domain>-terms.txt` and
    `data/lexicon/synonyms.txt` beside `data/<group>/<domain>`, those that exist."""
    folder = dataset.parent.parent / "lexicon"
    found = {"terms": folder / f"{dataset.name}-terms.txt", "synonyms": folder / "synonyms.txt"}
    return {name: path for name, path in found.items() if path.is_file()}


def run_demo(dataset: Path, workdir: Path, concurrency: int, say: Callable[[str], None]) -> Json:
    """Run the demo and return the analysis report."""
    items = load_dataset(dataset)
    _fresh(workdir)
    corpus = dataset / "corpus.txt"
    client_key = secrets.token_urlsafe(24)
    admin_token = secrets.token_urlsafe(24)
    say(f"Demo dataset: {dataset} ({len(items)} utterances); custom model corpus: {corpus}")
    say("Starting the local speech service (PocketSphinx base model + custom model)...")
    emulator = LocalEmulator(
        "--custom",
        f"{CUSTOM_ID}={corpus}",
        "--model-cache",
        str(workdir / "models"),
        log_path=workdir / "emulator.log",
    )
    with emulator:
        config = write_demo_config(
            workdir, emulator.ws_url, client_key, admin_token, lexicon_of(dataset)
        )
        gateway = LocalGateway(config, log_path=workdir / "gateway.log")
        say("Starting the gateway with a 50/50 experiment: base model vs custom model...")
        with gateway:
            say(f"Replaying the dataset through {gateway.http_url} with the Speech SDK...")
            result = run_replay(
                ReplayOptions(
                    dataset=dataset,
                    gateway=gateway.http_url,
                    key=client_key,
                    admin_token=admin_token,
                    concurrency=concurrency,
                    unit_prefix=UNIT_PREFIX,
                ),
                items=items,
                progress=sys.stderr,
            )
        say(result.summary())
    settings = load_settings(config)
    experiment = build_gateway_config(settings.gateway).experiments[0]
    reader = FileReader(workdir / "outcomes.jsonl", workdir / "labels.jsonl")
    inputs = error_inputs(settings, EXPERIMENT, None, None)
    info = ExperimentInfo.of(experiment)
    report = asyncio.run(analyze(reader, EXPERIMENT, info=info, errors=inputs))
    json_path, html_path = workdir / "report.json", workdir / "report.html"
    json_path.write_text(report_json(report), encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    say("")
    say(render_text(report))
    say("")
    say(f"JSON report: {json_path.resolve()}")
    say(f"HTML report: {html_path.resolve()}")
    return report
