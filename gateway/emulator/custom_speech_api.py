"""HTTP routes of the Custom Speech API subset and of the endpoint-switching admin calls.

`GET /speechtotext/v3.2/{endpoints,models,models/base}[/{id}]` describe the emulator's
endpoints and models (documents: `custom_speech`); `GET /emulator/endpoints` shows the live
endpoint -> model mapping and `PUT /emulator/endpoints/{id}` changes it (`endpoints`). All of
them take the emulator's key like recognition does (`Ocp-Apim-Subscription-Key` or a Bearer
token), when one is configured.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.emulator import auth, custom_speech
from gateway.emulator.app_state import STATE, EmulatorState
from gateway.emulator.custom_speech import API_ROOT, BASE_MODEL_ID
from gateway.emulator.endpoints import Deployment, UnknownModel

# The management API's answer to a bad key (Azure API Management's shape and words).
_DENIED = {
    "error": {
        "code": "401",
        "message": "Access denied due to invalid subscription key or wrong API endpoint. Make "
        "sure to provide a valid key for an active subscription and use a correct regional "
        "API endpoint for your resource.",
    }
}
_MAX_BODY = 4096


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{API_ROOT}/endpoints", list_endpoints)
    app.router.add_get(f"{API_ROOT}/endpoints/{{id}}", get_endpoint)
    app.router.add_get(f"{API_ROOT}/models", list_models)
    app.router.add_get(f"{API_ROOT}/models/base", list_base_models)
    app.router.add_get(f"{API_ROOT}/models/base/{{id}}", get_base_model)
    app.router.add_get(f"{API_ROOT}/models/{{id}}", get_model)
    app.router.add_get("/emulator/endpoints", show_mapping)
    app.router.add_put("/emulator/endpoints/{id}", switch_endpoint)


def _state(request: web.Request) -> EmulatorState:
    state = request.app[STATE]
    if not auth.authorized(state.key, request.headers, request.query):
        raise web.HTTPUnauthorized(text=json.dumps(_DENIED), content_type="application/json")
    return state


def _origin(request: web.Request) -> str:
    return str(request.url.origin())


def _not_found(what: str, item_id: str) -> web.HTTPNotFound:
    body = custom_speech.error("NotFound", f"The {what} {item_id!r} does not exist.")
    return web.HTTPNotFound(text=json.dumps(body), content_type="application/json")


async def list_endpoints(request: web.Request) -> web.Response:
    state, origin = _state(request), _origin(request)
    documents = [
        custom_speech.endpoint_json(state.catalog, origin, endpoint_id, deployment)
        for endpoint_id, deployment in sorted(state.endpoints.deployments().items())
    ]
    return web.json_response(custom_speech.values(documents))


async def get_endpoint(request: web.Request) -> web.Response:
    state, endpoint_id = _state(request), request.match_info["id"]
    deployment = state.endpoints.deployments().get(endpoint_id)
    if deployment is None:
        raise _not_found("endpoint", endpoint_id)
    document = custom_speech.endpoint_json(state.catalog, _origin(request), endpoint_id, deployment)
    return web.json_response(document)


async def list_models(request: web.Request) -> web.Response:
    state, origin = _state(request), _origin(request)
    documents = [
        custom_speech.custom_model_json(state.catalog, origin, model)
        for model in sorted(state.catalog.custom_ids)
    ]
    return web.json_response(custom_speech.values(documents))


async def get_model(request: web.Request) -> web.Response:
    state, model = _state(request), request.match_info["id"]
    if model not in state.catalog.custom_ids:
        raise _not_found("model", model)
    return web.json_response(
        custom_speech.custom_model_json(state.catalog, _origin(request), model)
    )


async def list_base_models(request: web.Request) -> web.Response:
    state = _state(request)
    document = custom_speech.base_model_json(state.catalog, _origin(request))
    return web.json_response(custom_speech.values([document]))


async def get_base_model(request: web.Request) -> web.Response:
    state, model = _state(request), request.match_info["id"]
    if model != BASE_MODEL_ID:
        raise _not_found("base model", model)
    return web.json_response(custom_speech.base_model_json(state.catalog, _origin(request)))


def _mapping_entry(deployment: Deployment) -> dict[str, str]:
    return {"model": deployment.model, "api_model": deployment.api_model}


async def show_mapping(request: web.Request) -> web.Response:
    state = _state(request)
    deployments = state.endpoints.deployments()
    return web.json_response({e: _mapping_entry(d) for e, d in sorted(deployments.items())})


async def switch_endpoint(request: web.Request) -> web.Response:
    state, endpoint_id = _state(request), request.match_info["id"]
    if endpoint_id not in state.endpoints.deployments():
        raise _bad(404, f"no custom endpoint {endpoint_id!r}")
    model, silent = _switch_request(await _json_body(request))
    name = state.catalog.model_name(model)
    try:
        if name is None:
            raise UnknownModel(model)
        deployment = state.endpoints.switch(endpoint_id, name, silent=silent)
    except UnknownModel:
        known = ", ".join(sorted(state.endpoints.models))
        raise _bad(400, f"'model': no model {model!r} (known: {known})") from None
    return web.json_response({endpoint_id: _mapping_entry(deployment)})


async def _json_body(request: web.Request) -> Any:
    raw = await request.content.read(_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(
            max_size=_MAX_BODY,
            actual_size=request.content_length or len(raw),
            text=json.dumps({"error": f"the body is larger than {_MAX_BODY} bytes"}),
            content_type="application/json",
        )
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(400, f"the body is not JSON: {exc}") from None


def _switch_request(body: Any) -> tuple[str, bool]:
    """(model, silent) from `{"model": "<id>" | "base", "silent": false}`."""
    if not isinstance(body, dict):
        raise _bad(400, 'the body must be a JSON object {"model": ..., "silent": ...}')
    extra = sorted(set(body) - {"model", "silent"})
    if extra:
        raise _bad(400, f"unknown field(s): {', '.join(extra)}; expected 'model' and 'silent'")
    model, silent = body.get("model"), body.get("silent", False)
    if not isinstance(model, str) or not model:
        raise _bad(400, "'model' must be a model id: 'base' or a custom endpoint's model id")
    if not isinstance(silent, bool):
        raise _bad(400, "'silent' must be true or false")
    return model, silent


def _bad(status: int, message: str) -> web.HTTPException:
    text = json.dumps({"error": message})
    if status == 404:
        return web.HTTPNotFound(text=text, content_type="application/json")
    return web.HTTPBadRequest(text=text, content_type="application/json")
