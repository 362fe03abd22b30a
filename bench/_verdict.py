"""Whether a relay benchmark run measured the gateway or the harness: the void rules.

Pure functions over numbers a run has already taken (`usp_streams.py` and `rest_requests.py`
take them; `_common.CpuMeter` and `WorkerCpu` read /proc). A run is *void* when the harness
(the emulator, nginx, the load generators) or the machine, not the gateway, may have set its
latencies: then "added" (gateway percentile minus direct percentile) is a difference of two
queues, and neither a pass nor a fail says anything about the gateway. A void sweep step
does not count as the gateway failing; the sweep then cannot tell.

Every threshold is a named constant below, with the reason for its value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

# -- the thresholds ------------------------------------------------------------------------

# The target a sweep checks: the gateway's added p99 (frame and final) over direct.
ADDED_P99_LIMIT_MS = 5.0
# Direct (client → emulator, no gateway) frame or final p99 above this means the harness's
# own tail is as large as the effect judged (ADDED_P99_LIMIT_MS): an "added" p99 is then
# noise. A quiet 2-core machine gives 0.8-2.5 ms with 1,000 gateway streams beside 100
# direct ones.
USP_DIRECT_P99_MAX_MS = ADDED_P99_LIMIT_MS
# REST direct p99 (100 KB POST in, JSON out, on loopback) was 2.1-2.3 ms on the quiet
# reference machine; above 4 times that the emulator or the client is queueing requests and
# the added p50 that the REST target judges (<= 1 ms) is smaller than the queueing.
REST_DIRECT_P99_MAX_MS = 10.0
# A load generator sending its frames (requests) later than this at p99 is behind its
# schedule: latencies then start from a late send and the offered load is not what was asked.
LATE_P99_MAX_MS = 10.0
# A single-threaded process (emulator, nginx's one worker, each load generator) busy this
# share of a core or more is close to saturation: by queueing theory (M/M/1) the mean wait
# is rho / (1 - rho) service times, 5.7 at 0.85, and grows without bound above it.
HARNESS_CORE_SHARE_MAX = 0.85
# The same bound for the harness's processes together on the CPUs `--pin` confines them to
# (on 2 cores: one CPU for emulator, nginx and every load generator).
HARNESS_CPUS_SHARE_MAX = 0.85
# A harness process's mean wait for a CPU each time it was put on one (schedstat: time
# runnable but not running / times scheduled, after a wake-up or a preemption alike): the
# wait a message reaching it met on average, at most a tenth of the target. A mean does not
# bound the tail (a few long waits among many short ones can hide in it): the tail is what
# the direct-p99 rule measures, on messages through the same processes. This rule catches a
# harness whose typical message waits. Measured with 1,000 gateway streams on the bare
# backend: 34-173 µs while those processes waited 14-28 % of the window, with direct's p99
# at 1.1-3.4 ms: many short waits, not scheduler slices of milliseconds.
HARNESS_WAIT_PER_SCHEDULING_MAX_US = ADDED_P99_LIMIT_MS * 1000 / 10
# The same for REST runs: a tenth of the added p50 (<= 1 ms) that the REST target judges.
REST_HARNESS_WAIT_PER_SCHEDULING_MAX_US = 100.0
# Where the kernel gives no count of schedulings: runnable but not running (schedstat's
# second field) for more than a tenth of the window. If those waits were scheduler slices
# (milliseconds), one message in ten would wait that long, more than a p99 can absorb.
HARNESS_WAIT_SHARE_MAX = 0.10
# The gateway's event-loop thread waiting for a CPU is the machine's doing, not the
# gateway's: with `--pin` its core is its own (its other threads' waits do not count, and
# their competition with the loop is the gateway's own). Quiet runs: 1.3-3 %.
GATEWAY_WAIT_SHARE_MAX = 0.05
# All CPUs (/proc/stat, everyone's processes) this busy leave 0.1 core in 1 free on average,
# less than a burst of timer callbacks falling due in the same millisecond needs: every
# process's wake-up then queues behind another's.
MACHINE_BUSY_MAX = 0.90
# The reference proxy (nginx: one C worker, a few µs per frame) adding more than the target
# itself in the same run means a stall outside the gateway (the emulator's answers, the
# machine) hit the proxied paths: the gateway's added p99 in that run is not its own.
REFERENCE_ADDED_P99_MAX_MS = ADDED_P99_LIMIT_MS

# -- the measurements ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """One process over the measured window."""

    core_share: float  # (utime + stime) / window: 1.0 = one core busy all the time
    wait_share: float  # runnable-but-not-running time of all its threads / window
    # That time / the times its threads were put on a CPU: the mean wait of each (µs)
    wait_per_scheduling_us: float = math.nan


@dataclass(frozen=True, slots=True)
class RunLoad:
    """What a run measured that says whether it measured the gateway."""

    direct_p99_ms: float
    direct_p99_max_ms: float  # USP_DIRECT_P99_MAX_MS or REST_DIRECT_P99_MAX_MS
    late_p99_ms: float  # the load generators' worst target
    harness: Mapping[str, Load]  # emulator, nginx, generator-0, generator-1, ...
    gateway: Load | None
    harness_cpus: int | None  # CPUs the harness is confined to (--pin); None: all of them
    machine_busy: float  # share of all CPUs busy, everyone's processes
    reference_errors: Mapping[str, int]  # failed streams (requests) of direct and nginx
    # The reference proxy's added p99s ("frame", "final"), when nginx ran; empty: not run.
    reference_added_p99_ms: Mapping[str, float] = field(default_factory=dict)
    # HARNESS_WAIT_PER_SCHEDULING_MAX_US, or REST_HARNESS_WAIT_PER_SCHEDULING_MAX_US
    harness_wait_max_us: float = HARNESS_WAIT_PER_SCHEDULING_MAX_US


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Literal["valid", "void"]
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons)}

    def describe(self) -> str:
        if self.status == "valid":
            return "valid (the harness kept up and the machine had room)"
        return "VOID: " + "; ".join(self.reasons)


# -- the rules -----------------------------------------------------------------------------


def _over(value: float, bound: float) -> bool:
    """NaN (not measured) never voids a run: a missing measurement is not evidence."""
    return not math.isnan(value) and value > bound


def direct_too_slow(load: RunLoad) -> str | None:
    if _over(load.direct_p99_ms, load.direct_p99_max_ms):
        return (
            f"direct p99 {load.direct_p99_ms:.2f} ms > {load.direct_p99_max_ms:g} ms: "
            "the harness is slow without the gateway"
        )
    return None


def generators_behind(load: RunLoad) -> str | None:
    if _over(load.late_p99_ms, LATE_P99_MAX_MS):
        return (
            f"load generator behind its schedule (send p99 {load.late_p99_ms:.1f} ms late "
            f"> {LATE_P99_MAX_MS:g} ms)"
        )
    return None


def harness_saturated(load: RunLoad) -> list[str]:
    reasons = []
    for name, row in load.harness.items():
        if _over(row.core_share, HARNESS_CORE_SHARE_MAX):
            reasons.append(
                f"{name} at {100 * row.core_share:.0f} % of a core "
                f"> {100 * HARNESS_CORE_SHARE_MAX:.0f} %"
            )
        if math.isnan(row.wait_per_scheduling_us):
            if _over(row.wait_share, HARNESS_WAIT_SHARE_MAX):
                reasons.append(
                    f"{name} waited for a CPU {100 * row.wait_share:.1f} % of the window "
                    f"> {100 * HARNESS_WAIT_SHARE_MAX:.0f} %"
                )
        elif row.wait_per_scheduling_us > load.harness_wait_max_us:
            reasons.append(
                f"{name} waited {row.wait_per_scheduling_us:.0f} us for a CPU each time it was "
                f"scheduled > {load.harness_wait_max_us:.0f} us ({100 * row.wait_share:.1f} % "
                "of the window)"
            )
    if load.harness_cpus:
        total = sum(
            row.core_share for row in load.harness.values() if math.isfinite(row.core_share)
        )
        if total / load.harness_cpus > HARNESS_CPUS_SHARE_MAX:
            reasons.append(
                f"the harness's {load.harness_cpus} CPU(s) {100 * total / load.harness_cpus:.0f} "
                f"% busy with it alone > {100 * HARNESS_CPUS_SHARE_MAX:.0f} %"
            )
    return reasons


def gateway_starved(load: RunLoad) -> str | None:
    if load.gateway is not None and _over(load.gateway.wait_share, GATEWAY_WAIT_SHARE_MAX):
        return (
            f"gateway's event loop waited for a CPU {100 * load.gateway.wait_share:.1f} % "
            f"of the window > {100 * GATEWAY_WAIT_SHARE_MAX:.0f} %: something else had its CPU"
        )
    return None


def machine_full(load: RunLoad) -> str | None:
    if _over(load.machine_busy, MACHINE_BUSY_MAX):
        return (
            f"machine {100 * load.machine_busy:.0f} % busy (all CPUs, everyone) "
            f"> {100 * MACHINE_BUSY_MAX:.0f} %"
        )
    return None


def reference_too_slow(load: RunLoad) -> str | None:
    worst = max(
        (value for value in load.reference_added_p99_ms.values() if not math.isnan(value)),
        default=math.nan,
    )
    if _over(worst, REFERENCE_ADDED_P99_MAX_MS):
        return (
            f"nginx added {worst:.2f} ms at p99 > {REFERENCE_ADDED_P99_MAX_MS:g} ms: "
            "the reference proxy missed the target too"
        )
    return None


def references_failed(load: RunLoad) -> list[str]:
    return [
        f"{count} {name} streams or requests failed: the harness could not drive its reference"
        for name, count in load.reference_errors.items()
        if count
    ]


def judge(load: RunLoad) -> Verdict:
    """valid, or void with every reason that applies."""
    reasons = [
        reason
        for reason in (
            direct_too_slow(load),
            generators_behind(load),
            *harness_saturated(load),
            gateway_starved(load),
            machine_full(load),
            reference_too_slow(load),
            *references_failed(load),
        )
        if reason is not None
    ]
    return Verdict("void" if reasons else "valid", tuple(reasons))


# -- sweep steps ---------------------------------------------------------------------------


class Outcome(StrEnum):
    HOLDS = "holds"  # valid, and the gateway met the target
    FAILS = "fails"  # valid, and the gateway missed it
    VOID = "void"  # the harness or the machine was the bottleneck: no evidence either way


def gateway_misses(added_p99_ms: Mapping[str, float], gateway_errors: int) -> str | None:
    """Why the gateway missed the target (added p99 <= ADDED_P99_LIMIT_MS, no failed
    stream), or None. A NaN added p99 (no samples) is a miss: nothing was relayed."""
    if gateway_errors:
        return f"{gateway_errors} gateway streams failed"
    for metric, value in added_p99_ms.items():
        if math.isnan(value) or value > ADDED_P99_LIMIT_MS:
            return f"{metric} {value:.2f} > {ADDED_P99_LIMIT_MS:g} ms"
    return None


def step_outcome(verdict: Verdict, miss: str | None) -> Outcome:
    if verdict.status == "void":
        return Outcome.VOID
    return Outcome.HOLDS if miss is None else Outcome.FAILS


@dataclass(frozen=True, slots=True)
class SweepAnswer:
    """The largest N that holds the target, from the valid steps only."""

    status: Literal["determined", "undetermined"]
    max_streams: int | None  # largest valid step that held, below the first valid failure
    first_failing: int | None  # smallest valid step that failed
    why: str

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "max_streams": self.max_streams,
            "first_failing": self.first_failing,
            "why": self.why,
        }


def largest_holding(steps: Iterable[tuple[int, Outcome]]) -> SweepAnswer:
    """Determined only when a valid step that held lies below a valid step that failed
    (void steps between them widen the bracket, they do not break it) and no valid step
    above the first failure held (that would be noise, not a limit)."""
    ordered: Sequence[tuple[int, Outcome]] = sorted(steps)
    holds = [n for n, outcome in ordered if outcome is Outcome.HOLDS]
    fails = [n for n, outcome in ordered if outcome is Outcome.FAILS]
    voids = [n for n, outcome in ordered if outcome is Outcome.VOID]
    void_note = f" (void: {', '.join(map(str, voids))})" if voids else ""
    if not fails:
        if not holds:
            return SweepAnswer("undetermined", None, None, "no valid step" + void_note)
        return SweepAnswer(
            "undetermined",
            None,
            None,
            f"no valid step failed: at least {max(holds)}, upper bound unknown" + void_note,
        )
    first_fail = fails[0]
    below = [n for n in holds if n < first_fail]
    if not below:
        return SweepAnswer(
            "undetermined",
            None,
            first_fail,
            f"the smallest valid step ({first_fail}) already failed" + void_note,
        )
    above = [n for n in holds if n > first_fail]
    if above:
        return SweepAnswer(
            "undetermined",
            None,
            first_fail,
            f"{above[0]} held above the failing {first_fail}: not a limit but noise" + void_note,
        )
    return SweepAnswer(
        "determined",
        below[-1],
        first_fail,
        f"held at {below[-1]}, failed at {first_fail}" + void_note,
    )
