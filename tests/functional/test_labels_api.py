"""The labels HTTP API over loopback: an aiohttp app with the file label store in-process."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import azure.cognitiveservices.speech as speechsdk
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ALPHA, gateway_for, split_experiment
from support import CLIENT_KEY as GATEWAY_CLIENT_KEY
from support import silence, write_wav

from gateway.control.model import hash_key
from gateway.errors import ConfigError, StoreUnavailable
from gateway.outcomes.labels import Label, LabelInput, LabelSource, UnitQuery
from gateway.outcomes.privacy import pseudonymise
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.server.admin.auth import AdminTokens
from gateway.server.admin.labels import LABEL_STORE, PSEUDONYM_KEY, add_label_routes
from gateway.stores.file_label_store import FileLabelStore
from gateway.stores.label_store import PutResult, UnitMatch
from gateway.text.normalize import NORMALISATION_VERSION
from gateway.tools.local_services import LocalEmulator
from gateway.tools.speech_client import speech_config, transcribe_file

ALICE_TOKEN = "admin-token-alice-3f9c1e"
BOB_TOKEN = "admin-token-bob-77d0a2"
CLIENT_KEY = "gateway-test-client-key"  # an application's key is no admin credential
ADMINS = AdminTokens.from_digests({"alice": hash_key(ALICE_TOKEN), "bob": hash_key(BOB_TOKEN)})
PSEUDONYM = b"labels-api-test-pseudonym-key"

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


def rid(n: int) -> str:
    return f"{n:032x}"


def auth(token: str = ALICE_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make(n: int, **changes: Any) -> OutcomeRecord:
    values: dict[str, Any] = {
        "record_id": rid(n),
        "kind": Kind.UTTERANCE,
        "experiment": "checkout",
        "phase": "1",
        "variant": "base",
        "backend": "westus",
        "role": Role.PRIMARY,
        "client": "shop-app",
        "unit": "5f2b0c3e8a1d4e6f9a7b3c2d1e0f4a5b",
        "unit_source": UnitSource.QUERY,
        "session_id": f"session-{n}",
        "protocol": Protocol.USP,
        "utterance_index": 0,
        "status": "Success",
        "text": f"utterance number {n}",
        "word_count": 3,
    }
    values.update(changes)
    return OutcomeRecord(**values)


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    """An outcome file holding records 1-3, and where its labels go."""
    outcomes = tmp_path / "outcomes.jsonl"
    outcomes.write_text("".join(make(n).to_json() + "\n" for n in (1, 2, 3)), encoding="ascii")
    return outcomes, tmp_path / "labels.jsonl"


@pytest.fixture
async def client(aiohttp_client: MakeClient, paths: tuple[Path, Path]) -> Client:
    """A client of an app serving the labels API over the file store."""
    app = web.Application()
    app[LABEL_STORE] = FileLabelStore(*paths)
    add_label_routes(app, ADMINS, max_body_bytes=64 * 1024)
    return await aiohttp_client(app)


def audit(paths: tuple[Path, Path]) -> list[Label]:
    labels = paths[1]
    if not labels.exists():
        return []
    return [Label.from_json(line) for line in labels.read_text(encoding="ascii").splitlines()]


async def test_post_one_label(client: Client, paths: tuple[Path, Path]) -> None:
    """One label is stored with the credential's name as labeller, and read back by GET."""
    response = await client.post(
        "/labels", json={"record_id": rid(1), "text": "pay my bill"}, headers=auth()
    )
    assert response.status == 200
    assert await response.json() == {
        "stored": 1,
        "relabelled": 0,
        "results": [{"record_id": rid(1), "status": "stored"}],
    }
    response = await client.get(f"/labels/{rid(1)}", headers=auth(BOB_TOKEN))
    assert response.status == 200
    body = await response.json()
    assert (body["record_id"], body["text"], body["labeller"], body["source"]) == (
        rid(1),
        "pay my bill",
        "alice",
        "api",
    )
    # Scored at put: "pay my bill" against the record's "utterance number 1".
    assert body["normalisation"] == NORMALISATION_VERSION
    assert body["scores"] == [
        {"record_id": rid(1), "substitutions": 3, "deletions": 0, "insertions": 0, "hits": 0}
    ]
    assert [label.labeller for label in audit(paths)] == ["alice"]


async def test_post_a_batch(client: Client) -> None:
    """A batch is stored in order and answered with one result per label."""
    labels = [{"record_id": rid(n), "text": f"label {n}"} for n in (1, 2, 3)]
    response = await client.post("/labels", json={"labels": labels}, headers=auth())
    assert response.status == 200
    body = await response.json()
    assert (body["stored"], body["relabelled"]) == (3, 0)
    assert [r["record_id"] for r in body["results"]] == [rid(1), rid(2), rid(3)]


