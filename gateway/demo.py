"""The demo: the demo dataset through the base and the custom model, with the real SDK.

Starts a local emulator serving the base model and a custom model adapted from the demo
domain's corpus, recognises every utterance with the Azure Speech SDK against each model,
and prints the corpus WER of both.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gateway.dataset import LabelledUtterance, load_dataset
from gateway.local_services import LocalEmulator
from gateway.speech_client import speech_config, transcribe_file
from gateway.stats.wer import WerCounts, align

DEFAULT_DATASET = Path("data/demo/banking")
CUSTOM_ID = "banking"


@dataclass(frozen=True, slots=True)
class ModelScore:
    model: str
    counts: WerCounts
    failures: int


def score_model(
    endpoint: str, items: list[LabelledUtterance], endpoint_id: str | None, concurrency: int
) -> ModelScore:
    config = speech_config(endpoint, endpoint_id=endpoint_id)

    def run(item: LabelledUtterance) -> tuple[WerCounts, bool]:
        transcript = transcribe_file(config, item.audio)
        return align(item.text, transcript.text), transcript.error_code is not None

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(run, items))
    total = WerCounts(0, 0, 0, 0)
    for counts, _failed in results:
        total = total + counts
    return ModelScore(endpoint_id or "base", total, sum(failed for _c, failed in results))


def run_demo(
    dataset: Path, workdir: Path, concurrency: int, say: Callable[[str], None]
) -> list[ModelScore]:
    items = load_dataset(dataset)
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = dataset / "corpus.txt"
    say(f"Demo dataset: {dataset} ({len(items)} utterances); custom model corpus: {corpus}")
    say("Starting the local emulator (PocketSphinx base model + custom model)...")
    emulator = LocalEmulator(
        "--custom",
        f"{CUSTOM_ID}={corpus}",
        "--model-cache",
        str(workdir / "models"),
        log_path=workdir / "emulator.log",
    )
    with emulator:
        endpoint = f"{emulator.ws_url}/speech/recognition/conversation/cognitiveservices/v1"
        scores = []
        for endpoint_id in (None, CUSTOM_ID):
            say(f"Recognising with the {endpoint_id or 'base'} model through the Speech SDK...")
            scores.append(score_model(endpoint, items, endpoint_id, concurrency))
    say("")
    say(f"{'model':<10} {'WER':>7} {'subst':>6} {'del':>6} {'ins':>6} {'ref words':>10}")
    for score in scores:
        c = score.counts
        say(
            f"{score.model:<10} {c.wer:>7.1%} {c.substitutions:>6} {c.deletions:>6}"
            f" {c.insertions:>6} {c.reference_words:>10}"
        )
    return scores
