"""The replay's HTTP side: the gateway's URLs, labels by unit, and the analysis fetch.

`gateway.tools.replay` runs the sessions; this module talks to the gateway's admin endpoints
with the admin bearer token: `POST /labels` with labels by unit (docs/labels.md), retried
with backoff while the records are still on their way to the store, and
`GET /admin/experiments/{id}/analysis`. Blocking (urllib), like the SDK the replay drives.
HTTP failures become `UpstreamRejected` / `UpstreamUnavailable` here (the gateway is the
replay's upstream); no token or key ever appears in a message.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlsplit

from gateway.constants import NO_EXPERIMENT
from gateway.errors import ConfigError, UpstreamRejected, UpstreamUnavailable
from gateway.outcomes.labels import MAX_BATCH, UnitLabel
from gateway.tools.http_call import exchange

LABEL_WAIT_S: Final = 15.0  # how long labels by unit are retried while records arrive
LABEL_BATCH: Final = 1_000  # labels per request (the API takes up to MAX_BATCH)
LABEL_TIMEOUT_S: Final = 30.0
ANALYSIS_TIMEOUT_S: Final = 120.0  # the analysis resamples (bootstrap): allow it time
_BACKOFF_FIRST_S: Final = 0.2
_BACKOFF_MAX_S: Final = 2.0
_SCHEMES: Final = {"ws": "http", "wss": "https", "http": "http", "https": "https"}

assert LABEL_BATCH <= MAX_BATCH


@dataclass(frozen=True, slots=True)
class GatewayUrls:
    """The gateway's root as the SDK (ws/wss) and the admin API (http/https) address it."""

    ws: str
    http: str

    @classmethod
    def parse(cls, url: str, field_name: str = "--gateway") -> GatewayUrls:
        """From a ws(s):// or http(s):// root URL; ConfigError naming `field_name` if not."""
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES or not parts.hostname:
            raise ConfigError(
                field_name, f"expected a ws://, wss://, http:// or https:// URL, got {url!r}"
            )
        if parts.username is not None or parts.password is not None:
            raise ConfigError(field_name, "the URL must not carry credentials")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(
                field_name,
                f"give the gateway's root URL, e.g. http://127.0.0.1:8080, got {url!r} "
                "(the recognition path is --path)",
            )
        http = _SCHEMES[scheme]
        ws = "wss" if http == "https" else "ws"
        return cls(ws=f"{ws}://{parts.netloc}", http=f"{http}://{parts.netloc}")


# -- labels ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelTarget:
    """One replayed item to label: its unit and reference (utterance 0 of its session)."""

    item_id: str
    label: UnitLabel


@dataclass(frozen=True, slots=True)
class LabelsAttached:
    """What `attach_labels` did: items labelled, with their records and experiments."""

    records: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # item id -> ids
    experiments: tuple[str, ...] = ()  # every experiment a label landed in, sorted
    unresolved: tuple[str, ...] = ()  # item ids whose records were not found in time
    error: str | None = None  # why labelling stopped early (the rest was not sent)

    @property
    def attached(self) -> int:
        return len(self.records)


class _Stop(Exception):
    """Labelling cannot go on (the reason is the message)."""


def attach_labels(
    http_root: str,
    admin_token: str,
    targets: Sequence[LabelTarget],
    *,
    wait_s: float = LABEL_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> LabelsAttached:
    """POST the targets as labels by unit, retrying unresolved ones with backoff for up to
    `wait_s` seconds (records reach the store asynchronously). Never raises for HTTP: a
    failure ends labelling and is reported in `error`."""
    http_root = GatewayUrls.parse(http_root).http
    deadline = time.monotonic() + wait_s
    delay = _BACKOFF_FIRST_S
    records: dict[str, tuple[str, ...]] = {}
    experiments: set[str] = set()
    pending = list(targets)
    error: str | None = None
    try:
        while pending:
            waiting: list[LabelTarget] = []
            for start in range(0, len(pending), LABEL_BATCH):
                batch = pending[start : start + LABEL_BATCH]
                resolved, unresolved = _post_until_stored(http_root, admin_token, batch)
                waiting += unresolved
                for target, matches in resolved:
                    records[target.item_id] = tuple(m["record_id"] for m in matches)
                    experiments.update(m["experiment"] for m in matches)
            pending = waiting
            if not pending or time.monotonic() + delay > deadline:
                break
            sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)
    except _Stop as exc:
        error = str(exc)
    return LabelsAttached(
        records=records,
        experiments=tuple(sorted(experiments)),
        unresolved=() if error else tuple(t.item_id for t in pending),
        error=error,
    )


