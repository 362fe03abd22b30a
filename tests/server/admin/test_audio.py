"""Tests for gateway.server.admin.audio: `DELETE /admin/units/{unit}/audio` on a local store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.control.model import hash_key
from gateway.outcomes.privacy import pseudonymise
from gateway.server.admin.audio import AUDIO_STORE, add_audio_routes
from gateway.server.admin.auth import ADMIN_TOKENS, AdminTokens
from gateway.server.admin.labels import PSEUDONYM_KEY
from gateway.stores.audio_store import LocalAudioStore
from tests.stores.test_audio_store import make_capture, make_wav

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
TOKEN = "audio-admin-token"
KEY = b"k" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def app_for(store: LocalAudioStore) -> web.Application:
    app = web.Application()
    admins = AdminTokens.from_digests({"ops": hash_key(TOKEN)})
    app[ADMIN_TOKENS] = admins
    app[PSEUDONYM_KEY] = KEY
    app[AUDIO_STORE] = store
    add_audio_routes(app, admins)
    return app


async def test_deleting_a_raw_unit_removes_its_pseudonyms_captures(
    tmp_path: Path, aiohttp_client: MakeClient
) -> None:
    """The raw unit id is pseudonymised as in the records; its captures go, others stay."""
    store = LocalAudioStore(tmp_path)
    unit = pseudonymise("alice", KEY)
    wav = make_wav(b"\x01" * 320)
    await store.put(make_capture(wav, unit=unit), wav)
    await store.put(make_capture(wav, unit="someone-else"), wav)
    client = await aiohttp_client(app_for(store))
    response = await client.delete("/admin/units/alice/audio", headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"unit": unit, "deleted": 1}
    assert [c.unit for c in await store.captures("exp")] == ["someone-else"]
    again = await client.delete(f"/admin/units/{unit}/audio?pseudonymised=true", headers=AUTH)
    assert await again.json() == {"unit": unit, "deleted": 0}


async def test_a_credential_is_required(tmp_path: Path, aiohttp_client: MakeClient) -> None:
    """Without an admin token nothing is deleted: 401."""
    store = LocalAudioStore(tmp_path)
    wav = make_wav(b"")
    await store.put(make_capture(wav), wav)
    client = await aiohttp_client(app_for(store))
    response = await client.delete("/admin/units/u1/audio?pseudonymised=true")
    assert response.status == 401
    bad = await client.delete(
        "/admin/units/u1/audio?pseudonymised=true", headers={"Authorization": "Bearer nope"}
    )
    assert bad.status == 401
    assert len(await store.captures("exp")) == 1


async def test_a_bad_unit_is_refused(tmp_path: Path, aiohttp_client: MakeClient) -> None:
    """A unit too long, or a pseudonym with characters no pseudonym has, is a 400."""
    client = await aiohttp_client(app_for(LocalAudioStore(tmp_path)))
    long = await client.delete("/admin/units/" + "x" * 300 + "/audio", headers=AUTH)
    assert long.status == 400
    odd = await client.delete("/admin/units/a%20b/audio?pseudonymised=true", headers=AUTH)
    assert odd.status == 400
    assert "pseudonym" in (await odd.json())["error"]
    flag = await client.delete("/admin/units/u1/audio?pseudonymised=AAA", headers=AUTH)
    assert flag.status == 400
    assert (await flag.json())["error"] == "pseudonymised: expected true or false"


async def test_an_unavailable_store_is_a_503(tmp_path: Path, aiohttp_client: MakeClient) -> None:
    """A store that cannot be written answers 503 with the reason."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    client = await aiohttp_client(app_for(LocalAudioStore(blocker / "audio")))
    response = await client.delete("/admin/units/alice/audio", headers=AUTH)
    assert response.status == 503
    assert "audio store is unavailable" in (await response.json())["error"]
