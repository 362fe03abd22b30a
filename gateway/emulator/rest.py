"""REST speech-to-text for short audio (protocol.md §7), streamed.

The body (plain or chunked) is read chunk by chunk: the RIFF header is parsed as it
arrives and PCM goes to the recogniser at once, so audio is never held whole in memory.
The utterances found are joined into one result, simple or detailed.
"""

from __future__ import annotations

from aiohttp import web

from gateway.emulator import auth, options, phrases
from gateway.emulator.app_state import STATE, EmulatorState, unauthorized
from gateway.emulator.faults import HttpFailure
from gateway.emulator.recognition import (
    Final,
    RecognitionEvent,
    RecognitionStream,
    StreamConfig,
    ticks,
)
from gateway.errors import RecognitionError, RestError, UspError
from gateway.protocol.usp import RecognitionStatus
from gateway.protocol.wav import WaveHeaderReader, require_pcm16_mono_16k

# The service's limit for short audio.
MAX_AUDIO_SECONDS = 60
READ_CHUNK = 16 * 1024


async def rest_handler(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not auth.authorized(state.key, request.headers, request.query):
        raise unauthorized()
    try:
        return await _recognize(request, state)
    except RestError as exc:
        return web.json_response({"error": exc.reason}, status=exc.status)


async def _recognize(request: web.Request, state: EmulatorState) -> web.Response:
    if not request.query.get("language"):
        raise RestError("The 'language' query parameter is required.", 400)
    try:
        opts = options.from_query(request.path, request.query)
        opts.check_language()
    except UspError as exc:
        raise RestError(exc.reason, 400) from None
    # The model the endpoint maps to now (it may have been switched at run time).
    model = state.endpoints.resolve(opts.endpoint_id)
    if model is None:
        raise RestError("Unknown endpoint id (cid).", 400)
    failure = state.faults.draw()
    if isinstance(failure, HttpFailure):
        raise RestError("Injected failure.", failure.status)
    if failure is not None:
        return web.json_response({"RecognitionStatus": RecognitionStatus.ERROR.value})
    if not state.admit():
        raise RestError("Too many requests.", 429)
    try:
        finals, audio_ticks = await _stream_body(request, state, model, opts)
    finally:
        state.release()
    final = phrases.merge_finals(finals)
    if final is None:
        body = {
            "RecognitionStatus": RecognitionStatus.INITIAL_SILENCE_TIMEOUT.value,
            "Offset": 0,
            "Duration": audio_ticks,
        }
        return web.json_response(body)
    fields = phrases.phrase_fields(final, opts)
    fields.pop("Channel", None)
    fields.pop("Id", None)
    return web.json_response(fields)


async def _stream_body(
    request: web.Request, state: EmulatorState, model: str, opts: options.RecognitionOptions
) -> tuple[list[Final], int]:
    header = WaveHeaderReader()
    stream: RecognitionStream | None = None
    finals: list[Final] = []
    pcm_bytes = 0
    limit = state.settings.max_rest_body_bytes
    received = 0
    try:
        async for chunk in request.content.iter_chunked(READ_CHUNK):
            received += len(chunk)
            if received > limit:
                raise RestError(f"Request body is larger than {limit} bytes.", 413)
            if stream is None:
                done = _read_header(header, chunk)
                if done is None:
                    continue
                rate, chunk = done
                stream = await state.engine.open_stream(
                    StreamConfig(model, opts.segmentation_silence_ms, rate)
                )
            pcm_bytes += len(chunk)
            if pcm_bytes > MAX_AUDIO_SECONDS * 32000:
                raise RestError(f"Audio is longer than {MAX_AUDIO_SECONDS} seconds.", 400)
            if chunk:
                finals.extend(_finals(await stream.feed(chunk)))
        if stream is None:
            raise RestError("The body is not a complete RIFF/WAVE header and audio.", 400)
        finals.extend(_finals(await stream.finish()))
    except RecognitionError as exc:
        raise RestError(f"Recognition failed: {exc}", 500) from None
    finally:
        if stream is not None:
            await stream.close()
    return finals, ticks(pcm_bytes / 32000)


def _read_header(header: WaveHeaderReader, chunk: bytes) -> tuple[int, bytes] | None:
    try:
        done = header.feed(chunk)
        if done is None:
            return None
        fmt, pcm = done
        require_pcm16_mono_16k(fmt)
    except UspError as exc:
        raise RestError(f"Unsupported audio: {exc.reason}", 400) from None
    return fmt.sample_rate, pcm


def _finals(events: tuple[RecognitionEvent, ...]) -> list[Final]:
    return [event for event in events if isinstance(event, Final)]
