"""`speech-gateway replay`: a labelled dataset through a gateway with the real Speech SDK.

The live-traffic counterpart of Custom Speech's "test models" comparison. Each item of a
dataset (a WAV file and its reference transcript, `gateway.tools.dataset`) becomes one
continuous-recognition session of the Azure Speech SDK against the gateway, under a unit
id of its own (`<prefix>-<item id>`, so the experiment splits the items like users), N at
a time. The audio goes as fast as the SDK reads a file, or at real-time pace through a push
stream. Then the references are attached as labels by unit and the analysis of each
experiment the labels landed in is printed (`gateway.tools.replay_http`). docs/replay.md is the
user's description.

The SDK is synchronous with callbacks on its own threads, so sessions run in a thread pool;
nothing here touches an event loop.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import threading
import time
import wave
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TextIO

import azure.cognitiveservices.speech as speechsdk

from gateway.config.settings import Settings
from gateway.constants import ADMIN_TOKEN_ENV
from gateway.errors import ConfigError, UpstreamError
from gateway.outcomes.labels import LabelError, UnitLabel, check_experiment, check_unit
from gateway.tools.cli_options import CLIENT_KEY_ENV, DEFAULT_PATH, DEFAULT_UNIT_PARAM, PACES, Pace
from gateway.tools.dataset import LabelledUtterance, load_dataset
from gateway.tools.replay_http import (
    LABEL_WAIT_S,
    GatewayUrls,
    LabelsAttached,
    LabelTarget,
    analysable,
    attach_labels,
    fetch_analysis,
)
from gateway.tools.speech_client import speech_config

MAX_CONCURRENCY: Final = 256
CHUNK_S: Final = 0.1  # real-time pace: 100 ms of audio per write
# A session gets this long beyond its audio before it counts as timed out.
SESSION_GRACE_S: Final = 60.0
TIMEOUT: Final = "Timeout"  # the error code of a session that never ended
CLIENT_ERROR: Final = "ClientError"  # the SDK raised instead of running the session


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One replayed item: what the SDK recognised, or how its session failed."""

    id: str
    unit: str
    reference: str
    text: str  # the recognised utterances, joined by spaces
    utterances: int  # results the SDK delivered (recognised speech and no-match)
    error_code: str | None  # the SDK's CancellationErrorCode name, or "Timeout"
    error_details: str | None
    seconds: float  # from starting recognition to the session's end
    audio_seconds: float
    record_ids: tuple[str, ...] = ()  # the outcome records its label went to

    @property
    def failed(self) -> bool:
        return self.error_code is not None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """A whole replay: per item, totals, and what happened to the labels."""

    unit_prefix: str
    pace: Pace
    concurrency: int
    items: tuple[ItemResult, ...]
    seconds: float
    labels: LabelsAttached | None  # None: no admin token, no labels attached
    label_targets: int = 0  # items that had an utterance to label

    @property
    def failures(self) -> list[ItemResult]:
        return [item for item in self.items if item.failed]

    @property
    def experiments(self) -> tuple[str, ...]:
        """The experiments the labelled records belong to (known only with labels)."""
        return self.labels.experiments if self.labels is not None else ()

    @property
    def several_utterances(self) -> int:
        return sum(item.utterances > 1 for item in self.items)

    def summary(self) -> str:
        """A few lines for the terminal: totals, failures by code, labels."""
        ok = len(self.items) - len(self.failures)
        lines = [
            f"replay {self.unit_prefix}: {len(self.items)} sessions in {self.seconds:.1f} s "
            f"({self.concurrency} at a time, {self.pace}): {ok} ok, {len(self.failures)} failed"
        ]
        by_code = Counter(item.error_code for item in self.failures)
        for code, count in by_code.most_common():
            first = next(item for item in self.failures if item.error_code == code)
            # One line: the SDK's texts span several (URL, connection id).
            details = f": {' '.join(first.error_details.split())}" if first.error_details else ""
            lines.append(f"  {count} x {code} (first: {first.id}{details})")
        lines.append(self._labels_line())
        if self.several_utterances:
            lines.append(
                f"  {self.several_utterances} item(s) gave several utterances: the reference "
                "labels utterance 0 only (a replay dataset has one utterance per file)"
            )
        return "\n".join(lines)

    def _labels_line(self) -> str:
        if self.labels is None:
            return "labels: not attached (no admin token)"
        labels = self.labels
        where = f" in {', '.join(labels.experiments)}" if labels.experiments else ""
        text = f"labels: {labels.attached} of {self.label_targets} attached by unit{where}"
        if labels.unresolved:
            text += f"; {len(labels.unresolved)} unit(s) had no outcome record in time"
        if labels.error:
            text += f"; stopped: {labels.error}"
        return text


