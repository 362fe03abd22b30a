"""`speech-gateway admin` against an in-process stand-in for the gateway's admin API.

The stand-in (an aiohttp app on loopback) records every request and answers what a test
set; the blocking CLI runs in a worker thread so that the server's loop keeps serving.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.tools.admin_cli import add_admin_parser, admin_command

TOKEN = "admin-token-7Hq2-never-printed"
Json = dict[str, Any]

VIEW: Json = {
    "id": "banking",
    "control": "base",
    "status": "running",
    "serving": None,
    "phase": "p-3f2a9c01b7",
    "version": 3,
    "updated_at": "2026-11-21T10:00:00.000Z",
    "updated_by": "alice",
    "shadows": [],
    "variants": [
        {"name": "base", "backend": "azure", "endpoint_id": None, "weight": 90.0, "share": 0.9},
        {"name": "custom", "backend": "azure", "endpoint_id": "ep-1", "weight": 10.0, "share": 0.1},
    ],
    "forced": {"qa-user-1": "custom"},
    "guardrails": None,
    "phases": [
        {
            "phase": "p-3f2a9c01b7",
            "started_at": "2026-11-21T10:00:00.000Z",
            "weights": {"base": 0.9, "custom": 0.1},
        },
        {"phase": "p-0000000001", "started_at": None, "weights": {"base": 0.5, "custom": 0.5}},
    ],
}
PAUSED: Json = {
    **VIEW,
    "id": "checkout",
    "status": "paused",
    "serving": "base",
    "phase": "p-77",
    "version": 4,
    "variants": [
        {"name": "base", "backend": "azure", "endpoint_id": None, "weight": 50.0, "share": 1.0},
        {"name": "custom", "backend": "azure", "endpoint_id": None, "weight": 50.0, "share": 0.0},
    ],
}


def summary(version: int, status: str, weights: dict[str, float]) -> Json:
    return {
        "version": version,
        "status": status,
        "phase": f"p-{version}",
        "weights": weights,
        "serving": "base" if status != "running" else None,
        "forced_count": 0,
    }


AUDIT: Json = {
    "entries": [
        {
            "id": "1732183200000-0",
            "at": "2026-11-21T10:05:00.000Z",
            "actor": "alice",
            "action": "pause",
            "experiment": "banking",
            "reason": "error spike",
            "detail": {},
            "before": summary(3, "running", {"base": 90.0, "custom": 10.0}),
            "after": summary(4, "paused", {"base": 90.0, "custom": 10.0}),
        },
        {
            "id": "1732183100000-0",
            "at": "2026-11-21T10:00:00.000Z",
            "actor": "bob",
            "action": "set_weights",
            "experiment": "banking",
            "reason": None,
            "detail": {"weights": {"custom": 10.0, "base": 90.0}},
            "before": summary(2, "running", {"base": 50.0, "custom": 50.0}),
            "after": summary(3, "running", {"base": 90.0, "custom": 10.0}),
        },
    ]
}
BACKENDS: Json = {
    "backends": [
        {
            "name": "azure",
            "breaker": {
                "state": "open",
                "consecutive_failures": 5,
                "window_attempts": 20,
                "window_failures": 7,
                "opened": 2,
                "open_until": 12.5,
            },
        }
    ]
}


@dataclass
class Seen:
    """One request as the stand-in received it."""

    method: str
    raw_path: str
    path: str
    query: dict[str, str]
    authorization: str | None
    content_type: str | None
    body: Any  # the parsed JSON body, or None without one


@dataclass
class StandIn:
    """The stand-in gateway: where it listens, what it got, and what it answers."""

    url: str
    requests: list[Seen] = field(default_factory=list)
    # (method, path) -> (status, JSON body or text); anything else gets the VIEW.
    answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)


@pytest.fixture
async def gateway(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
    monkeypatch: pytest.MonkeyPatch,
) -> StandIn:
    """A stand-in admin API on 127.0.0.1, the admin token in the environment."""
    for name in ("SPEECH_GATEWAY_URL", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPEECH_GATEWAY_ADMIN_TOKEN", TOKEN)
    stand_in = StandIn(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        stand_in.requests.append(
            Seen(
                method=request.method,
                raw_path=request.raw_path.partition("?")[0],
                path=request.path,
                query=dict(request.query),
                authorization=request.headers.get("Authorization"),
                content_type=request.headers.get("Content-Type"),
                body=json.loads(raw) if raw else None,
            )
        )
        status, answer = stand_in.answers.get((request.method, request.path), (200, VIEW))
        if status in (301, 302, 307):
            raise web.HTTPTemporaryRedirect(location=str(answer))
        if isinstance(answer, str):
            return web.Response(status=status, text=answer)
        return web.json_response(answer, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app)
    stand_in.url = str(server.make_url("")).rstrip("/")
    return stand_in


def parse(argv: list[str]) -> argparse.Namespace:
    """The arguments as the console script parses them (`speech-gateway admin ...`)."""
    parser = argparse.ArgumentParser(prog="speech-gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    add_admin_parser(commands)
    return parser.parse_args(["admin", *argv])


async def run(argv: list[str]) -> int:
    """Parse and run in a worker thread: the CLI blocks, the stand-in's loop must not."""
    args = parse(argv)
    return await asyncio.to_thread(admin_command, args)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- requests --------------------------------------------------------------------------------

