"""Tests for gateway.server.admin.review: the workbench API's queue, leases, blind items,
saves, skips and undo, on real file stores and a LocalAudioStore with real WAVs.

tests/functional/test_review_page.py drives the page in headless Chromium.
"""

from __future__ import annotations

import asyncio
import fnmatch
import tomllib
import uuid
import wave
from collections.abc import Awaitable, Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from review_fixtures import (
    ADMIN_TOKEN,
    EXPERIMENT,
    KEY,
    REVIEWER_TOKENS,
    ReviewWorld,
    bearer,
    review,
)

from gateway.control.model import hash_key
from gateway.server.admin.auth import AdminTokens
from gateway.server.admin.control import add_control_routes
from gateway.server.admin.review import (
    STATIC_FILES,
    BlindItem,
    blind_order,
    csp_hash,
    review_order,
    static_text,
)
from gateway.stores.audio_store import CaptureReason, CaptureSample
from gateway.stores.preference_store import RedisPreferenceStore
from gateway.stores.review_leases import RedisReviewLeases

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
RITA = bearer(REVIEWER_TOKENS["rita"])
RAJ = bearer(REVIEWER_TOKENS["raj"])
API = f"/admin/review/experiments/{EXPERIMENT}"


@pytest.fixture
def world(tmp_path: Path) -> ReviewWorld:
    return ReviewWorld(tmp_path)


