"""The review workbench: a queue of captured utterances that reviewers label and judge blind.

`add_review_routes` mounts the page (`GET /review`, static/review.html with its style and
script, served like the dashboard) and its API under `/admin/review/experiments/{experiment}`:

* `GET  .../progress`                   captures, reviewed, remaining, mine
* `POST .../claim`                      the next item in priority order, leased to the caller
* `GET  .../items/{capture_id}/audio`   the item's WAV (audio/wav)
* `POST .../items/{capture_id}/save`    {"text", "choice"}: label + blind preference
* `POST .../items/{capture_id}/skip`    give the item back; not offered to the caller again
* `POST .../undo`                       withdraw the caller's last save and reopen it for them

Every API route needs a reviewer (`gateway.reviewer_tokens_sha256`) or admin token; the
name is the reviewer's. Reviewer tokens are accepted nowhere else, so a reviewer cannot
change experiments. The queue (`review_order`) puts priority captures first (failures,
no-matches, disagreements, low confidence), then the uniform sample, oldest first in each;
captures with a live preference are done. A claim leases one item for `LEASE_S`
(`gateway.stores.review_leases`), so two reviewers never get the same item at once.

An item shows the hypotheses of the primary and of the first shadow with another variant as
"A" and "B", in an order drawn per capture and reviewer from an HMAC of the gateway's
pseudonym key, so neither the order nor a name tells the reviewer which variant spoke; the
server recomputes the mapping when the choice comes back. Saving writes the text as a label
of every record of the capture (source `review`, labeller the reviewer) through the label
store, then the `Preference` with the record ids it labelled; a save over another
reviewer's live review is refused, and a claim skips an item saved since its queue was
read. Undo cannot remove the label (labels are last-wins with an audit trail): it withdraws
the preference, so the item counts as not reviewed and its labels as retracted
(`review_report.withdrawn_records`), and hands it back to the reviewer, whose next save of
it replaces the label. docs/review.md is the description for reviewers and operators.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from gateway.config.capture import AudioSettings
from gateway.errors import (
    CaptureCorrupt,
    CaptureNotFound,
    ConfigError,
    RestError,
    StoreUnavailable,
)
from gateway.logging import get_logger
from gateway.outcomes.labels import LabelInput
from gateway.outcomes.preference import CHOICES, Choice, Preference
from gateway.outcomes.record import now_iso
from gateway.text.normalize import normalize_words

if TYPE_CHECKING:
    from gateway.analysis.review_report import ReviewInputs
from gateway.outcomes.ports import OutcomeReader
from gateway.server.admin.audio import AUDIO_STORE
from gateway.server.admin.auth import NEEDS_TOKEN, AdminTokens, error_response
from gateway.server.admin.labels import LABEL_STORE, PSEUDONYM_KEY
from gateway.server.state import STATE
from gateway.stores.audio_store import AudioStore, Capture, CapturedResult
from gateway.stores.label_store import LabelStatus
from gateway.stores.preference_store import (
    PREFERENCES_FILE_NAME,
    FilePreferenceStore,
    PreferenceStore,
    RedisPreferenceStore,
)
from gateway.stores.redis_client import RedisClient
from gateway.stores.review_leases import (
    LEASES_FILE_NAME,
    FileReviewLeases,
    RedisReviewLeases,
    ReviewLeases,
)

log = get_logger(__name__)

PAGE_PATH: Final = "/review"
API_PREFIX: Final = "/admin/review/experiments/{experiment}"
STATIC_FILES: Final = ("review.html", "review.css", "review.js")
LEASE_S: Final = 600.0
MAX_SAVE_BYTES: Final = 64 * 1024
REVIEWER_TOKENS_FIELD: Final = "gateway.reviewer_tokens_sha256"
# Priority captures first, the worst first; then the uniform sample.
REASON_RANK: Final = {
    "failure": 0,
    "no_match": 1,
    "disagreement": 2,
    "low_confidence": 3,
    "uniform": 4,
}

Handler = Callable[[web.Request], Awaitable[web.Response]]
# A route's work once the caller is known: (request, reviewer, experiment) -> answer.
Action = Callable[[web.Request, str, str], Awaitable[web.Response]]

PREFERENCE_STORE: Final = web.AppKey("review_preference_store", PreferenceStore)
REVIEW_LEASES: Final = web.AppKey("review_leases", ReviewLeases)


def review_order(captures: Sequence[Capture], done: set[str] | frozenset[str]) -> list[Capture]:
    """The captures still to review, in queue order: priority sample first by reason rank,
    then the uniform sample, oldest first within each."""
    todo = [c for c in captures if c.capture_id not in done]
    return sorted(
        todo,
        key=lambda c: (
            0 if c.sample.value == "priority" else 1,
            REASON_RANK.get(c.reason.value, len(REASON_RANK)),
            c.captured_at,
            c.capture_id,
        ),
    )


def blind_pair(capture: Capture) -> tuple[CapturedResult, CapturedResult] | None:
    """The primary and the first shadow of another variant; None without such a shadow."""
    for shadow in capture.shadows:
        if shadow.variant != capture.primary.variant:
            return capture.primary, shadow
    return None


def blind_order(key: bytes, capture_id: str, reviewer: str) -> bool:
    """Whether the primary is shown as B for this reviewer (a keyed coin per capture)."""
    mac = hmac.new(key, f"review\0{capture_id}\0{reviewer}".encode(), hashlib.sha256)
    return bool(mac.digest()[0] & 1)


@dataclass(frozen=True, slots=True)
class BlindItem:
    """What a reviewer sees of a capture, and the mapping back to variants they do not see."""

    capture: Capture
    a: CapturedResult
    b: CapturedResult | None

    @classmethod
    def of(cls, capture: Capture, key: bytes, reviewer: str) -> BlindItem:
        pair = blind_pair(capture)
        if pair is None:
            return cls(capture, capture.primary, None)
        first, second = pair
        if blind_order(key, capture.capture_id, reviewer):
            first, second = second, first
        return cls(capture, first, second)

    @property
    def choice_needed(self) -> bool:
        """Whether the reviewer is asked which hypothesis is better: only between two that
        differ (after the WER normalisation). Two without text (nothing recognised, or the
        gateway keeps no transcripts) cannot be compared; two the same are a tie."""
        return self.comparable and not self.identical

    @property
    def comparable(self) -> bool:
        return self.b is not None and (self.a.text is not None or self.b.text is not None)

    @property
    def identical(self) -> bool:
        return (
            self.comparable
            and self.b is not None
            and normalize_words(self.a.text or "") == normalize_words(self.b.text or "")
        )

    def to_json(self, prefill: str | None = None) -> dict[str, Any]:
        """The item as the page gets it: no variant, record id, unit or client."""
        hypotheses = [{"slot": "a", "text": self.a.text}]
        if self.b is not None:
            hypotheses.append({"slot": "b", "text": self.b.text})
        default = next((h["text"] for h in hypotheses if h["text"]), "")
        return {
            "capture_id": self.capture.capture_id,
            "duration_ms": self.capture.duration_ms,
            "captured_at": self.capture.captured_at,
            "hypotheses": hypotheses,
            "choice_needed": self.choice_needed,
            "prefill": prefill if prefill is not None else default,
        }


def create_review_stores(
    outcomes_path: Path, client: RedisClient | None, prefix: str
) -> tuple[PreferenceStore, ReviewLeases]:
    """The preference store and the leases beside the outcomes: files next to the outcome
    file without a Redis client (the file store), else in Redis under `prefix`."""
    if client is None:
        return (
            FilePreferenceStore(outcomes_path.with_name(PREFERENCES_FILE_NAME)),
            FileReviewLeases(outcomes_path.with_name(LEASES_FILE_NAME)),
        )
    return RedisPreferenceStore(client, prefix), RedisReviewLeases(client, prefix)


def add_review_routes(app: web.Application, reviewers: AdminTokens, admins: AdminTokens) -> None:
    """Serve the workbench page and its API on `app` (module doc).

    The stores are looked up at request time: `AUDIO_STORE` (the audio admin API's),
    `PREFERENCE_STORE`,
    `REVIEW_LEASES` and the label store (`LABEL_STORE`); without an audio store every API
    route answers 503. ConfigError if a reviewer token is also an admin token.
    """
    shared = {t.token_sha256 for t in reviewers.tokens} & {t.token_sha256 for t in admins.tokens}
    if shared:
        name = next(t.name for t in reviewers.tokens if t.token_sha256 in shared)
        raise ConfigError(f"{REVIEWER_TOKENS_FIELD}.{name}", "the same token digest as an admin")
    api = _ReviewApi(reviewers, admins)
    page = _page()
    app.router.add_get(PAGE_PATH, page)
    app.router.add_get(API_PREFIX + "/progress", api.progress)
    app.router.add_post(API_PREFIX + "/claim", api.claim)
    app.router.add_get(API_PREFIX + "/items/{capture_id}/audio", api.audio)
    app.router.add_post(API_PREFIX + "/items/{capture_id}/save", api.save)
    app.router.add_post(API_PREFIX + "/items/{capture_id}/skip", api.skip)
    app.router.add_post(API_PREFIX + "/undo", api.undo)


def static_text(name: str) -> str:
    """A package data file of static/ (through importlib.resources: found in a wheel too)."""
    return (files("gateway.server.admin") / "static" / name).read_text(encoding="utf-8")


def csp_hash(source: str) -> str:
    """The Content-Security-Policy source expression allowing exactly this inline text."""
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def _page() -> Handler:
    html, css, js = (static_text(name) for name in STATIC_FILES)
    body = html.replace("${style}", css).replace("${script}", js).encode("utf-8")
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src {csp_hash(js)}",
            f"style-src {csp_hash(css)}",
            "connect-src 'self'",
            "img-src data:",  # the page's empty favicon
            # The audio is fetched with the bearer token and played from a blob: URL.
            "media-src blob:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)

    return serve


class _ReviewApi:
    def __init__(self, reviewers: AdminTokens, admins: AdminTokens) -> None:
        self._reviewers = reviewers
        self._admins = admins

    # -- request context ------------------------------------------------------------------

    def _reviewer(self, request: web.Request) -> str:
        header = request.headers.get("Authorization")
        name = self._reviewers.authenticate(header) or self._admins.authenticate(header)
        if name is None:
            raise RestError(NEEDS_TOKEN.replace("an admin", "a reviewer or admin"), 401)
        return name

    @staticmethod
    def _stores(request: web.Request) -> tuple[AudioStore, PreferenceStore, ReviewLeases]:
        config = request.config_dict
        audio = config.get(AUDIO_STORE)
        preferences = config.get(PREFERENCE_STORE)
        leases = config.get(REVIEW_LEASES)
        if audio is None or preferences is None or leases is None:
            raise RestError("review needs audio capture; this gateway stores no audio", 503)
        return audio, preferences, leases

    @staticmethod
    def _key(request: web.Request) -> bytes:
        key = request.config_dict.get(PSEUDONYM_KEY)
        if key is None:
            state = request.config_dict.get(STATE)
            key = state.privacy_key if state is not None else None
        if key is None:
            raise RestError("review needs the gateway's pseudonym key", 503)
        return key

    async def _handle(self, request: web.Request, action: Action) -> web.StreamResponse:
        try:
            reviewer = self._reviewer(request)
            experiment = request.match_info["experiment"]
            return await action(request, reviewer, experiment)
        except RestError as refused:
            return error_response(refused.status, refused.reason)
        except StoreUnavailable as exc:
            log.error("review_store_unavailable", error=exc.reason)
            return error_response(503, "a review store is unavailable; try again later")
        except CaptureNotFound as exc:
            return error_response(404, str(exc))
        except CaptureCorrupt as exc:
            log.error("review_capture_corrupt", error=str(exc))
            return error_response(502, str(exc))

    async def _queue(
        self, request: web.Request, experiment: str
    ) -> tuple[list[Capture], dict[str, Preference]]:
        audio, preferences, _ = self._stores(request)
        try:
            captures = await audio.captures(experiment)
        except ValueError:
            raise RestError(f"no experiment {experiment!r} with audio", 404) from None
        return captures, await preferences.current(experiment)

    @staticmethod
    def _progress(
        captures: list[Capture], done: dict[str, Preference], reviewer: str
    ) -> dict[str, int]:
        ids = {c.capture_id for c in captures}
        reviewed = [p for cid, p in done.items() if cid in ids]
        return {
            "captures": len(captures),
            "reviewed": len(reviewed),
            "remaining": len(captures) - len(reviewed),
            "mine": sum(1 for p in reviewed if p.reviewer == reviewer),
        }

    async def _held(
        self, request: web.Request, reviewer: str, experiment: str, capture_id: str
    ) -> Capture:
        _, _, leases = self._stores(request)
        captures, _ = await self._queue(request, experiment)
        capture = next((c for c in captures if c.capture_id == capture_id), None)
        if capture is None:
            raise RestError(f"no audio capture {capture_id} in experiment {experiment}", 404)
        if await leases.holder(experiment, capture_id) != reviewer:
            raise RestError("you do not hold this item (its lease ran out, or it was skipped)", 409)
        return capture

    # -- routes ----------------------------------------------------------------------------

    async def progress(self, request: web.Request) -> web.StreamResponse:
        async def action(request: web.Request, reviewer: str, experiment: str) -> web.Response:
            captures, done = await self._queue(request, experiment)
            return web.json_response(self._progress(captures, done, reviewer))

        return await self._handle(request, action)

    async def claim(self, request: web.Request) -> web.StreamResponse:
        async def action(request: web.Request, reviewer: str, experiment: str) -> web.Response:
            _, preferences, leases = self._stores(request)
            captures, done = await self._queue(request, experiment)
            order = review_order(captures, frozenset(done))
            candidates = [c.capture_id for c in order]
            while True:
                chosen = await leases.claim(experiment, reviewer, candidates, LEASE_S)
                if chosen is None:
                    break
                # Another reviewer may have saved it since the queue was read, and released
                # its lease: done now, it is nobody's to review again.
                saved = await preferences.get(experiment, chosen)
                if saved is None or saved.withdrawn:
                    break
                done[chosen] = saved
                await leases.release(experiment, reviewer, chosen)
                candidates.remove(chosen)
            answer: dict[str, Any] = {"progress": self._progress(captures, done, reviewer)}
            if chosen is None:
                answer["item"] = None
            else:
                capture = next(c for c in order if c.capture_id == chosen)
                answer["item"] = BlindItem.of(capture, self._key(request), reviewer).to_json()
            return web.json_response(answer)

        return await self._handle(request, action)

    async def audio(self, request: web.Request) -> web.StreamResponse:
        async def action(request: web.Request, reviewer: str, experiment: str) -> web.Response:
            audio, _, _ = self._stores(request)
            capture_id = request.match_info["capture_id"]
            captures, _ = await self._queue(request, experiment)
            if not any(c.capture_id == capture_id for c in captures):
                raise RestError(f"no audio capture {capture_id} in experiment {experiment}", 404)
            wav = await audio.wav(capture_id)
            return web.Response(
                body=wav,
                content_type="audio/wav",
                headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
            )

        return await self._handle(request, action)

    async def save(self, request: web.Request) -> web.StreamResponse:
        async def action(request: web.Request, reviewer: str, experiment: str) -> web.Response:
            _, preferences, leases = self._stores(request)
            capture_id = request.match_info["capture_id"]
            text, choice = await self._save_body(request)
            capture = await self._held(request, reviewer, experiment, capture_id)
            saved = await preferences.get(experiment, capture_id)
            if saved is not None and not saved.withdrawn and saved.reviewer != reviewer:
                await leases.release(experiment, reviewer, capture_id)
                raise RestError(f"{saved.reviewer} has already reviewed this item", 409)
            item = BlindItem.of(capture, self._key(request), reviewer)
            if not item.choice_needed and choice is not None:
                raise RestError("choice: this item asks no choice; send null", 422)
            if item.choice_needed and choice is None:
                raise RestError("choice: choose a, b or same", 422)
            if item.identical:
                choice = "same"  # two transcripts the same: a tie, not a question
            record_ids = [capture.primary.record_id, *(s.record_id for s in capture.shadows)]
            labels = [LabelInput(rid, text) for rid in dict.fromkeys(record_ids)]
            store = request.config_dict[LABEL_STORE]
            result = await store.put(labels, reviewer, "review")
            labelled = result.count(LabelStatus.STORED) + result.count(LabelStatus.RELABELLED)
            if labelled == 0:
                raise RestError(
                    "the capture's outcome records are not in the store (yet); nothing saved", 422
                )
            preference = Preference(
                capture_id=capture.capture_id,
                experiment=experiment,
                unit=capture.unit,
                sample=capture.sample.value,
                reviewer=reviewer,
                choice=choice,
                variant_a=item.a.variant if item.b is not None and choice else None,
                variant_b=item.b.variant if item.b is not None and choice else None,
                reviewed_at=now_iso(),
                records=tuple(label.record_id for label in labels),
            )
            await preferences.put(preference)
            await leases.release(experiment, reviewer, capture_id)
            log.info("review_saved", reviewer=reviewer, experiment=experiment, labels=labelled)
            return web.json_response({"saved": capture_id, "labelled": labelled})

        return await self._handle(request, action)

    async def skip(self, request: web.Request) -> web.StreamResponse:
        async def action(request: web.Request, reviewer: str, experiment: str) -> web.Response:
            _, _, leases = self._stores(request)
            capture_id = request.match_info["capture_id"]
            await self._held(request, reviewer, experiment, capture_id)
            await leases.skip(experiment, reviewer, capture_id)
            return web.json_response({"skipped": capture_id})

        return await self._handle(request, action)

    async def undo(self, request: web.Request) -> web.StreamResponse:
        async def action(request: web.Request, reviewer: str, experiment: str) -> web.Response:
            _, preferences, leases = self._stores(request)
            captures, done = await self._queue(request, experiment)
            mine = [p for p in done.values() if p.reviewer == reviewer]
            if not mine:
                raise RestError("you have no saved item to undo in this experiment", 404)
            last = max(mine, key=lambda p: (p.reviewed_at, p.capture_id))
            capture = next((c for c in captures if c.capture_id == last.capture_id), None)
            if capture is None:
                raise RestError("your last saved item's audio is gone (expired or deleted)", 404)
            if not await leases.hold(experiment, reviewer, capture.capture_id, LEASE_S):
                raise RestError("another reviewer holds your last saved item", 409)
            await preferences.put(last.withdraw(now_iso()))
            found = await request.config_dict[LABEL_STORE].get([capture.primary.record_id])
            label = found.get(capture.primary.record_id)
            item = BlindItem.of(capture, self._key(request), reviewer)
            prefill = label.text if label is not None else None
            del done[capture.capture_id]
            log.info("review_undone", reviewer=reviewer, experiment=experiment)
            return web.json_response(
                {
                    "item": item.to_json(prefill),
                    "choice": last.choice,
                    "progress": self._progress(captures, done, reviewer),
                }
            )

        return await self._handle(request, action)

    @staticmethod
    async def _save_body(request: web.Request) -> tuple[str, Choice | None]:
        if request.content_length is not None and request.content_length > MAX_SAVE_BYTES:
            raise RestError(f"the body is larger than {MAX_SAVE_BYTES:,} bytes", 413)
        raw = await request.content.read(MAX_SAVE_BYTES + 1)
        if len(raw) > MAX_SAVE_BYTES:
            raise RestError(f"the body is larger than {MAX_SAVE_BYTES:,} bytes", 413)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RestError("the body must be a JSON object: {text, choice}", 400) from None
        if not isinstance(body, dict):
            raise RestError("the body must be a JSON object: {text, choice}", 400)
        unknown = sorted(set(body) - {"text", "choice"})
        if unknown:
            raise RestError(f"unknown field(s): {', '.join(unknown)}", 400)
        text = body.get("text")
        try:
            checked = LabelInput("0" * 32, text).text  # type: ignore[arg-type]
        except ValueError as exc:
            raise RestError(str(exc), 400) from None
        choice = body.get("choice")
        if choice is not None and choice not in CHOICES:
            raise RestError(f"choice: expected one of {', '.join(CHOICES)} or null", 400)
        return checked, choice


async def review_inputs(
    audio: AudioSettings,
    outcomes_path: Path,
    prefix: str,
    experiment: str,
    reader: OutcomeReader,
) -> ReviewInputs | None:
    """The experiment's captures (the audio store of `audio`) and blind preferences (beside
    the outcomes: the file store's folder, or the Redis of a `RedisReader`), for the
    report's review section and its choice of headline labels (docs/review.md); None
    without captures and reviews (or for an experiment whose name cannot hold audio).
    ConfigError or StoreUnavailable when a store cannot be read: the caller says so its own
    way and makes the report without the section."""
    # Imported here: only analysing processes pay for the analysis (and numpy).
    from gateway.analysis.review_report import ReviewInputs
    from gateway.stores.audio_store import check_experiment
    from gateway.stores.factory import create_audio_store
    from gateway.stores.reader import RedisReader

    try:
        check_experiment(experiment)
    except ValueError:
        return None  # a name no audio store can hold (docs/capture.md): nothing captured
    store = create_audio_store(audio)
    try:
        captures = await store.captures(experiment)
    finally:
        await store.close()
    client = reader.client if isinstance(reader, RedisReader) else None
    preferences, _ = create_review_stores(outcomes_path, client, prefix)
    # Every review, withdrawn ones included: they outlive the captures, which expire, and
    # still say which review labels are no headline evidence.
    reviewed = await preferences.latest(experiment)
    if not captures and not reviewed:
        return None
    current = tuple(p for p in reviewed.values() if not p.withdrawn)
    return ReviewInputs(captures, current, tuple(reviewed.values()))
