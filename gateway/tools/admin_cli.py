"""`speech-gateway admin`: the control-plane admin API (docs/admin.md) from a terminal.

Each verb is one request to the gateway's admin routes (`gateway.server.admin.analysis`) with the
admin bearer token, printed as readable lines or, with `--json`, as the exact JSON answer.
Blocking (urllib): a CLI makes one request and exits. Exit statuses: 0 done; 1 the API
answered an error (`error: HTTP <status>: <message>`) or the gateway cannot be reached;
2 a usage error. The token never appears in anything printed, and redirects are never
followed, so the token cannot be carried to another host.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Final, TextIO, cast
from urllib.parse import quote, urlencode

from gateway.constants import ADMIN_TOKEN_ENV
from gateway.errors import ConfigError, UpstreamError, UpstreamRejected, UpstreamUnavailable
from gateway.tools.http_call import exchange
from gateway.tools.replay_http import GatewayUrls

GATEWAY_URL_ENV: Final = "SPEECH_GATEWAY_URL"
DEFAULT_GATEWAY: Final = "http://127.0.0.1:8080"
TIMEOUT_S: Final = 30.0
_MIN_SCRUBBED: Final = 8  # tokens at least this long are masked in anything printed
MAX_HOLDOUT: Final = 0.5  # as the gateway checks it (`gateway.control.state`)
ALERTS_SHOWN: Final = 5

Json = dict[str, Any]

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a variant name, as the config accepts one
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


# -- arguments -------------------------------------------------------------------------------


def _weight_pair(text: str) -> tuple[str, float]:
    """NAME=WEIGHT, strictly: a variant name and a finite decimal number >= 0."""
    name, sep, value = text.partition("=")
    if not sep or not _NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not NAME=WEIGHT (a variant name: 1-64 letters, digits, '.', '-', '_')"
        )
    weight = float(value) if _NUMBER.fullmatch(value) else math.nan
    if not math.isfinite(weight):
        raise argparse.ArgumentTypeError(
            f"{text!r}: the weight must be a finite decimal number >= 0, e.g. {name}=10"
        )
    return name, weight


class _Weights(argparse.Action):
    """Collects NAME=WEIGHT pairs into a dict; a name given twice is a usage error."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if values is None or isinstance(values, str):  # nargs="+": a list of parsed pairs
            raise argparse.ArgumentError(self, "expected NAME=WEIGHT pairs")
        weights: dict[str, float] = {}
        for name, weight in cast("Sequence[tuple[str, float]]", values):
            if name in weights:
                raise argparse.ArgumentError(self, f"variant {name!r} is given twice")
            weights[name] = weight
        setattr(namespace, self.dest, weights)


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _holdout(text: str) -> float:
    share = float(text) if _NUMBER.fullmatch(text) else math.nan
    if not (math.isfinite(share) and 0 < share <= MAX_HOLDOUT):
        raise argparse.ArgumentTypeError(
            f"{text!r}: the holdout is a share above 0 and at most {MAX_HOLDOUT}, e.g. 0.05"
        )
    return share


