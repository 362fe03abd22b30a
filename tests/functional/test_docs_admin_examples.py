"""docs/admin.md's examples, replayed against a real gateway process.

The gateway runs the page's own experiment (`banking`: `base` and a custom endpoint on the
`azure` backend) and the `checkout` one its listing shows. The test brings them to the
versions the page starts from, then runs every `speech-gateway admin` command of the page's
CLI examples, verbatim and in order, and compares what it prints with what the page shows.
It also compares the page's JSON view and audit entry with the API's answers, and the
status codes the docs promise (401 for the admin API, 403 for forcing without permission)
with the gateway's.

What is random or a clock reading differs from run to run and is masked on both sides:
times, audit entry ids, and the ids of the phases that changes open (each distinct one
becomes the same alias, in order of appearance, so "the same phase as before" still has
to hold). The configured phases are computed from the configuration, so they must match
exactly. Breaker counts depend on traffic: only the breakers' names are compared.
"""

from __future__ import annotations

import json
import re
import shlex
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import gateway_for
from docs_markdown import doc, fenced_blocks, section, transcript
from support import CLIENT_KEY

from gateway.cli import main as cli_main
from gateway.control.model import hash_key
from gateway.tools.local_services import LocalGateway

TOKENS = {"alice": "docs-admin-token-alice-0123456789", "bob": "docs-admin-token-bob-0123456789"}
# Who made each change of the page's audit trail example; everything else is alice's.
ACTORS = {"unforce": "bob"}
BANKING: dict[str, object] = {
    "id": "banking",
    "control": "base",
    "variants": [
        {"name": "base", "backend": "azure", "weight": 50},
        {"name": "custom", "backend": "azure", "endpoint_id": "5f0c2d3e-banking", "weight": 50},
    ],
    "targeting": {"locales": ["en-US"]},
    "guardrails": {
        "max_error_rate_increase": 0.05,
        "max_no_match_rate_increase": 0.1,
        "max_latency_increase_ms": 300,
    },
}
CHECKOUT: dict[str, object] = {
    "id": "checkout",
    "control": "base",
    "variants": [
        {"name": "base", "backend": "azure", "weight": 50},
        {"name": "custom", "backend": "azure", "weight": 50},
    ],
    "targeting": {"locales": ["en-GB"]},
}
# The changes that bring the experiments to the state the page's examples start from.
SETUP = [
    ("banking", "weights banking base=90 custom=10"),
    ("banking", "force banking qa-user-1 base"),
    ("banking", "force banking qa-user-1 custom"),
    *(
        ("checkout", change)
        for n in range(3)
        for change in (f"force checkout qa-{n} base", f"unforce checkout qa-{n}")
    ),
    ("checkout", "stop checkout --serve custom"),
]
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
PHASE = re.compile(r"\bp-[0-9a-f]{10}\b")
ENDPOINT_PATH = "/speech/recognition/conversation/cognitiveservices/v1"


class Masks:
    """Masks one side's random values: times, and phase ids other than `known` (each
    distinct id becomes the next alias, of the same width, so tables stay aligned)."""

    def __init__(self, known: set[str]) -> None:
        self._known = known
        self._aliases: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        text = TIME.sub("YYYY-MM-DDThh:mm:ss.sssZ", text)
        return PHASE.sub(self._alias, text)

    def _alias(self, match: re.Match[str]) -> str:
        phase = match.group()
        if phase in self._known:
            return phase
        return self._aliases.setdefault(phase, f"p-<{len(self._aliases) + 1:08d}>")


class Cli:
    """`speech-gateway admin` run in this process, as an operator types it."""

    def __init__(self, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch) -> None:
        self._capsys = capsys
        self._mp = mp
        self.status = 0

    def __call__(self, command: str, actor: str = "alice") -> str:
        argv = shlex.split(command)
        assert argv[:2] == ["speech-gateway", "admin"], command
        self._mp.setenv("SPEECH_GATEWAY_ADMIN_TOKEN", TOKENS[actor])
        self._capsys.readouterr()
        try:
            self.status = cli_main(argv[1:])
        except SystemExit as exc:  # argparse's usage errors
            self.status = int(exc.code or 0)
        captured = self._capsys.readouterr()
        return (captured.out + captured.err).rstrip("\n")

    def json(self, command: str) -> Any:
        output = self(command.replace("speech-gateway admin", "speech-gateway admin --json", 1))
        assert self.status == 0, output
        return json.loads(output)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[LocalGateway]:
    with gateway_for(
        tmp_path,
        {"azure": "ws://127.0.0.1:9"},  # never dialled: no session gets that far
        [BANKING, CHECKOUT],
        admin_tokens_sha256={name: hash_key(token) for name, token in TOKENS.items()},
    ) as running:
        yield running