# -- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayOptions:
    """What to replay, through which gateway, and how (docs/replay.md); `run_replay`
    validates it. The key and token are left out of the repr, so never printed."""

    dataset: Path  # a folder with manifest.jsonl and WAV files (gateway.tools.dataset)
    gateway: str  # the gateway's root URL: ws, wss, http or https
    key: str = field(repr=False)  # a gateway client key
    admin_token: str | None = field(default=None, repr=False)  # None: no labels, no analysis
    concurrency: int = 4
    pace: Pace = "fast"
    unit_prefix: str | None = None  # None: a fresh run id
    path: str = DEFAULT_PATH
    language: str = "en-US"
    experiment: str | None = None  # label in this experiment only (None: any)
    unit_param: str = DEFAULT_UNIT_PARAM
    label_wait_s: float = LABEL_WAIT_S


def run_replay(
    options: ReplayOptions,
    *,
    items: Sequence[LabelledUtterance] | None = None,
    progress: TextIO | None = None,
) -> ReplayResult:
    """Recognise every item of the dataset through the gateway, `concurrency` sessions at a
    time, then attach the references as labels by unit (with an admin token).

    `items` are the dataset's items if already loaded (default: load `options.dataset`);
    `progress` is where the progress bar goes (None: no bar). Invalid options or items
    raise ConfigError naming the option or item before any session starts. Session
    failures do not raise: they are in the result.
    """
    urls = GatewayUrls.parse(options.gateway)
    _check_options(options)
    prefix = options.unit_prefix if options.unit_prefix is not None else new_run_id()
    plan = _plan(load_dataset(options.dataset) if items is None else items, prefix)
    endpoint = f"{urls.ws}{options.path}"
    hidden = tuple(s for s in (options.key, options.admin_token) if s)

    def one(item: LabelledUtterance, unit: str, audio_seconds: float) -> ItemResult:
        try:
            config = speech_config(endpoint, options.key, language=options.language)
            config.set_service_property(
                options.unit_param, unit, speechsdk.ServicePropertyChannel.UriQueryParameter
            )
            return _session(config, item, unit, audio_seconds, options.pace, abort, hidden)
        except Exception as exc:  # the SDK refused this item: one failure, not the whole run
            details = _redact(f"{type(exc).__name__}: {exc}", hidden)
            return ItemResult(
                item.id, unit, item.text, "", 0, CLIENT_ERROR, details, 0.0, audio_seconds
            )

    abort = threading.Event()
    began = time.monotonic()
    bar = ProgressBar(progress, len(plan)) if progress is not None else None
    results: dict[str, ItemResult] = {}
    pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="replay")
    try:
        futures: dict[Future[ItemResult], str] = {
            pool.submit(one, item, unit, seconds): item.id for item, unit, seconds in plan
        }
        for future in as_completed(futures):
            result = future.result()
            results[result.id] = result
            if bar is not None:
                bar.update(len(results), sum(r.failed for r in results.values()))
    except BaseException:
        abort.set()  # running sessions stop at once; queued ones never start
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        if bar is not None:
            bar.close()
    ordered = [results[item.id] for item, _unit, _seconds in plan]
    seconds = time.monotonic() - began
    targets = _label_targets(ordered, options.experiment)
    labels: LabelsAttached | None = None
    if options.admin_token:
        labels = attach_labels(urls.http, options.admin_token, targets, wait_s=options.label_wait_s)
        ordered = [replace(r, record_ids=labels.records.get(r.id, ())) for r in ordered]
    return ReplayResult(
        unit_prefix=prefix,
        pace=options.pace,
        concurrency=options.concurrency,
        items=tuple(ordered),
        seconds=seconds,
        labels=labels,
        label_targets=len(targets),
    )


