"""The admin API's OpenAPI document: valid OpenAPI 3.1, and faithful to the contract."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from importlib.resources import files
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from gateway.config.settings import OutcomeSettings, RedisSettings
from gateway.server.admin.analysis import add_admin_routes
from gateway.server.admin.analysis_worker import OutcomeStore
from gateway.server.admin.audio import add_audio_routes
from gateway.server.admin.auth import AdminTokens
from gateway.server.admin.control import add_control_routes
from gateway.server.admin.labels import add_label_routes
from gateway.server.admin.openapi import openapi_document, openapi_json
from gateway.server.admin.review import add_review_routes

Client = TestClient[web.Request, web.Application]

EXPERIMENT = "/admin/experiments/{experiment}"
REVIEW = "/admin/review/experiments/{experiment}"
WRITE_ERRORS = {"400", "401", "404", "409", "413", "415", "503"}

# The contract (docs/admin.md, docs/labels.md): each route and the error statuses it answers.
ROUTES: dict[tuple[str, str], set[str]] = {
    ("get", "/admin/openapi.json"): set(),
    ("get", "/admin/experiments"): {"401", "503"},
    ("get", EXPERIMENT): {"401", "404", "503"},
    ("put", f"{EXPERIMENT}/weights"): WRITE_ERRORS,
    ("post", f"{EXPERIMENT}/pause"): WRITE_ERRORS,
    ("post", f"{EXPERIMENT}/resume"): WRITE_ERRORS,
    ("post", f"{EXPERIMENT}/stop"): WRITE_ERRORS,
    ("post", f"{EXPERIMENT}/ship"): WRITE_ERRORS,
    ("post", f"{EXPERIMENT}/forced"): WRITE_ERRORS,
    ("delete", f"{EXPERIMENT}/forced"): {"400", "401", "404", "503"},
    ("get", f"{EXPERIMENT}/audit"): {"400", "401", "404", "503"},
    ("get", f"{EXPERIMENT}/analysis"): {"400", "401", "404", "500", "503"},
    ("get", "/admin/backends"): {"401"},
    ("post", "/labels"): {"400", "401", "413", "422", "501", "503"},
    ("get", "/labels/{record_id}"): {"400", "401", "404", "503"},
    ("get", f"{REVIEW}/progress"): {"401", "404", "503"},
    ("post", f"{REVIEW}/claim"): {"401", "404", "503"},
    ("get", f"{REVIEW}/items/{{capture_id}}/audio"): {"401", "404", "502", "503"},
    ("post", f"{REVIEW}/items/{{capture_id}}/save"): {
        "400",
        "401",
        "404",
        "409",
        "413",
        "422",
        "503",
    },
    ("post", f"{REVIEW}/items/{{capture_id}}/skip"): {"401", "404", "409", "503"},
    ("post", f"{REVIEW}/undo"): {"401", "404", "409", "503"},
    ("delete", "/admin/units/{unit}/audio"): {"400", "401", "503"},
}
BODIES = {
    f"{EXPERIMENT}/weights": ("WeightsChange", True),
    f"{EXPERIMENT}/pause": ("Change", False),
    f"{EXPERIMENT}/resume": ("Change", False),
    f"{EXPERIMENT}/stop": ("StopChange", False),
    f"{EXPERIMENT}/ship": ("ShipChange", True),
    f"{EXPERIMENT}/forced": ("ForcedUnit", True),
}

VIEW: dict[str, Any] = {
    "id": "banking",
    "control": "base",
    "status": "running",
    "serving": None,
    "phase": "p-3f2a9c01b7",
    "version": 0,
    "updated_at": None,
    "updated_by": None,
    "shadows": ["custom"],
    "variants": [
        {"name": "base", "backend": "azure", "endpoint_id": None, "weight": 50.0, "share": 0.5}
    ],
    "forced": {"qa-user-1": "custom"},
    "guardrails": {
        "max_error_rate_increase": 0.05,
        "max_cancellation_rate_increase": None,
        "max_no_match_rate_increase": 0.1,
        "latency_quantile": 0.9,
        "max_latency_increase_ms": 300.0,
        "min_outcomes": 50,
        "alpha": 0.05,
    },
    "phases": [
        {
            "phase": "p-3f2a9c01b7",
            "started_at": "2026-11-21T10:00:00.000Z",
            "weights": {"base": 1.0, "custom": 0.0},
            "origin": "rollback",
        }
    ],
    "holdout_share": 0.05,
    "health": None,
}
SUMMARY = {
    "version": 3,
    "status": "running",
    "phase": "p-1",
    "weights": {"base": 50.0, "custom": 50.0},
    "serving": None,
    "forced_count": 1,
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document()


def schema_of(document: dict[str, Any], name: str) -> OAS31Validator:
    """A validator for the component `name`, its references resolved within the document."""
    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return OAS31Validator(root)


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    """openapi-spec-validator accepts the document, and it is strict JSON."""
    validate(document)
    assert document["openapi"].startswith("3.1")
    json.dumps(document, allow_nan=False)


def test_each_call_returns_a_fresh_document() -> None:
    """Changing one document leaves the next call's untouched."""
    first = openapi_document()
    first["components"]["schemas"]["Change"]["properties"]["reason"]["maxLength"] = 1
    first["paths"]["/admin/experiments"]["get"]["security"].clear()
    second = openapi_document()
    assert second["components"]["schemas"]["Change"]["properties"]["reason"]["maxLength"] == 500
    assert second["paths"]["/admin/experiments"]["get"]["security"] == [{"adminToken": []}]


