"""The review workbench in a real gateway process: the page and its API are mounted with the
configured reviewer tokens, audio store and outcome store; a reviewer claims and saves an
item (the label is stored with source `review`), and is refused by every route that changes
an experiment or writes labels directly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from conftest import gateway_for, split_experiment
from review_fixtures import EXPERIMENT, ReviewWorld

from gateway.control.model import hash_key
from gateway.tools.local_services import LocalEmulator, LocalGateway

REVIEWER = "gateway-reviewer-token-0b7e"
ADMIN = "gateway-admin-token-62d9"


@pytest.fixture
def world(tmp_path: Path) -> ReviewWorld:
    """Two captures in <work>/audio, their records in <work>/outcomes.jsonl (the gateway's)."""
    world = ReviewWorld(tmp_path / "work")
    world.folder.mkdir()

    async def fill() -> None:
        for n in (1, 2):
            await world.add(n)

    asyncio.run(fill())
    return world


@pytest.fixture
def gateway(
    alpha: LocalEmulator, bravo: LocalEmulator, world: ReviewWorld
) -> Iterator[LocalGateway]:
    running = gateway_for(
        world.folder,
        {"alpha": alpha.ws_url, "bravo": bravo.ws_url},
        [split_experiment()],
        admin_tokens_sha256={"alice": hash_key(ADMIN)},
        reviewer_tokens_sha256={"rita": hash_key(REVIEWER)},
        audio={"directory": str(world.folder / "audio")},
    )
    with running:
        yield running


async def test_a_reviewer_reviews_through_the_gateway_and_changes_nothing_else(
    gateway: LocalGateway, world: ReviewWorld
) -> None:
    """GET /review is the page; claim and save work with the reviewer token and store a
    review label; the control plane and the labels API refuse that token with 401."""
    reviewer = {"Authorization": f"Bearer {REVIEWER}"}
    api = f"{gateway.http_url}/admin/review/experiments/{EXPERIMENT}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.http_url}/review") as page:
            assert page.status == 200
            assert page.content_type == "text/html"
        async with http.post(f"{api}/claim", headers=reviewer) as response:
            assert response.status == 200, await response.text()
            item = (await response.json())["item"]
        assert item["capture_id"] == world.captures[0].capture_id
        async with http.get(
            f"{api}/items/{item['capture_id']}/audio", headers=reviewer
        ) as response:
            assert response.status == 200
            assert response.content_type == "audio/wav"
        save = f"{api}/items/{item['capture_id']}/save"
        body = {"text": "pay my bill", "choice": "same"}
        async with http.post(save, headers=reviewer, json=body) as response:
            assert response.status == 200, await response.text()
        record_id = world.captures[0].primary.record_id
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with http.get(f"{gateway.http_url}/labels/{record_id}", headers=admin) as got:
            label = await got.json()
        assert (label["text"], label["source"], label["labeller"]) == (
            "pay my bill",
            "review",
            "rita",
        )
        experiment = f"{gateway.http_url}/admin/experiments/ab"
        for method, url in [
            ("PUT", f"{experiment}/weights"),
            ("POST", f"{experiment}/pause"),
            ("POST", f"{experiment}/ship"),
            ("POST", f"{experiment}/stop"),
            ("POST", f"{gateway.http_url}/labels"),
            ("DELETE", f"{gateway.http_url}/admin/units/unit-0001/audio"),
        ]:
            async with http.request(method, url, headers=reviewer, json={}) as refused:
                assert refused.status == 401, (method, url)
    assert (world.folder / "preferences.jsonl").is_file()
