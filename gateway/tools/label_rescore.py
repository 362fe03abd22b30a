"""`speech-gateway label rescore`: store current WER counts with the labels that lack them.

Labels carry the WER counts of their records, computed when they are stored
(`gateway.outcomes.label_scores`). This command brings the others up to date in the
configured label store (`LabelStore.rescore`): labels stored before labels carried counts,
labels whose counts were made under another normalisation version (after an upgrade that
changed `gateway.text.normalize.NORMALISATION_VERSION`), and labels whose shadow record
reached the store after them. It prints one line per experiment with what it did; running it
again changes nothing. docs/labels.md ("Stored WER counts") describes when to run it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from gateway.config.settings import Settings
from gateway.errors import ConfigError
from gateway.outcomes.labels import LabelError, check_experiment
from gateway.stores.factory import open_label_store
from gateway.stores.label_store import LabelStore, RescoreResult


async def run_label_rescore(
    args: argparse.Namespace, settings: Settings, say: Callable[[str], None] = print
) -> list[RescoreResult]:
    """Rescore `args.experiment` (a list of ids) or, with `args.all`, every experiment of
    the store; say one summary line each. ConfigError for an invalid or unknown id."""
    named: list[str] = list(dict.fromkeys(args.experiment or ()))
    for experiment in named:
        try:
            check_experiment(experiment)
        except LabelError as exc:
            raise ConfigError("--experiment", exc.problem) from None
    async with open_label_store(settings.outcomes, settings.redis.connection()) as store:
        experiments = await _chosen(store, named)
        if not experiments:
            say("no experiment has outcome records: nothing to rescore")
        results: list[RescoreResult] = []
        for experiment in experiments:
            result = await store.rescore(experiment)
            say(result.summary())
            results.append(result)
    return results


async def _chosen(store: LabelStore, named: list[str]) -> list[str]:
    known = await store.experiments()
    if not named:
        return known
    unknown = [experiment for experiment in named if experiment not in known]
    if unknown:
        have = ", ".join(known) if known else "none"
        raise ConfigError(
            "--experiment",
            f"no outcome records in experiment {unknown[0]!r} (the store has: {have})",
        )
    return named