def new_run_id() -> str:
    """A fresh unit prefix: `replay-` and 8 random hex digits."""
    return f"replay-{secrets.token_hex(4)}"


def _check_options(options: ReplayOptions) -> None:
    if not options.key:
        raise ConfigError("--key", f"give the gateway client key (--key or {CLIENT_KEY_ENV})")
    if not 1 <= options.concurrency <= MAX_CONCURRENCY:
        raise ConfigError(
            "--concurrency", f"expected 1-{MAX_CONCURRENCY}, got {options.concurrency}"
        )
    if options.pace not in PACES:
        raise ConfigError("--pace", f"expected 'fast' or 'realtime', got {options.pace!r}")
    path = options.path
    if not path.startswith("/") or "?" in path or "#" in path:
        raise ConfigError("--path", f"expected a URL path such as {DEFAULT_PATH}, got {path!r}")
    if options.experiment is not None:
        try:
            check_experiment(options.experiment)
        except LabelError as exc:
            raise ConfigError("--experiment", exc.problem) from None
    if not options.unit_param:
        raise ConfigError("--unit-param", "must not be empty")
    if options.label_wait_s < 0:
        raise ConfigError("label_wait_s", f"must not be negative, got {options.label_wait_s}")


def _plan(
    items: Sequence[LabelledUtterance], prefix: str
) -> list[tuple[LabelledUtterance, str, float]]:
    """(item, unit, audio seconds) per item; ConfigError naming the item that cannot run."""
    if not items:
        raise ConfigError("dataset", "holds no utterances")
    seen: set[str] = set()
    plan: list[tuple[LabelledUtterance, str, float]] = []
    for item in items:
        if item.id in seen:
            raise ConfigError(f"dataset item {item.id!r}", "appears twice; ids must be distinct")
        seen.add(item.id)
        unit = f"{prefix}-{item.id}"
        try:
            check_unit(unit)
        except LabelError as exc:
            raise ConfigError(f"unit of item {item.id!r}", exc.problem) from None
        plan.append((item, unit, _audio_seconds(item.audio)))
    return plan


def _audio_seconds(path: Path) -> float:
    """The duration of a 16-bit mono PCM WAV file; ConfigError naming it if it is not one."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                raise ConfigError(
                    str(path),
                    f"expected 16-bit mono PCM, got {8 * wav.getsampwidth()}-bit with "
                    f"{wav.getnchannels()} channels",
                )
            return wav.getnframes() / wav.getframerate()
    except (OSError, EOFError, wave.Error) as exc:
        raise ConfigError(str(path), f"cannot read the WAV file: {exc}") from None


def _label_targets(results: Sequence[ItemResult], experiment: str | None) -> list[LabelTarget]:
    """Items whose session produced an utterance (a record to label) and that have a usable
    reference; utterance 0 gets the whole reference."""
    targets: list[LabelTarget] = []
    for result in results:
        if result.utterances == 0:
            continue
        try:
            label = UnitLabel(result.unit, result.reference, 0, experiment)
        except LabelError:
            continue  # an empty or overlong reference: nothing a label could hold
        targets.append(LabelTarget(result.id, label))
    return targets


# -- one session -----------------------------------------------------------------------------


@dataclass
class _Events:
    """What the SDK's callbacks saw; written by its threads, read after `done`."""

    texts: list[str] = field(default_factory=list)
    utterances: int = 0
    error_code: str | None = None
    error_details: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def recognized(self, event: Any) -> None:
        result = event.result
        if result.reason == speechsdk.ResultReason.RecognizedSpeech:
            self.utterances += 1
            if result.text:
                self.texts.append(result.text)
        elif result.reason == speechsdk.ResultReason.NoMatch:
            self.utterances += 1

    def canceled(self, event: Any) -> None:
        details = event.result.cancellation_details
        if details.reason == speechsdk.CancellationReason.Error:
            self.error_code = details.code.name
            self.error_details = details.error_details
        self.done.set()

    def stopped(self, _event: Any) -> None:
        self.done.set()


