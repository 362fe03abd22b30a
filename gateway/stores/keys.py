"""Redis key names, in one place: every key any store reads or writes.

Every key of one experiment carries the experiment id as a hash tag (`{...}`), so all of
an experiment's keys live in one Redis Cluster slot and a Lua script may touch them
together. The prefix isolates deployments (and tests) sharing one Redis.

    <prefix>:experiments                    SET     experiment ids that have outcomes
    <prefix>:{<experiment>}:outcomes        STREAM  outcome records, field "r" = record JSON
    <prefix>:{<experiment>}:seen            ZSET    record_id -> ms of first write (dedup window)
    <prefix>:{<experiment>}:records         HASH    record_id -> stream entry id (label targets)
    <prefix>:{<experiment>}:units           HASH    "<unit>:<utterance_index>" -> record ids of the
                                                    primary utterance/request records of that unit
                                                    pseudonym and index, space-separated, oldest
                                                    first, the newest UNIT_RECORDS_MAX kept
    <prefix>:{<experiment>}:indexed         LIST    "<entry id> <record_id> <units field>" of each
                                                    record in `records`/`units`, in stream order:
                                                    how the hashes forget what the stream trimmed
    <prefix>:{<experiment>}:labels          HASH    record_id -> current label JSON (last wins)
    <prefix>:{<experiment>}:label-audit     STREAM  every label write, field "l" = label JSON
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.constants import NO_EXPERIMENT

DEFAULT_PREFIX = "sgw"
RECORD_FIELD = "r"
LABEL_FIELD = "l"
# Record ids kept per unit and utterance index (labels by unit): a long-lived unit (a real
# user) has a session a day, and its index entry must not grow without bound.
UNIT_RECORDS_MAX = 100


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = DEFAULT_PREFIX

    @property
    def experiments(self) -> str:
        return f"{self.prefix}:experiments"

    def _tagged(self, experiment: str | None, name: str) -> str:
        return f"{self.prefix}:{{{experiment or NO_EXPERIMENT}}}:{name}"

    def outcomes(self, experiment: str | None) -> str:
        return self._tagged(experiment, "outcomes")

    def seen(self, experiment: str | None) -> str:
        return self._tagged(experiment, "seen")

    def records(self, experiment: str | None) -> str:
        return self._tagged(experiment, "records")

    def units(self, experiment: str | None) -> str:
        return self._tagged(experiment, "units")

    def indexed(self, experiment: str | None) -> str:
        return self._tagged(experiment, "indexed")

    def labels(self, experiment: str | None) -> str:
        return self._tagged(experiment, "labels")

    def label_audit(self, experiment: str | None) -> str:
        return self._tagged(experiment, "label-audit")