async def claim(client: Client, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.post(f"{API}/claim", headers=headers)
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def test_the_queue_puts_priority_captures_first_worst_reason_first(
    world: ReviewWorld,
) -> None:
    """Priority captures come before uniform ones, failures before no-matches before
    disagreements before low confidence, oldest first; done captures are left out."""
    uniform_old = await world.add(1, captured_at="2026-12-07T09:00:00.000Z")
    low = await world.add(2, sample=CaptureSample.PRIORITY, reason=CaptureReason.LOW_CONFIDENCE)
    failure = await world.add(3, sample=CaptureSample.PRIORITY, reason=CaptureReason.FAILURE)
    disagreement = await world.add(
        4, sample=CaptureSample.PRIORITY, reason=CaptureReason.DISAGREEMENT
    )
    uniform_new = await world.add(5, captured_at="2026-12-07T11:00:00.000Z")
    order = review_order(world.captures, frozenset())
    assert order == [failure, disagreement, low, uniform_old, uniform_new]
    assert review_order(world.captures, {failure.capture_id}) == order[1:]


async def test_two_reviewers_never_get_the_same_item(
    world: ReviewWorld, aiohttp_client: MakeClient
) -> None:
    """Claims at the same time lease different items; claiming again returns the one held."""
    for n in range(1, 4):
        await world.add(n)
    client = await aiohttp_client(world.app())
    first, second = await asyncio.gather(claim(client, RITA), claim(client, RAJ))
    assert first["item"]["capture_id"] != second["item"]["capture_id"]
    again = await claim(client, RITA)
    assert again["item"]["capture_id"] == first["item"]["capture_id"]
    assert again["progress"] == {"captures": 3, "reviewed": 0, "remaining": 3, "mine": 0}


async def test_an_item_saved_while_another_reviewer_claims_is_not_given_to_them(
    world: ReviewWorld, aiohttp_client: MakeClient
) -> None:
    """Rita saves an item (and her lease ends) after Raj's claim read the queue but before
    it took a lease: Raj is given the next item, not the one Rita reviewed; and a save over
    another reviewer's live review is refused (409)."""
    first, second = await world.add(1), await world.add(2)
    leases = world.leases()
    preferences = world.preference_store()
    claim_lease = leases.claim

    async def claim_after_ritas_save(
        experiment: str, reviewer: str, candidates: Any, ttl_s: float
    ) -> str | None:
        if reviewer == "raj" and await preferences.get(experiment, first.capture_id) is None:
            await preferences.put(review(first))
        return await claim_lease(experiment, reviewer, candidates, ttl_s)

    leases.claim = claim_after_ritas_save  # type: ignore[method-assign]
    client = await aiohttp_client(world.app(leases=leases))
    answer = await claim(client, RAJ)
    assert answer["item"]["capture_id"] == second.capture_id
    assert answer["progress"]["reviewed"] == 1
    assert await leases.holder(EXPERIMENT, first.capture_id) is None
    # Raj holds the first item anyway (an undo's reopening, say) after Rita's review.
    assert await leases.hold(EXPERIMENT, "raj", first.capture_id, 60)
    response = await client.post(
        f"{API}/items/{first.capture_id}/save", headers=RAJ, json={"text": "x", "choice": "a"}
    )
    assert response.status == 409
    assert "rita has already reviewed" in (await response.json())["error"]


async def test_items_are_blind(world: ReviewWorld, aiohttp_client: MakeClient) -> None:
    """An item carries hypotheses as A and B only: no variant, record id, unit or client,
    and the order comes from the keyed coin, so it differs between captures."""
    for n in range(1, 21):
        await world.add(n, texts=(f"primary {n}", f"shadow {n}"))
    client = await aiohttp_client(world.app())
    answer = await claim(client, RITA)
    item = answer["item"]
    text = repr(item)
    for hidden in ("base", "custom", "unit-", "shop-app", world.captures[0].primary.record_id):
        assert hidden not in text
    assert [h["slot"] for h in item["hypotheses"]] == ["a", "b"]
    assert item["choice_needed"] is True
    flips = {blind_order(KEY, c.capture_id, "rita") for c in world.captures}
    assert flips == {True, False}
    for capture in world.captures:
        blind = BlindItem.of(capture, KEY, "rita")
        assert blind.b is not None
        primary_is_b = blind.b.variant == "base"
        assert primary_is_b == blind_order(KEY, capture.capture_id, "rita")


async def test_save_writes_a_review_label_and_the_blind_preference(
    world: ReviewWorld, aiohttp_client: MakeClient
) -> None:
    """Saving labels every record of the capture (source review, the reviewer's name) and
    keeps the choice with the mapping back to variants; the item is then done."""
    capture = await world.add(1, texts=("pay my bill", "pay my bills"))
    client = await aiohttp_client(world.app())
    item = (await claim(client, RITA))["item"]
    response = await client.post(
        f"{API}/items/{item['capture_id']}/save",
        headers=RITA,
        json={"text": "  pay my bills  ", "choice": "a"},
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["labelled"] == 2
    labels = await world.label_store().get(
        [capture.primary.record_id, capture.shadows[0].record_id]
    )
    assert {label.text for label in labels.values()} == {"pay my bills"}
    assert {label.source for label in labels.values()} == {"review"}
    assert {label.labeller for label in labels.values()} == {"rita"}
    (preference,) = (await world.preference_store().current(EXPERIMENT)).values()
    blind = BlindItem.of(capture, KEY, "rita")
    assert preference.choice == "a"
    assert preference.preferred == blind.a.variant
    assert {preference.variant_a, preference.variant_b} == {"base", "custom"}
    assert preference.unit == capture.unit
    assert preference.reviewer == "rita"
    assert set(preference.records) == {capture.primary.record_id, capture.shadows[0].record_id}
    after = await claim(client, RITA)
    assert after["item"] is None
    assert after["progress"] == {"captures": 1, "reviewed": 1, "remaining": 0, "mine": 1}


async def test_a_single_hypothesis_is_labelled_without_a_choice(
    world: ReviewWorld, aiohttp_client: MakeClient
) -> None:
    """A capture without a shadow shows one hypothesis; a choice is refused (422), none is
    saved with the label."""
    await world.add(1, texts=("hello there",), variants=("base",))
    client = await aiohttp_client(world.app())
    item = (await claim(client, RITA))["item"]
    assert item["choice_needed"] is False
    assert len(item["hypotheses"]) == 1
    save = f"{API}/items/{item['capture_id']}/save"
    refused = await client.post(save, headers=RITA, json={"text": "hello there", "choice": "a"})
    assert refused.status == 422
    saved = await client.post(save, headers=RITA, json={"text": "hello there", "choice": None})
    assert saved.status == 200
    (preference,) = (await world.preference_store().current(EXPERIMENT)).values()
    assert preference.choice is None
    assert preference.preferred is None


@pytest.mark.parametrize(
    ("texts", "needed", "saved_choice"),
    [
        (("Pay my bill.", "pay my bill"), False, "same"),  # the same words: a tie
        ((None, None), False, None),  # no text to compare (nothing kept, or recognised)
        ((None, "pay my bill"), True, "b"),
    ],
)
async def test_a_choice_is_asked_only_between_transcripts_that_differ(
    world: ReviewWorld,
    aiohttp_client: MakeClient,
    texts: tuple[str | None, str | None],
    needed: bool,
    saved_choice: str | None,
) -> None:
    """Two transcripts the same (after normalisation) are saved as a tie without asking;
    two without text are not compared; a transcript against none is a real choice."""
    await world.add(1, texts=texts)
    client = await aiohttp_client(world.app())
    item = (await claim(client, RITA))["item"]
    assert item["choice_needed"] is needed
    assert all(h["text"] in texts for h in item["hypotheses"])
    save = f"{API}/items/{item['capture_id']}/save"
    choice = None
    if needed:  # the slot showing the text
        choice = next(h["slot"] for h in item["hypotheses"] if h["text"])
    else:
        refused = await client.post(save, headers=RITA, json={"text": "pay my bill", "choice": "a"})
        assert refused.status == 422
    saved = await client.post(save, headers=RITA, json={"text": "pay my bill", "choice": choice})
    assert saved.status == 200, await saved.text()
    (preference,) = (await world.preference_store().current(EXPERIMENT)).values()
    if saved_choice is None:
        assert (preference.choice, preference.variant_a, preference.variant_b) == (None,) * 3
    elif saved_choice == "same":
        assert preference.choice == "same"
        assert {preference.variant_a, preference.variant_b} == {"base", "custom"}
    else:
        assert preference.preferred == "custom"


async def test_only_the_holder_may_save_or_skip(
    world: ReviewWorld, aiohttp_client: MakeClient
) -> None:
    """Another reviewer's save or skip of a held item is refused with 409; nothing is stored."""
    await world.add(1)
    client = await aiohttp_client(world.app())
    item = (await claim(client, RITA))["item"]
    path = f"{API}/items/{item['capture_id']}"
    saved = await client.post(f"{path}/save", headers=RAJ, json={"text": "x", "choice": "a"})
    assert saved.status == 409
    assert (await client.post(f"{path}/skip", headers=RAJ)).status == 409
    assert await world.preference_store().current(EXPERIMENT) == {}
    assert (await claim(client, RAJ))["item"] is None  # rita still holds the only item


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b'["text"]', 400),
        (b'{"text": "", "choice": "a"}', 400),
        (b'{"text": "ok", "choice": "c"}', 400),
        (b'{"text": "ok", "choice": "a", "extra": 1}', 400),
        (b'{"text": "ok"}', 422),
        (b'{"text": "' + b"x" * 70_000 + b'", "choice": "a"}', 413),
    ],
)
async def test_a_bad_save_body_is_refused_with_a_reason(
    world: ReviewWorld, aiohttp_client: MakeClient, body: bytes, status: int
) -> None:
    """A malformed save answers a specific status and a JSON reason; nothing is stored."""
    await world.add(1)
    client = await aiohttp_client(world.app())
    item = (await claim(client, RITA))["item"]
    response = await client.post(
        f"{API}/items/{item['capture_id']}/save",
        headers={**RITA, "Content-Type": "application/json"},
        data=body,
    )
    assert response.status == status
    assert (await response.json())["error"]
    assert await world.preference_store().current(EXPERIMENT) == {}


