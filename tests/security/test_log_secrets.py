"""No secret, and no transcript unless configured, in what the gateway process prints.

tests/functional/test_gateway_secrets.py searches the log (and everything clients received)
for backend and client keys. This extends it to every secret the gateway holds and every
way a secret reaches it, and to transcripts:

* A gateway process logging JSON at debug level holds client keys (as digests), admin
  tokens (as digests), backend keys, a Redis password and the pseudonym key (from the
  environment), stores outcomes in a password-protected Redis with `text_privacy = "hash"`,
  and is driven through successes, wrong client keys (header, query, Bearer), a backend
  refusing its key, an unreachable backend, a USP protocol error, requests aiohttp cannot
  parse whose request line or header line carries a key or token, admin calls (right and
  wrong token) and labels. Neither a secret nor its URL-encoded forms, nor a transcript or
  label word, nor a raw unit id appears in its stdout/stderr.
* With `text_privacy` "none" and "text" (file store): transcripts never reach the log, and
  reach the outcome file only with "text".
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
import redis
from redis_servers import RedisServer
from security_support import (
    ADMIN_TOKEN,
    CONVERSATION,
    PSEUDONYM_KEY,
    TRANSCRIPT,
    TRANSCRIPT_WORDS,
    WAV,
    WAV_TYPE,
    experiment,
    http_request,
    raw_exchange,
)
from support import CLIENT_KEY, QA_KEY, silence, write_gateway_config

from gateway.control.model import hash_key
from gateway.outcomes.record import OutcomeRecord
from gateway.tools.local_services import LocalEmulator, LocalGateway, free_port
from gateway.tools.usp_client import recognize

TIMEOUT = aiohttp.ClientTimeout(total=60)
INTERACTIVE = "/speech/recognition/interactive/cognitiveservices/v1"
BACKEND_KEY = "log-backend-key-1f7c3a9e55"
STALE_KEY = "log-stale-backend-key-a04e6b"  # what the gateway holds for alpha under "stale"
GONE_KEY = "log-gone-backend-key-7d21c0"
WRONG_CLIENT_KEY = "log-wrong-client-key-3e88f1"
WRONG_ADMIN_TOKEN = "log-wrong-admin-token-92bd04"
REDIS_PASSWORD = "log-redis-password-c5e19d72"
SECRETS = (
    CLIENT_KEY,
    QA_KEY,
    WRONG_CLIENT_KEY,
    ADMIN_TOKEN,
    WRONG_ADMIN_TOKEN,
    BACKEND_KEY,
    STALE_KEY,
    GONE_KEY,
    REDIS_PASSWORD,
    PSEUDONYM_KEY,
)
UNIT = "log-raw-unit-id-5b7e"  # personal enough that it never goes into a log
LABEL_WORDS = ("periwinkle", "xylophone")
EXPERIMENTS: list[dict[str, object]] = [
    {  # en-GB goes to alpha with a key alpha refuses
        "id": "stale",
        "control": "s",
        "variants": [{"name": "s", "backend": "stale", "weight": 1}],
        "targeting": {"locales": ["en-GB"]},
    },
    {  # en-AU goes to a backend nobody listens for
        "id": "gone",
        "control": "g",
        "variants": [{"name": "g", "backend": "gone", "weight": 1}],
        "targeting": {"locales": ["en-AU"]},
    },
    experiment((100, 0)),
]


def encodings(secret: str) -> set[str]:
    """The secret as written, and as a URL or a query string would carry it."""
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(f"Bearer {secret}")}


def keyed_emulator(work: Path) -> LocalEmulator:
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPEECH_GATEWAY_EMULATOR__KEY": BACKEND_KEY}
    args = ("--engine", "instant", "--instant-text", TRANSCRIPT)
    return LocalEmulator(*args, log_path=work / "emulator.log", env=env)


def gateway_process(
    work: Path, backend_url: str, privacy: str, outcomes_env: dict[str, str]
) -> LocalGateway:
    work.mkdir(parents=True, exist_ok=True)
    config = write_gateway_config(
        work / "gateway.toml",
        backends={
            "alpha": backend_url,
            "stale": backend_url,
            "gone": f"ws://127.0.0.1:{free_port()}",
        },
        experiments=EXPERIMENTS,
        outcomes=work / "outcomes.jsonl",
        admin_tokens_sha256={"ops": hash_key(ADMIN_TOKEN)},
        connect_timeout_s=2,
    )
    env = {
        **os.environ,
        "SPEECH_GATEWAY_LOGGING__LEVEL": "debug",
        "SPEECH_GATEWAY_GATEWAY__BACKENDS__ALPHA__KEY": BACKEND_KEY,
        "SPEECH_GATEWAY_GATEWAY__BACKENDS__STALE__KEY": STALE_KEY,
        "SPEECH_GATEWAY_GATEWAY__BACKENDS__GONE__KEY": GONE_KEY,
        "SPEECH_GATEWAY_OUTCOMES__PSEUDONYM_KEY": PSEUDONYM_KEY,
        "SPEECH_GATEWAY_OUTCOMES__TEXT_PRIVACY": privacy,
        "SPEECH_GATEWAY_OUTCOMES__JOURNAL_DIR": str(work / "journal"),
        **outcomes_env,
    }
    return LocalGateway(config, log_path=work / "gateway.log", env=env)


# -- the workload ---------------------------------------------------------------------------


async def rest(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    headers = {"Content-Type": WAV_TYPE, **headers}
    async with http.post(url, data=WAV, headers=headers) as response:
        await response.read()
        return response.status


async def upgrade(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    try:
        async with http.ws_connect(url, headers=headers, protocols=("USP",)) as ws:
            await ws.close()
            return 101
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def protocol_error(http: aiohttp.ClientSession, url: str) -> int | None:
    """A USP message without X-RequestId: the gateway closes with 1002 and logs why."""
    headers = {"Ocp-Apim-Subscription-Key": CLIENT_KEY}
    async with http.ws_connect(url, headers=headers, protocols=("USP",)) as ws:
        await ws.send_str("Path:speech.context\r\n\r\n{}")
        message = await ws.receive(timeout=30)
        return int(message.data) if message.type is aiohttp.WSMsgType.CLOSE else None


async def workload(gateway: LocalGateway) -> dict[str, object]:
    """Every path a secret or a transcript may take into the gateway; the answers."""
    ws, base = gateway.ws_url, gateway.http_url
    key = {"Ocp-Apim-Subscription-Key": CLIENT_KEY}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    js = f"language=en-US&Ocp-Apim-Subscription-Key={CLIENT_KEY}&gw-unit={UNIT}"
    out: dict[str, object] = {}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        pcm = silence(2.5)
        usp = await recognize(
            http, f"{ws}{CONVERSATION}?language=en-US&gw-unit={UNIT}", pcm, headers=key
        )
        out["usp"] = usp.texts()
        js_usp = await recognize(http, f"{ws}{CONVERSATION}?{js}", pcm)
        out["usp_query_key"] = js_usp.texts()
        bearer = f"{ws}{INTERACTIVE}?language=en-US&Authorization=Bearer%20{QA_KEY}"
        out["usp_bearer_query"] = (await recognize(http, bearer, pcm)).texts()
        out["rest"] = await rest(http, f"{base}{CONVERSATION}?language=en-US&gw-unit={UNIT}", key)
        out["rest_query_key"] = await rest(http, f"{base}{CONVERSATION}?{js}", {})
        wrong = {"Ocp-Apim-Subscription-Key": WRONG_CLIENT_KEY}
        out["rest_wrong_key"] = await rest(http, f"{base}{CONVERSATION}?language=en-US", wrong)
        query = f"language=en-US&Ocp-Apim-Subscription-Key={WRONG_CLIENT_KEY}"
        out["ws_wrong_query_key"] = await upgrade(http, f"{ws}{CONVERSATION}?{query}", {})
        wrong_bearer = {"Authorization": f"Bearer {WRONG_CLIENT_KEY}"}
        out["ws_wrong_bearer"] = await upgrade(
            http, f"{ws}{INTERACTIVE}?language=en-US", wrong_bearer
        )
        out["rest_stale"] = await rest(http, f"{base}{CONVERSATION}?language=en-GB", key)
        out["ws_stale"] = await upgrade(http, f"{ws}{CONVERSATION}?language=en-GB", key)
        out["rest_gone"] = await rest(http, f"{base}{CONVERSATION}?language=en-AU", key)
        gone = await recognize(http, f"{ws}{CONVERSATION}?language=en-AU", pcm, headers=key)
        out["usp_gone"] = [p.get("RecognitionStatus") for p in gone.phrases()]
        out["protocol_error"] = await protocol_error(http, f"{ws}{CONVERSATION}?{js}")
        # Admin calls, right and wrong; a label by unit whose text must not be logged.
        async with http.get(f"{base}/admin/experiments", headers=admin) as r:
            out["admin_list"] = r.status
        weights = {"weights": {"a": 90, "b": 10}, "reason": "ramp"}
        async with http.put(
            f"{base}/admin/experiments/ab/weights", json=weights, headers=admin
        ) as r:
            out["admin_weights"] = r.status
        async with http.get(f"{base}/admin/experiments/ab/analysis", headers=admin) as r:
            out["admin_analysis"] = r.status
        wrong_admin = {"Authorization": f"Bearer {WRONG_ADMIN_TOKEN}"}
        async with http.get(f"{base}/admin/backends", headers=wrong_admin) as r:
            out["admin_wrong"] = r.status
        label = {"unit": UNIT, "utterance_index": 0, "text": " ".join(LABEL_WORDS)}
        for _ in range(50):  # records reach the store asynchronously
            async with http.post(f"{base}/labels", json=label, headers=admin) as r:
                out["label"] = r.status
            if r.status != 422:
                break
            await asyncio.sleep(0.1)
    # Requests aiohttp cannot parse, with a key or token in the offending line.
    port = gateway.port
    bad_line = http_request("GET", f"{CONVERSATION}?Ocp-Apim-Subscription-Key={CLIENT_KEY}&x=\x01")
    out["bad_request_line"] = (await raw_exchange(port, bad_line)).status
    bad_key = http_request(
        "GET", CONVERSATION, [("Ocp-Apim-Subscription-Key", f"{CLIENT_KEY}\x01")]
    )
    out["bad_key_header"] = (await raw_exchange(port, bad_key)).status
    bad_token = http_request(
        "GET", "/admin/experiments", [("Authorization", f"Bearer {ADMIN_TOKEN}\x7f")]
    )
    out["bad_admin_header"] = (await raw_exchange(port, bad_token)).status
    return out


@dataclass
class Run:
    work: Path
    log: str
    answers: dict[str, object]
    redis: RedisServer | None = None


@pytest.fixture(scope="module")
def hashed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The full workload against a gateway with every secret and `text_privacy = "hash"`,
    its outcomes and experiment state in a password-protected Redis."""
    work = tmp_path_factory.mktemp("log-secrets")
    redis_args = ("--requirepass", REDIS_PASSWORD)
    with (
        RedisServer(work / "redis", extra_args=redis_args) as redis,
        keyed_emulator(work / "alpha") as alpha,
    ):
        store = {
            "SPEECH_GATEWAY_OUTCOMES__STORE": "redis",
            "SPEECH_GATEWAY_REDIS__URL": f"{redis.url}/0",
            "SPEECH_GATEWAY_REDIS__PASSWORD": REDIS_PASSWORD,
            "SPEECH_GATEWAY_REDIS__PREFIX": "sgw-logs",
        }
        with gateway_process(work / "gateway", alpha.ws_url, "hash", store) as gateway:
            answers = asyncio.run(workload(gateway))
        log = (work / "gateway" / "gateway.log").read_text(encoding="utf-8", errors="replace")
        yield Run(work, log, answers, redis)