async def test_relabel_returns_the_previous_text(client: Client, paths: tuple[Path, Path]) -> None:
    """A relabel answers "relabelled" with the text it replaced; the file keeps both writes."""
    await client.post("/labels", json={"record_id": rid(2), "text": "first"}, headers=auth())
    response = await client.post(
        "/labels", json={"record_id": rid(2), "text": "second"}, headers=auth(BOB_TOKEN)
    )
    assert response.status == 200
    assert (await response.json())["results"] == [
        {"record_id": rid(2), "status": "relabelled", "previous": "first"}
    ]
    assert (await (await client.get(f"/labels/{rid(2)}", headers=auth())).json())["text"] == (
        "second"
    )
    assert [(a.text, a.labeller) for a in audit(paths)] == [("first", "alice"), ("second", "bob")]


async def test_unknown_id_refuses_the_whole_batch(client: Client, paths: tuple[Path, Path]) -> None:
    """A batch naming an unknown record id gets 422 listing it, and nothing is stored."""
    labels = [{"record_id": rid(1), "text": "ok"}, {"record_id": rid(99), "text": "who"}]
    response = await client.post("/labels", json={"labels": labels}, headers=auth())
    assert response.status == 422
    body = await response.json()
    assert body["unknown"] == [rid(99)]
    assert "nothing was stored" in body["error"]
    assert audit(paths) == []
    assert (await client.get(f"/labels/{rid(1)}", headers=auth())).status == 404


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"record_id": ', "the body is not valid JSON"),
        (b"", "the body is not valid JSON"),
        (b'"just text"', "the body must be a JSON object"),
    ],
)
async def test_bad_json_is_400(client: Client, body: bytes, reason: str) -> None:
    """A body that is not a JSON object is 400 with the reason."""
    response = await client.post(
        "/labels", data=body, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await response.json())["error"].startswith(reason)


async def test_missing_field_is_400_naming_index_and_field(
    client: Client, paths: tuple[Path, Path]
) -> None:
    """A batch with a label lacking its text is 400 naming labels[1].text; nothing stored."""
    labels = [{"record_id": rid(1), "text": "ok"}, {"record_id": rid(2)}]
    response = await client.post("/labels", json={"labels": labels}, headers=auth())
    assert response.status == 400
    assert await response.json() == {"error": "labels[1].text: missing"}
    assert audit(paths) == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {CLIENT_KEY}"},
        {"Authorization": f"Basic {ALICE_TOKEN}"},
        {"Authorization": "Bearer "},
        {"Ocp-Apim-Subscription-Key": ALICE_TOKEN},
    ],
)
async def test_missing_or_wrong_token_is_401(
    client: Client, paths: tuple[Path, Path], headers: dict[str, str]
) -> None:
    """Without a valid admin bearer token POST and GET are 401 and nothing is stored."""
    response = await client.post(
        "/labels", json={"record_id": rid(1), "text": "x"}, headers=headers
    )
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await client.get(f"/labels/{rid(1)}", headers=headers)).status == 401
    assert audit(paths) == []


async def test_scheme_is_case_insensitive(client: Client) -> None:
    """ "bearer" in lower case is the same scheme."""
    response = await client.post(
        "/labels",
        json={"record_id": rid(1), "text": "x"},
        headers={"Authorization": f"bearer {ALICE_TOKEN}"},
    )
    assert response.status == 200


async def test_get_unknown_or_malformed_id(client: Client) -> None:
    """GET of a record without a label is 404; of a malformed id, 400 naming the field."""
    assert (await client.get(f"/labels/{rid(3)}", headers=auth())).status == 404
    response = await client.get("/labels/not-an-id", headers=auth())
    assert response.status == 400
    assert (await response.json())["error"].startswith("record_id: expected 32")


async def test_body_over_the_limit_is_413(client: Client, paths: tuple[Path, Path]) -> None:
    """A body over the configured limit is refused with 413, with or without a length."""
    big = json.dumps({"record_id": rid(1), "text": "x" * 70_000}).encode()
    response = await client.post("/labels", data=big, headers=auth())
    assert response.status == 413

    async def chunks() -> Any:
        for _ in range(20):
            yield b" " * 8192

    response = await client.post("/labels", data=chunks(), headers=auth())
    assert response.status == 413
    assert audit(paths) == []


