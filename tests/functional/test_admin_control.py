"""The admin API's control routes on a real gateway (embedded file store): bad requests
change nothing; pause, force, stop steer new sessions; state and audit survive a restart;
the OpenAPI document covers every admin route; the CLI verbs work against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import split_experiment
from control_support import ADMIN, AUTH, admin, answered_by, control_gateway, sessions, view
from openapi_spec_validator import validate

from gateway.config.settings import load_settings
from gateway.server.app import create_gateway_app
from gateway.stores.jsonl_sink import read_jsonl
from gateway.tools.local_services import LocalEmulator

JSON = {**AUTH, "Content-Type": "application/json"}
BAD_REQUESTS: list[tuple[str, str, Any, dict[str, str] | None, int, str]] = [
    # method, path, body (str: raw), headers (None: admin), status, message fragment
    ("PUT", "/admin/experiments/ab/weights", {"weights": {"a": 1}}, {}, 401, "admin token"),
    ("POST", "/admin/experiments/ab/pause", None, {"Authorization": "Bearer nope"}, 401, "token"),
    (
        "POST",
        "/admin/experiments/ab/pause",
        None,
        {"Authorization": f"Basic {ADMIN}"},
        401,
        "token",
    ),
    ("PUT", "/admin/experiments/zz/weights", {"weights": {"a": 1}}, None, 404, "'zz'"),
    ("PUT", "/admin/experiments/ab/weights", "{not json", JSON, 400, "not valid JSON"),
    ("PUT", "/admin/experiments/ab/weights", "[1]", JSON, 400, "JSON object"),
    ("PUT", "/admin/experiments/ab/weights", {"weights": {"c": 1}}, None, 400, "weights.c"),
    ("PUT", "/admin/experiments/ab/weights", {"weights": {"a": -1}}, None, 400, "weights.a"),
    ("PUT", "/admin/experiments/ab/weights", {"weights": {"a": "1"}}, None, 400, "weights.a"),
    ("PUT", "/admin/experiments/ab/weights", {"weights": {"a": 0, "b": 0}}, None, 400, "zero"),
    ("PUT", "/admin/experiments/ab/weights", '{"weights": {"a": NaN}}', JSON, 400, "JSON"),
    ("PUT", "/admin/experiments/ab/weights", {"weights": [1]}, None, 400, "weights"),
    ("PUT", "/admin/experiments/ab/weights", {"weight": {"a": 1}}, None, 400, "weight: unknown"),
    ("PUT", "/admin/experiments/ab/weights", None, None, 400, "body is required"),
    ("PUT", "/admin/experiments/ab/weights", "x" * 70_000, JSON, 413, "65536 bytes"),
    (
        "PUT",
        "/admin/experiments/ab/weights",
        "a=1",
        {**AUTH, "Content-Type": "text/plain"},
        415,
        "json",
    ),
    ("POST", "/admin/experiments/ab/resume", None, None, 409, "not paused"),
    ("POST", "/admin/experiments/ab/pause", {"expected_version": 7}, None, 409, "version 0"),
    (
        "POST",
        "/admin/experiments/ab/pause",
        {"expected_version": -1},
        None,
        400,
        "expected_version",
    ),
    ("POST", "/admin/experiments/ab/pause", {"reason": 5}, None, 400, "reason"),
    ("POST", "/admin/experiments/ab/stop", {"serve": "z"}, None, 400, "serve"),
    ("POST", "/admin/experiments/ab/forced", {"unit": "u"}, None, 400, "variant"),
    ("POST", "/admin/experiments/ab/forced", {"unit": "", "variant": "a"}, None, 400, "unit"),
    ("DELETE", "/admin/experiments/ab/forced?unit=nobody", None, None, 404, "not forced"),
    ("DELETE", "/admin/experiments/ab/forced", None, None, 400, "unit"),
    ("GET", "/admin/experiments/ab/audit?limit=0", None, None, 400, "limit"),
    ("GET", "/admin/experiments/ab/audit?limit=x", None, None, 400, "limit"),
    ("GET", "/admin/experiments", None, {}, 401, "admin token"),
    ("GET", "/admin/backends", None, {}, 401, "admin token"),
    ("POST", "/admin/experiments/ab/ship", None, None, 400, "body is required"),
    ("POST", "/admin/experiments/ab/ship", {"holdout": 0.1}, None, 400, "variant: must be"),
    ("POST", "/admin/experiments/ab/ship", {"variant": "a"}, None, 400, "is the control"),
    ("POST", "/admin/experiments/ab/ship", {"variant": "z"}, None, 400, "not a variant"),
    ("POST", "/admin/experiments/ab/ship", {"variant": "b", "holdout": 0.9}, None, 400, "0.5"),
    ("POST", "/admin/experiments/ab/ship", {"variant": "b", "holdout": 0}, None, 400, "above 0"),
    ("POST", "/admin/experiments/ab/ship", {"variant": "b", "holdout": "x"}, None, 400, "number"),
    ("POST", "/admin/experiments/ab/ship", {"variant": "b", "to": 1}, None, 400, "to: unknown"),
    ("POST", "/admin/experiments/zz/ship", {"variant": "b"}, None, 404, "'zz'"),
    ("POST", "/admin/experiments/ab/ship", {"variant": "b"}, {}, 401, "admin token"),
]


async def test_bad_admin_requests_get_their_status_and_change_nothing(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    with control_gateway(tmp_path / "gw", backends, split_experiment()) as gateway:
        async with aiohttp.ClientSession() as http:
            before = await view(http, gateway)
            for method, path, body, headers, status, fragment in BAD_REQUESTS:
                kwargs: dict[str, Any] = {"headers": AUTH if headers is None else headers}
                if isinstance(body, str):
                    kwargs["data"] = body
                elif body is not None:
                    kwargs["json"] = body
                url = f"{gateway.http_url}{path}"
                async with http.request(method, url, **kwargs) as response:
                    answer = await response.json()
                    assert response.status == status, (method, path, answer)
                    assert fragment.lower() in answer["error"].lower(), (path, answer)
                    if status == 401:
                        assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert await view(http, gateway) == before
            status, audit = await admin(http, gateway, "GET", "/admin/experiments/ab/audit")
            assert (status, audit) == (200, {"entries": []})
    assert not (tmp_path / "gw" / "control-state.json").exists()


async def test_changes_steer_new_sessions_and_survive_a_restart(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    work = tmp_path / "gw"
    units = [f"u{i}" for i in range(12)]
    with control_gateway(work, backends, split_experiment()) as gateway:
        async with aiohttp.ClientSession() as http:
            mixed = await sessions(http, [gateway], units)
            assert {answered_by(r) for r in mixed} == {"alpha", "bravo"}
            status, paused = await admin(
                http, gateway, "POST", "/admin/experiments/ab/pause", {"reason": "incident 42"}
            )
            assert (status, paused["status"], paused["serving"]) == (200, "paused", "a")
            assert {answered_by(r) for r in await sessions(http, [gateway], units)} == {"alpha"}
            status, forced = await admin(
                http,
                gateway,
                "POST",
                "/admin/experiments/ab/forced",
                {"unit": "qa-1", "variant": "b"},
            )
            assert (status, forced["forced"]) == (200, {"qa-1": "b"})
            assert answered_by((await sessions(http, [gateway], ["qa-1"]))[0]) == "bravo"
            status, resumed = await admin(http, gateway, "POST", "/admin/experiments/ab/resume")
            assert resumed["status"] == "running"
            again = await sessions(http, [gateway], units)
            assert [answered_by(r) for r in again] == [answered_by(r) for r in mixed]  # sticky
            status, stopped = await admin(
                http,
                gateway,
                "POST",
                "/admin/experiments/ab/stop",
                {"serve": "b", "reason": "b won"},
            )
            assert (status, stopped["status"], stopped["serving"]) == (200, "stopped", "b")
            assert {answered_by(r) for r in await sessions(http, [gateway], units)} == {"bravo"}
            status, refused = await admin(
                http, gateway, "POST", "/admin/experiments/ab/ship", {"variant": "b"}
            )
            assert (status, refused["error"]) == (
                409,
                "'ab' is stopped; its state no longer changes",
            )
    records = list(read_jsonl(work / "outcomes.jsonl"))
    assert [r.forced for r in records if r.unit and r.variant == "b"].count(True) == 1
    assert len({r.phase for r in records}) == 4  # initial, paused, resumed, stopped

    # A restart keeps the state (the local file) and the audit trail.
    with control_gateway(work, backends, split_experiment()) as gateway:
        async with aiohttp.ClientSession() as http:
            assert await view(http, gateway) == stopped
            status, audit = await admin(http, gateway, "GET", "/admin/experiments/ab/audit")
            actions = [(e["action"], e["actor"]) for e in audit["entries"]]
            assert actions == [
                ("stop", "ops"),
                ("resume", "ops"),
                ("force", "ops"),
                ("pause", "ops"),
            ]
            assert audit["entries"][0]["reason"] == "b won"
            assert audit["entries"][3]["after"]["status"] == "paused"
            status, page = await admin(http, gateway, "GET", "/admin/experiments/ab/audit?limit=1")
            assert [e["action"] for e in page["entries"]] == ["stop"]


async def test_ship_keeps_a_holdout_on_control_in_a_new_phase(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    with control_gateway(tmp_path / "gw", backends, split_experiment()) as gateway:
        async with aiohttp.ClientSession() as http:
            before = await view(http, gateway)
            assert before["holdout_share"] == 0.05
            assert "health" in before
            status, shipped = await admin(
                http,
                gateway,
                "POST",
                "/admin/experiments/ab/ship",
                {"variant": "b", "holdout": 0.25, "reason": "b won"},
            )
            assert status == 200, shipped
            assert [(v["name"], v["weight"]) for v in shipped["variants"]] == [
                ("a", 0.25),
                ("b", 0.75),
            ]
            assert shipped["phase"] != before["phase"]
            assert shipped["phases"][0]["weights"] == {"a": 0.25, "b": 0.75}
            status, audit = await admin(http, gateway, "GET", "/admin/experiments/ab/audit")
            (entry,) = audit["entries"]
            assert (entry["action"], entry["actor"], entry["reason"]) == ("ship", "ops", "b won")
            assert entry["detail"]["holdout"] == 0.25


def test_the_openapi_document_is_valid_and_covers_every_admin_route(tmp_path: Path) -> None:
    from gateway.server.admin.openapi import openapi_document

    document = openapi_document()
    validate(document)  # type: ignore[arg-type]
    settings = load_settings(None, outcomes={"path": str(tmp_path / "o.jsonl")})
    app = create_gateway_app(settings)
    documented = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    served = {
        (route.resource.canonical, route.method)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith(("/admin", "/labels"))
        and route.method != "HEAD"
    }
    assert served <= documented, served - documented


@pytest.mark.parametrize("as_json", [False, True])
def test_the_admin_cli_drives_a_real_gateway(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path, as_json: bool
) -> None:
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    with control_gateway(tmp_path / "gw", backends, split_experiment()) as gateway:
        env = {**os.environ, "SPEECH_GATEWAY_ADMIN_TOKEN": ADMIN}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            flags = ["--gateway", gateway.http_url, *(["--json"] if as_json else [])]
            command = [sys.executable, "-m", "gateway", "admin", *flags, *args]
            return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

        done = cli("weights", "ab", "a=90", "b=10", "--reason", "ramp down")
        assert done.returncode == 0, done.stderr
        refused = cli("resume", "ab")
        assert refused.returncode == 1
        assert "409" in refused.stderr
        listed = cli("list")
        assert listed.returncode == 0
        audit = cli("audit", "ab")
        assert audit.returncode == 0
        assert ADMIN not in listed.stdout + listed.stderr + audit.stdout + done.stdout
        if as_json:
            [experiment] = json.loads(listed.stdout)["experiments"]
            assert [v["weight"] for v in experiment["variants"]] == [90.0, 10.0]
            assert json.loads(audit.stdout)["entries"][0]["reason"] == "ramp down"
        else:
            assert "ab" in listed.stdout
            assert "ramp down" in audit.stdout
