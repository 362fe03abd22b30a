"""Tests for gateway.control.breaker: opening on the streak and the windowed rate, the open
cool-down, half-open probes, transitions, the per-backend registry and policy validation;
client sessions whose retries count once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.control.breaker import (
    MAX_FAILED_SESSIONS,
    BreakerPolicy,
    Breakers,
    BreakerState,
    CircuitBreaker,
)

STATES = ("closed", "open", "half_open")


def opened_at(now: float, **policy: Any) -> CircuitBreaker:
    """A breaker that opened at `now` on a streak of one failure."""
    breaker = CircuitBreaker(BreakerPolicy(consecutive_failures=1, **policy))
    breaker.failure(now)
    assert breaker.state(now) == "open"
    return breaker


def test_opens_on_the_failure_streak() -> None:
    """consecutive_failures failures in a row open it, one fewer does not."""
    breaker = CircuitBreaker(BreakerPolicy(consecutive_failures=3))
    breaker.failure(0.0)
    breaker.failure(0.1)
    assert breaker.state(0.1) == "closed"
    assert breaker.allow(0.1)
    breaker.failure(0.2)
    assert breaker.state(0.2) == "open"
    assert breaker.opened == 1


def test_success_resets_the_streak() -> None:
    """A success between failures restarts the count towards consecutive_failures."""
    breaker = CircuitBreaker(BreakerPolicy(consecutive_failures=3))
    for now in (0.0, 0.1):
        breaker.failure(now)
    breaker.success(0.2)
    assert breaker.snapshot(0.2)["consecutive_failures"] == 0
    for now in (0.3, 0.4):
        breaker.failure(now)
    assert breaker.state(0.4) == "closed"
    breaker.failure(0.5)
    assert breaker.state(0.5) == "open"


def test_rate_opens_only_once_min_attempts_is_reached() -> None:
    """All-failing attempts open it on the rate only when the window holds min_attempts."""
    policy = BreakerPolicy(consecutive_failures=100, min_attempts=10, failure_rate=1.0)
    breaker = CircuitBreaker(policy)
    for step in range(9):
        breaker.failure(step * 0.1)
    assert breaker.state(1.0) == "closed"
    breaker.failure(1.0)
    assert breaker.state(1.0) == "open"


def test_rate_opens_at_exactly_the_threshold() -> None:
    """failures / attempts equal to failure_rate opens it ("at or above")."""
    policy = BreakerPolicy(consecutive_failures=100, min_attempts=10, failure_rate=0.5)
    breaker = CircuitBreaker(policy)
    for step in range(4):
        breaker.success(step * 0.1)
        breaker.failure(step * 0.1 + 0.05)
    breaker.success(0.5)
    assert breaker.state(0.5) == "closed"  # 4 failures in 9 attempts
    breaker.failure(0.6)
    assert breaker.state(0.6) == "open"  # 5 in 10


def test_failures_that_left_the_window_do_not_count() -> None:
    """Old failures outside window_s neither count nor combine with new ones to open it."""
    policy = BreakerPolicy(consecutive_failures=100, min_attempts=10, window_s=10.0)
    breaker = CircuitBreaker(policy)
    for _ in range(9):
        breaker.failure(0.0)
    breaker.success(1.0)
    assert breaker.snapshot(10.5)["window_failures"] == 0
    for _ in range(9):
        breaker.success(20.0)
    breaker.failure(20.5)
    assert breaker.state(20.5) == "closed"
    assert breaker.snapshot(20.5) == {
        "state": "closed",
        "consecutive_failures": 1,
        "window_attempts": 10,
        "window_failures": 1,
        "opened": 0,
        "open_until": None,
    }


def test_failures_inside_the_window_count() -> None:
    """Failures 9.5 s apart in a 10 s window add up to open it."""
    policy = BreakerPolicy(consecutive_failures=100, min_attempts=10, window_s=10.0)
    breaker = CircuitBreaker(policy)
    for _ in range(9):
        breaker.failure(0.0)
    breaker.success(0.1)  # reset the streak: only the rate can open it
    breaker.failure(9.5)
    assert breaker.state(9.5) == "open"


def test_window_memory_is_bounded() -> None:
    """1,000 reports a second for 100 s keep at most one window of buckets."""
    breaker = CircuitBreaker(BreakerPolicy(consecutive_failures=100, window_s=30.0))
    for tick in range(100_000):
        breaker.success(tick / 1000)
    assert len(breaker._buckets) <= 31
    assert 29_000 <= breaker.snapshot(100.0)["window_attempts"] <= 30_000  # type: ignore[operator]


def test_open_refuses_until_open_s_has_passed() -> None:
    """An open breaker refuses every session until open_s after it opened."""
    breaker = opened_at(100.0, open_s=10.0)
    assert not breaker.allow(100.0)
    assert not breaker.allow(109.9)
    snapshot = breaker.snapshot(109.0)
    assert snapshot["state"] == "open"
    assert snapshot["open_until"] == pytest.approx(1.0)
    assert breaker.state(110.0) == "half_open"
    assert breaker.snapshot(110.0)["open_until"] is None
    assert breaker.allow(110.0)


def test_half_open_lets_exactly_half_open_probes_through() -> None:
    """While half-open, only half_open_probes sessions are let through at once."""
    breaker = opened_at(0.0, open_s=10.0, half_open_probes=2)
    assert breaker.allow(10.0)
    assert breaker.allow(10.1)
    assert not breaker.allow(10.2)
    assert not breaker.allow(15.0)
    assert breaker.state(15.0) == "half_open"


def test_probe_success_closes_with_a_clean_slate() -> None:
    """A successful probe closes it and resets the streak and the window."""
    breaker = opened_at(0.0, open_s=10.0)
    assert breaker.allow(10.0)
    breaker.success(10.5)
    assert breaker.state(10.5) == "closed"
    assert breaker.allow(10.5)
    snapshot = breaker.snapshot(10.5)
    assert snapshot["consecutive_failures"] == 0
    assert snapshot["window_attempts"] == 0
    assert snapshot["opened"] == 1


def test_probe_failure_reopens_with_a_fresh_timer() -> None:
    """A failed probe opens it again for open_s from the failure, not from the first opening."""
    breaker = opened_at(0.0, open_s=10.0)
    assert breaker.allow(10.0)
    breaker.failure(12.0)
    assert breaker.state(12.0) == "open"
    assert breaker.opened == 2
    assert not breaker.allow(21.9)
    assert breaker.allow(22.0)


def test_vanished_probe_frees_its_slot_after_open_s() -> None:
    """A probe that never reports stops holding its slot open_s after it was let through."""
    breaker = opened_at(0.0, open_s=10.0)
    assert breaker.allow(10.0)
    assert not breaker.allow(19.9)
    assert breaker.allow(20.0)
    assert not breaker.allow(20.1)


SDK_RETRIES = (0.0, 0.26, 0.52, 0.78, 1.04)  # the native SDK's 5 attempts at a 503


def test_the_retries_of_one_client_session_count_as_one_failure() -> None:
    """Default policy: one SDK session failing 5 times is one failing session, not a streak
    of 5; the breaker stays closed."""
    breaker = CircuitBreaker(BreakerPolicy())
    for now in SDK_RETRIES:
        breaker.failure(now, "client\x00session-1")
    assert breaker.state(1.04) == "closed"
    snapshot = breaker.snapshot(1.04)
    assert snapshot["consecutive_failures"] == 1
    assert (snapshot["window_attempts"], snapshot["window_failures"]) == (1, 1)


def test_failing_client_sessions_open_it_as_fast_as_failing_dials_did() -> None:
    """consecutive_failures failing sessions open it on the first dial of the last one,
    whatever their retries in between; one session fewer does not."""
    breaker = CircuitBreaker(BreakerPolicy(consecutive_failures=5))
    for index in range(4):
        for offset in SDK_RETRIES:
            breaker.failure(index * 0.1 + offset, f"session-{index}")
    assert breaker.state(1.5) == "closed"
    breaker.failure(1.5, "session-4")
    assert breaker.state(1.5) == "open"


def test_a_retry_that_connects_ends_the_streak_but_is_no_new_attempt() -> None:
    """The backend answered, so the streak restarts; the session already counted once."""
    breaker = CircuitBreaker(BreakerPolicy(consecutive_failures=2))
    breaker.failure(0.0, "a")
    breaker.success(0.3, "a")
    snapshot = breaker.snapshot(0.3)
    assert snapshot["consecutive_failures"] == 0
    assert (snapshot["window_attempts"], snapshot["window_failures"]) == (1, 1)
    breaker.failure(0.4, "b")
    assert breaker.state(0.4) == "closed"


def test_the_failure_rate_counts_each_client_session_once() -> None:
    """Half of the sessions fail, each retried 5 times: a rate of 1/2, not 5/6."""
    policy = BreakerPolicy(consecutive_failures=100, failure_rate=0.6, min_attempts=4)
    breaker = CircuitBreaker(policy)
    for index in range(10):
        now = index * 2.0
        if index % 2:
            for offset in SDK_RETRIES:
                breaker.failure(now + offset, f"s{index}")
        else:
            breaker.success(now, f"s{index}")
    snapshot = breaker.snapshot(20.0)
    assert (snapshot["window_attempts"], snapshot["window_failures"]) == (10, 5)
    assert breaker.state(20.0) == "closed"


def test_a_session_counts_again_once_its_failure_left_the_window() -> None:
    """Remembered for window_s after its last failure: retries keep it, a pause ends it."""
    breaker = CircuitBreaker(BreakerPolicy(consecutive_failures=10, window_s=30.0))
    for now in (0.0, 20.0, 40.0):  # each within window_s of the one before
        breaker.failure(now, "a")
    assert breaker.snapshot(40.0)["consecutive_failures"] == 1
    breaker.failure(70.0, "a")
    assert breaker.snapshot(70.0)["consecutive_failures"] == 2


def test_failures_without_a_session_count_every_time() -> None:
    breaker = CircuitBreaker(BreakerPolicy(consecutive_failures=3))
    for now in (0.0, 0.1, 0.2):
        breaker.failure(now, None)
    assert breaker.state(0.2) == "open"


def test_a_half_open_probe_that_fails_reopens_it_even_as_a_retry() -> None:
    """A probe says whether the backend is back, whichever session it serves."""
    breaker = CircuitBreaker(BreakerPolicy(consecutive_failures=1, open_s=1.0))
    breaker.failure(0.0, "a")
    assert breaker.allow(1.0)
    breaker.failure(1.1, "a")
    assert breaker.state(1.1) == "open"
    assert breaker.opened == 2


def test_closing_forgets_the_failed_sessions() -> None:
    """After a successful probe a session's next failure is news again."""
    breaker = CircuitBreaker(BreakerPolicy(consecutive_failures=2, open_s=1.0))
    breaker.failure(0.0, "a")
    breaker.failure(0.1, "b")
    assert breaker.allow(1.1)
    breaker.success(1.2, "c")
    breaker.failure(1.3, "a")
    assert breaker.snapshot(1.3)["consecutive_failures"] == 1