def test_the_workload_reached_every_path(hashed: Run) -> None:
    """Successes, each refusal and failure, and the admin and label calls happened as meant,
    so that the searches below cover them."""
    a = hashed.answers
    assert a["usp"] == a["usp_query_key"] == a["usp_bearer_query"] != []
    assert (a["rest"], a["rest_query_key"]) == (200, 200)
    assert (a["rest_wrong_key"], a["ws_wrong_query_key"], a["ws_wrong_bearer"]) == (401,) * 3
    assert (a["rest_stale"], a["ws_stale"]) == (401, 401)
    assert a["rest_gone"] == 503
    assert a["usp_gone"] == ["Error"]
    assert a["protocol_error"] == 1002
    assert (a["admin_list"], a["admin_weights"], a["admin_analysis"]) == (200, 200, 200)
    assert a["admin_wrong"] == 401
    assert a["label"] == 200
    assert (a["bad_request_line"], a["bad_key_header"], a["bad_admin_header"]) == (400,) * 3
    lines = [json.loads(line) for line in hashed.log.splitlines() if line.startswith("{")]
    assert {"gateway_ready", "client_protocol_error"} <= {line.get("event") for line in lines}


@pytest.mark.parametrize("secret", SECRETS)
def test_no_secret_in_the_log(hashed: Run, secret: str) -> None:
    """No secret, nor its URL-encoded forms, in anything the gateway printed."""
    assert hashed.log
    for form in encodings(secret):
        assert form not in hashed.log, (secret, form)


