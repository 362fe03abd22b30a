"""The canary runner: the gateway sends each experiment's canary set to every variant itself.

One owned task per experiment with a `canary` table. Every `interval_s` (the first round a
short, jittered moment after start) it runs a round: for each variant, in configuration
order, each canary item in turn is one USP session of its own to the variant's backend,
dialled as a Speech SDK would be (the conversation path, `cid` = the variant's endpoint id,
the backend's key), its audio sent at full speed, its answer read until `turn.end`. Items
run one after another, never at once, so that canaries never load a backend.

Each utterance becomes one outcome record with role `canary` (submitted like every record:
stored, counted in the metrics, ignored by the guardrails and the analysis's evidence) and
one `CanaryAnswer`. A failure (unreachable, refused, timed out, closed) is an answer with
an `error_code` and a `session_failure` record; it never raises out of the task and never
touches a client session. After each round the canary metrics are updated and `on_round`
gets the round's results, one per variant.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

import aiohttp

from gateway.control.model import Experiment, GatewayConfig, Variant
from gateway.errors import ConfigError, UpstreamError, UspError
from gateway.health.canary import (
    CanaryAnswer,
    CanaryItem,
    CanarySet,
    CanaryTarget,
    RoundResult,
    canary_record,
    failed_answer,
    scored_answer,
)
from gateway.logging import get_logger
from gateway.outcomes.record import OutcomeRecord, now_iso
from gateway.protocol.usp import (
    Path,
    RecognitionStatus,
    decode_text,
    encode_binary,
    encode_text,
    new_request_id,
)
from gateway.protocol.wav import wave_header
from gateway.server.metrics import GatewayMetrics
from gateway.server.relay.upstream import connect_ws

log = get_logger(__name__)

RoundCallback = Callable[[Sequence[RoundResult]], Awaitable[None]]

# The recognition path canaries use: continuous recognition returns every phrase of an
# item until the end of its audio (interactive mode would stop at the first).
CANARY_MODE: Final = "conversation"
CANARY_PATH: Final = f"/speech/recognition/{CANARY_MODE}/cognitiveservices/v1"
DEFAULT_LOCALE: Final = "en-US"
FRAME_BYTES: Final = 3200  # 100 ms of 16 kHz 16-bit mono, as the native SDK sends
BYTES_PER_MS: Final = 32
_KEY_HEADER: Final = "Ocp-Apim-Subscription-Key"
_CONNECTION_ID_HEADER: Final = "X-ConnectionId"
_SPEECH_CONFIG: Final = json.dumps(
    {"context": {"system": {"name": "speech-gateway-canary", "version": "1"}}}
)
_FAILURE_STATUSES: Final = frozenset(
    {
        RecognitionStatus.ERROR,
        RecognitionStatus.TOO_MANY_REQUESTS,
        RecognitionStatus.BAD_REQUEST,
        RecognitionStatus.FORBIDDEN,
        RecognitionStatus.SERVICE_UNAVAILABLE,
    }
)


class _Failed(Exception):
    """One canary utterance failed: the record's error code, status and detail."""

    def __init__(self, error_code: str, detail: str, status: str = "Error") -> None:
        super().__init__(error_code)
        self.error_code = error_code
        self.detail = detail
        self.status = status


@dataclass
class _Exchange:
    """What one canary utterance's session answered, with the runner's clock readings."""

    request_id: str
    sent_first: float = 0.0  # the first audio frame went out
    sent_last: float = 0.0  # the last audio frame went out
    first_hypothesis: float | None = None
    last_phrase: float | None = None
    texts: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)