def test_every_route_and_no_other_is_documented(document: dict[str, Any]) -> None:
    """The paths and methods are exactly the contract's."""
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == set(ROUTES)


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
def test_each_route_documents_its_error_statuses(
    document: dict[str, Any], method: str, path: str
) -> None:
    """Every error status the contract lists for a route is documented, with the Error body."""
    responses = document["paths"][path][method]["responses"]
    assert "200" in responses
    assert set(responses) - {"200"} == ROUTES[method, path]
    for status in ROUTES[method, path] - {"401"}:
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}
    if "401" in responses:
        assert responses["401"] == {"$ref": "#/components/responses/Unauthorized"}


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
def test_every_route_but_the_document_needs_the_bearer_token(
    document: dict[str, Any], method: str, path: str
) -> None:
    """The bearer scheme is on each operation; only openapi.json is open; the review
    routes take a reviewer or an admin token."""
    security = document["paths"][path][method]["security"]
    expected = [] if path == "/admin/openapi.json" else [{"adminToken": []}]
    if path.startswith(REVIEW):
        expected = [{"reviewerToken": []}, {"adminToken": []}]
    assert security == expected
    scheme = document["components"]["securitySchemes"]["adminToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_the_401_answer_carries_the_challenge(document: dict[str, Any]) -> None:
    """A 401 is documented with its WWW-Authenticate header."""
    unauthorized = document["components"]["responses"]["Unauthorized"]
    assert "WWW-Authenticate" in unauthorized["headers"]


@pytest.mark.parametrize("path", sorted(BODIES))
def test_write_bodies_are_closed_and_required_as_the_contract_says(
    document: dict[str, Any], path: str
) -> None:
    """Write bodies refuse unknown fields; weights and forced need one, pause/resume/stop not."""
    (method,) = [m for m in document["paths"][path] if m != "delete"]
    name, required = BODIES[path]
    body = document["paths"][path][method]["requestBody"]
    assert body["required"] is required
    assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
    schema = document["components"]["schemas"][name]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["reason"]["maxLength"] == 500
    assert schema["properties"]["expected_version"]["minimum"] == 0


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("WeightsChange", {"weights": {"custom": 10, "base": 90}}),
        ("WeightsChange", {"weights": {"custom": 0}, "reason": "r", "expected_version": 0}),
        ("Change", {}),
        ("Change", {"reason": "x" * 500, "expected_version": 7}),
        ("StopChange", {"serve": "custom"}),
        ("ShipChange", {"variant": "custom"}),
        ("ShipChange", {"variant": "custom", "holdout": 0.5, "reason": "r"}),
        ("ShipChange", {"variant": "custom", "holdout": None, "expected_version": 3}),
        ("ForcedUnit", {"unit": "qa-user-1", "variant": "custom"}),
        ("ForcedUnit", {"unit": "u" * 256, "variant": "custom", "reason": "qa"}),
    ],
)
def test_the_contracts_bodies_validate(
    document: dict[str, Any], name: str, body: dict[str, Any]
) -> None:
    """Bodies the contract allows are valid against their schemas."""
    schema_of(document, name).validate(body)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("WeightsChange", {}),
        ("WeightsChange", {"weights": {}}),
        ("WeightsChange", {"weights": {"custom": -1}}),
        ("WeightsChange", {"weights": {"custom": "10"}}),
        ("WeightsChange", {"weights": {"custom": 1}, "wieghts": {}}),
        ("Change", {"reason": "x" * 501}),
        ("Change", {"expected_version": -1}),
        ("Change", {"expected_version": 1.5}),
        ("Change", {"serve": "custom"}),
        ("StopChange", {"serve": 3}),
        ("ShipChange", {}),
        ("ShipChange", {"variant": "custom", "holdout": 0}),
        ("ShipChange", {"variant": "custom", "holdout": 0.51}),
        ("ShipChange", {"variant": "custom", "holdout": "0.1"}),
        ("ShipChange", {"variant": "custom", "serve": "base"}),
        ("ForcedUnit", {"unit": "qa-user-1"}),
        ("ForcedUnit", {"unit": "", "variant": "custom"}),
        ("ForcedUnit", {"unit": "u" * 257, "variant": "custom"}),
    ],
)
def test_bodies_outside_the_contract_are_invalid(
    document: dict[str, Any], name: str, body: dict[str, Any]
) -> None:
    """Missing, unknown, mistyped and out-of-range fields fail their schemas."""
    with pytest.raises(ValidationError):
        schema_of(document, name).validate(body)


