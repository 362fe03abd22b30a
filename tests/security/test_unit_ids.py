"""Oversized and forged unit ids (docs/assignment.md "The unit id").

Through a real gateway (REST short audio, backend: an instant emulator): a unit id that is
too long, holds control or format characters or undecodable bytes gets a clean 4xx and no
record; a long but allowed one is kept whole. Outcome records carry only the keyed
pseudonym, never the raw id. A client that sends another unit's pseudonym, a lookalike of a
forced unit, or a unit in both the header and the query gets exactly the variant its own
literal id is assigned: nothing about the id steers assignment but the id itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from security_support import (
    ADMIN,
    CONVERSATION,
    WAV,
    WAV_TYPE,
    gateway_settings,
    http_request,
    raw_exchange,
    running_gateway,
    server_errors,
)
from support import CLIENT_KEY, read_outcomes

from gateway.config.gateway_config import build_gateway_config
from gateway.control.assignment import assign
from gateway.control.routing import MAX_UNIT_ID
from gateway.outcomes.privacy import PSEUDONYM_LENGTH, pseudonymise
from gateway.outcomes.record import OutcomeRecord
from gateway.tools.local_services import LocalEmulator


def rest(query: str, extra: list[tuple[str, str | bytes]] | None = None) -> bytes:
    headers = [("Ocp-Apim-Subscription-Key", CLIENT_KEY), ("Content-Type", WAV_TYPE)]
    return http_request(
        "POST", f"{CONVERSATION}?language=en-US&{query}", headers + (extra or []), WAV
    )


def unit_query(unit: str) -> str:
    return "gw-unit=" + quote(unit, safe="")


# Refused unit ids as the client writes them: (query string part, header value).
REFUSED_QUERIES = {
    "too-long": "gw-unit=" + "u" * (MAX_UNIT_ID + 1),
    "ten-kib": "gw-unit=" + "u" * 10_240,
    "empty": "gw-unit=",
    "nul": "gw-unit=u%00",
    "unit-separator": "gw-unit=u%1Fv",  # the seed/unit separator of the bucket hash
    "crlf": "gw-unit=u%0D%0Av",
    "tab": "gw-unit=u%09v",
    "del": "gw-unit=u%7F",
    "line-separator": "gw-unit=u%E2%80%A8",
    "next-line": "gw-unit=u%C2%85",
    "zero-width-space": "gw-unit=vip%E2%80%8B",
    "bom": "gw-unit=%EF%BB%BFvip",
    "bidi-override": "gw-unit=%E2%80%AEpiv",
    "no-break-space": "gw-unit=vip%C2%A0",
}
REFUSED_HEADERS: dict[str, bytes] = {
    "too-long": b"u" * (MAX_UNIT_ID + 1),
    "ten-kib": b"u" * 10_240,
    "obs-text": b"u\xff\xfe",
    "latin-1": b"caf\xe9",
    "tab": b"u\tv",
    "zero-width-space": "vip\u200b".encode(),
}


async def test_bad_unit_ids_get_a_clean_4xx_and_no_record(
    instant: LocalEmulator, tmp_path: Path
) -> None:
    """Too long (257 characters or 10 KiB), empty, control or format characters, non-UTF-8
    bytes: in the query or the X-Gateway-Unit header, each gets a 4xx (400, or 431/414 from
    the HTTP layer for a line past its limit) and leaves no record."""
    settings = gateway_settings(tmp_path, {"alpha": instant.ws_url})
    with server_errors() as errors:
        async with running_gateway(settings) as port:
            for name, query in REFUSED_QUERIES.items():
                answer = await raw_exchange(port, rest(query))
                assert answer.status in (400, 414, 431), (name, answer)
            for name, value in REFUSED_HEADERS.items():
                answer = await raw_exchange(port, rest("", [("X-Gateway-Unit", value)]))
                assert answer.status in (400, 431), (name, answer)
            # The longest allowed id is kept whole (its pseudonym is of all 256 characters).
            longest = "u" * (MAX_UNIT_ID - 1) + "z"
            assert (await raw_exchange(port, rest(unit_query(longest)))).status == 200
    assert not errors.unexpected(), errors.unexpected()
    (record,) = read_outcomes(tmp_path / "outcomes.jsonl")
    assert record.unit == pseudonymise(longest, settings.outcomes.resolved_pseudonym_key() or b"")


async def test_records_and_answers_carry_only_the_keyed_pseudonym(
    instant: LocalEmulator, tmp_path: Path
) -> None:
    """Units from the query and the header, non-ASCII and undecodable escapes included,
    appear in records only as HMAC pseudonyms under the configured key (32 hex digits);
    no raw id is in the outcome file or in the answer."""
    settings = gateway_settings(tmp_path, {"alpha": instant.ws_url})
    key = settings.outcomes.resolved_pseudonym_key()
    assert key is not None
    sent = {
        "user-4711-query": rest(unit_query("user-4711-query")),
        "Zürich-東京-unit": rest(unit_query("Zürich-東京-unit")),
        "user-4712-header": rest("", [("X-Gateway-Unit", "user-4712-header")]),
        # yarl decodes an invalid UTF-8 escape to U+FFFD: the unit is that text.
        "\ufffd\ufffdraw-ff-fe": rest("gw-unit=%ff%feraw-ff-fe"),
    }
    async with running_gateway(settings) as port:
        for raw, request in sent.items():
            answer = await raw_exchange(port, request)
            assert answer.status == 200, (raw, answer)
            assert raw not in answer.text
    text = (tmp_path / "outcomes.jsonl").read_text(encoding="utf-8")
    records = [OutcomeRecord.from_json(line) for line in text.splitlines()]
    assert sorted(r.unit for r in records) == sorted(pseudonymise(u, key) for u in sent)
    for record in records:
        assert len(record.unit) == PSEUDONYM_LENGTH
        int(record.unit, 16)
    for raw in sent:
        assert raw not in text
        assert json.dumps(raw)[1:-1] not in text  # nor its JSON escape


async def test_assignment_is_steered_by_nothing_but_the_literal_id(
    instant: LocalEmulator, tmp_path: Path
) -> None:
    """Another unit's pseudonym sent as a unit id is a different unit with its own bucket
    and pseudonym; lookalikes of an admin-forced unit (case, spaces, full-width letters)
    are not forced; a unit in both the query and the header is the query's. Each request's
    variant is exactly `assign(experiment, literal id)`, or the forced one for "vip" only."""
    settings = gateway_settings(tmp_path, {"alpha": instant.ws_url})
    key = settings.outcomes.resolved_pseudonym_key()
    assert key is not None
    experiment = build_gateway_config(settings.gateway).experiments[0]
    natural = assign(experiment, "vip").name
    forced = "b" if natural == "a" else "a"
    victim = "victim-42"
    forged = pseudonymise(victim, key)
    lookalikes = ["VIP", "vip ", " vip", "Vip", "ｖｉｐ", "vip.", "vip%"]
    requests: dict[str, bytes] = {
        victim: rest(unit_query(victim)),
        forged: rest(unit_query(forged)),
        "vip": rest(unit_query("vip")),
        **{unit: rest(unit_query(unit)) for unit in lookalikes},
        # Query and header disagree: the query's unit counts.
        "from-query": rest(unit_query("from-query"), [("X-Gateway-Unit", "vip")]),
    }
    async with running_gateway(settings) as port:
        body = json.dumps({"unit": "vip", "variant": forced}).encode()
        headers = [*ADMIN.items(), ("Content-Type", "application/json")]
        force = http_request("POST", "/admin/experiments/ab/forced", headers, body)
        assert (await raw_exchange(port, force)).status == 200
        for unit, request in requests.items():
            answer = await raw_exchange(port, request)
            assert answer.status == 200, (unit, answer)
    by_unit = {r.unit: r for r in read_outcomes(tmp_path / "outcomes.jsonl")}
    assert len(by_unit) == len(requests)
    for unit in requests:
        record = by_unit[pseudonymise(unit, key)]
        expected = forced if unit == "vip" else assign(experiment, unit).name
        assert (record.variant, record.forced) == (expected, unit == "vip"), unit
        assert record.unit_source == "query"
    # The forged pseudonym names a unit of its own: its records cannot be taken for the
    # victim's, whatever the two were assigned.
    assert pseudonymise(forged, key) != pseudonymise(victim, key)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/admin/experiments/ab/forced", {"unit": "u" * 10_240, "variant": "a"}),
        ("POST", "/admin/experiments/ab/forced", {"unit": "u\u0000", "variant": "a"}),
        ("POST", "/labels", {"unit": "u" * 10_240, "text": "hello"}),
        ("POST", "/labels", {"unit": "u\r\nv", "text": "hello"}),
        ("DELETE", "/admin/experiments/ab/forced?unit=" + "u" * 4000, None),
    ],
    ids=["force-10k", "force-nul", "label-10k", "label-crlf", "unforce-4k"],
)
async def test_admin_routes_refuse_oversized_or_control_unit_ids(
    tmp_path: Path, method: str, path: str, body: object
) -> None:
    """Where an admin names a unit (forcing, labels by unit, unforcing), a 10 KiB id or one
    with control characters gets a 4xx with the JSON error, not a 5xx."""
    settings = gateway_settings(tmp_path, {"alpha": "ws://127.0.0.1:9"})
    headers = [*ADMIN.items(), ("Content-Type", "application/json")]
    payload = b"" if body is None else json.dumps(body).encode()
    with server_errors() as errors:
        async with running_gateway(settings) as port:
            answer = await raw_exchange(port, http_request(method, path, headers, payload))
    assert answer.status in (400, 404), answer
    assert "error" in json.loads(answer.body)
    assert not errors.unexpected(), errors.unexpected()