class CanaryRunner:
    """Runs every experiment's canary rounds; `start()` and `close()` own the tasks."""

    def __init__(
        self,
        *,
        config: Callable[[], GatewayConfig],
        http: aiohttp.ClientSession,
        submit: Callable[[OutcomeRecord], None],
        metrics: GatewayMetrics,
        on_round: RoundCallback,
        connect_timeout_s: float = 5.0,
        first_round_s: float = 5.0,
    ) -> None:
        """`config` gives the live configuration (phases and weights as they are now),
        `submit` takes each canary record (`GatewayState.submit`), `first_round_s` bounds
        the jittered wait before an experiment's first round."""
        self._config = config
        self._http = http
        self._submit = submit
        self._metrics = metrics
        self._on_round = on_round
        self._connect_timeout_s = connect_timeout_s
        self._first_round_s = first_round_s
        self._random = random.Random()
        self._sets: dict[str, CanarySet] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def experiments(self) -> tuple[str, ...]:
        """The experiments whose canaries run (once started)."""
        return tuple(self._sets)

    async def start(self) -> None:
        """Read every canary set (ConfigError on a bad file) and start one task per
        experiment with a canary."""
        if self._tasks:
            raise RuntimeError("the canary runner is already started")
        for experiment in self._config().experiments:
            if experiment.canary is not None:
                self._sets[experiment.id] = await self._load(experiment)
        for experiment_id in self._sets:
            delay = self._first_round_s * self._random.uniform(0.5, 1.0)
            task = asyncio.create_task(
                self._loop(experiment_id, delay), name=f"canary-{experiment_id}"
            )
            self._tasks.append(task)
        if self._sets:
            log.info("canaries_started", experiments=list(self._sets))

    async def close(self) -> None:
        """Cancel the rounds in progress and wait for the tasks to end."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run_round(self, experiment_id: str) -> list[RoundResult]:
        """One round of `experiment_id` now: every variant, every item; records submitted,
        metrics updated and `on_round` called. KeyError for an experiment without canary."""
        experiment = self._experiment(experiment_id)
        if experiment is None or experiment.canary is None:
            raise KeyError(experiment_id)
        canary_set = self._sets.get(experiment_id)
        if canary_set is None:  # a round before start (tests, a manual round)
            canary_set = self._sets[experiment_id] = await self._load(experiment)
        results = [
            await self._variant_round(experiment, variant, canary_set)
            for variant in experiment.variants
        ]
        for result in results:
            self._metrics.canary_round(
                result.experiment,
                result.variant,
                ok=not result.failed,
                wer=result.wer,
                latency_ms=result.latency_ms(),
            )
            log.info(
                "canary_round",
                experiment=result.experiment,
                variant=result.variant,
                phase=result.phase,
                wer=None if result.wer is None else round(result.wer, 4),
                answered=len(result.answered),
                items=len(result.answers),
            )
        try:
            await self._on_round(results)
        except Exception:
            log.exception("canary_round_callback_failed", experiment=experiment_id)
        return results

    # -- internals ------------------------------------------------------------------------

    async def _load(self, experiment: Experiment) -> CanarySet:
        """The experiment's canary set, read off the event loop; a ConfigError names the
        setting (the configuration check read only its manifest)."""
        assert experiment.canary is not None
        index = [e.id for e in self._config().experiments].index(experiment.id)
        field = f"gateway.experiments[{index}].canary.dataset"
        try:
            return await asyncio.to_thread(CanarySet.load, experiment.canary.dataset)
        except ConfigError as exc:
            raise ConfigError(field, f"{exc.field}: {exc.problem}") from exc

    def _experiment(self, experiment_id: str) -> Experiment | None:
        for experiment in self._config().experiments:
            if experiment.id == experiment_id:
                return experiment
        return None

    async def _loop(self, experiment_id: str, delay: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(delay)
        while True:
            started = loop.time()
            interval = 60.0
            try:
                experiment = self._experiment(experiment_id)
                if experiment is None or experiment.canary is None:
                    return
                interval = experiment.canary.interval_s
                await self.run_round(experiment_id)
            except Exception:  # a bug must not end the canaries for good
                log.exception("canary_round_failed", experiment=experiment_id)
            # Rounds start `interval` apart; a round that took longer is followed at once.
            await asyncio.sleep(max(0.0, started + interval - loop.time()))

    async def _variant_round(
        self, experiment: Experiment, variant: Variant, canary_set: CanarySet
    ) -> RoundResult:
        assert experiment.canary is not None
        at = now_iso()
        target = CanaryTarget(
            experiment=experiment.id,
            phase=experiment.phase,
            variant=variant.name,
            backend=variant.backend.name,
            mode=CANARY_MODE,
            locale=(_locale(experiment)).lower(),
        )
        answers: list[CanaryAnswer] = []
        for item in canary_set.items:
            answer, record = await self._utterance(
                experiment, variant, target, item, experiment.canary.timeout_s
            )
            answers.append(answer)
            self._submit(record)
        return RoundResult(
            experiment=experiment.id,
            phase=experiment.phase,
            variant=variant.name,
            backend=variant.backend.name,
            endpoint_id=variant.endpoint_id,
            at=at,
            answers=tuple(answers),
        )

    async def _utterance(
        self,
        experiment: Experiment,
        variant: Variant,
        target: CanaryTarget,
        item: CanaryItem,
        timeout_s: float,
    ) -> tuple[CanaryAnswer, OutcomeRecord]:
        session_id = uuid.uuid4().hex
        exchange = _Exchange(request_id=new_request_id())
        try:
            async with asyncio.timeout(timeout_s):
                await self._exchange(experiment, variant, item, session_id, exchange)
        except TimeoutError:
            timed_out = _Failed(
                "upstream_timeout", f"no complete answer within {timeout_s:g} s (canary)"
            )
            return self._failure(target, item, session_id, timed_out)
        except UpstreamError as exc:
            return self._failure(target, item, session_id, _Failed(exc.error_code, exc.detail))
        except _Failed as failure:
            return self._failure(target, item, session_id, failure)
        except (aiohttp.ClientError, OSError) as exc:
            lost = _Failed("upstream_lost", type(exc).__name__)
            return self._failure(target, item, session_id, lost)
        text = " ".join(t for t in exchange.texts if t) or None
        latency = _ms(exchange.last_phrase, exchange.sent_last)
        answer = scored_answer(item.id, item.text, text, latency)
        status = _status(exchange.statuses)
        confidences = exchange.confidences
        record = canary_record(
            target,
            answer,
            session_id=session_id,
            status=status,
            turn_id=exchange.request_id,
            audio_duration_ms=len(item.pcm) / BYTES_PER_MS,
            first_hypothesis_ms=_ms(exchange.first_hypothesis, exchange.sent_first),
            total_ms=_ms(exchange.last_phrase, exchange.sent_first),
            confidence=sum(confidences) / len(confidences) if confidences else None,
        )
        return answer, record

    def _failure(
        self, target: CanaryTarget, item: CanaryItem, session_id: str, failure: _Failed
    ) -> tuple[CanaryAnswer, OutcomeRecord]:
        log.warning(
            "canary_utterance_failed",
            experiment=target.experiment,
            variant=target.variant,
            backend=target.backend,
            item=item.id,
            error_code=failure.error_code,
        )
        answer = failed_answer(item.id, item.text, failure.error_code)
        record = canary_record(
            target,
            answer,
            session_id=session_id,
            status=failure.status,
            error_detail=failure.detail[:200],
        )
        return answer, record

    async def _exchange(
        self,
        experiment: Experiment,
        variant: Variant,
        item: CanaryItem,
        session_id: str,
        exchange: _Exchange,
    ) -> None:
        """One USP session: config, context, a RIFF header, the PCM at full speed, the end
        of audio; then every message until `turn.end`."""
        pairs = [("language", _locale(experiment)), ("format", "detailed")]
        if variant.endpoint_id:
            pairs.append(("cid", variant.endpoint_id))
        url = variant.backend.ws_url(CANARY_PATH, urlencode(pairs))
        headers = {_CONNECTION_ID_HEADER: session_id}
        if variant.backend.key is not None:
            headers[_KEY_HEADER] = variant.backend.key
        ws = await connect_ws(
            self._http, url, headers, protocols=("USP",), timeout_s=self._connect_timeout_s
        )
        try:
            await self._send(ws, item, exchange, _locale(experiment))
            await self._receive(ws, exchange)
        finally:
            await ws.close()

    @staticmethod
    async def _send(
        ws: aiohttp.ClientWebSocketResponse, item: CanaryItem, exchange: _Exchange, locale: str
    ) -> None:
        request_id = exchange.request_id
        await ws.send_str(encode_text("speech.config", None, _SPEECH_CONFIG))
        context = json.dumps({"phraseDetection": {"language": locale}})
        await ws.send_str(encode_text("speech.context", request_id, context))
        header = [("Content-Type", "audio/x-wav")]
        await ws.send_bytes(encode_binary("audio", request_id, wave_header(), extra_headers=header))
        exchange.sent_first = time.monotonic()
        for start in range(0, len(item.pcm), FRAME_BYTES):
            await ws.send_bytes(
                encode_binary("audio", request_id, item.pcm[start : start + FRAME_BYTES])
            )
        exchange.sent_last = time.monotonic()
        await ws.send_bytes(encode_binary("audio", request_id, b""))  # the end of the audio

    @staticmethod
    async def _receive(ws: aiohttp.ClientWebSocketResponse, exchange: _Exchange) -> None:
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                decoded = decode_text(message.data)
            except UspError:
                continue  # not a message the SDK could read either; the timeout bounds it
            now = time.monotonic()
            if decoded.path in (Path.SPEECH_HYPOTHESIS, Path.SPEECH_FRAGMENT):
                if exchange.first_hypothesis is None:
                    exchange.first_hypothesis = now
            elif decoded.path == Path.SPEECH_PHRASE:
                _phrase(decoded.body, exchange, now)
            elif decoded.path == Path.TURN_END:
                return
        code = ws.close_code
        if code is not None and code != aiohttp.WSCloseCode.OK:
            raise _Failed(f"upstream_close_{code}", "the backend closed the connection")
        raise _Failed("upstream_lost", "the connection ended before turn.end")


def _locale(experiment: Experiment) -> str:
    """The language canaries ask for: the experiment's assumed locale, else its only
    targeted locale, else en-US."""
    if experiment.locale is not None:
        return experiment.locale
    locales = sorted(experiment.targeting.locales)
    return locales[0] if len(locales) == 1 else DEFAULT_LOCALE


def _phrase(body: str, exchange: _Exchange, now: float) -> None:
    try:
        phrase = json.loads(body)
    except ValueError:
        return
    if not isinstance(phrase, dict):
        return
    status = str(phrase.get("RecognitionStatus") or "Unknown")[:64]
    if status == RecognitionStatus.END_OF_DICTATION:
        return
    if status in _FAILURE_STATUSES:
        raise _Failed(f"upstream_status_{status}", f"the service answered {status}", status)
    exchange.last_phrase = now
    exchange.statuses.append(status)
    if status != RecognitionStatus.SUCCESS:
        return
    nbest = phrase.get("NBest")
    best = nbest[0] if isinstance(nbest, list) and nbest and isinstance(nbest[0], dict) else {}
    text = phrase.get("DisplayText") or best.get("Display") or ""
    exchange.texts.append(str(text))
    confidence = best.get("Confidence")
    if (
        isinstance(confidence, int | float)
        and not isinstance(confidence, bool)
        and 0.0 <= confidence <= 1.0
    ):
        exchange.confidences.append(float(confidence))


def _status(statuses: list[str]) -> str:
    """The record's status: Success if any phrase succeeded, else the last phrase's (no
    phrase at all: NoMatch, as the SDK reports a turn without a result)."""
    if RecognitionStatus.SUCCESS in statuses:
        return RecognitionStatus.SUCCESS.value
    return statuses[-1] if statuses else RecognitionStatus.NO_MATCH.value


def _ms(later: float | None, earlier: float) -> float | None:
    if later is None or earlier <= 0.0:
        return None
    return max(0.0, (later - earlier) * 1000.0)