def _session(
    config: Any,
    item: LabelledUtterance,
    unit: str,
    audio_seconds: float,
    pace: Pace,
    abort: threading.Event,
    hidden: tuple[str, ...],
) -> ItemResult:
    events = _Events()
    feeder: _Feeder | None = None
    if pace == "realtime":
        feeder = _Feeder(item.audio, abort)
        audio = speechsdk.audio.AudioConfig(stream=feeder.stream)
    else:
        audio = speechsdk.audio.AudioConfig(filename=str(item.audio))
    recognizer = speechsdk.SpeechRecognizer(speech_config=config, audio_config=audio)
    recognizer.recognized.connect(events.recognized)
    recognizer.canceled.connect(events.canceled)
    recognizer.session_stopped.connect(events.stopped)
    began = time.monotonic()
    deadline = began + audio_seconds + SESSION_GRACE_S
    try:
        recognizer.start_continuous_recognition()
        if feeder is not None:
            feeder.start()
        while not events.done.wait(0.1):
            if abort.is_set() or time.monotonic() > deadline:
                break
        seconds = time.monotonic() - began
        if not events.done.is_set():
            # Only a session still running needs stopping: stopping one that already ended
            # in an error makes the SDK's teardown wait about ten seconds.
            recognizer.stop_continuous_recognition()
    finally:
        if feeder is not None:
            feeder.stop()
        # The SDK holds the callbacks (and through them this session) until disconnected.
        for signal in (recognizer.recognized, recognizer.canceled, recognizer.session_stopped):
            signal.disconnect_all()
    error_code, details = events.error_code, events.error_details
    if not events.done.is_set():
        error_code = TIMEOUT if not abort.is_set() else "Aborted"
        details = f"no end of session after {seconds:.0f} s"
    return ItemResult(
        id=item.id,
        unit=unit,
        reference=item.text,
        text=" ".join(events.texts),
        utterances=events.utterances,
        error_code=error_code,
        error_details=_redact(details, hidden),
        seconds=seconds,
        audio_seconds=audio_seconds,
    )


def _redact(text: str | None, hidden: tuple[str, ...]) -> str | None:
    """The SDK's error text without any credential in it (it may quote a URL)."""
    if text is None:
        return None
    for secret in hidden:
        text = text.replace(secret, "***")
    return text


class _Feeder:
    """Writes a WAV file's audio to an SDK push stream in 100 ms chunks at real-time pace,
    from a thread of its own, then closes the stream (the end of the session's audio)."""

    def __init__(self, path: Path, abort: threading.Event) -> None:
        with wave.open(str(path), "rb") as wav:
            rate = wav.getframerate()
            self._pcm = wav.readframes(wav.getnframes())
        stream_format = speechsdk.audio.AudioStreamFormat(
            samples_per_second=rate, bits_per_sample=16, channels=1
        )
        self.stream = speechsdk.audio.PushAudioInputStream(stream_format=stream_format)
        self._chunk = max(2, int(rate * CHUNK_S) * 2)
        self._abort = abort
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"replay-feed-{path.name}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.ident is not None:
            self._thread.join()
        else:
            self.stream.close()

    def _run(self) -> None:
        began = time.monotonic()
        try:
            for number, start in enumerate(range(0, len(self._pcm), self._chunk)):
                # Against the clock, not by sleeping a chunk's length: no drift.
                wait = began + number * CHUNK_S - time.monotonic()
                if wait > 0 and self._stopped.wait(wait):
                    break
                if self._stopped.is_set() or self._abort.is_set():
                    break
                self.stream.write(self._pcm[start : start + self._chunk])
        finally:
            self.stream.close()


