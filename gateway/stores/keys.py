"""Redis key names, in one place: every key and channel any store reads or writes.

Every key of one experiment carries the experiment id as a hash tag (`{...}`), so all of
an experiment's keys live in one Redis Cluster slot and a Lua script may touch them
together; the control plane's keys share the tag `{control}` for the same reason. The
prefix isolates deployments (and tests) sharing one Redis.

Outcomes and labels (`RedisKeys`; the outcome sink, the reader, the label store):

    <prefix>:experiments                    SET     experiment ids that have outcomes
    <prefix>:{<experiment>}:outcomes        STREAM  outcome records, field "r" = record JSON;
                                                    consumer group "export": the exporter
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

Guardrail counters (`RedisKeys.guard`, `RedisKeys.guard_units`; the counter store), each
expiring a while after its last write:

    <prefix>:{<experiment>}:guard:<phase>         HASH  "<variant>|<field>" -> count
    <prefix>:{<experiment>}:guard:<phase>:units   HASH  "<variant>|<field>|<unit>" -> count

Experiment state (`ControlKeys`; the control store):

    <prefix>:{control}:state                HASH     experiment -> state document (JSON text)
    <prefix>:{control}:version              HASH     experiment -> version (decimal, >= 1)
    <prefix>:{control}:audit:<experiment>   STREAM   audit entries, field "a" = entry JSON,
                                                     trimmed to about the store's audit_maxlen
    <prefix>:control:changes                CHANNEL  experiment ids, one message per write
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.constants import NO_EXPERIMENT

DEFAULT_PREFIX = "sgw"
RECORD_FIELD = "r"
LABEL_FIELD = "l"
# The consumer group of the continuous exporter on every outcome stream; while it exists,
# the outcome sink's retention never trims an entry it has not acknowledged (docs/export.md).
EXPORT_GROUP = "export"
# Record ids kept per unit and utterance index (labels by unit): a long-lived unit (a real
# user) has a session a day, and its index entry must not grow without bound.
UNIT_RECORDS_MAX = 100


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """The outcome, label and guardrail counter keys of one prefix."""

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

    def guard(self, experiment: str, phase: str) -> str:
        """The hash of an experiment phase's guardrail counters."""
        return f"{self.prefix}:{{{experiment}}}:guard:{phase}"

    def guard_units(self, experiment: str, phase: str) -> str:
        """The hash of an experiment phase's per-unit guardrail counters."""
        return f"{self.guard(experiment, phase)}:units"


@dataclass(frozen=True, slots=True)
class ControlKeys:
    """The control plane's Redis names: one hash tag, so one commit script touches all."""

    prefix: str = DEFAULT_PREFIX

    @property
    def state(self) -> str:
        return f"{self.prefix}:{{control}}:state"

    @property
    def version(self) -> str:
        return f"{self.prefix}:{{control}}:version"

    def audit(self, experiment: str) -> str:
        return f"{self.prefix}:{{control}}:audit:{experiment}"

    @property
    def changes(self) -> str:
        """A pub/sub channel, not a key (a classic channel reaches every cluster node)."""
        return f"{self.prefix}:control:changes"