async def test_a_skipped_item_goes_to_others_not_back_to_the_skipper(
    world: ReviewWorld, aiohttp_client: MakeClient
) -> None:
    """After a skip the reviewer gets the next item; the skipped one goes to another."""
    first = await world.add(1)
    second = await world.add(2)
    client = await aiohttp_client(world.app())
    assert (await claim(client, RITA))["item"]["capture_id"] == first.capture_id
    skipped = await client.post(f"{API}/items/{first.capture_id}/skip", headers=RITA)
    assert skipped.status == 200
    assert (await claim(client, RITA))["item"]["capture_id"] == second.capture_id
    assert (await claim(client, RAJ))["item"]["capture_id"] == first.capture_id


async def test_undo_withdraws_the_last_save_and_reopens_it_for_its_reviewer(
    world: ReviewWorld, aiohttp_client: MakeClient
) -> None:
    """Undo withdraws only the caller's last preference, hands that item back prefilled with
    the saved text, and a new save replaces the label; others cannot undo it."""
    first = await world.add(1)
    second = await world.add(2)
    client = await aiohttp_client(world.app())
    for capture, text in ((first, "one"), (second, "two")):
        item = (await claim(client, RITA))["item"]
        assert item["capture_id"] == capture.capture_id
        url = f"{API}/items/{capture.capture_id}/save"
        saved = await client.post(url, headers=RITA, json={"text": text, "choice": "same"})
        assert saved.status == 200
    assert (await client.post(f"{API}/undo", headers=RAJ)).status == 404
    response = await client.post(f"{API}/undo", headers=RITA)
    assert response.status == 200
    answer = await response.json()
    assert answer["item"]["capture_id"] == second.capture_id
    assert answer["item"]["prefill"] == "two"
    assert answer["choice"] == "same"
    assert answer["progress"]["reviewed"] == 1
    assert set(await world.preference_store().current(EXPERIMENT)) == {first.capture_id}
    assert (await claim(client, RAJ))["item"] is None  # rita holds the reopened item
    url = f"{API}/items/{second.capture_id}/save"
    resaved = await client.post(url, headers=RITA, json={"text": "two again", "choice": "b"})
    assert resaved.status == 200
    label = (await world.label_store().get([second.primary.record_id]))[second.primary.record_id]
    assert label.text == "two again"
    assert (await world.preference_store().get(EXPERIMENT, second.capture_id)).choice == "b"  # type: ignore[union-attr]


