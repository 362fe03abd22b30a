"""Breaker names: one per backend, one more per custom-endpoint variant of each experiment,
never the endpoint id; the client session each dial is reported with, so that an SDK's
retries count once."""

from __future__ import annotations

import uuid
from dataclasses import replace

from gateway.constants import NO_EXPERIMENT
from gateway.control.breaker import BreakerPolicy
from gateway.control.model import Backend, Client, Experiment, Targeting, Variant
from gateway.control.routing import Route
from gateway.errors import UpstreamRejected
from gateway.server.metrics import GatewayMetrics
from gateway.server.relay.backend_gate import BackendGate, breaker_name, client_session_key

AZURE = Backend("azure", "wss://westeurope.stt.speech.microsoft.com")


def test_base_model_variants_share_their_backends_breaker() -> None:
    base = Variant("base", AZURE, None, 1.0)
    assert breaker_name("banking", base) == breaker_name("checkout", base) == "azure"
    assert breaker_name(None, base) == "azure"


def test_a_custom_endpoint_has_its_own_breaker_named_without_the_endpoint_id() -> None:
    """The name is a label on the unauthenticated /metrics: endpoint ids never leave."""
    endpoint = "0f4c2e1a-7d3b-4a55-9e2f-3b1c8d9e6a71"
    name = breaker_name("banking", Variant("custom", AZURE, endpoint, 1.0))
    assert name == "azure/banking/custom"
    assert endpoint not in name


def test_same_named_custom_variants_of_two_experiments_have_two_breakers() -> None:
    banking = Variant("custom", AZURE, "5f0c2d3e-banking", 1.0)
    checkout = Variant("custom", AZURE, "0123abcd-checkout", 1.0)
    assert breaker_name("banking", banking) != breaker_name("checkout", checkout)
    assert breaker_name("checkout", checkout) == "azure/checkout/custom"


def test_the_default_variants_custom_endpoint_is_named_as_no_experiment() -> None:
    """`_default`, the records' name for the default route, is no experiment's id."""
    custom = Variant("fallback", AZURE, "5f0c2d3e-banking", 1.0)
    assert breaker_name(None, custom) == f"azure/{NO_EXPERIMENT}/fallback"


# -- client sessions: the SDK's retries of one session count once -------------------------

SHOP = Client("shop", "0" * 64)
BASE = Variant("base", AZURE, None, 1.0)


def route(client_session: str | None, client: Client = SHOP) -> Route:
    """A new attempt (its own session id) of `client_session`, on the base variant."""
    return Route(
        client=client,
        experiment=None,
        variant=BASE,
        forced=False,
        unit_id="user-1",
        unit_source="query",
        session_id=uuid.uuid4().hex,
        mode="conversation",
        locale="en-us",
        path="/speech/recognition/conversation/cognitiveservices/v1",
        query=(),
        client_session=client_session,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def gate(clock: Clock) -> BackendGate:
    return BackendGate(BreakerPolicy(), "failover", GatewayMetrics(), clock)


def fail_five_times(backends: BackendGate, clock: Clock, client_session: str | None) -> None:
    """One SDK recognition against a backend answering 503: 5 attempts, 0.26 s apart; an
    attempt the open breaker refuses is not dialled, so nothing is reported."""
    for _ in range(5):
        attempt = route(client_session)
        if backends.admit(attempt) is attempt:
            backends.report(attempt, UpstreamRejected(503, "busy"))
        clock.now += 0.26


def test_the_attempts_of_one_client_session_are_one_failure() -> None:
    """Default policy: one SDK session's 5 failing attempts leave the breaker closed."""
    clock = Clock()
    backends = gate(clock)
    fail_five_times(backends, clock, "95b25a38e76441cb801b1a4bf8b3db8c")
    breaker = backends.snapshot()["azure"]
    assert breaker["state"] == "closed"
    assert (breaker["consecutive_failures"], breaker["window_failures"]) == (1, 1)


def test_five_failing_client_sessions_open_the_breaker() -> None:
    clock = Clock()
    backends = gate(clock)
    for index in range(5):
        fail_five_times(backends, clock, f"session{index}")
        expected = "open" if index == 4 else "closed"
        assert backends.snapshot()["azure"]["state"] == expected


def test_attempts_without_a_connection_id_count_one_by_one() -> None:
    """A client that sends no X-ConnectionId: each attempt is its own client session."""
    clock = Clock()
    backends = gate(clock)
    fail_five_times(backends, clock, None)
    assert backends.snapshot()["azure"]["state"] == "open"


def test_client_sessions_are_scoped_by_client() -> None:
    """Two clients' sessions with equal ids are two sessions."""
    assert client_session_key(route("abc")) != client_session_key(
        route("abc", Client("b", "1" * 64))
    )
    assert client_session_key(route(None)) is None


def test_every_admitted_attempt_is_announced_before_its_dial() -> None:
    clock = Clock()
    backends = gate(clock)
    seen: list[Route] = []
    backends.on_attempt = seen.append
    attempt = route("abc")
    backends.admit(attempt)
    assert seen == [attempt]


# -- custom endpoints of two experiments on one backend fail independently -----------------


def experiment_route(experiment_id: str, endpoint_id: str, client_session: str) -> Route:
    """An attempt of `client_session` on experiment `experiment_id`'s `custom` variant."""
    custom = Variant("custom", AZURE, endpoint_id, 1.0)
    experiment = Experiment(
        id=experiment_id,
        seed=experiment_id,
        control="base",
        variants=(BASE, custom),
        shadows=(),
        targeting=Targeting(),
        phase="p-0000000000",
    )
    return replace(route(client_session), experiment=experiment, variant=custom)


def test_a_failing_custom_endpoint_leaves_another_experiments_alone() -> None:
    """checkout's failing endpoint opens its own breaker and fails its sessions over;
    banking's endpoint of the same variant name, on the same backend, keeps its sessions."""
    clock = Clock()
    backends = gate(clock)
    for index in range(5):
        attempt = experiment_route("checkout", "0123abcd-checkout", f"s{index}")
        assert backends.admit(attempt) is attempt
        backends.report(attempt, UpstreamRejected(503, "busy"))
        clock.now += 0.26
    healthy = experiment_route("banking", "5f0c2d3e-banking", "s-banking")
    assert backends.admit(healthy) is healthy
    failing = experiment_route("checkout", "0123abcd-checkout", "s-later")
    admitted = backends.admit(failing)
    assert admitted is not None
    assert (admitted.variant, admitted.failover_from) == (BASE, "custom")
    states = {name: b["state"] for name, b in backends.snapshot().items()}
    assert states == {
        "azure": "closed",
        "azure/banking/custom": "closed",
        "azure/checkout/custom": "open",
    }
