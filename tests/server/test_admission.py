"""Admission decisions without sockets: token buckets per client, concurrency, their order."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from gateway.config.limits import LimitSettings
from gateway.errors import Limit, LimitExceeded
from gateway.server.admission import BUSY_RETRY_AFTER_S, Admission, AdmissionPolicy, TokenBucket
from gateway.server.sessions import LiveSessions


def policy(**overrides: float) -> AdmissionPolicy:
    values: dict[str, float] = {
        "max_sessions_total": 100,
        "max_sessions_per_client": 100,
        "rate_per_s": 1000.0,
        "burst": 1000,
    }
    values.update(overrides)
    return AdmissionPolicy(
        max_sessions_total=int(values["max_sessions_total"]),
        max_sessions_per_client=int(values["max_sessions_per_client"]),
        rate_per_s=values["rate_per_s"],
        burst=int(values["burst"]),
    )


def refused(result: LimitExceeded | None) -> LimitExceeded:
    assert result is not None
    return result


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    """A full bucket lets `burst` sessions through at once, then one per 1/rate seconds."""
    bucket = TokenBucket(3.0, now=0.0)
    assert [bucket.take(0.0, 2.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0, 2.0, 3) == pytest.approx(0.5)
    assert bucket.take(0.25, 2.0, 3) == pytest.approx(0.25)  # half a token refilled
    assert bucket.take(0.5, 2.0, 3) == 0.0
    assert bucket.take(0.5, 2.0, 3) > 0.0


def test_token_bucket_refills_no_further_than_its_size() -> None:
    """After a long pause the bucket holds `burst` tokens, not more."""
    bucket = TokenBucket(0.0, now=0.0)
    taken = [bucket.take(1000.0, 1.0, 2) for _ in range(3)]
    assert taken[:2] == [0.0, 0.0]
    assert taken[2] == pytest.approx(1.0)


def test_token_bucket_ignores_a_clock_that_goes_back() -> None:
    """A `now` before the last update refills nothing (and never removes tokens)."""
    bucket = TokenBucket(1.0, now=10.0)
    assert bucket.take(5.0, 1.0, 1) == 0.0
    assert bucket.take(5.0, 1.0, 1) == pytest.approx(1.0)


def test_connection_rate_is_per_client_with_retry_after() -> None:
    """One client past its burst is refused 429 with a Retry-After of at least one second,
    while another client is still admitted."""
    admission = Admission(policy(rate_per_s=0.5, burst=2))
    sessions = LiveSessions()
    assert admission.admit("app", sessions, 0.0) is None
    assert admission.admit("app", sessions, 0.0) is None
    refusal = refused(admission.admit("app", sessions, 0.0))
    assert (refusal.limit, refusal.status, refusal.retry_after_s) == (
        Limit.CONNECTION_RATE,
        429,
        2,
    )
    assert admission.admit("qa", sessions, 0.0) is None
    assert admission.admit("app", sessions, 2.0) is None  # one token back after 2 s


def test_attempts_refused_for_concurrency_take_tokens_too() -> None:
    """The rate is checked first: a client retrying in a loop against its concurrency
    limit spends its tokens and is then refused for its rate."""
    admission = Admission(policy(rate_per_s=1.0, burst=3, max_sessions_per_client=1))
    sessions = LiveSessions()
    with sessions.hold("app", "usp", None, "a"):
        limits = [refused(admission.admit("app", sessions, 0.0)).limit for _ in range(4)]
    assert limits == [Limit.CLIENT_SESSIONS] * 3 + [Limit.CONNECTION_RATE]
    assert refused(admission.admit("app", sessions, 0.5)).limit is Limit.CONNECTION_RATE
    assert admission.admit("app", sessions, 1.0) is None


def test_concurrent_sessions_per_client_then_in_total() -> None:
    """A client at its own limit gets 429; past the process's limit anyone gets 503."""
    admission = Admission(policy(max_sessions_per_client=2, max_sessions_total=3))
    sessions = LiveSessions()
    with ExitStack() as held:
        for _ in range(2):
            assert admission.admit("app", sessions, 0.0) is None
            held.enter_context(sessions.hold("app", "usp", None, "a"))
        refusal = refused(admission.admit("app", sessions, 0.0))
        assert (refusal.limit, refusal.status) == (Limit.CLIENT_SESSIONS, 429)
        assert refusal.retry_after_s == BUSY_RETRY_AFTER_S
        assert admission.admit("qa", sessions, 0.0) is None
        held.enter_context(sessions.hold("qa", "rest", None, "a"))
        refusal = refused(admission.admit("other", sessions, 0.0))
        assert (refusal.limit, refusal.status) == (Limit.TOTAL_SESSIONS, 503)
        # The client's own limit is named first: it is that client's doing.
        assert refused(admission.admit("app", sessions, 0.0)).limit is Limit.CLIENT_SESSIONS
    assert admission.admit("app", sessions, 0.0) is None  # all ended: admitted again


def test_tracked_clients_are_bounded() -> None:
    """Past `max_clients` the least recently seen client's bucket is forgotten (it comes
    back full), so memory stays bounded whatever names arrive."""
    admission = Admission(policy(rate_per_s=0.001, burst=1), max_clients=3)
    sessions = LiveSessions()
    for name in ("a", "b", "c"):
        assert admission.admit(name, sessions, 0.0) is None
    assert admission.admit("a", sessions, 0.0) is not None  # "a" is now the most recent
    assert admission.admit("d", sessions, 0.0) is None
    assert admission.tracked_clients == 3
    assert admission.admit("b", sessions, 0.0) is None  # "b" was evicted: a fresh bucket
    assert admission.admit("a", sessions, 0.0) is not None  # "a" was kept


def test_policy_from_the_settings_defaults() -> None:
    """The defaults admit a burst of reconnecting clients: 1000 at once, 200 per second."""
    limits = LimitSettings()
    built = AdmissionPolicy.from_limits(limits)
    assert built == AdmissionPolicy(
        max_sessions_total=2000, max_sessions_per_client=1000, rate_per_s=200.0, burst=1000
    )
    admission = Admission(built)
    sessions = LiveSessions()
    assert all(admission.admit("app", sessions, 0.0) is None for _ in range(1000))
    assert admission.admit("app", sessions, 0.0) is not None
    assert admission.admit("app", sessions, 0.005) is None