# -- the progress bar ------------------------------------------------------------------------


class ProgressBar:
    """done/total, failures and elapsed time: one line redrawn in place on a terminal, a
    line at every 10 % otherwise (a log file or CI output)."""

    def __init__(
        self,
        stream: TextIO,
        total: int,
        *,
        label: str = "replay",
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._total = max(1, total)
        self._label = label
        self._tty = stream.isatty() if tty is None else tty
        self._clock = clock
        self._began = clock()
        self._tenths = 0
        self._drawn = False
        if self._tty:
            self.update(0, 0)

    def update(self, done: int, failed: int) -> None:
        elapsed = self._clock() - self._began
        if self._tty:
            width = 24
            filled = width * done // self._total
            bar = "#" * filled + "-" * (width - filled)
            failures = f", {failed} failed" if failed else ""
            self._stream.write(
                f"\r{self._label} [{bar}] {done}/{self._total}{failures}  {_clock_text(elapsed)}"
            )
            self._stream.flush()
            self._drawn = True
            return
        tenths = 10 * done // self._total
        if tenths > self._tenths:
            self._tenths = tenths
            self._stream.write(
                f"{self._label}: {done}/{self._total} ({100 * done // self._total} %), "
                f"{failed} failed, {elapsed:.1f} s\n"
            )
            self._stream.flush()

    def close(self) -> None:
        if self._tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


def _clock_text(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


# -- the command -----------------------------------------------------------------------------


def replay_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run `speech-gateway replay`: 0 if every session ended normally, 1 if some failed.

    Labels and the analysis are reported, and their failures warned about, without
    changing the exit status. ConfigError for bad options or datasets (exit status 2).
    """
    admin_token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None
    options = ReplayOptions(
        dataset=args.dataset,
        gateway=args.gateway or f"http://{settings.gateway.host}:{settings.gateway.port}",
        key=args.key or os.environ.get(CLIENT_KEY_ENV) or "",
        admin_token=admin_token,
        concurrency=args.concurrency,
        pace=args.pace,
        unit_prefix=args.unit_prefix if args.unit_prefix is not None else new_run_id(),
        path=args.path,
        language=args.language,
        experiment=args.experiment,
        unit_param=args.unit_param,
    )
    GatewayUrls.parse(options.gateway)  # bad options fail before the header is printed
    _check_options(options)
    items = load_dataset(options.dataset)
    out, err = sys.stdout, sys.stderr
    print(
        f"Replaying {len(items)} utterances from {options.dataset} through {options.gateway} "
        f"({options.concurrency} at a time, {options.pace}); "
        f"unit ids {options.unit_prefix}-<item id>",
        file=err,
    )
    result = run_replay(options, items=items, progress=err)
    print(result.summary(), file=out)
    if admin_token is None:
        print(
            f"warning: no admin token (--admin-token or {ADMIN_TOKEN_ENV}): the references "
            "were not attached as labels, so WER cannot be computed, and the analysis is "
            "not fetched",
            file=err,
        )
    elif result.labels is not None and result.labels.error:
        print(f"warning: labels: {result.labels.error}", file=err)
    if admin_token is not None and not args.no_analysis:
        experiments = [args.experiment] if args.experiment else analysable(result.experiments)
        if not experiments:
            print("analysis: no experiment to analyse (no label was attached)", file=err)
        for experiment in experiments:
            root = GatewayUrls.parse(options.gateway).http
            _print_analysis(root, admin_token, experiment, out, err)
    return 1 if result.failures else 0


def _print_analysis(root: str, admin_token: str, experiment: str, out: TextIO, err: TextIO) -> None:
    try:
        report = fetch_analysis(root, admin_token, experiment)
    except UpstreamError as exc:
        print(f"analysis of {experiment} unavailable: {exc.detail}", file=err)
        return
    print("", file=out)
    print(render_report(report), file=out)


def render_report(report: dict[str, Any]) -> str:
    """The analysis as the terminal tables of `gateway.analysis.render_text`."""
    from gateway.analysis.text_report import render_text

    return render_text(report)