def test_the_contracts_example_view_and_audit_entry_validate(document: dict[str, Any]) -> None:
    """The spec's ExperimentView and AuditEntry examples are valid; a bad status is not."""
    schema_of(document, "ExperimentView").validate(VIEW)
    schema_of(document, "ExperimentList").validate({"experiments": [VIEW]})
    stopped = {**VIEW, "status": "stopped", "serving": "base", "guardrails": None}
    schema_of(document, "ExperimentView").validate(stopped)
    entry = {
        "id": "1732183200000-0",
        "at": "2026-11-21T10:00:00.000Z",
        "actor": "guardrail",
        "action": "rollback",
        "experiment": "banking",
        "reason": None,
        "detail": {"variant": "custom"},
        "before": SUMMARY,
        "after": {**SUMMARY, "version": 4, "weights": {"base": 50.0, "custom": 0.0}},
    }
    schema_of(document, "AuditList").validate({"entries": [entry]})
    with pytest.raises(ValidationError):
        schema_of(document, "ExperimentView").validate({**VIEW, "status": "halted"})
    with pytest.raises(ValidationError):
        schema_of(document, "AuditEntry").validate({**entry, "action": "delete"})


ALERT = {
    "experiment": "banking",
    "variant": "custom",
    "kind": "canary_matches_base",
    "message": "banking/custom: answers its canaries as the base model",
    "detail": {"rounds": 2},
    "at": "2026-12-07T10:05:00.000Z",
}
HEALTH = {
    "variants": {
        "base": {
            "endpoint_id": None,
            "model": None,
            "model_checked_at": None,
            "model_error": None,
            "canary": None,
            "alerts": [],
        },
        "custom": {
            "endpoint_id": "ep-1",
            "model": {
                "id": "m1",
                "display_name": "banking v3",
                "kind": "custom",
                "locale": "en-US",
                "adaptation_expires": "2026-12-06T00:00:00.000Z",
                "transcription_expires": "2027-06-15T00:00:00.000Z",
                "expiring_within_days": -1.0,
                "expiring": ["adaptation"],
            },
            "model_checked_at": "2026-12-07T10:00:00.000Z",
            "model_error": None,
            "canary": {
                "last_round_at": "2026-12-07T10:05:00.000Z",
                "wer": 0.05,
                "latency_ms": 380.0,
                "rounds": 12,
                "failed_rounds": 1,
            },
            "alerts": [ALERT],
        },
    },
    "alerts": [{**ALERT, "variant": None, "kind": "canary_failing"}],
}