E = "/admin/experiments/banking"


@pytest.mark.parametrize(
    ("argv", "method", "path", "query", "body"),
    [
        (["list"], "GET", "/admin/experiments", {}, None),
        (["show", "banking"], "GET", E, {}, None),
        (
            ["weights", "banking", "custom=10", "base=90.5"],
            "PUT",
            f"{E}/weights",
            {},
            {"weights": {"custom": 10.0, "base": 90.5}},
        ),
        (
            ["weights", "banking", "custom=0", "--reason", "ramp down", "--expect-version", "3"],
            "PUT",
            f"{E}/weights",
            {},
            {"weights": {"custom": 0.0}, "reason": "ramp down", "expected_version": 3},
        ),
        (["pause", "banking"], "POST", f"{E}/pause", {}, {}),
        (["pause", "banking", "--reason", "spike"], "POST", f"{E}/pause", {}, {"reason": "spike"}),
        (
            ["resume", "banking", "--expect-version", "0"],
            "POST",
            f"{E}/resume",
            {},
            {"expected_version": 0},
        ),
        (["stop", "banking"], "POST", f"{E}/stop", {}, {}),
        (
            ["stop", "banking", "--serve", "custom", "--reason", "ship it"],
            "POST",
            f"{E}/stop",
            {},
            {"serve": "custom", "reason": "ship it"},
        ),
        (
            ["force", "banking", "qa user/1", "custom", "--reason", "qa"],
            "POST",
            f"{E}/forced",
            {},
            {"unit": "qa user/1", "variant": "custom", "reason": "qa"},
        ),
        (
            ["unforce", "banking", "qa user/1&x=y", "--reason", "done"],
            "DELETE",
            f"{E}/forced",
            {"unit": "qa user/1&x=y", "reason": "done"},
            None,
        ),
        (["unforce", "banking", "qa-1"], "DELETE", f"{E}/forced", {"unit": "qa-1"}, None),
        (["audit", "banking"], "GET", f"{E}/audit", {}, None),
        (["audit", "banking", "--limit", "5"], "GET", f"{E}/audit", {"limit": "5"}, None),
        (["backends"], "GET", "/admin/backends", {}, None),
        (["delete-unit-audio", "user 7/a"], "DELETE", "/admin/units/user 7/a/audio", {}, None),
        (
            ["delete-unit-audio", "--pseudonymised", "ab12"],
            "DELETE",
            "/admin/units/ab12/audio",
            {"pseudonymised": "true"},
            None,
        ),
        (["ship", "banking", "custom"], "POST", f"{E}/ship", {}, {"variant": "custom"}),
        (
            ["ship", "banking", "custom", "--holdout", "0.1", "--reason", "WER -3 points"],
            "POST",
            f"{E}/ship",
            {},
            {"variant": "custom", "holdout": 0.1, "reason": "WER -3 points"},
        ),
    ],
)
async def test_each_verb_sends_its_request_with_the_token(
    gateway: StandIn,
    argv: list[str],
    method: str,
    path: str,
    query: dict[str, str],
    body: Json | None,
) -> None:
    """A verb is one request: method, path, query and JSON body, with the bearer token."""
    gateway.answers[("GET", "/admin/experiments")] = (200, {"experiments": [VIEW]})
    gateway.answers[("GET", f"{E}/audit")] = (200, AUDIT)
    gateway.answers[("GET", "/admin/backends")] = (200, BACKENDS)
    assert await run(["--gateway", gateway.url, *argv]) == 0
    (seen,) = gateway.requests
    assert (seen.method, seen.path, seen.query, seen.body) == (method, path, query, body)
    assert seen.authorization == f"Bearer {TOKEN}"
    assert seen.content_type == (None if body is None else "application/json")


