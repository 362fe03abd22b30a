"""The audio admin API: deletion of a unit's captured audio.

`DELETE /admin/units/{unit}/audio` removes every capture of the unit from the configured
audio store (`gateway.stores.audio_store`, local or Blob) and puts the unit on the store's
deletion list, so that none of its audio is captured again. `{unit}` is the raw unit id the
application sends (`gw-unit`), pseudonymised here with the gateway's key as in the records
(`PSEUDONYM_KEY` when set, as for labels); with `?pseudonymised=true` it is the pseudonym
itself (as a capture or a record shows it).
Needs an admin credential. `speech-gateway admin delete-unit-audio` is the same call.

Answers: 200 `{"unit": <pseudonym>, "deleted": <captures removed>}`; 400 a unit that is no
single line of at most 256 characters; 401 no or a wrong credential; 503 the store is
unavailable (some captures may be gone already; repeat the call until it answers 200).
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from gateway.errors import StoreUnavailable
from gateway.logging import get_logger
from gateway.outcomes.privacy import pseudonymise
from gateway.server.admin.auth import AdminTokens, admin_name, error_response
from gateway.server.admin.labels import PSEUDONYM_KEY
from gateway.server.state import STATE
from gateway.stores.audio_store import AudioStore, check_unit

log = get_logger(__name__)

AUDIO_STORE: Final = web.AppKey("audio_store", AudioStore)
MAX_UNIT_CHARS: Final = 256


def add_audio_routes(app: web.Application, admins: AdminTokens) -> None:
    """Serve `DELETE /admin/units/{unit}/audio` on `app` (its store: `app[AUDIO_STORE]`).
    `admins` are the app's admin tokens, mounted by `add_control_routes`."""
    del admins  # authenticated through the app's ADMIN_TOKENS, like every admin route
    app.router.add_delete("/admin/units/{unit}/audio", delete_unit_audio)


async def delete_unit_audio(request: web.Request) -> web.Response:
    admin = admin_name(request)
    if admin is None:
        return error_response(401, "an admin token is required")
    raw = request.match_info["unit"]
    if not raw or len(raw) > MAX_UNIT_CHARS or not raw.isprintable():
        return error_response(400, "unit: one line of 1 to 256 printable characters")
    flag = request.query.get("pseudonymised", "false")
    if flag not in ("true", "false"):
        return error_response(400, "pseudonymised: expected true or false")
    if flag == "true":
        unit = raw
        try:
            check_unit(unit)
        except ValueError:
            return error_response(400, "unit: not a pseudonym")
    else:
        key = request.app.get(PSEUDONYM_KEY)
        unit = pseudonymise(raw, key if key is not None else request.app[STATE].privacy_key)
    try:
        deleted = await request.app[AUDIO_STORE].delete_unit(unit)
    except StoreUnavailable as exc:
        log.warning("unit_audio_delete_failed", error=exc.reason)
        return error_response(503, f"the audio store is unavailable: {exc.reason}")
    log.info("unit_audio_deleted", unit=unit, deleted=deleted, admin=admin)
    return web.json_response({"unit": unit, "deleted": deleted})
