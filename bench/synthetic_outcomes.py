"""Synthetic outcome stores in the documented record format, for the analysis at scale.

Writes `outcomes.jsonl` and `labels.jsonl` (docs/outcomes.md, docs/labels.md) into a folder:
one experiment, one phase, two variants (`base`, `custom`) split 50/50 by unit, utterances of
a USP session per unit, a share of session failures and no-matches, latencies drawn from
log-normal distributions, and a share of labelled utterances whose references differ from the
recognised text by a few words. Labels carry their WER counts, as the label stores write them
(docs/labels.md). Deterministic for a seed.

    .venv/bin/python bench/synthetic_outcomes.py --records 1000000 --units 200000 --out DIR
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.stats.wer import align
from gateway.text.normalize import NORMALISATION_VERSION

SENTENCE = (
    "please transfer two hundred dollars to my savings account and check the balance of my "
    "credit card then pay the electricity bill before friday thank you very much"
)
WORDS = SENTENCE.split(" ")
START = datetime(2026, 11, 2, 8, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _sentence(rng: random.Random) -> list[str]:
    start = rng.randrange(len(WORDS) - 12)
    return WORDS[start : start + rng.randint(4, 12)]


def _garble(words: list[str], rng: random.Random, error_rate: float) -> list[str]:
    out: list[str] = []
    for word in words:
        roll = rng.random()
        if roll < error_rate / 2:
            out.append(rng.choice(WORDS))  # substitution
        elif roll < error_rate * 0.75:
            continue  # deletion
        else:
            out.append(word)
            if roll > 1 - error_rate / 4:
                out.append(rng.choice(WORDS))  # insertion
    return out


def generate(out: Path, records: int, units: int, labelled: float, seed: int) -> None:
    """Write about `records` primary records over `units` units, and their labels."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    per_unit = max(1, records // units)
    span_s = 14 * 86_400  # two weeks of traffic
    written = 0
    with (
        (out / "outcomes.jsonl").open("w", encoding="ascii") as outcomes,
        (out / "labels.jsonl").open("w", encoding="ascii") as labels,
    ):
        for u in range(units):
            variant = "custom" if u % 2 else "base"
            unit = f"{uuid.UUID(int=rng.getrandbits(128)).hex}"
            client_session = uuid.UUID(int=rng.getrandbits(128)).hex
            session_id = uuid.UUID(int=rng.getrandbits(128)).hex
            at = START + timedelta(seconds=rng.uniform(0, span_s))
            count = per_unit if u < units - 1 else max(1, records - written)
            for index in range(count):
                at += timedelta(seconds=rng.uniform(2, 8))
                roll = rng.random()
                failure = roll < (0.02 if variant == "base" else 0.025)
                record_id = uuid.UUID(int=rng.getrandbits(128)).hex
                words = _sentence(rng)
                hypothesis = _garble(words, rng, 0.12 if variant == "base" else 0.09)
                no_match = not failure and roll > 0.97
                text = None if failure or no_match else " ".join(hypothesis)
                record = {
                    "schema_version": 4,
                    "record_id": record_id,
                    "kind": "session_failure" if failure else "utterance",
                    "timestamp": _iso(at),
                    "experiment": "scale",
                    "phase": "p1",
                    "variant": variant,
                    "backend": variant,
                    "role": "primary",
                    "forced": False,
                    "client": "app",
                    "unit": unit,
                    "unit_source": "query",
                    "session_id": session_id,
                    "protocol": "usp",
                    "mode": "conversation",
                    "locale": "en-us",
                    "turn_id": None if failure else uuid.UUID(int=rng.getrandbits(128)).hex,
                    "utterance_index": None if failure else index,
                    "status": "Error" if failure else ("NoMatch" if no_match else "Success"),
                    "error_code": "upstream_close_1011" if failure else None,
                    "error_detail": None,
                    "audio_offset_ms": None if failure else index * 5000.0,
                    "audio_duration_ms": None if failure else round(rng.uniform(800, 4000), 1),
                    "first_hypothesis_ms": None
                    if failure or no_match
                    else round(rng.lognormvariate(5.5, 0.3), 2),
                    "final_latency_ms": None if failure else round(rng.lognormvariate(6.0, 0.4), 2),
                    "total_ms": None if failure else round(rng.lognormvariate(7.5, 0.3), 2),
                    "text": text,
                    "text_sha256": None,
                    "confidence": None if text is None else round(rng.uniform(0.5, 0.99), 4),
                    "word_count": None if failure else len(hypothesis) * (not no_match),
                    "shadow_drops": None,
                    "failover_from": None,
                    "client_session": client_session,
                }
                outcomes.write(json.dumps(record, separators=(",", ":")) + "\n")
                written += 1
                if text is not None and rng.random() < labelled:
                    counts = align(" ".join(words), text)
                    label = {
                        "record_id": record_id,
                        "text": " ".join(words),
                        "labeller": "bench",
                        "labelled_at": _iso(at + timedelta(days=1)),
                        "source": "import",
                        "normalisation": NORMALISATION_VERSION,
                        "scores": [
                            {
                                "record_id": record_id,
                                "substitutions": counts.substitutions,
                                "deletions": counts.deletions,
                                "insertions": counts.insertions,
                                "hits": counts.hits,
                            }
                        ],
                    }
                    labels.write(json.dumps(label, separators=(",", ":")) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--labelled", type=float, default=0.3, help="share labelled (0.3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.records < 1 or args.units < 1 or args.units > args.records:
        print("synthetic_outcomes: need 1 <= --units <= --records", file=sys.stderr)
        return 2
    generate(args.out, args.records, args.units, args.labelled, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
