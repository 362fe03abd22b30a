"""The emulator's custom endpoints and the model each one recognises with, live.

Each configured custom id is a custom model and an endpoint deploying it. An endpoint's
model can change at run time, in two ways the real service has:

* a redeploy (`silent=False`): recognition and the Custom Speech API both show the new model;
* a silent change (`silent=True`): recognition uses the new model while the API still shows
  the old one, which is what an expired custom model does (its endpoint falls back to the
  base model and nothing in the endpoint's description says so).

The `fallback_after_s` fault knob makes every custom endpoint fall back silently that many
seconds after `start()`. The table is pure state (no I/O): the clocks are injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from gateway.logging import get_logger

log = get_logger(__name__)

BASE_MODEL = "base"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Deployment:
    """What one endpoint recognises with, and what the Custom Speech API says it deploys."""

    model: str  # "base" or a custom model id: what recognition uses
    api_model: str  # what GET /speechtotext/v3.2/endpoints/{id} shows
    changed_at: datetime  # the last visible change (the endpoint's lastActionDateTime)


class UnknownEndpoint(LookupError):
    """No custom endpoint has this id."""


class UnknownModel(ValueError):
    """No model has this id."""


class EndpointTable:
    def __init__(
        self,
        custom_ids: Iterable[str],
        *,
        fallback_after_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._now = now
        self._clock = clock
        self.created_at = now()
        ids = sorted(custom_ids)
        self.models = frozenset({BASE_MODEL, *ids})
        self._deployments = {i: Deployment(i, i, self.created_at) for i in ids}
        self._fallback_after_s = fallback_after_s
        self._fallback_at: float | None = None

    def start(self) -> None:
        """The emulator is ready: the fault knob's countdown starts now."""
        if self._fallback_after_s > 0 and self._fallback_at is None:
            self._fallback_at = self._clock() + self._fallback_after_s

    def resolve(self, endpoint_id: str | None) -> str | None:
        """The model a session on this endpoint recognises with: the base model without an
        endpoint id, None for an id that is no endpoint."""
        if not endpoint_id:
            return BASE_MODEL
        deployment = self.deployments().get(endpoint_id)
        return None if deployment is None else deployment.model

    def deployments(self) -> dict[str, Deployment]:
        """Every endpoint's deployment, by endpoint id, as it is now."""
        self._fall_back_when_due()
        return dict(self._deployments)

    def switch(self, endpoint_id: str, model: str, *, silent: bool) -> Deployment:
        """Make the endpoint recognise with `model` from its next turn on; unless `silent`,
        the Custom Speech API shows the change too."""
        current = self.deployments().get(endpoint_id)
        if current is None:
            raise UnknownEndpoint(endpoint_id)
        if model not in self.models:
            raise UnknownModel(model)
        # A redeploy shows in the API and is an action on the endpoint; a silent change is not.
        visible = Deployment(model, model, self._now())
        updated = replace(current, model=model) if silent else visible
        self._deployments[endpoint_id] = updated
        log.info("emulator_endpoint_switched", endpoint=endpoint_id, model=model, silent=silent)
        return updated

    def _fall_back_when_due(self) -> None:
        # Applied once, when first observed due; a later switch overrides it like any other.
        if self._fallback_at is None or self._clock() < self._fallback_at:
            return
        self._fallback_at = None
        self._deployments = {
            endpoint: replace(deployment, model=BASE_MODEL)
            for endpoint, deployment in self._deployments.items()
        }
        log.warning(
            "emulator_endpoints_fell_back",
            endpoints=sorted(self._deployments),
            after_s=self._fallback_after_s,
        )
