"""The admin API's OpenAPI 3.1 document, served at `GET /admin/openapi.json`.

Built in code as a plain dict so that it needs no file at run time; it describes the routes
of `gateway.server.admin.control` (the control plane) and `gateway.server.admin.labels`
(labels). The prose contract is docs/admin.md and docs/labels.md;
tests/server/admin/test_openapi.py checks that this document validates and names every
route and error status of the contract.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

Json = dict[str, Any]

MAX_REASON_CHARS: Final = 500
MAX_UNIT_CHARS: Final = 256
MAX_AUDIT_LIMIT: Final = 1_000
MAX_PHASES: Final = 50
MAX_LABELS: Final = 10_000
_NAME_PATTERN: Final = "^[A-Za-z0-9._-]{1,64}$"  # experiment and variant names

# What each error status means on every route that has it; routes add their specifics.
_STATUS_MEANING: Final = {
    400: "malformed JSON, wrong types, unknown fields or bad values (the message names the field)",
    401: "missing or wrong admin token",
    404: "unknown experiment",
    409: "not possible in the experiment's status, or `expected_version` does not match",
    413: "the body is over 64 KiB",
    415: "the body is not `application/json`",
    422: "the request names records that do not exist; nothing was stored",
    500: "the outcome store holds a record that cannot be read",
    501: "labels by unit need the gateway's pseudonym key",
    503: "the state store (Redis) is unavailable; nothing changed",
}
_WRITE_ERRORS: Final = (400, 401, 404, 409, 413, 415, 503)


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Json) -> Json:
    return {"anyOf": [schema, {"type": "null"}]}


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema: Json) -> Json:
    return {"200": {"description": description, "content": _json(schema)}}


def _errors(*statuses: int, **specifics: str) -> Json:
    """Error responses for `statuses`; `specifics` (`s404="..."`) replace a meaning."""
    responses: Json = {}
    for status in statuses:
        meaning = specifics.get(f"s{status}") or _STATUS_MEANING[status]
        if status == 401:
            responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
            continue
        responses[str(status)] = {"description": meaning, "content": _json(_ref("Error"))}
    return responses


def _long_query(responses: Json) -> Json:
    """`responses` with aiohttp's own answer to a request line over 8190 bytes: a text/plain
    400, sent before the API sees the request. Unbounded query values, or bounded ones of
    multi-byte characters (percent-encoded three bytes each), can reach it."""
    bad = responses["400"]
    bad["description"] += "; or a request line over 8 KiB (text/plain, from the HTTP layer)"
    bad["content"] = {**bad["content"], "text/plain": {"schema": {"type": "string"}}}
    return responses


def _operation(
    operation_id: str,
    summary: str,
    responses: Json,
    *,
    tag: str = "experiments",
    parameters: list[Json] | None = None,
    body: Json | None = None,
    body_required: bool = True,
    description: str | None = None,
) -> Json:
    operation: Json = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "security": [{"adminToken": []}],
        "responses": responses,
    }
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": _json(body)}
    return operation


def _query(name: str, description: str, schema: Json, *, required: bool = False) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


_EXPERIMENT: Final = {"$ref": "#/components/parameters/Experiment"}


def _write(
    operation_id: str,
    summary: str,
    body: str,
    description: str,
    *,
    body_required: bool,
    **specifics: str,
) -> Json:
    """A change route: a JSON body (`body` names its schema) answered by the new view."""
    responses = _ok("the experiment after the change", _ref("ExperimentView"))
    return _operation(
        operation_id,
        summary,
        {**responses, **_errors(*_WRITE_ERRORS, **specifics)},
        parameters=[_EXPERIMENT],
        body=_ref(body),
        body_required=body_required,
        description=description,
    )


def _paths() -> Json:
    experiment = "/admin/experiments/{experiment}"
    return {
        "/admin/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "tags": ["meta"],
                "security": [],
                "responses": _ok("the OpenAPI 3.1 document", {"type": "object"}),
            }
        },
        "/admin/experiments": {
            "get": _operation(
                "listExperiments",
                "Every configured experiment",
                {
                    **_ok("the experiments", _ref("ExperimentList")),
                    **_errors(401, 503),
                },
            )
        },
        experiment: {
            "get": _operation(
                "getExperiment",
                "One experiment",
                {**_ok("the experiment", _ref("ExperimentView")), **_errors(401, 404, 503)},
                parameters=[_EXPERIMENT],
            )
        },
        f"{experiment}/weights": {
            "put": _write(
                "setWeights",
                "Set variant weights (a subset keeps the others')",
                "WeightsChange",
                "Opens a new phase while running. Unknown variant or a total of 0: 400.",
                body_required=True,
                s400=_STATUS_MEANING[400] + "; an unknown variant; a resulting total of 0",
                s409="the experiment is stopped, or `expected_version` does not match",
            )
        },
        f"{experiment}/pause": {
            "post": _write(
                "pauseExperiment",
                "Pause: every new session gets the control",
                "Change",
                "Opens a new phase (the effective split changes); the weights are kept.",
                body_required=False,
                s409="the experiment is not running, or `expected_version` does not match",
            )
        },
        f"{experiment}/resume": {
            "post": _write(
                "resumeExperiment",
                "Resume the split of the set weights",
                "Change",
                "Opens a new phase.",
                body_required=False,
                s409="the experiment is not paused, or `expected_version` does not match",
            )
        },
        f"{experiment}/stop": {
            "post": _write(
                "stopExperiment",
                "Stop: every new session gets one variant (default: the control)",
                "StopChange",
                "Opens a new phase. Final: a stopped experiment takes no further change.",
                body_required=False,
                s400=_STATUS_MEANING[400] + "; an unknown variant in `serve`",
                s409="the experiment is already stopped, or `expected_version` does not match",
            )
        },
        f"{experiment}/forced": {
            "post": _write(
                "forceUnit",
                "Force a unit onto a variant (adds or replaces)",
                "ForcedUnit",
                "Does not open a phase.",
                body_required=True,
                s400=_STATUS_MEANING[400]
                + "; an unknown variant; more than 1000 forced units per experiment",
                s409="the experiment is stopped, or `expected_version` does not match",
            ),
            "delete": _operation(
                "unforceUnit",
                "Release a forced unit (also after a stop)",
                _long_query(
                    {
                        **_ok("the experiment after the change", _ref("ExperimentView")),
                        **_errors(
                            400,
                            401,
                            404,
                            503,
                            s400="no `unit` query parameter; `reason` over 500 characters",
                            s404="unknown experiment, or that unit is not forced",
                        ),
                    }
                ),
                parameters=[
                    _EXPERIMENT,
                    _query(
                        "unit",
                        "the forced unit",
                        {"type": "string", "minLength": 1, "maxLength": MAX_UNIT_CHARS},
                        required=True,
                    ),
                    _query(
                        "reason",
                        "why (recorded in the audit trail)",
                        {"type": "string", "maxLength": MAX_REASON_CHARS},
                    ),
                ],
            ),
        },
        f"{experiment}/audit": {
            "get": _operation(
                "getAudit",
                "The experiment's audit trail, newest first",
                {
                    **_ok("audit entries", _ref("AuditList")),
                    **_errors(400, 401, 404, 503, s400="`limit` is not an integer 1..1000"),
                },
                parameters=[
                    _EXPERIMENT,
                    _query(
                        "limit",
                        "entries to return",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_AUDIT_LIMIT,
                            "default": 50,
                        },
                    ),
                ],
            )
        },
        f"{experiment}/analysis": {
            "get": _operation(
                "getAnalysis",
                "The experiment's analysis report",
                _long_query(
                    {
                        **_ok("the report", {"type": "object"}),
                        **_errors(
                            400,
                            401,
                            404,
                            500,
                            503,
                            s400="`since` or `until` is not an ISO-8601 time with a time zone",
                            s503="the outcome store is unavailable",
                        ),
                    }
                ),
                parameters=[
                    _EXPERIMENT,
                    _query("phase", "only this phase's outcomes", {"type": "string"}),
                    _query("since", "window start (ISO-8601, with a zone)", {"type": "string"}),
                    _query("until", "window end, exclusive (ISO-8601)", {"type": "string"}),
                ],
                description="Rates, latency, WER, guardrails and a recommendation per phase "
                "and variant; the report's schema is described in docs/analysis.md.",
            )
        },
        "/admin/backends": {
            "get": _operation(
                "listBackends",
                "Backends and their circuit breakers (this replica's view)",
                {**_ok("the backends", _ref("BackendList")), **_errors(401)},
                tag="backends",
            )
        },
        "/labels": {
            "post": _operation(
                "postLabels",
                "Attach reference transcripts (one label or a batch; all or nothing)",
                {
                    **_ok("every label was stored", _ref("LabelsStored")),
                    **_errors(
                        400,
                        401,
                        413,
                        422,
                        501,
                        503,
                        s413="the body is over 10 MiB",
                        s422="unknown record ids or unit selectors that match no record "
                        "(yet); nothing was stored",
                        s503="the label store is unavailable",
                    ),
                },
                tag="labels",
                body=_ref("LabelsRequest"),
                description="docs/labels.md describes labels, labels by unit and the answers.",
            )
        },
        "/labels/{record_id}": {
            "get": _operation(
                "getLabel",
                "A record's current label",
                {
                    **_ok("the label", _ref("Label")),
                    **_errors(
                        400,
                        401,
                        404,
                        503,
                        s400="the id is not 32 lower-case hex digits",
                        s404="the record has no label",
                        s503="the label store is unavailable",
                    ),
                },
                tag="labels",
                parameters=[
                    {
                        "name": "record_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                    }
                ],
            )
        },
    }


def _object(properties: Mapping[str, Json], *required: str, closed: bool = False) -> Json:
    schema: Json = {"type": "object", "required": list(required), "properties": dict(properties)}
    if closed:
        schema["additionalProperties"] = False
    return schema


# The optional fields of a change may also be null, which the server takes as absent.
_REASON: Final = {
    "type": ["string", "null"],
    "maxLength": MAX_REASON_CHARS,
    "description": "why (recorded in the audit trail); null: none",
}
_EXPECTED_VERSION: Final = {
    "type": ["integer", "null"],
    "minimum": 0,
    "description": "refuse the change (409) unless the experiment is at this version; "
    "null: no check",
}
_STATUS: Final = {"type": "string", "enum": ["running", "paused", "stopped"]}
_WEIGHTS: Final = {
    "type": "object",
    "propertyNames": {"pattern": _NAME_PATTERN},
    "additionalProperties": {"type": "number", "minimum": 0},
}
_TIME: Final = {"type": "string", "format": "date-time"}


def _schemas() -> Json:
    nullable_number = _nullable({"type": "number"})
    return {
        "Error": _object({"error": {"type": "string"}}, "error"),
        "Variant": _object(
            {
                "name": {"type": "string"},
                "backend": {"type": "string"},
                "endpoint_id": _nullable({"type": "string"}),
                "weight": {"type": "number", "minimum": 0, "description": "the set weight"},
                "share": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "description": "effective share of new sessions now",
                },
            },
            "name",
            "backend",
            "endpoint_id",
            "weight",
            "share",
        ),
        "Guardrails": _object(
            {
                "max_error_rate_increase": nullable_number,
                "max_cancellation_rate_increase": nullable_number,
                "max_no_match_rate_increase": nullable_number,
                "latency_quantile": {"type": "number"},
                "max_latency_increase_ms": nullable_number,
                "min_outcomes": {"type": "integer", "minimum": 0},
                "alpha": {"type": "number"},
            },
            "max_error_rate_increase",
            "max_cancellation_rate_increase",
            "max_no_match_rate_increase",
            "latency_quantile",
            "max_latency_increase_ms",
            "min_outcomes",
            "alpha",
        ),
        "Phase": _object(
            {
                "phase": {"type": "string"},
                "started_at": _nullable(_TIME),
                "weights": {**_WEIGHTS, "description": "the phase's effective weights"},
            },
            "phase",
            "started_at",
            "weights",
        ),
        "ExperimentView": _object(
            {
                "id": {"type": "string", "pattern": _NAME_PATTERN},
                "control": {"type": "string"},
                "status": _STATUS,
                "serving": _nullable({"type": "string"}),
                "phase": {"type": "string", "description": "new sessions' records carry it"},
                "version": {"type": "integer", "minimum": 0},
                "updated_at": _nullable(_TIME),
                "updated_by": _nullable({"type": "string"}),
                "shadows": {"type": "array", "items": {"type": "string"}},
                "variants": {"type": "array", "items": _ref("Variant")},
                "forced": {"type": "object", "additionalProperties": {"type": "string"}},
                "guardrails": _nullable(_ref("Guardrails")),
                "phases": {
                    "type": "array",
                    "maxItems": MAX_PHASES,
                    "items": _ref("Phase"),
                    "description": "newest first",
                },
            },
            "id",
            "control",
            "status",
            "serving",
            "phase",
            "version",
            "updated_at",
            "updated_by",
            "shadows",
            "variants",
            "forced",
            "guardrails",
            "phases",
        ),
        "ExperimentList": _object(
            {"experiments": {"type": "array", "items": _ref("ExperimentView")}}, "experiments"
        ),
        "StateSummary": _object(
            {
                "version": {"type": "integer", "minimum": 0},
                "status": _STATUS,
                "phase": {"type": "string"},
                "weights": _WEIGHTS,
                "serving": _nullable({"type": "string"}),
                "forced_count": {"type": "integer", "minimum": 0},
            },
            "version",
            "status",
            "phase",
            "weights",
            "serving",
            "forced_count",
        ),
        "AuditEntry": _object(
            {
                "id": {"type": "string"},
                "at": _TIME,
                "actor": {"type": "string", "description": "an admin's name, or `guardrail`"},
                "action": {
                    "type": "string",
                    "enum": [
                        "set_weights",
                        "pause",
                        "resume",
                        "stop",
                        "force",
                        "unforce",
                        "rollback",
                    ],
                },
                "experiment": {"type": "string"},
                "reason": _nullable({"type": "string"}),
                "detail": {"type": "object", "description": "the action's specifics"},
                "before": _ref("StateSummary"),
                "after": _ref("StateSummary"),
            },
            "id",
            "at",
            "actor",
            "action",
            "experiment",
            "reason",
            "detail",
            "before",
            "after",
        ),
        "AuditList": _object(
            {
                "entries": {
                    "type": "array",
                    "maxItems": MAX_AUDIT_LIMIT,
                    "items": _ref("AuditEntry"),
                }
            },
            "entries",
        ),
        "Breaker": _object(
            {
                "state": {"type": "string", "enum": ["closed", "open", "half_open"]},
                "consecutive_failures": {"type": "integer", "minimum": 0},
                "window_attempts": {"type": "integer", "minimum": 0},
                "window_failures": {"type": "integer", "minimum": 0},
                "opened": {"type": "integer", "minimum": 0},
                "open_until": nullable_number,
            },
            "state",
            "consecutive_failures",
            "window_attempts",
            "window_failures",
            "opened",
            "open_until",
        ),
        "Backend": _object({"name": {"type": "string"}, "breaker": _ref("Breaker")}, "name"),
        "BackendList": _object(
            {"backends": {"type": "array", "items": _ref("Backend")}}, "backends"
        ),
        "WeightsChange": _object(
            {
                "weights": {
                    **_WEIGHTS,
                    "minProperties": 1,
                    "description": "variant -> weight (>= 0, finite); a subset keeps the "
                    "others' weights; the resulting total must be > 0",
                },
                "reason": _REASON,
                "expected_version": _EXPECTED_VERSION,
            },
            "weights",
            closed=True,
        ),
        "Change": _object({"reason": _REASON, "expected_version": _EXPECTED_VERSION}, closed=True),
        "StopChange": _object(
            {
                "serve": {
                    "type": ["string", "null"],
                    "description": "the variant every new session gets (default, or null: "
                    "the control)",
                },
                "reason": _REASON,
                "expected_version": _EXPECTED_VERSION,
            },
            closed=True,
        ),
        "ForcedUnit": _object(
            {
                "unit": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_UNIT_CHARS,
                    "description": "a raw unit id: 1-256 printable characters",
                },
                "variant": {"type": "string"},
                "reason": _REASON,
                "expected_version": _EXPECTED_VERSION,
            },
            "unit",
            "variant",
            closed=True,
        ),
        **_label_schemas(),
    }


def _label_schemas() -> Json:
    record_id = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
    text = {
        "type": "string",
        "minLength": 1,
        "description": "the reference transcript; stripped, then 1-10,000 characters",
    }
    by_record = _object({"record_id": record_id, "text": text}, "record_id", "text", closed=True)
    by_unit = _object(
        {
            "unit": {"type": "string", "minLength": 1, "maxLength": MAX_UNIT_CHARS},
            "utterance_index": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
            "experiment": {"type": "string", "pattern": _NAME_PATTERN},
            "text": text,
        },
        "unit",
        "text",
        closed=True,
    )
    one_label = {"oneOf": [_ref("LabelByRecord"), _ref("LabelByUnit")]}
    return {
        "LabelByRecord": by_record,
        "LabelByUnit": by_unit,
        "LabelBatch": _object(
            {
                "labels": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_LABELS,
                    "items": one_label,
                }
            },
            "labels",
            closed=True,
        ),
        "LabelsRequest": {
            "oneOf": [_ref("LabelByRecord"), _ref("LabelByUnit"), _ref("LabelBatch")]
        },
        "LabelsStored": _object(
            {
                "stored": {"type": "integer", "minimum": 0},
                "relabelled": {"type": "integer", "minimum": 0},
                "results": {
                    "type": "array",
                    "items": _object(
                        {
                            "record_id": record_id,
                            "status": {"type": "string", "enum": ["stored", "relabelled"]},
                            "previous": {"type": "string"},
                        },
                        "record_id",
                        "status",
                    ),
                },
                "resolved": {
                    "type": "array",
                    "items": _object(
                        {
                            "index": {"type": "integer", "minimum": 0},
                            "unit": {"type": "string"},
                            "utterance_index": {"type": "integer", "minimum": 0},
                            "experiment": {"type": "string"},
                            "records": {
                                "type": "array",
                                "items": _object(
                                    {"record_id": record_id, "experiment": {"type": "string"}},
                                    "record_id",
                                    "experiment",
                                ),
                            },
                        },
                        "index",
                        "unit",
                        "records",
                    ),
                },
            },
            "stored",
            "relabelled",
            "results",
        ),
        "Label": _object(
            {
                "record_id": record_id,
                "text": {"type": "string"},
                "labeller": {"type": "string"},
                "labelled_at": _TIME,
                "source": {"type": "string", "enum": ["api", "import"]},
            },
            "record_id",
            "text",
            "labeller",
            "labelled_at",
            "source",
        ),
    }


@functools.cache
def _version() -> str:
    try:
        return version("speech-gateway")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the admin and labels API (a fresh dict on each call)."""
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "speech-gateway admin API",
            "version": _version(),
            "description": "The control plane of the speech gateway: experiments, their "
            "weights, status, forced units and audit trail, the analysis, backends and labels. "
            "Every route except this document needs `Authorization: Bearer <admin token>`. "
            'Errors are `{"error": "<message>"}`. See docs/admin.md.',
        },
        "tags": [
            {"name": "experiments", "description": "experiments and their changes"},
            {"name": "backends", "description": "backends and circuit breakers"},
            {"name": "labels", "description": "reference transcripts (docs/labels.md)"},
            {"name": "meta", "description": "this document"},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "parameters": {
                "Experiment": {
                    "name": "experiment",
                    "in": "path",
                    "required": True,
                    "description": "the experiment id",
                    "schema": {"type": "string", "pattern": _NAME_PATTERN},
                }
            },
            "responses": {
                "Unauthorized": {
                    "description": _STATUS_MEANING[401],
                    "headers": {
                        "WWW-Authenticate": {
                            "description": 'Bearer realm="speech-gateway admin"',
                            "schema": {"type": "string"},
                        }
                    },
                    "content": _json(_ref("Error")),
                }
            },
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an admin token whose SHA-256 is configured under "
                    "gateway.admin_tokens_sha256 (`speech-gateway keygen` makes one)",
                }
            },
        },
    }
    return copy.deepcopy(document)  # shares no module constant with a caller
