"""One Prometheus exposition from the expositions of several worker processes.

With `speech-gateway serve --workers N` (N > 1) a scrape of `/metrics` lands on any one
worker; that worker renders its own series, fetches its siblings' (`gateway.server.workers`)
and answers with `merge_expositions`: every sample gets a `worker` label ("0".."N-1"), and
each family is written once (one HELP and TYPE line) with the samples of every worker under
it. Pure text in, text out: prometheus_client's own parser reads each part and its own
writer renders the result, so the format stays exactly what the client library emits (an
unlabelled single part round-trips byte for byte).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

WORKER_LABEL: Final = "worker"


class _Families(Collector):
    """A fixed list of metric families, for `generate_latest`."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return self._families


def parse_exposition(text: bytes) -> list[Metric]:
    """The families of one exposition; ValueError if it is not a valid one (the caller
    counts that worker as missing rather than failing the scrape)."""
    try:
        return list(text_string_to_metric_families(text.decode("utf-8")))
    except (ValueError, IndexError, KeyError) as exc:  # the parser's failures, the bad UTF-8
        raise ValueError(f"not a Prometheus exposition: {exc}") from exc


def merge_expositions(
    parts: Sequence[tuple[str, Sequence[Metric]]], extra: Iterable[Metric] = ()
) -> bytes:
    """The parsed expositions `(worker, families)` as one exposition, each sample labelled
    `worker=<worker>`, followed by the `extra` families (unlabelled: they describe the merge
    itself). A family's HELP and type are those of the first part that has it."""
    merged: dict[str, Metric] = {}
    for worker, families in parts:
        for family in families:
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            target.samples.extend(
                sample._replace(labels={**sample.labels, WORKER_LABEL: worker})
                for sample in family.samples
            )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*merged.values(), *extra]))
    return generate_latest(registry)