def test_the_health_block_and_health_actions_validate(document: dict[str, Any]) -> None:
    """A view with its health block, and the audit entries health and ship write, are valid;
    an unknown alert kind or model kind is not."""
    view = schema_of(document, "ExperimentView")
    view.validate({**VIEW, "health": HEALTH})
    with pytest.raises(ValidationError):
        view.validate({**VIEW, "health": {**HEALTH, "alerts": [{**ALERT, "kind": "bad"}]}})
    custom = HEALTH["variants"]["custom"]  # type: ignore[index]
    bad_model = {**custom, "model": {**custom["model"], "kind": "other"}}
    with pytest.raises(ValidationError):
        schema_of(document, "VariantHealth").validate(bad_model)
    with pytest.raises(ValidationError):
        view.validate({k: v for k, v in VIEW.items() if k != "health"})
    for actor, action in (("health", "health_alert"), ("health", "new_phase"), ("ops", "ship")):
        entry = {
            "id": "1",
            "at": "2026-12-07T10:05:00.000Z",
            "actor": actor,
            "action": action,
            "experiment": "banking",
            "reason": None,
            "detail": {},
            "before": SUMMARY,
            "after": {**SUMMARY, "version": 4},
        }
        schema_of(document, "AuditEntry").validate(entry)


def test_the_query_limits_follow_the_contract(document: dict[str, Any]) -> None:
    """audit's limit is 1..1000 (default 50); unforce needs `unit`, `reason` is optional."""
    audit = document["paths"][f"{EXPERIMENT}/audit"]["get"]["parameters"]
    (limit,) = [p for p in audit if p.get("name") == "limit"]
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}
    unforce = document["paths"][f"{EXPERIMENT}/forced"]["delete"]["parameters"]
    query = {p["name"]: p for p in unforce if p.get("in") == "query"}
    assert query["unit"]["required"] is True
    assert query["unit"]["schema"]["maxLength"] == 256
    assert query["reason"]["required"] is False
    assert query["reason"]["schema"]["maxLength"] == 500


def test_the_analysis_route_points_to_its_schema(document: dict[str, Any]) -> None:
    """The analysis answers a JSON object described in docs/analysis.md."""
    operation = document["paths"][f"{EXPERIMENT}/analysis"]["get"]
    assert "docs/analysis.md" in operation["description"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"type": "object"}
    names = {p["name"] for p in operation["parameters"] if "name" in p}
    assert names == {"phase", "since", "until"}


def static_text() -> str:
    """openapi.json as the installed package holds it (importlib.resources, as in a wheel)."""
    resource = files("gateway.server.admin") / "static" / "openapi.json"
    assert resource.is_file()
    return resource.read_text(encoding="utf-8")


def refuse_constant(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def test_the_static_file_is_strict_json_in_a_stable_layout() -> None:
    """openapi.json parses without NaN/Infinity, and is laid out as json.dumps(indent=2)."""
    text = static_text()
    parsed = json.loads(text, parse_constant=refuse_constant)
    assert text == json.dumps(parsed, indent=2, ensure_ascii=False) + "\n"


def test_only_the_version_is_filled_in_at_load(document: dict[str, Any]) -> None:
    """The document is the file's, with info.version the installed package's."""
    stored = json.loads(static_text())
    assert document["info"]["version"] == version("speech-gateway")
    assert {**document, "info": {**document["info"], "version": "x"}} == {
        **stored,
        "info": {**stored["info"], "version": "x"},
    }


def admin_app() -> web.Application:
    """A bare app with every admin and labels route group the gateway mounts."""
    app = web.Application()
    admins = AdminTokens.from_digests({})
    add_label_routes(app, admins)
    add_control_routes(app, admins)
    # Mounting only: no request reaches the analysis process, which is never started.
    add_admin_routes(app, admins, OutcomeStore(OutcomeSettings(), RedisSettings().connection()))
    add_review_routes(app, AdminTokens(), admins)
    add_audio_routes(app, admins)
    return app


def test_every_mounted_admin_and_labels_route_is_documented(document: dict[str, Any]) -> None:
    """The mounted /admin and /labels routes and the documented ones are the same set."""
    served = {
        (route.resource.canonical, route.method.lower())
        for route in admin_app().router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith(("/admin", "/labels"))
        and route.method != "HEAD"
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == documented


async def test_the_route_serves_the_document(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    """`GET /admin/openapi.json` answers the document as JSON, without a credential."""
    client = await aiohttp_client(admin_app())
    response = await client.get("/admin/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.text() == openapi_json()
    assert await response.json() == openapi_document()
