"""Label stores: reference transcripts kept beside the outcome records, in either store.

The API (`gateway.server.admin.labels`) and the CLI import (`import_labels`) write through a
`LabelStore`; the analysis reads labels back through it (or `gateway.stores.reader`). A
label attaches to an outcome record by `record_id`, so a store only accepts ids of records
it holds: an unknown id is reported, never stored. Every write is kept: the current label of
a record is the last one written ("last wins"), and the earlier ones stay in an append-only
audit trail with who wrote them and when.

* `FileLabelStore` (`gateway.stores.file_label_store`): labels appended as JSON lines to a
  file next to the outcome file.
* `RedisLabelStore` (`gateway.stores.redis_label_store`): the current label in the
  experiment's `labels` hash, every write in its `label-audit` stream (key layout:
  `gateway.stores.keys`).

This module holds what both share: the `LabelStore` protocol and its result types, where
the label file lies beside the outcome file (`labels_path_beside`), and the CLI import,
which writes through either store.

A Redis that is unavailable, or a label or outcome file that cannot be read or written,
raises `StoreUnavailable` from every lookup and write.

Each label is stored with the WER counts of its record and of the record's shadows
(`gateway.outcomes.label_scores`): a store reads those records' text when it stores the
label, and `rescore` brings labels without current counts up to date (labels stored before
labels carried counts, counts of another normalisation version, shadows that arrived late).

A client that never saw record ids (a replay) names records by unit instead: `find_units`
resolves a `UnitQuery` (unit pseudonym, utterance index, optional experiment) to the ids of
the primary utterance/request records it made, from an index each store keeps beside the
record ids (`units`); the caller then labels those ids.

docs/labels.md describes both for operators and analysts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol

from gateway.errors import ConfigError
from gateway.outcomes.labels import (
    Label,
    LabelError,
    LabelInput,
    LabelSource,
    UnitQuery,
    check_labeller,
    raise_first_problem,
    scan_labels,
)

LABELS_FILE_NAME: Final = "labels.jsonl"


class LabelStatus(StrEnum):
    STORED = "stored"  # the record had no label; now it has this one
    RELABELLED = "relabelled"  # the record had a label; this one replaces it (both audited)
    UNKNOWN = "unknown"  # no outcome record has this id; nothing stored


@dataclass(frozen=True, slots=True)
class LabelResult:
    """What happened to one label of a `put`."""

    record_id: str
    status: LabelStatus
    previous: str | None = None  # RELABELLED: the text it replaced

    def to_dict(self) -> dict[str, str]:
        out = {"record_id": self.record_id, "status": self.status.value}
        if self.status is LabelStatus.RELABELLED and self.previous is not None:
            out["previous"] = self.previous
        return out


@dataclass(frozen=True, slots=True)
class PutResult:
    """The results of a `put`, one per label in the order given.

    `committed` is False when `all_or_nothing` refused the batch because some ids are unknown:
    nothing was stored, and `results` then holds only the unknown ids.
    """

    results: tuple[LabelResult, ...]
    committed: bool = True

    @property
    def unknown(self) -> list[str]:
        """Unknown record ids, each once, in the order given."""
        return list(dict.fromkeys(r.record_id for r in self.results if r.status is _UNKNOWN))

    def count(self, status: LabelStatus) -> int:
        return sum(result.status is status for result in self.results)


_UNKNOWN = LabelStatus.UNKNOWN


@dataclass(frozen=True, slots=True)
class UnitMatch:
    """A record that a `UnitQuery` found: its id and its experiment key."""

    record_id: str
    experiment: str

    def to_dict(self) -> dict[str, str]:
        return {"record_id": self.record_id, "experiment": self.experiment}


@dataclass(frozen=True, slots=True)
class RescoreResult:
    """What `rescore` did with the current labels of one experiment."""

    experiment: str
    labels: int  # current labels of the experiment
    rescored: int  # written again with new counts (none, stale, or missing a shadow)
    current: int  # counts already current and complete: left alone
    not_found: int  # the record is no longer in the store (rotated, trimmed): left alone

    def summary(self) -> str:
        """One line for the terminal."""
        return (
            f"{self.experiment}: {self.labels:,} labels, {self.rescored:,} rescored, "
            f"{self.current:,} already current, {self.not_found:,} without their record"
        )


class LabelStore(Protocol):
    """Where labels are kept: beside the outcome records, whichever store holds those."""

    async def put(
        self,
        labels: Sequence[LabelInput],
        labeller: str,
        source: LabelSource,
        *,
        all_or_nothing: bool = False,
    ) -> PutResult:
        """Store labels for known record ids, in order (a later label of the same id wins).

        Unknown ids are reported and skipped, or, with `all_or_nothing`, refuse the whole
        batch. ValueError (a `LabelError`) if `labeller` is not a valid name.
        """
        ...

    async def get(self, record_ids: Iterable[str]) -> dict[str, Label]:
        """The current labels of those of these records that have one."""
        ...

    async def all(self, experiment: str) -> dict[str, Label]:
        """record_id -> current label, for every labelled record of the experiment
        (`gateway.constants.NO_EXPERIMENT` for records no experiment routed)."""
        ...

    async def experiments(self) -> list[str]:
        """Experiment keys that have outcome records, sorted."""
        ...

    async def rescore(self, experiment: str) -> RescoreResult:
        """Store WER counts with every current label of the experiment that has none, has
        counts of another normalisation version, or lacks a shadow record that has arrived
        since (`gateway.outcomes.label_scores.needs_scores`); leave the others alone. Text,
        labeller, time and source stay as they were; running it again changes nothing."""
        ...

    async def find_units(self, queries: Sequence[UnitQuery]) -> list[tuple[UnitMatch, ...]]:
        """For each query, in order, the primary utterance/request records of its unit
        pseudonym and utterance index (every session's, oldest first within an experiment;
        at most the newest `UNIT_RECORDS_MAX` per experiment), in its experiment or in any.
        Empty: no such record (yet: records reach the store asynchronously)."""
        ...


def labels_path_beside(outcomes_path: Path) -> Path:
    """The label file that belongs to an outcome file: `labels.jsonl` in its directory."""
    return outcomes_path.with_name(LABELS_FILE_NAME)


# -- the CLI import -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What `speech-gateway label import` did with a file."""

    path: Path
    stored: int  # labels of records that had none
    relabelled: int  # labels that replaced an earlier one
    unknown: tuple[tuple[int, str], ...]  # (line, record id) of ids no record has: skipped
    skipped: tuple[ConfigError, ...]  # bad lines skipped with skip_invalid (first 1,000)
    invalid: int  # bad lines skipped, all of them

    def summary(self) -> str:
        """One line for the terminal, e.g. `imported 120 labels from x.csv: 118 new, ...`."""
        text = (
            f"imported {self.stored + self.relabelled:,} labels from {self.path}: "
            f"{self.stored:,} new, {self.relabelled:,} relabelled"
        )
        if self.unknown:
            text += f", {len(self.unknown):,} unknown record ids skipped"
        if self.invalid:
            text += f", {self.invalid:,} invalid lines skipped"
        return text