def test_the_memory_of_failed_sessions_is_bounded() -> None:
    """Past MAX_FAILED_SESSIONS the oldest is forgotten, so its retry counts once more."""
    policy = BreakerPolicy(consecutive_failures=10**9, min_attempts=10**9)
    breaker = CircuitBreaker(policy)
    for index in range(MAX_FAILED_SESSIONS + 1):
        breaker.failure(0.0, f"s{index}")
    breaker.failure(0.0, f"s{MAX_FAILED_SESSIONS}")  # remembered: a retry
    assert breaker.snapshot(0.0)["consecutive_failures"] == MAX_FAILED_SESSIONS + 1
    breaker.failure(0.0, "s0")  # forgotten: counted again
    assert breaker.snapshot(0.0)["consecutive_failures"] == MAX_FAILED_SESSIONS + 2


def test_reports_while_open_are_ignored() -> None:
    """Late reports from dials started before it opened neither close nor re-time it."""
    breaker = opened_at(0.0, open_s=10.0)
    breaker.success(5.0)
    breaker.failure(6.0)
    assert breaker.state(9.9) == "open"
    assert breaker.opened == 1
    assert breaker.state(10.0) == "half_open"


def test_on_change_reports_every_transition() -> None:
    """on_change sees closed->open->half_open->open->half_open->closed, in order."""
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        BreakerPolicy(consecutive_failures=1, open_s=10.0),
        lambda old, new: changes.append((old, new)),
    )
    breaker.failure(0.0)
    breaker.allow(5.0)
    breaker.state(10.0)  # read-only: no transition
    assert changes == [("closed", "open")]
    assert breaker.allow(10.0)
    breaker.failure(11.0)
    assert breaker.allow(21.0)
    breaker.success(22.0)
    assert changes == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_breakers_keeps_one_breaker_per_backend() -> None:
    """get() creates a breaker per name once; on_change is told the name; snapshot is sorted."""
    changes: list[tuple[str, BreakerState, BreakerState]] = []
    breakers = Breakers(
        BreakerPolicy(consecutive_failures=1),
        lambda name, old, new: changes.append((name, old, new)),
    )
    zulu = breakers.get("zulu")
    assert breakers.get("zulu") is zulu
    alpha = breakers.get("alpha")
    assert alpha is not zulu
    zulu.failure(0.0)
    assert alpha.state(0.0) == "closed"
    assert changes == [("zulu", "closed", "open")]
    snapshot = breakers.snapshot(0.0)
    assert list(snapshot) == ["alpha", "zulu"]
    assert snapshot["zulu"]["state"] == "open"
    json.dumps(snapshot)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("consecutive_failures", 0),
        ("consecutive_failures", True),
        ("consecutive_failures", 2.0),
        ("failure_rate", 0.0),
        ("failure_rate", 1.01),
        ("failure_rate", float("nan")),
        ("window_s", 0.0),
        ("window_s", float("inf")),
        ("min_attempts", 0),
        ("open_s", -1.0),
        ("open_s", float("nan")),
        ("half_open_probes", 0),
    ],
)
def test_policy_rejects_invalid_values(field: str, value: object) -> None:
    """An invalid policy value raises ValueError naming the field."""
    with pytest.raises(ValueError, match=f"^{field}: "):
        BreakerPolicy(**{field: value})  # type: ignore[arg-type]


