"""Where a new session or request goes: client, experiment, unit, variant and upstream URL.

Pure: the I/O layer passes the request's path, query and headers; `plan_route` returns a
`Route` or raises (`AuthError` → 401, `RouteError` → 400). The client's own credentials and
the gateway's parameters are removed from what goes upstream, and the variant's backend
credentials and custom endpoint id (`cid`) are put in; nothing of the backend's reaches the
client.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from gateway.control.assignment import resolve, shadow_variants
from gateway.control.model import Client, Experiment, GatewayConfig, Variant
from gateway.errors import AuthError, RestError
from gateway.protocol.paths import mode_from_path

KEY_HEADER = "Ocp-Apim-Subscription-Key"
AUTH_HEADER = "Authorization"
UNIT_HEADER = "X-Gateway-Unit"
FORCE_HEADER = "X-Gateway-Variant"
CONNECTION_ID_HEADER = "X-ConnectionId"
MAX_UNIT_ID = 256
# Query parameters that carry the client's credentials or pick a model: never forwarded.
_STRIPPED_PARAMS = frozenset({KEY_HEADER.lower(), AUTH_HEADER.lower(), "cid"})
# Request headers worth passing on; everything else (hop-by-hop, credentials) stays here.
# The JS SDK sends its connection id twice: as X-ConnectionId and under this name, both as
# headers and as query parameters (protocol.md §1.2); the backend gets both, as directly.
JS_CONNECTION_ID_HEADER = "connectionId"
FORWARDED_HEADERS = (
    "User-Agent",
    CONNECTION_ID_HEADER,
    JS_CONNECTION_ID_HEADER,
    "Content-Type",
    "Accept",
    "Expect",
    "Pronunciation-Assessment",
)


class RouteError(RestError):
    """The request cannot be routed (HTTP 400 with the reason)."""


@dataclass(frozen=True, slots=True)
class Route:
    client: Client
    experiment: Experiment | None
    variant: Variant
    forced: bool
    unit_id: str
    unit_source: str  # query | header | connection
    session_id: str
    mode: str | None
    locale: str | None
    path: str
    query: tuple[tuple[str, str], ...]  # the client's, without credentials and gateway params
    shadows: tuple[Variant, ...] = field(default=())
    # The variant the unit was assigned when control serves it instead (circuit breaker).
    failover_from: str | None = None
    # The client's X-ConnectionId, which the SDKs keep across the retries and reconnects of
    # one recognition; None when it sent none (then each session is a client session).
    client_session: str | None = None

    def failed_over(self) -> Route | None:
        """This route served by the experiment's control variant, or None when there is no
        other variant to fail over to (no experiment, or the route is control already).
        The shadows stay, less the control variant itself and the variant that failed."""
        experiment = self.experiment
        if experiment is None or self.variant.name == experiment.control:
            return None
        control = experiment.control_variant
        shadows = tuple(v for v in self.shadows if v.name not in (control.name, self.variant.name))
        return replace(self, variant=control, shadows=shadows, failover_from=self.variant.name)

    def upstream_query(self, variant: Variant) -> str:
        pairs = list(self.query)
        if variant.endpoint_id:
            pairs.append(("cid", variant.endpoint_id))
        return urlencode(pairs)

    def upstream_headers(
        self, variant: Variant, client_headers: Mapping[str, str]
    ) -> dict[str, str]:
        headers = {n: client_headers[n] for n in FORWARDED_HEADERS if n in client_headers}
        headers.setdefault(CONNECTION_ID_HEADER, self.session_id)
        if variant.backend.key is not None:
            headers[KEY_HEADER] = variant.backend.key
        return headers


def client_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The client's key as any SDK sends it: header, query parameter, or Bearer token."""
    key = headers.get(KEY_HEADER) or query.get(KEY_HEADER)
    if key:
        return key
    bearer = headers.get(AUTH_HEADER) or query.get(AUTH_HEADER) or ""
    scheme, _, token = bearer.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def plan_route(
    config: GatewayConfig,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    *,
    force_param: str,
) -> Route:
    params = {name: value for name, value in query}
    key = client_key(headers, params)
    client = config.authenticate(key) if key else None
    if client is None:
        raise AuthError("invalid or missing client key")
    mode = mode_from_path(path)
    locale = params.get("language", "").lower() or None
    experiment = config.select(mode, locale, client.name)
    if experiment is not None:  # recorded with the locale the experiment assumes, if any
        locale = experiment.session_locale(locale)
    # The native SDK reuses its X-ConnectionId for every retry and reconnect of one
    # recognition, so it cannot name a gateway session: each gets its own id, and the
    # connection id only stands in for a missing unit (a retry keeps its variant).
    session_id = uuid.uuid4().hex
    client_session = _connection_id(headers, params)
    connection_id = client_session or session_id
    unit_param = experiment.unit_param if experiment is not None else "gw-unit"
    unit_id, unit_source = _unit(params, headers, unit_param, connection_id)
    forced_name = params.get(force_param) or headers.get(FORCE_HEADER)
    shadows: tuple[Variant, ...] = ()
    if experiment is None:
        if config.default_variant is None:
            raise RouteError("No experiment matches this request.")
        variant, forced = config.default_variant, False
    else:
        try:
            variant, forced = resolve(experiment, unit_id, forced_name or None, client)
        except AuthError:
            raise RouteError("This client key may not force a variant.", 403) from None
        except KeyError:
            raise RouteError(f"Unknown variant in {force_param}.") from None
        shadows = shadow_variants(experiment, variant)
    stripped = {unit_param.lower(), force_param.lower()}
    upstream_query = tuple(
        (name, value)
        for name, value in query
        if name.lower() not in _STRIPPED_PARAMS and name.lower() not in stripped
    )
    return Route(
        client=client,
        experiment=experiment,
        variant=variant,
        forced=forced,
        unit_id=unit_id,
        unit_source=unit_source,
        session_id=session_id,
        mode=mode,
        locale=locale,
        path=path,
        query=upstream_query,
        shadows=shadows,
        client_session=client_session,
    )


def _connection_id(headers: Mapping[str, str], params: Mapping[str, str]) -> str | None:
    given = headers.get(CONNECTION_ID_HEADER) or params.get(CONNECTION_ID_HEADER)
    if given and len(given) <= 64 and given.isalnum():
        return given
    return None


def _unit(
    params: Mapping[str, str], headers: Mapping[str, str], unit_param: str, connection_id: str
) -> tuple[str, str]:
    for value, source in ((params.get(unit_param), "query"), (headers.get(UNIT_HEADER), "header")):
        if value is not None:
            if not value or len(value) > MAX_UNIT_ID or not value.isprintable():
                raise RouteError(f"The unit id must be 1-{MAX_UNIT_ID} printable characters.")
            return value, source
    return connection_id, "connection"