async def test_the_audio_is_served_as_wav(world: ReviewWorld, aiohttp_client: MakeClient) -> None:
    """The item's WAV comes back byte for byte as audio/wav; an unknown capture is 404."""
    capture = await world.add(1)
    client = await aiohttp_client(world.app())
    response = await client.get(f"{API}/items/{capture.capture_id}/audio", headers=RITA)
    assert response.status == 200
    assert response.content_type == "audio/wav"
    body = await response.read()
    assert body == await world.audio_store().wav(capture.capture_id)
    with wave.open(BytesIO(body)) as wav:
        assert wav.getframerate() == 16000
        assert wav.getnframes() == 16000
    missing = await client.get(f"{API}/items/{'f' * 32}/audio", headers=RITA)
    assert missing.status == 404


async def test_every_route_needs_a_reviewer_or_admin_token(
    world: ReviewWorld, aiohttp_client: MakeClient
) -> None:
    """Without a token, or with a wrong one, each API route answers 401 with a challenge;
    an admin token is accepted as a reviewer."""
    capture = await world.add(1)
    client = await aiohttp_client(world.app())
    routes = [
        ("GET", f"{API}/progress"),
        ("POST", f"{API}/claim"),
        ("GET", f"{API}/items/{capture.capture_id}/audio"),
        ("POST", f"{API}/items/{capture.capture_id}/save"),
        ("POST", f"{API}/items/{capture.capture_id}/skip"),
        ("POST", f"{API}/undo"),
    ]
    for method, path in routes:
        for headers in ({}, bearer("not-a-token")):
            response = await client.request(method, path, headers=headers)
            assert response.status == 401, path
            assert "WWW-Authenticate" in response.headers
    progress = await client.get(f"{API}/progress", headers=bearer(ADMIN_TOKEN))
    assert progress.status == 200


async def test_a_reviewer_cannot_change_experiments_or_label_through_the_api(
    world: ReviewWorld, aiohttp_client: MakeClient
) -> None:
    """Reviewer tokens are refused (401) by the control plane and the labels API."""
    app = world.app()
    admins = AdminTokens.from_digests({"alice": hash_key(ADMIN_TOKEN)})
    add_control_routes(app, admins)
    client = await aiohttp_client(app)
    changes = [
        ("PUT", "weights"),
        *(("POST", action) for action in ("pause", "resume", "stop", "ship", "forced")),
        ("DELETE", "forced"),
    ]
    for method, action in changes:
        path = f"/admin/experiments/{EXPERIMENT}/{action}"
        response = await client.request(method, path, headers=RITA, json={})
        assert response.status == 401, (method, path, response.status)
    labels = await client.post("/labels", headers=RITA, json={"record_id": "0" * 32, "text": "x"})
    assert labels.status == 401
    assert (await client.get("/admin/experiments", headers=RITA)).status == 401