async def test_default_limit_is_ten_mebibytes(
    aiohttp_client: MakeClient, paths: tuple[Path, Path]
) -> None:
    """With the default limit, a body just over 10 MiB is refused by its Content-Length."""
    app = web.Application()
    app[LABEL_STORE] = FileLabelStore(*paths)
    add_label_routes(app, ADMINS)
    client = await aiohttp_client(app)
    body = io.BytesIO(b" " * (10 * 1024 * 1024 + 1))
    assert (await client.post("/labels", data=body, headers=auth())).status == 413


async def test_no_admin_tokens_means_no_access(
    aiohttp_client: MakeClient, paths: tuple[Path, Path]
) -> None:
    """An app configured without admin tokens answers every label request with 401."""
    app = web.Application()
    app[LABEL_STORE] = FileLabelStore(*paths)
    add_label_routes(app, AdminTokens())
    client = await aiohttp_client(app)
    response = await client.post("/labels", json={"record_id": rid(1), "text": "x"}, headers=auth())
    assert response.status == 401


class BrokenStore:
    """A label store whose disk (or Redis) has failed."""

    async def put(
        self,
        labels: Sequence[LabelInput],
        labeller: str,
        source: LabelSource,
        *,
        all_or_nothing: bool = False,
    ) -> PutResult:
        raise StoreUnavailable("FileLabelStore.put: OSError: [Errno 28] No space left on device")

    async def get(self, record_ids: Iterable[str]) -> dict[str, Label]:
        raise StoreUnavailable("RedisLabelStore.get: ConnectionError: gone")

    async def all(self, experiment: str) -> dict[str, Label]:
        raise StoreUnavailable("FileLabelStore.all: OSError: [Errno 5] I/O error")

    async def find_units(self, queries: Sequence[UnitQuery]) -> list[tuple[UnitMatch, ...]]:
        raise StoreUnavailable("RedisLabelStore.find_units: ConnectionError: gone")


async def test_store_failure_is_503(aiohttp_client: MakeClient) -> None:
    """When the store fails the API answers 503 instead of an unhandled 500."""
    app = web.Application()
    app[LABEL_STORE] = BrokenStore()
    app[PSEUDONYM_KEY] = PSEUDONYM
    add_label_routes(app, ADMINS)
    client = await aiohttp_client(app)
    response = await client.post("/labels", json={"record_id": rid(1), "text": "x"}, headers=auth())
    assert response.status == 503
    assert (await client.get(f"/labels/{rid(1)}", headers=auth())).status == 503
    response = await client.post("/labels", json={"unit": "u", "text": "x"}, headers=auth())
    assert response.status == 503


@pytest.mark.parametrize(
    ("digests", "field", "problem"),
    [
        ({"alice": "ABC"}, "gateway.admin_tokens_sha256.alice", "64 lower-case hex"),
        ({"al ice": hash_key("t")}, "gateway.admin_tokens_sha256.al ice", "letters, digits"),
        ({"e": hash_key("")}, "gateway.admin_tokens_sha256.e", "the empty token"),
        (
            {"a": hash_key("t"), "b": hash_key("t")},
            "gateway.admin_tokens_sha256.b",
            "the same token digest",
        ),
    ],
)
def test_admin_token_config_errors_name_the_field(
    digests: dict[str, str], field: str, problem: str
) -> None:
    """Bad admin token configuration fails at load time, naming the entry."""
    with pytest.raises(ConfigError) as caught:
        AdminTokens.from_digests(digests)
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_authenticate_returns_the_admin_name() -> None:
    """The name of the admin whose token matches is returned; a wrong token gives None."""
    assert ADMINS.authenticate(f"Bearer {BOB_TOKEN}") == "bob"
    assert ADMINS.authenticate(f"Bearer  {ALICE_TOKEN} ") == "alice"
    assert ADMINS.authenticate(f"Bearer {ALICE_TOKEN}x") is None
    assert ADMINS.authenticate(None) is None


# -- labels by unit -------------------------------------------------------------------------


def unit_of(raw: str) -> str:
    return pseudonymise(raw, PSEUDONYM)


@pytest.fixture
async def unit_client(aiohttp_client: MakeClient, paths: tuple[Path, Path]) -> Client:
    """The labels API with the pseudonym key, over an outcome file that holds, besides
    records 1-3: user-1's two sessions (utterances 0 and 1 of one, 0 of the other, the
    latter in experiment "search"), a shadow of user-1, and user-2's REST request."""
    records = [
        make(11, unit=unit_of("user-1"), session_id="s1"),
        make(12, unit=unit_of("user-1"), session_id="s1", utterance_index=1),
        make(13, unit=unit_of("user-1"), session_id="s2", experiment="search"),
        make(14, unit=unit_of("user-1"), session_id="s1", role=Role.SHADOW, shadow_drops=0),
        make(15, unit=unit_of("user-2"), kind=Kind.REQUEST, protocol=Protocol.REST),
    ]
    with paths[0].open("a", encoding="ascii") as file:
        file.writelines(record.to_json() + "\n" for record in records)
    app = web.Application()
    app[LABEL_STORE] = FileLabelStore(*paths)
    app[PSEUDONYM_KEY] = PSEUDONYM
    add_label_routes(app, ADMINS)
    return await aiohttp_client(app)


