"""Tests for gateway.control.retries: a failure the client retried is dropped, one it did not
retry is released after the hold, and the memory empties itself."""

from __future__ import annotations

import pytest

from gateway.control.retries import RETRY_HOLD_S, RetryHold

SDK_GAP_S = 0.26  # the native SDK's pause between attempts


def test_a_failure_followed_by_another_attempt_was_retried() -> None:
    hold: RetryHold[str] = RetryHold()
    hold.started("s", "attempt-1", 0.0)
    assert hold.hold("s", "attempt-1", "failure-1", 0.1)
    hold.started("s", "attempt-2", 0.1 + SDK_GAP_S)
    assert hold.due(100.0) == []
    assert hold.retried == 1


def test_a_failure_nobody_retried_is_released_when_its_hold_ends() -> None:
    hold: RetryHold[str] = RetryHold(hold_s=5.0)
    hold.started("s", "attempt-1", 0.0)
    assert hold.hold("s", "attempt-1", "failure-1", 1.0)
    assert hold.due(5.9) == []
    assert hold.next_deadline() == 6.0
    assert hold.due(6.0) == ["failure-1"]
    assert (hold.held, hold.retried) == (0, 0)


def test_an_sdk_session_failing_five_times_shows_its_user_one_failure() -> None:
    """Only the last of the 5 attempts' failures is one its user saw."""
    hold: RetryHold[int] = RetryHold()
    now = 0.0
    for attempt in range(5):
        hold.started("s", f"a{attempt}", now)
        assert hold.hold("s", f"a{attempt}", attempt, now + 0.01)
        now += SDK_GAP_S
    assert hold.due(now + RETRY_HOLD_S) == [4]
    assert hold.retried == 4


def test_a_failure_arriving_after_its_retry_started_is_dropped_at_once() -> None:
    """The client reconnected before the failed attempt's record came: retried already."""
    hold: RetryHold[str] = RetryHold()
    hold.started("s", "attempt-1", 0.0)
    hold.started("s", "attempt-2", 0.3)
    assert not hold.hold("s", "attempt-1", "failure-1", 0.4)
    assert hold.held == 0
    assert hold.retried == 1


def test_announcing_an_attempt_twice_keeps_its_own_failure() -> None:
    """An attempt is announced at its admission and again when its records are made."""
    hold: RetryHold[str] = RetryHold()
    hold.started("s", "attempt-1", 0.0)
    assert hold.hold("s", "attempt-1", "failure-1", 0.1)
    hold.started("s", "attempt-1", 0.2)
    assert hold.due(10.0) == ["failure-1"]


def test_client_sessions_are_independent() -> None:
    hold: RetryHold[str] = RetryHold()
    hold.started("a", "a1", 0.0)
    hold.started("b", "b1", 0.0)
    assert hold.hold("a", "a1", "a-failure", 0.1)
    assert hold.hold("b", "b1", "b-failure", 0.1)
    hold.started("a", "a2", 0.3)
    assert hold.due(10.0) == ["b-failure"]


def test_a_failure_of_a_session_whose_start_was_forgotten_is_held() -> None:
    """A session longer than the hold: its start has been forgotten; it is the latest."""
    hold: RetryHold[str] = RetryHold(hold_s=5.0)
    hold.started("s", "attempt-1", 0.0)
    assert hold.due(3600.0) == []
    assert hold.hold("s", "attempt-1", "failure-1", 3600.0)
    assert hold.due(3605.0) == ["failure-1"]


def test_release_all_hands_over_every_held_failure() -> None:
    hold: RetryHold[str] = RetryHold()
    for key in ("a", "b"):
        hold.started(key, key + "1", 0.0)
        hold.hold(key, key + "1", key, 0.0)
    assert sorted(hold.release_all()) == ["a", "b"]
    assert (hold.held, len(hold), hold.next_deadline()) == (0, 0, None)


def test_the_memory_empties_once_nothing_can_be_retried() -> None:
    """Client sessions are forgotten hold_s after their last start or held failure."""
    hold: RetryHold[str] = RetryHold(hold_s=5.0)
    for index in range(1000):
        key = f"s{index}"
        hold.started(key, "1", index * 0.001)
        if index % 3 == 0:
            hold.hold(key, "1", key, index * 0.001)
    assert len(hold) == 1000
    released = hold.due(20.0)
    assert len(released) == 334
    assert (len(hold), hold.held) == (0, 0)


@pytest.mark.parametrize("hold_s", [0.0, -1.0, float("nan")])
def test_the_hold_must_be_positive(hold_s: float) -> None:
    with pytest.raises(ValueError, match="hold_s"):
        RetryHold(hold_s)