async def test_without_an_audio_store_the_api_says_so(aiohttp_client: MakeClient) -> None:
    """A gateway that stores no audio answers 503 with a reason, not a traceback."""
    from gateway.server.admin.review import add_review_routes

    reviewers = AdminTokens.from_digests({"rita": hash_key(REVIEWER_TOKENS["rita"])})
    app = web.Application()
    add_review_routes(app, reviewers, AdminTokens())
    client = await aiohttp_client(app)
    response = await client.post(f"{API}/claim", headers=RITA)
    assert response.status == 503
    assert "audio" in (await response.json())["error"]


async def test_the_page_is_served_with_a_csp_for_its_own_script(
    world: ReviewWorld, aiohttp_client: MakeClient
) -> None:
    """GET /review is review.html with its style and script inline, allowed by hash only,
    and blob: audio."""
    client = await aiohttp_client(world.app())
    response = await client.get("/review")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    script, style = static_text("review.js"), static_text("review.css")
    assert f"<script>{script}</script>" in page
    assert f"<style>{style}</style>" in page
    csp = response.headers["Content-Security-Policy"]
    assert f"script-src {csp_hash(script)}" in csp
    assert f"style-src {csp_hash(style)}" in csp
    assert "media-src blob:" in csp
    assert "unsafe" not in csp


def test_a_reviewer_token_that_is_also_an_admin_token_is_refused() -> None:
    """The same digest in both roles stops the start-up with a ConfigError naming the entry."""
    from gateway.errors import ConfigError
    from gateway.server.admin.review import add_review_routes

    digest = hash_key("one-token-for-both-roles")
    reviewers = AdminTokens.from_digests({"rita": digest}, "gateway.reviewer_tokens_sha256")
    admins = AdminTokens.from_digests({"alice": digest})
    with pytest.raises(ConfigError, match=r"gateway\.reviewer_tokens_sha256\.rita"):
        add_review_routes(web.Application(), reviewers, admins)


async def test_the_flow_holds_with_the_review_stores_in_redis(
    world: ReviewWorld, aiohttp_client: MakeClient
) -> None:
    """Claims by two reviewers, a save, a skip and an undo behave the same with the
    preferences and leases in the shared test Redis (a key prefix of this test's own)."""
    client_redis = Redis(host="127.0.0.1", port=6379)
    prefix = f"sgw-test-{uuid.uuid4().hex}"
    try:
        first = await world.add(1)
        second = await world.add(2)
        app = world.app(
            RedisPreferenceStore(client_redis, prefix), RedisReviewLeases(client_redis, prefix)
        )
        client = await aiohttp_client(app)
        rita, raj = await asyncio.gather(claim(client, RITA), claim(client, RAJ))
        assert {rita["item"]["capture_id"], raj["item"]["capture_id"]} == {
            first.capture_id,
            second.capture_id,
        }
        mine = rita["item"]["capture_id"]
        saved = await client.post(
            f"{API}/items/{mine}/save", headers=RITA, json={"text": "words", "choice": "a"}
        )
        assert saved.status == 200
        theirs = raj["item"]["capture_id"]
        assert (await client.post(f"{API}/items/{theirs}/skip", headers=RAJ)).status == 200
        assert (await claim(client, RAJ))["item"] is None  # skipped by raj, saved by rita
        assert (await claim(client, RITA))["item"]["capture_id"] == theirs
        undone = await client.post(f"{API}/undo", headers=RITA)
        assert undone.status == 200
        assert (await undone.json())["item"]["capture_id"] == mine
        assert await RedisPreferenceStore(client_redis, prefix).current(EXPERIMENT) == {}
    finally:
        doomed = [key async for key in client_redis.scan_iter(match=f"{prefix}:*")]
        if doomed:
            await client_redis.delete(*doomed)
        await client_redis.aclose()


@pytest.mark.parametrize("name", STATIC_FILES)
def test_the_page_files_are_package_data(name: str) -> None:
    """Each file is found through importlib.resources, and pyproject ships it in the wheel."""
    assert static_text(name)
    pyproject = Path(__file__).parents[3] / "pyproject.toml"
    with pyproject.open("rb") as config:
        patterns = tomllib.load(config)["tool"]["setuptools"]["package-data"]["gateway"]
    path = f"server/admin/static/{name}"
    assert any(fnmatch.fnmatch(path, pattern) for pattern in patterns), patterns
