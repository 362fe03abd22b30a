"""The labels HTTP API: reference transcripts from human review, attached by record id.

`POST /labels` (one label or a batch) and `GET /labels/{record_id}`, mounted on the gateway
app by `add_label_routes`. Both need an admin credential, `Authorization: Bearer <token>`,
whose SHA-256 is configured with a name (`gateway.server.admin.auth`); client keys are
never accepted. The name is recorded as the labeller. The store is the app's `LabelStore`
(`gateway.stores.label_store`), looked up under an AppKey at request time so that it may
be created at start-up. docs/labels.md describes requests, answers and statuses.

A label may name its records by unit instead of record id (`UnitLabel`: the raw unit id a
client sent, and the utterance index): the unit is pseudonymised with the gateway's key
(`PSEUDONYM_KEY`, else the gateway state's) and resolved through the store's unit index
to every primary record it made; each gets the label. Raw unit ids are never logged.

Statuses: 200 stored; 400 malformed body (the reason names the index and field); 401 no or
a wrong credential; 404 no label (GET); 413 body over the limit; 422 unknown record ids or
unit selectors that match no record (nothing stored: a batch is all or nothing); 503 the
store is unavailable.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from gateway.errors import RestError, StoreUnavailable
from gateway.logging import get_logger
from gateway.outcomes.labels import (
    MAX_BATCH,
    LabelError,
    LabelInput,
    UnitLabel,
    check_record_id,
    parse_label_body,
)
from gateway.server.admin.auth import CHALLENGE, NEEDS_TOKEN, AdminTokens
from gateway.server.state import STATE
from gateway.stores.label_store import LabelStatus, LabelStore, UnitMatch

log = get_logger(__name__)

MAX_BODY_BYTES: Final = 10 * 1024 * 1024
LABEL_STORE: Final = web.AppKey[LabelStore]("label_store")
# The key that pseudonymised the records' units; without it, the gateway state's is used.
PSEUDONYM_KEY: Final = web.AppKey[bytes]("label_pseudonym_key")


def add_label_routes(
    app: web.Application,
    admins: AdminTokens,
    *,
    store_key: web.AppKey[LabelStore] = LABEL_STORE,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> None:
    """Serve `POST /labels` and `GET /labels/{record_id}` on `app`.

    The handlers use the store at `app[store_key]` (set it before the app starts serving,
    e.g. in an `on_startup` hook). With no admin tokens every request gets 401.
    """
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
    api = _LabelsApi(admins, store_key, max_body_bytes)
    app.router.add_post("/labels", api.post)
    app.router.add_get("/labels/{record_id}", api.get)


def _pseudonym_key(request: web.Request) -> bytes | None:
    """The key the records' units were pseudonymised with: PSEUDONYM_KEY, else the gateway
    state's (None in an app that has neither)."""
    key = request.config_dict.get(PSEUDONYM_KEY)
    if key is None:
        state = request.config_dict.get(STATE)
        key = state.privacy_key if state is not None else None
    return key


def _error(status: int, reason: str, **extra: object) -> web.Response:
    headers = CHALLENGE if status == 401 else None
    return web.json_response({"error": reason, **extra}, status=status, headers=headers)


class _LabelsApi:
    def __init__(
        self, admins: AdminTokens, store_key: web.AppKey[LabelStore], max_body_bytes: int
    ) -> None:
        self._admins = admins
        self._store_key = store_key
        self._max_body_bytes = max_body_bytes

    def _labeller(self, request: web.Request) -> str | None:
        return self._admins.authenticate(request.headers.get("Authorization"))

    async def post(self, request: web.Request) -> web.Response:
        labeller = self._labeller(request)
        if labeller is None:
            return _error(401, NEEDS_TOKEN)
        body = await self._read_body(request)
        if body is None:
            return _error(413, f"the body is larger than {self._max_body_bytes:,} bytes")
        try:
            given = parse_label_body(body)
        except RestError as exc:
            return _error(exc.status, exc.reason)
        store = request.config_dict[self._store_key]
        units = [(i, item) for i, item in enumerate(given) if isinstance(item, UnitLabel)]
        found: list[tuple[UnitMatch, ...]] = []
        if units:
            key = _pseudonym_key(request)
            if key is None:
                return _error(501, "labels by unit need the gateway's pseudonym key; use record_id")
            try:
                found = await store.find_units([item.query(key) for _, item in units])
            except StoreUnavailable as exc:
                log.error("labels_store_unavailable", error=exc.reason)
                return _error(503, "the label store is unavailable; try again later")
        unresolved = [
            {"index": i, **item.selector()}
            for (i, item), matches in zip(units, found, strict=True)
            if not matches
        ]
        if unresolved:
            log.info(
                "labels_refused", labeller=labeller, labels=len(given), unresolved=len(unresolved)
            )
            return _error(
                422,
                f"{len(unresolved)} unit selector(s) match no outcome record (yet: records are "
                "stored asynchronously); nothing was stored",
                unresolved=unresolved,
            )
        matches_of = {i: matches for (i, _), matches in zip(units, found, strict=True)}
        labels: list[LabelInput] = []
        for i, item in enumerate(given):
            if isinstance(item, UnitLabel):
                labels += (LabelInput(m.record_id, item.text) for m in matches_of[i])
            else:
                labels.append(item)
        if len(labels) > MAX_BATCH:
            return _error(
                422,
                f"the unit selectors match {len(labels):,} records; at most {MAX_BATCH:,} "
                "labels are written per request: send fewer labels per request",
            )
        try:
            result = await store.put(labels, labeller, "api", all_or_nothing=True)
        except StoreUnavailable as exc:
            log.error("labels_store_unavailable", error=exc.reason)
            return _error(503, "the label store is unavailable; try again later")
        if not result.committed:
            unknown = result.unknown
            log.info("labels_refused", labeller=labeller, labels=len(labels), unknown=len(unknown))
            return _error(
                422,
                f"{len(unknown)} record id(s) have no outcome record; nothing was stored",
                unknown=unknown,
            )
        stored = result.count(LabelStatus.STORED)
        relabelled = result.count(LabelStatus.RELABELLED)
        log.info(
            "labels_stored",
            labeller=labeller,
            stored=stored,
            relabelled=relabelled,
            by_unit=len(units),
        )
        answer: dict[str, object] = {
            "stored": stored,
            "relabelled": relabelled,
            "results": [item.to_dict() for item in result.results],
        }
        if units:
            answer["resolved"] = [
                {
                    "index": i,
                    **item.selector(),
                    "records": [match.to_dict() for match in matches_of[i]],
                }
                for i, item in units
            ]
        return web.json_response(answer)

    async def get(self, request: web.Request) -> web.Response:
        if self._labeller(request) is None:
            return _error(401, NEEDS_TOKEN)
        record_id = request.match_info["record_id"]
        try:
            check_record_id(record_id)
        except LabelError as exc:
            return _error(400, str(exc))
        store = request.config_dict[self._store_key]
        try:
            found = await store.get([record_id])
        except StoreUnavailable as exc:
            log.error("labels_store_unavailable", error=exc.reason)
            return _error(503, "the label store is unavailable; try again later")
        label = found.get(record_id)
        if label is None:
            return _error(404, f"record {record_id} has no label")
        return web.json_response(label.to_dict())

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, or None once it exceeds the limit (nothing more is read then)."""
        limit = self._max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)