async def import_labels(
    path: Path, store: LabelStore, labeller: str, skip_invalid: bool = False
) -> ImportResult:
    """Import a CSV or JSON-lines label file (`gateway.outcomes.labels.scan_labels`).

    All or nothing unless `skip_invalid`: a bad line or a record id that no outcome record
    has raises ConfigError(`path:line`, problem) and nothing is stored. With `skip_invalid`
    the bad lines and unknown ids are skipped and reported in the result.
    """
    try:
        check_labeller(labeller)
    except LabelError as exc:
        raise ConfigError("--by", exc.problem) from None
    parsed = await asyncio.to_thread(scan_labels, path)
    if not skip_invalid:
        raise_first_problem(parsed)
    result = await store.put(parsed.labels, labeller, "import", all_or_nothing=not skip_invalid)
    line_of: dict[str, int] = {}
    for entry in parsed.lines:
        line_of.setdefault(entry.label.record_id, entry.line)
    unknown = tuple((line_of[rid], rid) for rid in result.unknown)
    if not result.committed:
        line, rid = unknown[0]
        more = len(unknown) - 1
        others = f" (and {more:,} more unknown ids)" if more else ""
        raise ConfigError(
            f"{path}:{line}",
            f"no outcome record has id {rid}{others}; nothing was imported "
            "(--skip-invalid imports the rest)",
        )
    return ImportResult(
        path=path,
        stored=result.count(LabelStatus.STORED),
        relabelled=result.count(LabelStatus.RELABELLED),
        unknown=unknown,
        skipped=parsed.problems,
        invalid=parsed.invalid,
    )