def test_policy_accepts_its_bounds() -> None:
    """The smallest valid counts and a rate of exactly 1 are accepted."""
    BreakerPolicy(
        consecutive_failures=1, failure_rate=1, window_s=0.001, min_attempts=1, half_open_probes=1
    )


POLICIES = st.builds(
    BreakerPolicy,
    consecutive_failures=st.integers(1, 5),
    failure_rate=st.floats(0.01, 1.0),
    window_s=st.floats(0.01, 20.0),
    min_attempts=st.integers(1, 10),
    open_s=st.floats(0.01, 20.0),
    half_open_probes=st.integers(1, 3),
)
STEPS = st.lists(
    st.tuples(
        st.sampled_from(("allow", "success", "failure")),
        st.floats(0.0, 5.0),
        st.sampled_from((None, "a", "b")),
    ),
    max_size=200,
)
NEXT = {"closed": {"open"}, "open": {"half_open"}, "half_open": {"closed", "open"}}


@given(policy=POLICIES, steps=STEPS, start=st.floats(-1e6, 1e6))
def test_random_sequences_keep_the_state_machine_sound(
    policy: BreakerPolicy, steps: list[tuple[str, float, str | None]], start: float
) -> None:
    """Any sequence of calls at non-decreasing times, with or without client sessions, never
    raises, stays in the three states, reports only legal transitions, and refuses a
    session only when not closed."""
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(policy, lambda old, new: changes.append((old, new)))
    now = start
    for op, dt, session in steps:
        now += dt
        if op == "allow":
            before = breaker.state(now)
            assert breaker.allow(now) or before != "closed"
        else:
            getattr(breaker, op)(now, session)
        assert breaker.state(now) in STATES
        json.dumps(breaker.snapshot(now))
    state: BreakerState = "closed"
    for old, new in changes:
        assert old == state
        assert new in NEXT[old]
        state = new
    assert breaker.opened == sum(new == "open" for _, new in changes)


@given(
    policy=POLICIES,
    steps=st.lists(st.tuples(st.booleans(), st.floats(0.0, 5.0)), max_size=200),
)
def test_a_breaker_that_only_sees_successes_never_opens(
    policy: BreakerPolicy, steps: list[tuple[bool, float]]
) -> None:
    """Successes alone never open a breaker nor refuse a session."""
    breaker = CircuitBreaker(policy)
    now = 0.0
    for is_allow, dt in steps:
        now += dt
        if is_allow:
            assert breaker.allow(now)
        else:
            breaker.success(now)
    assert breaker.state(now) == "closed"
    assert breaker.opened == 0
