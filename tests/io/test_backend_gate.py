"""Breaker names: one per backend, one more per custom-endpoint variant, never the id."""

from __future__ import annotations

from gateway.control.model import Backend, Variant
from gateway.io.backend_gate import breaker_name

AZURE = Backend("azure", "wss://westeurope.stt.speech.microsoft.com")


def test_base_model_variants_share_their_backends_breaker() -> None:
    assert breaker_name(Variant("base", AZURE, None, 1.0)) == "azure"


def test_a_custom_endpoint_has_its_own_breaker_named_without_the_endpoint_id() -> None:
    """The name is a label on the unauthenticated /metrics: endpoint ids never leave."""
    endpoint = "0f4c2e1a-7d3b-4a55-9e2f-3b1c8d9e6a71"
    name = breaker_name(Variant("custom", AZURE, endpoint, 1.0))
    assert name == "azure/custom"
    assert endpoint not in name