def add_admin_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `admin` and its verbs on the console script's sub-parsers (`commands`)."""
    admin = commands.add_parser(
        "admin", help="the control-plane admin API: weights, pause, stop, forced units, audit"
    )
    admin.add_argument(
        "--gateway",
        metavar="URL",
        help=f"the gateway's root URL (default: ${GATEWAY_URL_ENV}, else {DEFAULT_GATEWAY})",
    )
    admin.add_argument(
        "--admin-token",
        metavar="TOKEN",
        help=f"an admin token (prefer the environment: {ADMIN_TOKEN_ENV})",
    )
    admin.add_argument("--json", action="store_true", help="print the API's JSON answer")
    verbs = admin.add_subparsers(dest="admin_verb", required=True, metavar="VERB")

    verbs.add_parser("list", help="every experiment: status, phase, version, weights")
    show = verbs.add_parser("show", help="one experiment in full")
    show.add_argument("experiment", metavar="EXP", help="the experiment id")

    weights = verbs.add_parser("weights", help="set variant weights (opens a new phase)")
    weights.add_argument("experiment", metavar="EXP", help="the experiment id")
    weights.add_argument(
        "weights",
        nargs="+",
        type=_weight_pair,
        action=_Weights,
        metavar="NAME=WEIGHT",
        help="a variant's new weight; variants not named keep theirs",
    )
    _change_options(weights)

    for verb, description in (
        ("pause", "every new session gets the control (opens a new phase)"),
        ("resume", "back to the set weights (opens a new phase)"),
    ):
        _change_options(verbs.add_parser(verb, help=description), experiment=True)

    ship = verbs.add_parser(
        "ship", help="ship a challenger: all traffic but a holdout on control (a new phase)"
    )
    ship.add_argument("experiment", metavar="EXP", help="the experiment id")
    ship.add_argument("variant", metavar="VARIANT", help="the challenger to ship")
    ship.add_argument(
        "--holdout",
        type=_holdout,
        metavar="SHARE",
        help="control's share, above 0 and at most 0.5 (the experiment's holdout_share)",
    )
    _change_options(ship)

    stop = verbs.add_parser("stop", help="end the experiment: one variant for every session")
    stop.add_argument("experiment", metavar="EXP", help="the experiment id")
    stop.add_argument("--serve", metavar="VARIANT", help="the variant to serve (the control)")
    _change_options(stop)

    force = verbs.add_parser("force", help="force a unit onto a variant")
    force.add_argument("experiment", metavar="EXP", help="the experiment id")
    force.add_argument("unit", help="the raw unit id the application sends (gw-unit)")
    force.add_argument("variant", help="the variant it gets")
    _change_options(force)

    unforce = verbs.add_parser("unforce", help="release a forced unit")
    unforce.add_argument("experiment", metavar="EXP", help="the experiment id")
    unforce.add_argument("unit", help="a forced unit id")
    unforce.add_argument("--reason", help="why (recorded in the audit trail)")

    audit = verbs.add_parser("audit", help="the experiment's audit trail, newest first")
    audit.add_argument("experiment", metavar="EXP", help="the experiment id")
    audit.add_argument("--limit", type=int, help="entries (1-1000; the gateway's default: 50)")

    verbs.add_parser("backends", help="backends and their circuit breakers (one replica's view)")

    delete_audio = verbs.add_parser(
        "delete-unit-audio",
        help="delete a unit's captured audio and capture none of it again (docs/capture.md)",
    )
    delete_audio.add_argument("unit", help="the raw unit id the application sends (gw-unit)")
    delete_audio.add_argument(
        "--pseudonymised",
        action="store_true",
        help="UNIT is the pseudonym a capture or an outcome record shows",
    )
    return admin


def _change_options(parser: argparse.ArgumentParser, *, experiment: bool = False) -> None:
    if experiment:
        parser.add_argument("experiment", metavar="EXP", help="the experiment id")
    parser.add_argument("--reason", help="why (recorded in the audit trail; <= 500 characters)")
    parser.add_argument(
        "--expect-version",
        type=_version,
        metavar="N",
        help="refuse the change unless the experiment is at version N",
    )


# -- the command -----------------------------------------------------------------------------


