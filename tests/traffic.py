"""Synthetic experiment traffic for the analysis tests: records and labels, reproducibly."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from gateway.analysis.model import AnalysisOptions, ExperimentInfo
from gateway.analysis.report import build_report
from gateway.outcomes.labels import Label
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource

SENTENCES = [
    "what is my available balance today",
    "send two hundred dollars to my savings account",
    "close my retirement account please",
    "why was i charged a fee last month",
]
INFO = ExperimentInfo(control="base", phase="p1", shares={"base": 0.5, "custom": 0.5})


def stamp(second: int) -> str:
    return f"2026-11-21T{12 + second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}.000Z"


@dataclass
class Traffic:
    """Records and labels of a synthetic experiment, made reproducibly."""

    seed: int = 1
    records: list[OutcomeRecord] = field(default_factory=list)
    labels: dict[str, Label] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def utterance(
        self,
        variant: str | None,
        at: int,
        *,
        word_error: float = 0.0,
        label: bool = True,
        unit: str | None = None,
        **values: Any,
    ) -> OutcomeRecord:
        reference = self.rng.choice(SENTENCES)
        words = [w if self.rng.random() >= word_error else "uh" for w in reference.split()]
        fields: dict[str, Any] = {
            "kind": Kind.UTTERANCE,
            "timestamp": stamp(at),
            "experiment": "e",
            "phase": "p1",
            "variant": variant,
            "backend": "local",
            "role": Role.PRIMARY,
            "client": "app",
            "unit": unit or f"unit-{len(self.records)}",
            "unit_source": UnitSource.QUERY,
            "session_id": f"session-{len(self.records)}",
            "protocol": Protocol.USP,
            "utterance_index": 0,
            "status": "Success",
            "first_hypothesis_ms": 200 + 100 * self.rng.random(),
            "final_latency_ms": 300 + 200 * self.rng.random(),
            "text": " ".join(words),
            "audio_offset_ms": 0.0,
            "audio_duration_ms": 2000.0,
        }
        fields.update(values)
        record = OutcomeRecord(**fields)
        self.records.append(record)
        if label:
            self.labels[record.record_id] = Label(
                record_id=record.record_id, text=reference, labeller="test", source="import"
            )
        return record

    def failure(self, variant: str, at: int, status: str, code: str) -> OutcomeRecord:
        record = OutcomeRecord(
            kind=Kind.SESSION_FAILURE,
            timestamp=stamp(at),
            experiment="e",
            phase="p1",
            variant=variant,
            backend="local",
            role=Role.PRIMARY,
            client="app",
            unit=f"unit-{len(self.records)}",
            unit_source=UnitSource.QUERY,
            session_id=f"session-{len(self.records)}",
            protocol=Protocol.USP,
            status=status,
            error_code=code,
        )
        self.records.append(record)
        return record

    def ab(self, n: int, base_error: float, custom_error: float, **custom: Any) -> None:
        for i in range(n):
            self.utterance("base", 2 * i, word_error=base_error)
            self.utterance("custom", 2 * i + 1, word_error=custom_error, **custom)

    def report(
        self, info: ExperimentInfo | None = INFO, errors: Any = None, **options: Any
    ) -> dict[str, Any]:
        return build_report(
            "e",
            self.records,
            self.labels,
            info=info,
            options=AnalysisOptions(**options),
            errors=errors,
        )