async def test_label_by_unit_labels_every_session(
    unit_client: Client, paths: tuple[Path, Path]
) -> None:
    """A label by unit and utterance index is stored on each primary record it names, and
    the answer says which records, in which experiments, each selector resolved to."""
    labels = [
        {"unit": "user-1", "text": "pay my bill"},
        {"record_id": rid(2), "text": "by id"},
        {"unit": "user-1", "utterance_index": 1, "text": "and the rent"},
        {"unit": "user-2", "text": "rest"},
    ]
    response = await unit_client.post("/labels", json={"labels": labels}, headers=auth())
    assert response.status == 200
    body = await response.json()
    assert (body["stored"], body["relabelled"]) == (5, 0)
    assert [r["record_id"] for r in body["results"]] == [rid(11), rid(13), rid(2), rid(12), rid(15)]
    assert body["resolved"] == [
        {
            "index": 0,
            "unit": "user-1",
            "utterance_index": 0,
            "records": [
                {"record_id": rid(11), "experiment": "checkout"},
                {"record_id": rid(13), "experiment": "search"},
            ],
        },
        {
            "index": 2,
            "unit": "user-1",
            "utterance_index": 1,
            "records": [{"record_id": rid(12), "experiment": "checkout"}],
        },
        {
            "index": 3,
            "unit": "user-2",
            "utterance_index": 0,
            "records": [{"record_id": rid(15), "experiment": "checkout"}],
        },
    ]
    texts = {label.record_id: label.text for label in audit(paths)}
    assert texts == {
        rid(11): "pay my bill",
        rid(13): "pay my bill",
        rid(2): "by id",
        rid(12): "and the rent",
        rid(15): "rest",
    }
    assert rid(14) not in texts  # the shadow is no label target


async def test_label_by_unit_takes_an_integral_number_as_index(
    unit_client: Client, paths: tuple[Path, Path]
) -> None:
    """`utterance_index: 1.0` (an integer in the OpenAPI document's JSON Schema) labels the
    same record as 1 and is echoed as 1; 1.5, true and "1" stay 400 with nothing stored."""
    body = b'{"unit": "user-1", "utterance_index": 1.0, "text": "and the rent"}'
    headers = {**auth(), "Content-Type": "application/json"}
    for refused in (b"1.5", b"true", b'"1"'):
        bad = body.replace(b"1.0", refused)
        response = await unit_client.post("/labels", data=bad, headers=headers)
        assert response.status == 400
        assert (await response.json())["error"].startswith("utterance_index: expected an integer")
    assert audit(paths) == []
    response = await unit_client.post("/labels", data=body, headers=headers)
    assert response.status == 200
    answer = await response.json()
    assert [r["record_id"] for r in answer["results"]] == [rid(12)]
    assert answer["resolved"][0]["utterance_index"] == 1
    assert "1.0" not in json.dumps(answer)
    assert [(label.record_id, label.text) for label in audit(paths)] == [(rid(12), "and the rent")]


async def test_label_by_unit_narrowed_to_an_experiment(unit_client: Client) -> None:
    """With an experiment only that experiment's records of the unit are labelled."""
    response = await unit_client.post(
        "/labels", json={"unit": "user-1", "experiment": "search", "text": "x"}, headers=auth()
    )
    assert response.status == 200
    body = await response.json()
    assert [r["record_id"] for r in body["results"]] == [rid(13)]
    assert body["resolved"][0]["experiment"] == "search"


