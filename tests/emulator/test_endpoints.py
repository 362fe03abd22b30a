"""The emulator's live endpoint -> model table: resolution, switches, the fallback knob."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.emulator.endpoints import EndpointTable, UnknownEndpoint, UnknownModel

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clocks:
    """A monotonic clock and a wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.seconds = 100.0

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds - 100.0)


def table(fallback_after_s: float = 0.0, clocks: Clocks | None = None) -> EndpointTable:
    clocks = clocks or Clocks()
    return EndpointTable(
        ["banking", "travel"],
        fallback_after_s=fallback_after_s,
        clock=clocks.monotonic,
        now=clocks.wall,
    )


def test_each_custom_id_is_an_endpoint_deploying_its_own_model() -> None:
    """At start every endpoint recognises with, and shows, its own model; no endpoint id is
    the base model and an unknown id resolves to nothing."""
    endpoints = table()
    assert endpoints.models == {"base", "banking", "travel"}
    assert endpoints.resolve("banking") == "banking"
    assert endpoints.resolve(None) == "base"
    assert endpoints.resolve("") == "base"
    assert endpoints.resolve("nope") is None
    assert endpoints.resolve("base") is None  # the base model is a model, not an endpoint
    deployments = endpoints.deployments()
    assert {e: (d.model, d.api_model) for e, d in deployments.items()} == {
        "banking": ("banking", "banking"),
        "travel": ("travel", "travel"),
    }
    assert deployments["banking"].changed_at == T0


def test_a_redeploy_changes_recognition_and_the_api_view() -> None:
    """silent=False: both the model used and the model shown change, with a new action time."""
    clocks = Clocks()
    endpoints = table(clocks=clocks)
    clocks.seconds += 60
    deployment = endpoints.switch("banking", "travel", silent=False)
    assert (deployment.model, deployment.api_model) == ("travel", "travel")
    assert deployment.changed_at == T0 + timedelta(seconds=60)
    assert endpoints.resolve("banking") == "travel"
    assert endpoints.resolve("travel") == "travel"  # other endpoints keep theirs


def test_a_silent_switch_changes_recognition_only() -> None:
    """silent=True: recognition uses the new model; the API still shows the old one."""
    clocks = Clocks()
    endpoints = table(clocks=clocks)
    clocks.seconds += 60
    deployment = endpoints.switch("banking", "base", silent=True)
    assert (deployment.model, deployment.api_model) == ("base", "banking")
    assert deployment.changed_at == T0
    assert endpoints.resolve("banking") == "base"


def test_switching_unknown_endpoints_or_models_fails() -> None:
    endpoints = table()
    with pytest.raises(UnknownEndpoint):
        endpoints.switch("nope", "base", silent=False)
    with pytest.raises(UnknownModel):
        endpoints.switch("banking", "nope", silent=False)
    assert endpoints.resolve("banking") == "banking"


def test_the_fallback_knob_falls_back_silently_once_its_time_has_come() -> None:
    """fallback_after_s after start(): every endpoint recognises with the base model while the
    API keeps showing its custom model; nothing happens before start() or before the time."""
    clocks = Clocks()
    endpoints = table(fallback_after_s=30, clocks=clocks)
    clocks.seconds += 100
    assert endpoints.resolve("banking") == "banking"  # not started: no countdown
    endpoints.start()
    clocks.seconds += 29.9
    assert endpoints.resolve("banking") == "banking"
    clocks.seconds += 0.1
    assert endpoints.resolve("banking") == "base"
    assert endpoints.resolve("travel") == "base"
    assert {d.api_model for d in endpoints.deployments().values()} == {"banking", "travel"}


def test_a_switch_after_the_fallback_wins() -> None:
    """The fallback happens once; a redeploy afterwards is not undone by it."""
    clocks = Clocks()
    endpoints = table(fallback_after_s=5, clocks=clocks)
    endpoints.start()
    clocks.seconds += 10
    assert endpoints.resolve("banking") == "base"
    endpoints.switch("banking", "banking", silent=False)
    clocks.seconds += 100
    assert endpoints.resolve("banking") == "banking"
    assert endpoints.resolve("travel") == "base"


def test_without_the_knob_nothing_falls_back() -> None:
    clocks = Clocks()
    endpoints = table(fallback_after_s=0, clocks=clocks)
    endpoints.start()
    clocks.seconds += 10**9
    assert endpoints.resolve("banking") == "banking"
