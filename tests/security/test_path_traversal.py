"""Path traversal: no route of the gateway (or the emulator) serves a file or reads a path
taken from the request.

The gateway's routes are fixed paths and `{placeholders}` whose values are checked against
the configuration (experiment ids) or a format (record ids) before any store is touched;
the dashboard is one inline page, and stores use paths from the configuration only. This is
checked twice: the route tables hold no static (file-serving) resource, and a live gateway
answers `../`, `%2e%2e%2f`, double-encoded, overlong-UTF-8, backslash, absolute and NUL
variants on every GET route, and in every parameter that names something, without a 5xx
and without a byte of any file outside what the route serves: canary files next to and
above the gateway's own files, its pseudonym key and state files, and /etc/passwd.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest
from aiohttp import web
from security_support import (
    ADMIN,
    PSEUDONYM_KEY,
    gateway_settings,
    http_request,
    raw_exchange,
    running_gateway,
    server_errors,
)

from gateway.config.settings import EmulatorSettings
from gateway.emulator.server import create_app as create_emulator_app
from gateway.server.app import create_gateway_app

TRAVERSALS = [
    "../../../../../../etc/passwd",
    "..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afetc%c0%afpasswd",
    "..%5c..%5c..%5cetc%5cpasswd",
    "....//....//....//etc/passwd",
    "%2fetc%2fpasswd",
    "/etc/passwd",
    "CANARY",
    "..%2fCANARY",
    "..%2f..%2fCANARY",
    "%2e%2e%2fgateway.toml",
    "..%2foutcomes.jsonl",
    "pseudonym.key",
    "..%2fpseudonym.key",
    "outcomes.jsonl%00.json",
    "control-state.json%00",
    "abc%00..%2f..%2fetc%2fpasswd",
    "file:%2f%2f%2fetc%2fpasswd",
    "~root",
]
# Every GET route with a placeholder, the placeholder written as {}; and the fixed pages.
TEMPLATES = [
    "/labels/{}",
    "/admin/experiments/{}",
    "/admin/experiments/{}/audit",
    "/admin/experiments/{}/analysis",
    "/admin/experiments/ab/analysis?phase={}",
    "/admin/experiments/ab/analysis?since={}",
    "/admin/experiments/ab/audit?limit={}",
    "/dashboard/{}",
    "/dashboard?{}",
    "/{}",
    "/healthz/{}",
    "/metrics/{}",
    "/admin/openapi.json/{}",
    "/admin/{}",
    "/static/{}",
]


def test_no_route_serves_files(tmp_path: Path) -> None:
    """Neither the gateway's nor the emulator's route table has a static (file) resource:
    every route is a fixed path or a `{placeholder}` handled in code."""
    settings = gateway_settings(tmp_path, {"alpha": "ws://127.0.0.1:9"})
    apps = [
        create_gateway_app(settings),
        create_emulator_app(EmulatorSettings(engine="instant", model_cache=tmp_path / "m")),
    ]
    for app in apps:
        resources = list(app.router.resources())
        assert resources
        for resource in resources:
            assert not isinstance(resource, web.StaticResource), resource.canonical
            # A placeholder that may hold "/" (`{tail:.*}`) is how a file tree gets served.
            assert ":" not in resource.canonical, resource.canonical


@pytest.fixture
def canaries(tmp_path: Path) -> list[str]:
    """Secret-looking files next to and above the gateway's work folder."""
    marks = []
    for folder in (tmp_path, tmp_path / "gw"):
        folder.mkdir(exist_ok=True)
        mark = f"canary-{secrets.token_hex(8)}"
        (folder / "CANARY").write_text(mark)
        marks.append(mark)
    return marks


async def test_traversal_in_any_route_reads_no_file(tmp_path: Path, canaries: list[str]) -> None:
    """Every traversal variant in every placeholder and parameter gets an answer without a
    5xx, and no answer holds a canary, the pseudonym key, /etc/passwd, or the content of
    the gateway's config, outcome or state files."""
    work = tmp_path / "gw"
    settings = gateway_settings(work, {"alpha": "ws://127.0.0.1:9"})
    secrets_in_files = [*canaries, PSEUDONYM_KEY, "root:x:0:0", "[gateway.backends.alpha]"]
    answers = 0
    with server_errors() as errors:
        async with running_gateway(settings) as port:
            # A forced unit and a label attempt give the state and label files some content.
            force = json.dumps({"unit": "../../etc/passwd", "variant": "b"}).encode()
            headers = [*ADMIN.items(), ("Content-Type", "application/json")]
            request = http_request("POST", "/admin/experiments/ab/forced", headers, force)
            assert (await raw_exchange(port, request)).status == 200
            for template in TEMPLATES:
                for traversal in TRAVERSALS:
                    target = template.replace("{}", traversal)
                    for auth in (list(ADMIN.items()), []):
                        answer = await raw_exchange(port, http_request("GET", target, auth))
                        answers += 1
                        assert answer.status is not None, target
                        assert answer.status < 500, (target, answer.status, answer.text[:200])
                        for secret in secrets_in_files:
                            assert secret not in answer.text, (target, secret)
                        if answer.status == 200:
                            # Only what the route serves: JSON of the API or the dashboard.
                            assert target.startswith(("/admin/experiments", "/dashboard?")), (
                                target,
                                answer.text[:200],
                            )
            # Names in bodies: a record id, a unit and an experiment that look like paths.
            for body in (
                {"record_id": "../../../etc/passwd", "text": "x"},
                {"unit": "../../../etc/passwd", "text": "x"},
                {"unit": "u", "experiment": "../../etc", "text": "x"},
                {"labels": [{"record_id": "%2e%2e%2f" * 3, "text": "x"}]},
            ):
                request = http_request("POST", "/labels", headers, json.dumps(body).encode())
                answer = await raw_exchange(port, request)
                assert answer.status in (400, 422), (body, answer)
                for secret in secrets_in_files:
                    assert secret not in answer.text
    assert answers == 2 * len(TEMPLATES) * len(TRAVERSALS)
    assert not errors.unexpected(), errors.unexpected()
    # Nothing was written outside the gateway's folder either.
    assert sorted(os.listdir(tmp_path)) == ["CANARY", "gw"]