async def test_unresolved_unit_refuses_the_whole_batch(
    unit_client: Client, paths: tuple[Path, Path]
) -> None:
    """A unit (or utterance index) with no record yet gets 422 listing the selector, and
    nothing of the batch is stored."""
    labels = [
        {"record_id": rid(1), "text": "ok"},
        {"unit": "user-1", "utterance_index": 7, "text": "x"},
        {"unit": "nobody", "text": "y"},
    ]
    response = await unit_client.post("/labels", json={"labels": labels}, headers=auth())
    assert response.status == 422
    body = await response.json()
    assert body["unresolved"] == [
        {"index": 1, "unit": "user-1", "utterance_index": 7},
        {"index": 2, "unit": "nobody", "utterance_index": 0},
    ]
    assert "2 unit selector(s) match no outcome record" in body["error"]
    assert audit(paths) == []


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ([{"unit": "u", "record_id": rid(1), "text": "x"}], "labels[0].unit: give record_id"),
        ([{"record_id": rid(1), "text": "x"}, {"unit": "", "text": "x"}], "labels[1].unit:"),
        ([{"unit": "a\u0007b", "text": "x"}], "labels[0].unit: expected 1-256 printable"),
        ([{"unit": "u", "utterance_index": -1, "text": "x"}], "labels[0].utterance_index:"),
        ([{"unit": "u", "utterance_index": "1", "text": "x"}], "labels[0].utterance_index:"),
        ([{"unit": "u", "experiment": "a b", "text": "x"}], "labels[0].experiment:"),
        ([{"unit": "u", "text": ""}], "labels[0].text: must not be empty"),
    ],
)
async def test_bad_unit_selector_is_400(
    unit_client: Client, paths: tuple[Path, Path], labels: list[dict[str, Any]], reason: str
) -> None:
    """A malformed label by unit is 400 naming its index and field; nothing is stored."""
    response = await unit_client.post("/labels", json={"labels": labels}, headers=auth())
    assert response.status == 400
    assert (await response.json())["error"].startswith(reason)
    assert audit(paths) == []


async def test_label_by_unit_needs_an_admin_token(
    unit_client: Client, paths: tuple[Path, Path]
) -> None:
    """A client key is no admin credential for labels by unit either."""
    response = await unit_client.post(
        "/labels",
        json={"unit": "user-1", "text": "x"},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert response.status == 401
    assert audit(paths) == []


async def test_label_by_unit_without_a_pseudonym_key_is_501(client: Client) -> None:
    """An app that knows no pseudonym key cannot resolve units and says so."""
    response = await client.post("/labels", json={"unit": "user-1", "text": "x"}, headers=auth())
    assert response.status == 501
    assert "pseudonym key" in (await response.json())["error"]


async def test_units_matching_too_many_records_are_refused(
    aiohttp_client: MakeClient, paths: tuple[Path, Path]
) -> None:
    """Selectors that expand past 10,000 label writes are refused (422), nothing stored."""
    outcomes, _ = paths
    busy = [make(100 + n, unit=unit_of("busy"), session_id=f"b{n}") for n in range(100)]
    with outcomes.open("a", encoding="ascii") as file:
        file.writelines(record.to_json() + "\n" for record in busy)
    app = web.Application()
    app[LABEL_STORE] = FileLabelStore(*paths)
    app[PSEUDONYM_KEY] = PSEUDONYM
    add_label_routes(app, ADMINS)
    client = await aiohttp_client(app)
    labels = [{"unit": "busy", "text": "x"}] * 101
    response = await client.post("/labels", json={"labels": labels}, headers=auth())
    assert response.status == 422
    assert "match 10,100 records; at most 10,000" in (await response.json())["error"]
    assert audit(paths) == []


# -- through a gateway ----------------------------------------------------------------------


def post_json(url: str, body: object, token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_label_by_unit_through_a_gateway(alpha: LocalEmulator, tmp_path: Path) -> None:
    """A session the real Speech SDK ran with a gw-unit is labelled by that unit through the
    gateway's own pseudonym key, once its record is stored; GET returns the label."""
    backends = {"alpha": alpha.ws_url, "bravo": alpha.ws_url}
    gateway = gateway_for(
        tmp_path,
        backends,
        [split_experiment((100, 0))],
        admin_tokens_sha256={"alice": hash_key(ALICE_TOKEN)},
    )
    wav = write_wav(tmp_path / "one.wav", silence(1.0))
    with gateway:
        endpoint = f"{gateway.ws_url}/speech/recognition/conversation/cognitiveservices/v1"
        config = speech_config(endpoint, GATEWAY_CLIENT_KEY)
        config.set_service_property(
            "gw-unit", "device-42", speechsdk.ServicePropertyChannel.UriQueryParameter
        )
        assert transcribe_file(config, wav).text == ALPHA
        url = f"{gateway.http_url}/labels"
        deadline = time.monotonic() + 15
        while True:  # the record reaches the outcome file asynchronously
            status, body = post_json(url, {"unit": "device-42", "text": "hello"}, ALICE_TOKEN)
            if status != 422 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200, body
        ((match,),) = [entry["records"] for entry in body["resolved"]]
        assert match["experiment"] == "ab"
        request = urllib.request.Request(
            f"{url}/{match['record_id']}", headers={"Authorization": f"Bearer {ALICE_TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["text"] == "hello"
