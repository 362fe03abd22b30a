"""The demo: a whole A/B experiment, base model against custom model, on one machine.

Starts the local speech service (PocketSphinx base model plus a custom model adapted from
the demo domain's corpus) and a gateway in front of it with a 50/50 experiment, both as
child processes on free ports with settings made here (no config file, no Redis). Replays
the demo dataset through the gateway with the real Speech SDK, one unit per utterance,
attaching each reference transcript as a label. The gateway captures a uniform quarter of
the utterances, and a scripted reviewer labels each in the review workbench's API (as a
person would, with the reference). Then it stops the gateway (which flushes its
outcomes), analyses the experiment from its outcome file, prints the analysis and writes
the JSON and HTML reports. Everything started is stopped again, also on errors.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from gateway.analysis.html_report import render_html
from gateway.analysis.model import ExperimentInfo
from gateway.analysis.report import analyze
from gateway.analysis.text_report import render_text
from gateway.config.gateway_config import build_gateway_config
from gateway.config.settings import load_settings
from gateway.control.model import hash_key
from gateway.stores.preference_store import PREFERENCES_FILE_NAME
from gateway.stores.reader import FileReader
from gateway.stores.review_leases import LEASES_FILE_NAME
from gateway.tools.analyze import error_inputs, report_json, review_inputs
from gateway.tools.dataset import load_dataset
from gateway.tools.local_services import LocalEmulator, LocalGateway
from gateway.tools.replay import ReplayOptions, run_replay

DEFAULT_DATASET = Path("data/demo/banking")
CUSTOM_ID = "banking"
EXPERIMENT = "banking-custom"
# Units "demo-<item id>": with this prefix the 48 demo utterances split 24/24, so every run
# shows the same, balanced experiment (any prefix works; others split e.g. 27/21).
UNIT_PREFIX: Final = "demo"
REVIEWER: Final = "demo-reviewer"
CAPTURE_SHARE: Final = 0.25  # of the utterances, captured for review
CAPTURE_WAIT_S: Final = 15.0

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
    reviewer_token: str | None = None,
) -> Path:
    """The gateway's settings for the demo: one backend, one 50/50 experiment, file store;
    `lexicon`: the experiment's `terms` and `synonyms` files, where the dataset has them.
    The replay client consents to capture, and the experiment captures a uniform quarter of
    its utterances into `workdir/audio` for the demo's reviewer (`reviewer_token`)."""
    workdir = workdir.absolute()  # a relative path in the file would be relative to workdir
    reviewers = {} if reviewer_token is None else {REVIEWER: hash_key(reviewer_token)}
    lines = [
        "[logging]",
        'format = "json"',
        "[gateway]",
        f"admin_tokens_sha256 = {_toml({'demo': hash_key(admin_token)})}",
        f"reviewer_tokens_sha256 = {_toml(reviewers)}",
        "[gateway.audio]",
        f"directory = {_toml(str(workdir / 'audio'))}",
        "[[gateway.clients]]",
        'name = "demo-replay"',
        f"key_sha256 = {_toml(hash_key(client_key))}",
        "capture_consent = true",
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
        # Uniform captures only: the demo's reviewer labels a sample that stands for the
        # traffic (priority captures would be reported apart, docs/review.md).
        "[gateway.experiments.capture]",
        "share = 1.0",
        f"utterance_share = {CAPTURE_SHARE}",
        "priorities = []",
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
        PREFERENCES_FILE_NAME,
        LEASES_FILE_NAME,
    ):
        (workdir / name).unlink(missing_ok=True)
    shutil.rmtree(workdir / "audio", ignore_errors=True)


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
    reviewer_token = secrets.token_urlsafe(24)
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
            workdir, emulator.ws_url, client_key, admin_token, lexicon_of(dataset), reviewer_token
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
            reviewed = review_captures(gateway.http_url, reviewer_token, workdir)
            say(f"Scripted reviewer: {reviewed} captured utterances reviewed in the workbench")
    settings = load_settings(config)
    experiment = build_gateway_config(settings.gateway).experiments[0]
    reader = FileReader(workdir / "outcomes.jsonl", workdir / "labels.jsonl")
    inputs = error_inputs(settings, EXPERIMENT, None, None)
    info = ExperimentInfo.of(experiment)
    reviews = asyncio.run(review_inputs(settings, EXPERIMENT, reader))
    report = asyncio.run(analyze(reader, EXPERIMENT, info=info, errors=inputs, reviews=reviews))
    json_path, html_path = workdir / "report.json", workdir / "report.html"
    json_path.write_text(report_json(report), encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    say("")
    say(render_text(report))
    say("")
    say(f"JSON report: {json_path.resolve()}")
    say(f"HTML report: {html_path.resolve()}")
    return report


def review_captures(gateway_url: str, token: str, workdir: Path) -> int:
    """The demo's scripted reviewer: claims every captured utterance in the review workbench's
    API (docs/review.md) and saves the reference transcript that the replay attached as its
    label, as a person would type it. Waits first for the gateway to have stored the
    captures of the replay (its writer works in the background). Returns the items saved."""
    base = f"{gateway_url}/admin/review/experiments/{EXPERIMENT}"
    stored = _settled_captures(base, token)
    if not stored:
        return 0
    references = _references(workdir)
    saved = 0
    while (item := _call(f"{base}/claim", token, {})["item"]) is not None:
        capture_id = item["capture_id"]
        text = references.get(capture_id) or item["prefill"] or "-"
        body = {"text": text, "choice": None}
        _call(f"{base}/items/{capture_id}/save", token, body)
        saved += 1
    return saved


def _settled_captures(base: str, token: str) -> int:
    """The number of stored captures once it stops growing (at most CAPTURE_WAIT_S)."""
    deadline = time.monotonic() + CAPTURE_WAIT_S
    last = -1
    while time.monotonic() < deadline:
        try:
            now = int(_call(f"{base}/progress", token)["captures"])
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # 404: no capture stored for the experiment yet
                raise
            now = 0
        if now == last and now > 0:
            return now
        last = now
        time.sleep(0.5)
    return max(last, 0)


def _references(workdir: Path) -> dict[str, str]:
    """capture id -> the label the replay attached to its primary record."""
    labels: dict[str, str] = {}
    with (workdir / "labels.jsonl").open(encoding="utf-8") as file:
        for line in file:
            label = json.loads(line)
            labels[label["record_id"]] = label["text"]
    found: dict[str, str] = {}
    for sidecar in (workdir / "audio").rglob("*.json"):
        capture = json.loads(sidecar.read_text(encoding="utf-8"))
        record_id = capture.get("primary", {}).get("record_id")
        if record_id in labels:
            found[capture["capture_id"]] = labels[record_id]
    return found


def _call(url: str, token: str, body: Json | None = None) -> Json:
    """One JSON call to the gateway (GET without a body, else POST)."""
    request = urllib.request.Request(  # noqa: S310 - the demo's own gateway on loopback
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        found: Json = json.loads(answer.read())
        return found