async def test_delete_unit_audio_prints_what_went(
    gateway: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """The unit is one percent-encoded segment; the answer is one line."""
    answer = {"unit": "ab12", "deleted": 3}
    gateway.answers[("DELETE", "/admin/units/../x/audio")] = (200, answer)
    assert await run(["--gateway", gateway.url, "delete-unit-audio", "../x"]) == 0
    (seen,) = gateway.requests
    assert seen.raw_path == "/admin/units/..%2Fx/audio"
    out = capsys.readouterr().out
    assert out == "deleted 3 captures of unit ab12; none will be captured again\n"


async def test_an_experiment_id_cannot_change_the_route(gateway: StandIn) -> None:
    """The id is one percent-encoded path segment, whatever characters it has."""
    assert await run(["--gateway", gateway.url, "show", "../backends?x"]) == 0
    (seen,) = gateway.requests
    assert seen.raw_path == "/admin/experiments/..%2Fbackends%3Fx"
    assert seen.query == {}


async def test_the_gateway_url_comes_from_the_environment(
    gateway: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --gateway, SPEECH_GATEWAY_URL is the gateway."""
    monkeypatch.setenv("SPEECH_GATEWAY_URL", gateway.url)
    assert await run(["show", "banking"]) == 0
    assert len(gateway.requests) == 1


async def test_a_token_given_as_an_option_is_used(
    gateway: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--admin-token works without the environment variable."""
    monkeypatch.delenv("SPEECH_GATEWAY_ADMIN_TOKEN")
    assert await run(["--gateway", gateway.url, "--admin-token", "other", "list"]) == 0
    assert gateway.requests[0].authorization == "Bearer other"


# -- output ----------------------------------------------------------------------------------


async def test_list_prints_one_line_per_experiment(
    gateway: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """Status, phase, version and each variant's weight and share, one line each."""
    gateway.answers[("GET", "/admin/experiments")] = (200, {"experiments": [VIEW, PAUSED]})
    assert await run(["--gateway", gateway.url, "list"]) == 0
    header, banking, checkout = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "EXPERIMENT",
        "STATUS",
        "PHASE",
        "VERSION",
        "VARIANTS:",
        "WEIGHT",
        "(SHARE)",
    ]
    assert banking.split() == [
        "banking", "running", "p-3f2a9c01b7", "3", "base=90", "(90.0%)", "custom=10", "(10.0%)"
    ]  # fmt: skip
    assert checkout.split() == [
        "checkout", "paused", "p-77", "4", "base=50", "(100.0%)", "custom=50", "(0.0%)"
    ]  # fmt: skip


async def test_json_prints_the_exact_answer(
    gateway: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints the API's JSON answer unchanged."""
    answer = {"experiments": [VIEW, PAUSED]}
    gateway.answers[("GET", "/admin/experiments")] = (200, answer)
    assert await run(["--gateway", gateway.url, "--json", "list"]) == 0
    assert json.loads(capsys.readouterr().out) == answer


async def test_show_prints_the_experiment_in_full(
    gateway: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """show names the status, who changed it, variants, forced units and phases."""
    assert await run(["--gateway", gateway.url, "show", "banking"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("banking: running, version 3, phase p-3f2a9c01b7: base=90 (90.0%)")
    assert "updated 2026-11-21T10:00:00.000Z by alice" in out
    assert "forced: qa-user-1 -> custom" in out
    assert any(
        line.split() == ["custom", "azure", "ep-1", "10", "10.0%"] for line in out.split("\n")
    )
    assert "p-0000000001  -" in out


async def test_a_change_prints_the_experiment_as_it_is_now(
    gateway: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """A write verb prints one line: the new status, version, phase and split."""
    gateway.answers[("POST", f"{E}/pause")] = (200, {**PAUSED, "id": "banking"})
    assert await run(["--gateway", gateway.url, "pause", "banking"]) == 0
    assert capsys.readouterr().out == (
        "banking: paused, version 4, phase p-77: base=50 (100.0%)  custom=50 (0.0%); "
        "1 forced unit\n"
    )


async def test_audit_prints_one_line_per_entry(
    gateway: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each entry: time, actor, action, reason and what changed, before → after."""
    gateway.answers[("GET", f"{E}/audit")] = (200, AUDIT)
    assert await run(["--gateway", gateway.url, "audit", "banking"]) == 0
    header, pause, weights = capsys.readouterr().out.splitlines()
    assert header.split() == ["AT", "ACTOR", "ACTION", "REASON", "CHANGE"]
    assert pause.split("  ")[0] == "2026-11-21T10:05:00.000Z"
    assert '"error spike"' in pause
    assert pause.endswith("v3→v4; running→paused; serving -→base")
    assert weights.split()[:4] == ["2026-11-21T10:00:00.000Z", "bob", "set_weights", "-"]
    assert weights.endswith("v2→v3; base=50 custom=50 → base=90 custom=10")


async def test_backends_prints_each_breaker(
    gateway: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line per backend: breaker state, failures, window, openings, open until."""
    gateway.answers[("GET", "/admin/backends")] = (200, BACKENDS)
    assert await run(["--gateway", gateway.url, "backends"]) == 0
    _, azure = capsys.readouterr().out.splitlines()
    assert azure.split() == ["azure", "open", "5", "7/20", "2", "12.5"]


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "answer", "message"),
    [
        (409, {"error": "'banking' is stopped; its state no longer changes"}, None),
        (401, {"error": "an admin token is required: Authorization: Bearer <token>"}, None),
        (404, {"error": "no experiment 'banking' is configured"}, None),
        (400, {"error": "weights.typo: not a variant of 'banking' (base, custom)"}, None),
        (503, {"error": "the state store is unavailable; nothing changed"}, None),
        (502, "<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        (500, {"unexpected": 1}, '{"unexpected": 1}'),
    ],
)
async def test_an_error_answer_exits_1_with_its_message(
    gateway: StandIn,
    capsys: pytest.CaptureFixture[str],
    status: int,
    answer: Any,
    message: str | None,
) -> None:
    """`error: HTTP <status>: <message>` on stderr, nothing on stdout, exit status 1."""
    gateway.answers[("PUT", f"{E}/weights")] = (status, answer)
    assert await run(["--gateway", gateway.url, "weights", "banking", "custom=1"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: HTTP {status}: {message or answer['error']}\n"


async def test_a_redirect_is_not_followed(
    gateway: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """A redirect is an error, so the token is never sent where it points."""
    gateway.answers[("GET", "/admin/experiments")] = (307, "http://198.51.100.1/steal")
    assert await run(["--gateway", gateway.url, "list"]) == 1
    assert len(gateway.requests) == 1
    assert capsys.readouterr().err.startswith("error: HTTP 307: ")


async def test_a_success_that_is_not_a_json_object_is_an_error(
    gateway: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 200 whose body is not a JSON object exits 1 naming the route."""
    gateway.answers[("GET", "/admin/backends")] = (200, "ok")
    assert await run(["--gateway", gateway.url, "backends"]) == 1
    assert (
        capsys.readouterr().err == "error: GET /admin/backends: the answer is not a JSON object\n"
    )


async def test_an_unreachable_gateway_exits_1_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listening: exit 1 with the URL, and never the token."""
    monkeypatch.setenv("SPEECH_GATEWAY_ADMIN_TOKEN", TOKEN)
    url = f"http://127.0.0.1:{free_port()}"
    assert await run(["--gateway", url, "list"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: cannot reach the gateway at {url} (")
    assert TOKEN not in err


def test_no_token_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --admin-token or the environment variable: exit 2, naming the variable."""
    monkeypatch.delenv("SPEECH_GATEWAY_ADMIN_TOKEN", raising=False)
    assert admin_command(parse(["--gateway", "http://127.0.0.1:9", "list"])) == 2
    assert "SPEECH_GATEWAY_ADMIN_TOKEN" in capsys.readouterr().err


@pytest.mark.parametrize(
    "url", ["ftp://gateway:21", "http://user:pw@gateway:8080", "http://gateway:8080/admin"]
)
def test_a_bad_gateway_url_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """A URL that is not an http(s) root without credentials: exit 2, --gateway named."""
    monkeypatch.setenv("SPEECH_GATEWAY_ADMIN_TOKEN", TOKEN)
    assert admin_command(parse(["--gateway", url, "list"])) == 2
    err = capsys.readouterr().err
    assert "--gateway" in err
    assert "pw" not in err


@pytest.mark.parametrize(
    ("pair", "named"),
    [
        ("custom", "'custom'"),
        ("custom=", "'custom='"),
        ("=5", "'=5'"),
        ("custom=abc", "'custom=abc'"),
        ("custom=-1", "'custom=-1'"),
        ("custom=nan", "'custom=nan'"),
        ("custom=inf", "'custom=inf'"),
        ("custom=1e999", "'custom=1e999'"),
        ("custom=1_000", "'custom=1_000'"),
        ("custom=10%", "'custom=10%'"),
        ("bad name=1", "'bad name=1'"),
    ],
)
def test_a_bad_weight_pair_is_a_usage_error_naming_it(
    capsys: pytest.CaptureFixture[str], pair: str, named: str
) -> None:
    """A pair that is not NAME=<finite decimal >= 0> exits 2 before any request."""
    with pytest.raises(SystemExit) as exited:
        parse(["weights", "banking", "base=1", pair])
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


def test_a_variant_given_twice_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Two weights for one variant are refused, not silently merged."""
    with pytest.raises(SystemExit) as exited:
        parse(["weights", "banking", "custom=1", "custom=2"])
    assert exited.value.code == 2
    assert "'custom' is given twice" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["weights", "banking"],
        ["pause"],
        ["force", "banking", "unit-only"],
        ["audit", "banking", "--limit", "many"],
        ["pause", "banking", "--expect-version", "-1"],
        ["frobnicate", "banking"],
        [],
    ],
)
def test_malformed_commands_are_usage_errors(argv: list[str]) -> None:
    """Missing arguments, bad numbers and unknown verbs exit 2 (argparse)."""
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2


# -- the token -------------------------------------------------------------------------------


@pytest.mark.parametrize("as_option", [False, True])
async def test_the_token_never_appears_in_output(
    gateway: StandIn,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    as_option: bool,
) -> None:
    """Even an answer that quotes the Authorization header prints the token as ***."""
    options = ["--gateway", gateway.url]
    if as_option:
        monkeypatch.delenv("SPEECH_GATEWAY_ADMIN_TOKEN")
        options += ["--admin-token", TOKEN]
    echo = {**VIEW, "updated_by": f"Bearer {TOKEN}"}
    gateway.answers[("GET", E)] = (200, echo)
    gateway.answers[("POST", f"{E}/pause")] = (401, {"error": f"bad token {TOKEN}"})
    assert await run([*options, "show", "banking"]) == 0
    assert await run([*options, "--json", "show", "banking"]) == 0
    assert await run([*options, "pause", "banking"]) == 1
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert "by Bearer ***" in out
    assert err == "error: HTTP 401: bad token ***\n"


async def test_a_short_token_does_not_mangle_the_output(
    gateway: StandIn, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Masking is for real tokens: a one-letter token leaves every 't' in place."""
    monkeypatch.setenv("SPEECH_GATEWAY_ADMIN_TOKEN", "t")
    assert await run(["--gateway", gateway.url, "show", "banking"]) == 0
    assert capsys.readouterr().out.startswith("banking: running, version 3")


@pytest.mark.parametrize("holdout", ["0", "0.6", "-0.1", "nan", "inf", "five"])
def test_a_bad_holdout_is_a_usage_error(capsys: pytest.CaptureFixture[str], holdout: str) -> None:
    """--holdout is a share above 0 and at most 0.5; anything else exits 2 before a request."""
    with pytest.raises(SystemExit) as exited:
        parse(["ship", "banking", "custom", "--holdout", holdout])
    assert exited.value.code == 2
    assert f"{holdout!r}: the holdout is a share above 0 and at most 0.5" in (
        capsys.readouterr().err
    )


MODEL: Json = {
    "id": "m1",
    "display_name": "banking v3",
    "kind": "custom",
    "locale": "en-US",
    "adaptation_expires": "2026-12-06T00:00:00.000Z",
    "transcription_expires": "2027-06-15T00:00:00.000Z",
    "expiring_within_days": None,
    "expiring": [],
}
ALERT: Json = {
    "experiment": "banking",
    "variant": "custom",
    "kind": "canary_matches_base",
    "message": "banking/custom: the custom endpoint ep-1 answers its canaries as the base model",
    "detail": {},
    "at": "2026-12-07T10:05:00.000Z",
}
HEALTHY_VIEW: Json = {
    **VIEW,
    "health": {
        "variants": {
            "base": {
                "endpoint_id": None,
                "model": None,
                "model_checked_at": None,
                "model_error": None,
                "canary": {
                    "last_round_at": "2026-12-07T10:05:00.000Z",
                    "wer": 0.125,
                    "latency_ms": 410.0,
                    "rounds": 12,
                    "failed_rounds": 0,
                },
                "alerts": [],
            },
            "custom": {
                "endpoint_id": "ep-1",
                "model": {**MODEL, "expiring_within_days": -1.0, "expiring": ["adaptation"]},
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
        "alerts": [],
    },
}


async def test_list_shows_each_custom_models_expiry_with_a_warning_mark(
    gateway: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """Below the experiments: each custom endpoint's model and expiry dates; `!` marks an
    expiry within the warning window."""
    later = {
        **HEALTHY_VIEW,
        "id": "checkout",
        "health": {
            "variants": {
                "custom": {**HEALTHY_VIEW["health"]["variants"]["custom"], "model": MODEL}
            },
            "alerts": [],
        },
    }
    gateway.answers[("GET", "/admin/experiments")] = (200, {"experiments": [HEALTHY_VIEW, later]})
    assert await run(["--gateway", gateway.url, "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    blank = lines.index("")
    header, banking, checkout = lines[blank + 1 :]
    assert header.split() == [
        "EXPERIMENT", "VARIANT", "ENDPOINT", "MODEL", "TRANSCRIPTION", "UNTIL", "ADAPTATION"
    ]  # fmt: skip
    assert banking.split() == [
        "banking", "custom", "ep-1", "banking", "v3", "(custom)", "2027-06-15", "2026-12-06!"
    ]  # fmt: skip
    assert checkout.split()[6] == "2027-06-15"


async def test_show_prints_the_health_block(
    gateway: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """show ends with each variant's model, canary WER, latency and rounds, then alerts."""
    gateway.answers[("GET", E)] = (200, HEALTHY_VIEW)
    assert await run(["--gateway", gateway.url, "show", "banking"]) == 0
    out = capsys.readouterr().out.splitlines()
    start = out.index("model health (! = expires within the warning window):")
    rows = [line.split() for line in out[start + 1 : start + 4]]
    assert rows[1] == [
        "base", "-", "unknown", "-", "-", "12.5%", "410", "ms", "12", "(0", "failed)",
        "2026-12-07T10:05:00.000Z",
    ]  # fmt: skip
    assert rows[2] == [
        "custom", "ep-1", "banking", "v3", "(custom)", "2027-06-15", "2026-12-06!", "5.0%", "380",
        "ms", "12",
        "(1", "failed)", "2026-12-07T10:05:00.000Z",
    ]  # fmt: skip
    assert out[start + 4] == (
        "alert 2026-12-07T10:05:00.000Z  canary_matches_base  " + ALERT["message"]
    )