def test_no_transcript_label_or_raw_unit_in_the_log(hashed: Run) -> None:
    """With text_privacy "hash", neither a recognised word, nor a word of a label's text,
    nor the raw unit id appears in the log; the records hold digests, not text."""
    lowered = hashed.log.lower()
    for word in (*TRANSCRIPT_WORDS, *LABEL_WORDS, UNIT.lower()):
        assert word not in lowered, word
    assert hashed.redis is not None
    with redis.Redis(port=hashed.redis.port, password=REDIS_PASSWORD, socket_timeout=5) as client:
        records = [
            OutcomeRecord.from_json(fields[b"r"])
            for key in client.scan_iter(match="sgw-logs:*:outcomes")
            for _id, fields in client.xrange(key)
        ]
    successes = [r for r in records if r.status == "Success"]
    assert successes
    assert all(r.text is None and r.text_sha256 for r in successes)


@pytest.mark.parametrize("privacy", ["none", "text"])
def test_transcripts_reach_the_outcome_file_only_when_configured(
    tmp_path: Path, privacy: str
) -> None:
    """With "none" no transcript word is in the log or the outcome file; with "text" the
    outcome file holds the transcript and the log still does not."""
    with (
        keyed_emulator(tmp_path / "alpha") as alpha,
        gateway_process(tmp_path / "gateway", alpha.ws_url, privacy, {}) as gateway,
    ):
        answers = asyncio.run(_recognitions(gateway))
    assert answers == (True, 200)
    log = (tmp_path / "gateway" / "gateway.log").read_text(encoding="utf-8").lower()
    outcomes = (tmp_path / "gateway" / "outcomes.jsonl").read_text(encoding="utf-8").lower()
    for word in TRANSCRIPT_WORDS:
        assert word not in log, word
        assert (word in outcomes) is (privacy == "text"), word


async def _recognitions(gateway: LocalGateway) -> tuple[bool, int]:
    key = {"Ocp-Apim-Subscription-Key": CLIENT_KEY}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        url = f"{gateway.ws_url}{CONVERSATION}?language=en-US"
        result = await recognize(http, url, silence(2.5), headers=key)
        status = await rest(http, f"{gateway.http_url}{CONVERSATION}?language=en-US", key)
    return bool(result.texts()), status
