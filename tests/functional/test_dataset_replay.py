"""An exported dataset's test part replays through a real gateway process with the Speech SDK.

Captures of real speech (the banking set's first 1.5 s) are labelled and exported; the
`test` folder the export wrote is then replayed, as `speech-gateway replay` does, through
a gateway in front of two instant emulators, and every reference is attached by unit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ALPHA, BRAVO, gateway_for, split_experiment
from review_fixtures import ReviewWorld, wav_bytes
from support import CLIENT_KEY, DOMAINS, read_pcm

from gateway.control.model import hash_key
from gateway.outcomes.labels import LabelInput
from gateway.tools.dataset import load_dataset
from gateway.tools.dataset_export import export_dataset, labelled_items
from gateway.tools.local_services import LocalEmulator, LocalGateway
from gateway.tools.replay import ReplayOptions, run_replay

ADMIN_TOKEN = "dataset-replay-admin-token-8a41"
ITEM_SECONDS = 1.5


@pytest.fixture(scope="module")
def gateway(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalGateway]:
    work = tmp_path_factory.mktemp("gateway")
    running = gateway_for(
        work,
        {"alpha": alpha.ws_url, "bravo": bravo.ws_url},
        [split_experiment()],
        admin_tokens_sha256={"replay": hash_key(ADMIN_TOKEN)},
    )
    with running:
        yield running


async def test_the_exported_test_set_replays_through_the_gateway(
    tmp_path: Path, gateway: LocalGateway
) -> None:
    """Every item of the exported test set is one SDK session through the gateway, answered,
    and its reference is attached by unit as a label."""
    world = ReviewWorld(tmp_path / "world")
    world.folder.mkdir()
    utterances = load_dataset(DOMAINS["banking"])[:8]
    for n, utterance in enumerate(utterances, start=1):
        pcm = read_pcm(utterance.audio)[: int(16000 * ITEM_SECONDS) * 2]
        capture = await world.add(n, unit=f"speaker-{n}", wav=wav_bytes(pcm))
        await world.label_store().put(
            [LabelInput(capture.primary.record_id, utterance.text)], "rita", "review"
        )
    listing = await labelled_items(
        world.audio_store(), world.label_store(), world.preference_store(), "checkout"
    )
    assert listing.unlabelled == 0
    out = tmp_path / "export"
    result = await export_dataset(
        listing.items, world.audio_store(), out, experiment="checkout", test_share=0.5
    )
    assert result.test == 3  # the speakers whose hash fraction is below 0.5
    replayed = run_replay(
        ReplayOptions(
            dataset=out / "test",
            gateway=gateway.http_url,
            key=CLIENT_KEY,
            admin_token=ADMIN_TOKEN,
            concurrency=2,
            unit_prefix="export-run",
        )
    )
    assert replayed.failures == []
    assert len(replayed.items) == 3
    assert {item.text for item in replayed.items} <= {ALPHA, BRAVO}
    references = {u.text for u in utterances}
    assert {item.reference for item in replayed.items} <= references
    assert replayed.labels is not None
    assert (replayed.labels.attached, replayed.labels.unresolved) == (3, ())
