"""The emulator's recognition engines behind one small interface.

`pocketsphinx` (the default) recognises for real in worker processes; `instant` answers at
once with a scripted transcript (one per model, when configured), for load tests, and
reports itself as `instant` wherever the engine is named (`/status`, start-up log) so nobody
mistakes its results for recognition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gateway.config.settings import EmulatorSettings
from gateway.emulator.instant import InstantStream
from gateway.emulator.models import BASE_MODEL, model_specs
from gateway.emulator.recognition import RecognitionStream, StreamConfig
from gateway.emulator.recognizer_pool import RecognizerPool


class Engine(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def models(self) -> frozenset[str]: ...

    async def start(self) -> None: ...

    async def open_stream(self, config: StreamConfig) -> RecognitionStream: ...

    async def close(self) -> None: ...


class PocketsphinxEngine:
    name = "pocketsphinx"

    def __init__(self, pool: RecognizerPool) -> None:
        self._pool = pool

    @property
    def models(self) -> frozenset[str]:
        return self._pool.models

    async def start(self) -> None:
        await self._pool.start()

    async def open_stream(self, config: StreamConfig) -> RecognitionStream:
        return await self._pool.open_stream(config)

    async def close(self) -> None:
        await self._pool.close()


class InstantEngine:
    name = "instant"

    def __init__(
        self,
        text: str,
        utterance_ms: int,
        custom_ids: frozenset[str],
        texts: Mapping[str, str] | None = None,
    ) -> None:
        self._text = text
        self._texts = dict(texts or {})
        self._utterance_ms = utterance_ms
        self._models = frozenset({BASE_MODEL}) | custom_ids

    @property
    def models(self) -> frozenset[str]:
        return self._models

    async def start(self) -> None:
        return None

    async def open_stream(self, config: StreamConfig) -> RecognitionStream:
        # A model's own script, so that a switch of an endpoint's model shows in its results.
        text = self._texts.get(config.model, self._text)
        return InstantStream(text, self._utterance_ms, config.sample_rate)

    async def close(self) -> None:
        return None


def create_engine(settings: EmulatorSettings) -> Engine:
    if settings.engine == "instant":
        return InstantEngine(
            settings.instant_text,
            settings.instant_utterance_ms,
            frozenset(settings.custom),
            settings.instant_texts,
        )
    specs = model_specs(settings.custom, settings.model_cache)
    return PocketsphinxEngine(RecognizerPool(specs, settings.workers))
