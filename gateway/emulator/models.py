"""The emulator's models: the shipped en-US base model and custom models built from text.

A custom model is the base acoustic model with a language model estimated from a domain
corpus (`language_model.build_arpa`: interpolated modified Kneser-Ney trigrams) and a
dictionary of the corpus vocabulary (`lexicon`), the same idea as a Custom Speech model
trained on related text. Built models are cached on disk by corpus content, so a restart
with the same corpus reuses them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from gateway.emulator.decoding import ModelSpec
from gateway.emulator.language_model import build_arpa
from gateway.emulator.lexicon import Lexicon, write_dictionary
from gateway.errors import ConfigError
from gateway.logging import get_logger
from gateway.text.normalize import corpus_sentences

log = get_logger(__name__)

BASE_MODEL = "base"
# Bump when the way models are built changes, so stale cached models are rebuilt.
BUILD_VERSION = "1"
LM_ORDER = 3


def model_specs(custom: dict[str, Path], cache_dir: Path) -> dict[str, ModelSpec]:
    """Every model the emulator serves, building (or reusing) the custom ones."""
    specs = {BASE_MODEL: ModelSpec(BASE_MODEL)}
    lexicon: Lexicon | None = None
    for endpoint_id, corpus in sorted(custom.items()):
        if endpoint_id == BASE_MODEL:
            raise ConfigError(f"emulator.custom.{endpoint_id}", "'base' is the base model's name")
        lexicon = lexicon or Lexicon.load()
        specs[endpoint_id] = build_custom_model(endpoint_id, corpus, cache_dir, lexicon)
    return specs


def build_custom_model(
    endpoint_id: str, corpus: Path, cache_dir: Path, lexicon: Lexicon
) -> ModelSpec:
    field = f"emulator.custom.{endpoint_id}"
    try:
        text = corpus.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(field, f"cannot read corpus {corpus}: {exc}") from exc
    digest = hashlib.sha256(f"{BUILD_VERSION}\n{LM_ORDER}\n{text}".encode()).hexdigest()[:16]
    folder = cache_dir / f"{endpoint_id}-{digest}"
    lm_path, dict_path = folder / "model.arpa", folder / "model.dict"
    if lm_path.is_file() and dict_path.is_file():
        return ModelSpec(endpoint_id, lm=lm_path, dictionary=dict_path)
    sentences = corpus_sentences(text)
    if not sentences:
        raise ConfigError(field, f"corpus {corpus} has no sentences")
    folder.mkdir(parents=True, exist_ok=True)
    vocabulary = sorted({word for sentence in sentences for word in sentence})
    # Write to temporary names and rename, so a crash never leaves a half-built model.
    _write_atomic(lm_path, build_arpa(sentences, order=LM_ORDER))
    tmp_dict = dict_path.with_suffix(".tmp")
    guessed = write_dictionary(tmp_dict, vocabulary, lexicon)
    os.replace(tmp_dict, dict_path)
    log.info(
        "custom_model_built",
        endpoint_id=endpoint_id,
        sentences=len(sentences),
        vocabulary=len(vocabulary),
        guessed_pronunciations=len(guessed),
    )
    return ModelSpec(endpoint_id, lm=lm_path, dictionary=dict_path)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