@pytest.fixture
def cli(
    gateway: LocalGateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Cli:
    monkeypatch.setenv("SPEECH_GATEWAY_URL", gateway.http_url)
    monkeypatch.setenv("COLUMNS", "200")  # argparse's usage line unwrapped, as the page shows
    return Cli(capsys, monkeypatch)


def json_example(opening: str) -> Any:
    (block,) = [b for b in fenced_blocks(doc("admin.md"), "json") if b.startswith(opening)]
    return json.loads(block)


def console_examples() -> list[str]:
    return fenced_blocks(section(doc("admin.md"), "Examples"), "console")


def backend_names(table: str) -> list[str]:
    return [line.split()[0] for line in table.splitlines()[1:]]


def replay(block: str, cli: Cli, shown: Masks, real: Masks) -> None:
    """Run each command of a console example; what it prints must be what the page shows."""
    for step in transcript(block):
        if step.command == "echo $?":
            assert str(cli.status) == step.output, "exit status of the previous command"
            continue
        verb = shlex.split(step.command)[2]
        output = cli(step.command, ACTORS.get(verb, "alice"))
        if verb == "backends":  # the counts depend on traffic
            assert output.splitlines()[0] == step.output.splitlines()[0]
            assert backend_names(output) == backend_names(step.output)
            continue
        assert real(output) == shown(step.output), step.command


def http_status(request: urllib.request.Request) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_the_admin_pages_examples_are_what_the_gateway_answers(
    gateway: LocalGateway, cli: Cli
) -> None:
    for experiment, change in SETUP:
        assert cli.json(f"speech-gateway admin {change}")["id"] == experiment
    configured = {
        p["phase"]
        for e in cli.json("speech-gateway admin list")["experiments"]
        for p in e["phases"]
        if p["started_at"] is None
    }
    shown, real = Masks(configured), Masks(configured)
    listing, writes, audit_and_backends, errors = console_examples()

    replay(listing, cli, shown, real)
    view = cli.json("speech-gateway admin show banking")
    page_view = json_example('{\n  "id": "banking"')
    assert real(json.dumps(view)) == shown(json.dumps(page_view))

    replay(writes, cli, shown, real)
    entries = cli.json("speech-gateway admin audit banking")["entries"]
    (entry,) = [e for e in entries if e["action"] == "set_weights" and e["reason"] == "ramp up"]
    page_entry = json_example('{"id": ')
    assert len(entry["id"]) == len(page_entry["id"])
    entry["id"] = page_entry["id"] = "<audit id>"
    assert real(json.dumps(entry)) == shown(json.dumps(page_entry))

    replay(audit_and_backends, cli, shown, real)
    curl_backends = next(b for b in fenced_blocks(doc("admin.md"), "sh") if "/admin/backends" in b)
    backends = cli.json("speech-gateway admin backends")["backends"]
    assert [b["name"] for b in backends] == re.findall(r'"name": "([^"]+)"', curl_backends)
    replay(errors, cli, shown, real)


def stated(pattern: str, page: str) -> tuple[str, ...]:
    """What a page states, as the groups of `pattern`; a page that no longer says it fails."""
    match = re.search(pattern, doc(page))
    assert match is not None, f"{page} no longer states {pattern!r}"
    return match.groups()


def test_the_documented_refusals_are_the_gateways(gateway: LocalGateway) -> None:
    """The admin API without a token, and forcing a variant without `can_force`."""
    status, challenge = stated(
        r"without a valid token gets \*\*(\d{3})\*\* with\s+`WWW-Authenticate: ([^`]+)`", "admin.md"
    )
    got, headers = http_status(urllib.request.Request(f"{gateway.http_url}/admin/experiments"))
    assert (got, headers["WWW-Authenticate"]) == (int(status), challenge)

    promised = {
        int(stated(r"refused \(HTTP (\d{3})", "assignment.md")[0]),
        int(stated(r"other clients get (\d{3})", "gateway.md")[0]),
    }
    forced = urllib.request.Request(
        f"{gateway.http_url}{ENDPOINT_PATH}?language=en-US&gw-variant=custom&gw-unit=someone",
        data=b"RIFF",
        method="POST",
        headers={"Ocp-Apim-Subscription-Key": CLIENT_KEY, "Content-Type": "audio/wav"},
    )
    assert promised == {http_status(forced)[0]}
