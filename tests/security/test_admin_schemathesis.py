"""Schemathesis against the admin API of a live gateway, driven by its served OpenAPI document.

A gateway process with an admin token serves `/admin/openapi.json`; the `schemathesis` CLI
loads it from there and runs every phase (examples, coverage, fuzzing, stateful) over every
operation:

* with the admin token: every check schemathesis has (no server error; status codes,
  content types, headers and bodies as documented; schema-violating requests refused;
  authentication enforced: the same request without the token and with a wrong one must
  fail) except `positive_data_acceptance`, which takes a semantic refusal of schema-valid
  data (an unknown variant name: 400, a label for records that do not exist: 422, a stopped
  experiment: 409) for a defect;
* without a token, and with a wrong one: every operation but the document itself answers
  401, as documented (JSON error body, `WWW-Authenticate`).

The document must describe what the server really does; the runs are deterministic
(`--generation-deterministic`) and every request is bounded in time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from security_support import (
    ADMIN,
    ADMIN_TOKEN,
    PSEUDONYM_KEY,
    experiment,
    gateway_settings,
    running_gateway,
)
from support import write_gateway_config

from gateway.control.model import hash_key
from gateway.tools.local_services import LocalGateway

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
RUN_TIMEOUT_S = 240
# Most generated experiment ids hit the one configured experiment, so that the changes
# reach the control plane instead of stopping at 404; the rest are random (404).
CONFIG = """\
[dictionaries.experiments]
values = ["ab"]

[parameters]
"path.experiment" = { dictionary = "experiments", probability = 0.8 }

[checks.positive_data_acceptance]
expected-statuses = ["401"]
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalGateway]:
    """A gateway process with the admin token, its state and labels in local files."""
    work = tmp_path_factory.mktemp("schemathesis")
    config = write_gateway_config(
        work / "gateway.toml",
        backends={"alpha": "ws://127.0.0.1:9"},
        experiments=[experiment()],
        outcomes=work / "outcomes.jsonl",
        admin_tokens_sha256={"ops": hash_key(ADMIN_TOKEN)},
    )
    env = {
        **os.environ,
        "SPEECH_GATEWAY_OUTCOMES__PSEUDONYM_KEY": PSEUDONYM_KEY,
        "SPEECH_GATEWAY_OUTCOMES__JOURNAL_DIR": str(work / "journal"),
    }
    with LocalGateway(config, log_path=work / "gateway.log", env=env) as running:
        yield running


def schemathesis(
    gateway: LocalGateway, work: Path, *args: str, examples: int
) -> subprocess.CompletedProcess[str]:
    (work / "schemathesis.toml").write_text(CONFIG, encoding="utf-8")
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(work / "schemathesis.toml"),
        "run",
        f"{gateway.http_url}/admin/openapi.json",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(examples),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--no-color",
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=work, check=False
    )


def explain(run: subprocess.CompletedProcess[str]) -> str:
    """The run's report with its (long) reproduction lines cut short."""
    lines = (run.stdout + run.stderr).splitlines()
    return "\n".join(line[:300] for line in lines[-150:])


def test_the_admin_api_conforms_to_its_document(gateway: LocalGateway, tmp_path: Path) -> None:
    """With the admin token, every check over every operation and phase passes: no 5xx, every
    status, content type, header and body as documented, schema-violating requests refused,
    and the token enforced (the request fails without it and with a wrong one)."""
    run = schemathesis(
        gateway,
        tmp_path,
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--header",
        f"Authorization: Bearer {ADMIN_TOKEN}",
        examples=40,
    )
    assert run.returncode == 0, explain(run)
    assert " passed" in run.stdout, explain(run)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-admin-token-0000000000"])
def test_without_a_valid_token_every_operation_answers_401(
    gateway: LocalGateway, tmp_path: Path, authorization: str | None
) -> None:
    """Without a token or with a wrong one, every operation but the document itself answers
    a documented 401 (JSON error, WWW-Authenticate) to every schema-valid request."""
    header = [] if authorization is None else ["--header", f"Authorization: {authorization}"]
    run = schemathesis(
        gateway,
        tmp_path,
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_headers_conformance,response_schema_conformance,positive_data_acceptance",
        "--exclude-path",
        "/admin/openapi.json",
        "--mode",
        "positive",
        *header,
        examples=8,
    )
    assert run.returncode == 0, explain(run)


async def test_an_integral_float_is_an_integer(tmp_path: Path) -> None:
    """`expected_version` is documented as a JSON Schema integer, which 0.0 is: the server
    takes it as 0 (as schemathesis' positive data may send it) instead of refusing it."""
    settings = gateway_settings(tmp_path, {"alpha": "ws://127.0.0.1:9"})
    async with running_gateway(settings) as port, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{port}/admin/experiments/ab/pause"
        async with http.post(url, json={"expected_version": 0.0}, headers=ADMIN) as answer:
            assert answer.status == 200, await answer.text()
            assert (await answer.json())["version"] == 1
        url = f"http://127.0.0.1:{port}/admin/experiments/ab/resume"
        async with http.post(url, json={"expected_version": 1.5}, headers=ADMIN) as answer:
            assert answer.status == 400