_Resolved = list[tuple[LabelTarget, list[dict[str, str]]]]


def _post_until_stored(
    http_root: str, admin_token: str, batch: list[LabelTarget]
) -> tuple[_Resolved, list[LabelTarget]]:
    """Store what resolves now: a 422 listing unresolved units is answered by sending the
    rest again without them (a batch is all or nothing). Returns (stored, unresolved)."""
    unresolved: list[LabelTarget] = []
    while batch:
        status, body = _post_labels(http_root, admin_token, [t.label for t in batch])
        if status == 200:
            return _resolved(batch, body), unresolved
        missing = body.get("unresolved") if status == 422 else None
        if not isinstance(missing, list) or not missing:
            raise _Stop(_refusal(status, body))
        positions = {entry.get("index") for entry in missing if isinstance(entry, dict)}
        rest = [t for i, t in enumerate(batch) if i not in positions]
        if len(rest) == len(batch):  # names none of ours: sending again would loop
            raise _Stop(_refusal(status, body))
        unresolved += (t for i, t in enumerate(batch) if i in positions)
        batch = rest
    return [], unresolved


def _resolved(batch: list[LabelTarget], body: Mapping[str, Any]) -> _Resolved:
    entries = body.get("resolved")
    if not isinstance(entries, list):
        raise _Stop("the gateway's answer to POST /labels has no 'resolved' list")
    found: _Resolved = []
    for entry in entries:
        try:
            target = batch[entry["index"]]
            matches = [
                {"record_id": str(m["record_id"]), "experiment": str(m["experiment"])}
                for m in entry["records"]
            ]
        except (KeyError, IndexError, TypeError) as exc:
            raise _Stop(f"the gateway's answer to POST /labels is malformed ({exc!r})") from None
        found.append((target, matches))
    return found


def _refusal(status: int, body: Mapping[str, Any]) -> str:
    if status == 401:
        return "the gateway refused the admin token (401)"
    reason = body.get("error") or "no reason given"
    return f"the gateway answered POST /labels with {status}: {reason}"


def _post_labels(
    http_root: str, admin_token: str, labels: list[UnitLabel]
) -> tuple[int, dict[str, Any]]:
    items = [{**label.selector(), "text": label.text} for label in labels]
    data = json.dumps({"labels": items}).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 - http(s) only: GatewayUrls.parse
        f"{http_root}/labels",
        data=data,
        method="POST",
        headers={**_bearer(admin_token), "Content-Type": "application/json"},
    )
    try:
        return _json_exchange(request, LABEL_TIMEOUT_S)
    except UpstreamUnavailable as exc:
        raise _Stop(exc.detail) from None


# -- the analysis ----------------------------------------------------------------------------


def analysable(experiments: Sequence[str]) -> list[str]:
    """The experiments an analysis can be asked for: not the default route."""
    return [e for e in experiments if e != NO_EXPERIMENT]


def fetch_analysis(gateway_http_url: str, admin_token: str, experiment: str) -> dict[str, Any]:
    """`GET /admin/experiments/{experiment}/analysis`: the report (docs/analysis.md).

    UpstreamRejected(status, reason) if the gateway answers with an error status (401 bad
    token, 404 no such experiment, 503 store unavailable), UpstreamUnavailable if it cannot
    be reached or answers with something that is not a JSON object.
    """
    root = GatewayUrls.parse(gateway_http_url).http
    request = urllib.request.Request(  # noqa: S310 - http(s) only: GatewayUrls.parse
        f"{root}/admin/experiments/{quote(experiment, safe='')}/analysis",
        headers=_bearer(admin_token),
    )
    status, body = _json_exchange(request, ANALYSIS_TIMEOUT_S)
    if status != 200:
        reason = body.get("error") or "no reason given"
        raise UpstreamRejected(status, f"analysis of {experiment!r}: {reason}")
    return body


# -- HTTP --------------------------------------------------------------------------------


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def _json_exchange(request: urllib.request.Request, timeout: float) -> tuple[int, dict[str, Any]]:
    """(status, JSON object body) of any answer, error statuses included; an answer that is
    not a JSON object has body {"error": <its first 200 characters>}."""
    where = f"{request.get_method()} {urlsplit(request.full_url).path}"
    status, raw = exchange(request, timeout, unreachable=f"{where}: cannot reach the gateway")
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = raw[:200].decode("utf-8", "replace").strip() or "an empty body"
        if status == 200:
            raise UpstreamUnavailable("gateway_bad_answer", f"{where}: not JSON: {text}")
        return status, {"error": text}
    return status, body