def admin_command(args: argparse.Namespace) -> int:
    """Run one verb of `speech-gateway admin`; the exit status (0, 1 or 2)."""
    token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or ""
    out = _Scrubbed(sys.stdout, token)
    err = _Scrubbed(sys.stderr, token)
    try:
        url = args.gateway or os.environ.get(GATEWAY_URL_ENV) or DEFAULT_GATEWAY
        root = GatewayUrls.parse(url, "--gateway" if args.gateway else GATEWAY_URL_ENV).http
        if not token:
            raise ConfigError(
                "--admin-token",
                f"an admin token is required: set {ADMIN_TOKEN_ENV} (preferred) or give it",
            )
        method, path, body = _request_of(args)
        answer = _exchange(root, token, method, path, body)
    except ConfigError as exc:
        err.print(f"speech-gateway admin: {exc}")
        return 2
    except UpstreamRejected as exc:
        err.print(f"error: HTTP {exc.status}: {exc.detail}")
        return 1
    except UpstreamError as exc:
        err.print(f"error: {exc.detail}")
        return 1
    if args.json:
        out.print(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        out.print(_render(args.admin_verb, answer))
    return 0


def _request_of(args: argparse.Namespace) -> tuple[str, str, Json | None]:
    """(method, path with query, JSON body) of the verb in `args`."""
    verb: str = args.admin_verb
    if verb == "list":
        return "GET", "/admin/experiments", None
    if verb == "backends":
        return "GET", "/admin/backends", None
    if verb == "delete-unit-audio":
        query = "?pseudonymised=true" if args.pseudonymised else ""
        return "DELETE", f"/admin/units/{quote(args.unit, safe='')}/audio{query}", None
    at = f"/admin/experiments/{quote(args.experiment, safe='')}"
    change: Json = {}
    if getattr(args, "reason", None) is not None:
        change["reason"] = args.reason
    if getattr(args, "expect_version", None) is not None:
        change["expected_version"] = args.expect_version
    match verb:
        case "show":
            return "GET", at, None
        case "weights":
            return "PUT", f"{at}/weights", {"weights": args.weights, **change}
        case "pause" | "resume":
            return "POST", f"{at}/{verb}", change
        case "ship":
            holdout = {"holdout": args.holdout} if args.holdout is not None else {}
            return "POST", f"{at}/ship", {"variant": args.variant, **holdout, **change}
        case "stop":
            serve = {"serve": args.serve} if args.serve is not None else {}
            return "POST", f"{at}/stop", {**serve, **change}
        case "force":
            return "POST", f"{at}/forced", {"unit": args.unit, "variant": args.variant, **change}
        case "unforce":
            return "DELETE", f"{at}/forced?{urlencode({'unit': args.unit, **change})}", None
        case "audit":
            query = f"?{urlencode({'limit': args.limit})}" if args.limit is not None else ""
            return "GET", f"{at}/audit{query}", None
    raise AssertionError(f"unknown admin verb {verb!r}")


# -- HTTP --------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answered as errors: following one would send the token elsewhere."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def _exchange(root: str, token: str, method: str, path: str, body: Json | None) -> Json:
    """The JSON object the gateway answers with; UpstreamRejected(status, message) for an
    error status, UpstreamUnavailable if it cannot be reached or answers with no object."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(  # noqa: S310 - http(s) only: GatewayUrls.parse
        f"{root}{path}", data=data, method=method, headers=headers
    )
    # Built per call: the proxy settings come from the environment of this call.
    opener = urllib.request.build_opener(_NoRedirect)
    status, raw = exchange(
        request, TIMEOUT_S, unreachable=f"cannot reach the gateway at {root}", opener=opener
    )
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if status >= 300:
        message = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(message, str) or not message:
            message = raw[:200].decode("utf-8", "replace").strip() or "no message"
        raise UpstreamRejected(status, message)
    if not isinstance(answer, dict):
        where = f"{method} {path.partition('?')[0]}"
        raise UpstreamUnavailable("gateway_bad_answer", f"{where}: the answer is not a JSON object")
    return answer


class _Scrubbed:
    """A stream that never prints the token, whatever a message quotes."""

    def __init__(self, stream: TextIO, token: str) -> None:
        self._stream = stream
        # A very short token would blank out letters everywhere; gateway tokens are long.
        self._token = token if len(token) >= _MIN_SCRUBBED else ""

    def print(self, text: str) -> None:
        if self._token:
            text = text.replace(self._token, "***")
        print(text, file=self._stream)


# -- rendering -------------------------------------------------------------------------------


def _render(verb: str, answer: Json) -> str:
    match verb:
        case "list":
            return _experiments_table(answer.get("experiments") or [])
        case "show":
            return _view_text(answer)
        case "audit":
            return _audit_text(answer.get("entries") or [])
        case "backends":
            return _backends_table(answer.get("backends") or [])
        case "delete-unit-audio":
            deleted = answer.get("deleted")
            noun = "capture" if deleted == 1 else "captures"
            unit = answer.get("unit")
            return f"deleted {deleted} {noun} of unit {unit}; none will be captured again"
    return _summary_line(answer)  # a change: the experiment as it is now


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned to their widest cell, two spaces apart; the last one is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    )


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _share(value: object) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "?"


def _variants(view: Json) -> str:
    return "  ".join(
        f"{v.get('name')}={_number(v.get('weight'))} ({_share(v.get('share'))})"
        for v in view.get("variants") or []
    )


def _status(view: Json) -> str:
    serving = view.get("serving")
    status = str(view.get("status"))
    return f"{status} (serving {serving})" if serving and status == "stopped" else status


def _experiments_table(experiments: Sequence[Json]) -> str:
    if not experiments:
        return "no experiments are configured"
    rows = [["EXPERIMENT", "STATUS", "PHASE", "VERSION", "VARIANTS: WEIGHT (SHARE)"]]
    rows += (
        [str(e.get("id")), _status(e), str(e.get("phase")), _number(e.get("version")), _variants(e)]
        for e in experiments
    )
    lines = [_table(rows)]
    models = [
        [str(e.get("id")), name, *_model_cells(found)]
        for e in experiments
        for name, found in _health_variants(e)
        if isinstance(found.get("model"), dict) or found.get("model_error")
    ]
    if models:
        header = ["EXPERIMENT", "VARIANT", "ENDPOINT", "MODEL", "TRANSCRIPTION UNTIL", "ADAPTATION"]
        lines += ["", _table([header, *models])]
    return "\n".join(lines)


def _health_variants(view: Json) -> list[tuple[str, Json]]:
    """(variant, its health entry) of a view, in the view's variant order."""
    health = view.get("health")
    found = health.get("variants") if isinstance(health, dict) else None
    if not isinstance(found, dict):
        return []
    return [(str(name), entry) for name, entry in found.items() if isinstance(entry, dict)]


def _model_cells(entry: Json) -> list[str]:
    """Endpoint, model, transcription and adaptation expiry of a variant's health entry;
    `!` marks each expiry within the warning window (or past)."""
    model = entry.get("model")
    if not isinstance(model, dict):
        unknown = "unknown" if entry.get("model_error") is None else "unreadable"
        return [str(entry.get("endpoint_id") or "-"), unknown, "-", "-"]
    near = model.get("expiring")
    near = near if isinstance(near, list) else []

    def date(kind: str) -> str:
        return _day(model.get(f"{kind}_expires")) + ("!" if kind in near else "")

    name = str(model.get("display_name") or model.get("id"))
    return [
        str(entry.get("endpoint_id") or "-"),
        f"{name} ({model.get('kind')})",
        date("transcription"),
        date("adaptation"),
    ]


def _day(value: object) -> str:
    return value[:10] if isinstance(value, str) and value else "-"


def _summary_line(view: Json) -> str:
    forced = len(view.get("forced") or {})
    tail = f"; {forced} forced unit{'s' if forced != 1 else ''}" if forced else ""
    return (
        f"{view.get('id')}: {_status(view)}, version {_number(view.get('version'))}, "
        f"phase {view.get('phase')}: {_variants(view)}{tail}"
    )


def _view_text(view: Json) -> str:
    lines = [_summary_line(view)]
    if view.get("updated_at"):
        lines.append(f"updated {view['updated_at']} by {view.get('updated_by') or '?'}")
    else:
        lines.append("as configured (never changed)")
    lines.append(f"control: {view.get('control')}")
    rows = [["VARIANT", "BACKEND", "ENDPOINT", "WEIGHT", "SHARE"]]
    rows += (
        [
            str(v.get("name")),
            str(v.get("backend")),
            v.get("endpoint_id") or "-",
            _number(v.get("weight")),
            _share(v.get("share")),
        ]
        for v in view.get("variants") or []
    )
    lines += ("  " + row for row in _table(rows).splitlines())
    if view.get("shadows"):
        lines.append(f"shadows: {', '.join(map(str, view['shadows']))}")
    forced: Mapping[str, Any] = view.get("forced") or {}
    lines += (f"forced: {unit} -> {variant}" for unit, variant in sorted(forced.items()))
    guardrails = view.get("guardrails")
    if isinstance(guardrails, dict):
        set_ = ", ".join(f"{k} {_number(v)}" for k, v in guardrails.items() if v is not None)
        lines.append(f"guardrails: {set_ or 'none set'}")
    phases = view.get("phases") or []
    if phases:
        lines.append("phases (newest first):")
        rows = [
            [str(p.get("phase")), p.get("started_at") or "-", _weights(p.get("weights"))]
            for p in phases
        ]
        lines += ("  " + row for row in _table(rows).splitlines())
    lines += _health_text(view)
    return "\n".join(lines)


def _health_text(view: Json) -> list[str]:
    """The view's model-health block: each variant's model and canary, then the alerts."""
    entries = _health_variants(view)
    health = view.get("health") or {}
    known = any(
        entry.get(name)
        for _, entry in entries
        for name in ("model", "model_error", "canary", "alerts")
    )
    if not known and not health.get("alerts"):
        return []  # no canaries, no lifecycle reads: nothing to show
    rows = [
        [
            "VARIANT",
            "ENDPOINT",
            "MODEL",
            "TRANSCRIPTION",
            "ADAPTATION",
            "CANARY WER",
            "LATENCY",
            "ROUNDS",
            "LAST",
        ]
    ]
    alerts: list[Json] = []
    for name, entry in entries:
        endpoint, model, transcription, adaptation = _model_cells(entry)
        found = entry.get("canary")
        canary: Json = found if isinstance(found, dict) else {}
        wer = canary.get("wer")
        latency = canary.get("latency_ms")
        rows.append(
            [
                name,
                endpoint,
                model,
                transcription,
                adaptation,
                f"{wer:.1%}" if isinstance(wer, int | float) else "-",
                f"{latency:.0f} ms" if isinstance(latency, int | float) else "-",
                f"{_number(canary.get('rounds', 0))} ({_number(canary.get('failed_rounds', 0))} "
                "failed)",
                str(canary.get("last_round_at") or "-"),
            ]
        )
        alerts += (a for a in entry.get("alerts") or [] if isinstance(a, dict))
    alerts += (a for a in health.get("alerts") or [] if isinstance(a, dict))
    lines = ["model health (! = expires within the warning window):"]
    lines += ("  " + row for row in _table(rows).splitlines())
    alerts.sort(key=lambda a: str(a.get("at")), reverse=True)
    for alert in alerts[:ALERTS_SHOWN]:
        lines.append(f"alert {alert.get('at')}  {alert.get('kind')}  {alert.get('message')}")
    return lines


def _weights(weights: object) -> str:
    if not isinstance(weights, dict):
        return "?"
    return " ".join(f"{name}={_number(w)}" for name, w in weights.items())


def _audit_text(entries: Sequence[Json]) -> str:
    if not entries:
        return "no audit entries"
    rows = [
        [
            str(e.get("at")),
            str(e.get("actor")),
            str(e.get("action")),
            json.dumps(e["reason"], ensure_ascii=False) if e.get("reason") else "-",
            _change(e.get("before") or {}, e.get("after") or {}, e.get("detail") or {}),
        ]
        for e in entries
    ]
    return _table([["AT", "ACTOR", "ACTION", "REASON", "CHANGE"], *rows])


def _change(before: Json, after: Json, detail: Json) -> str:
    """What an audit entry changed: version, then each field that differs, then details."""
    parts = [f"v{_number(before.get('version'))}→v{_number(after.get('version'))}"]
    if before.get("status") != after.get("status"):
        parts.append(f"{before.get('status')}→{after.get('status')}")
    if before.get("weights") != after.get("weights"):
        parts.append(f"{_weights(before.get('weights'))} → {_weights(after.get('weights'))}")
    if before.get("serving") != after.get("serving"):
        parts.append(f"serving {before.get('serving') or '-'}→{after.get('serving') or '-'}")
    if before.get("forced_count") != after.get("forced_count"):
        parts.append(f"forced {before.get('forced_count')}→{after.get('forced_count')}")
    # "weights" and "serve" are shown above as the change they made.
    shown = {k: v for k, v in detail.items() if k not in ("weights", "serve")}
    if shown:
        parts.append(
            " ".join(
                f"{k}={v}" if isinstance(v, str | int | float) else f"{k}={json.dumps(v)}"
                for k, v in shown.items()
            )
        )
    return "; ".join(parts)


def _backends_table(backends: Sequence[Json]) -> str:
    if not backends:
        return "no backends are configured"
    rows = [
        ["BACKEND", "BREAKER", "CONSECUTIVE", "WINDOW (FAILED/ATTEMPTS)", "OPENED", "OPEN_UNTIL"]
    ]
    for backend in backends:
        breaker = backend.get("breaker") or {}
        open_until = breaker.get("open_until")
        rows.append(
            [
                str(backend.get("name")),
                str(breaker.get("state", "-")),
                _number(breaker.get("consecutive_failures", "-")),
                f"{_number(breaker.get('window_failures', '-'))}/"
                f"{_number(breaker.get('window_attempts', '-'))}",
                _number(breaker.get("opened", "-")),
                "-" if open_until is None else _number(open_until),
            ]
        )
    return _table(rows)
