"""One blocking HTTP call of the command-line tools (admin CLI, replay against a gateway).

Every answer, error statuses included, comes back as (status, body); only a gateway that
cannot be reached at all raises.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request

from gateway.errors import UpstreamUnavailable


def exchange(
    request: urllib.request.Request,
    timeout: float,
    *,
    unreachable: str,
    opener: urllib.request.OpenerDirector | None = None,
) -> tuple[int, bytes]:
    """(status, body) of the answer; UpstreamUnavailable("gateway_unreachable") with the
    message `unreachable` and the reason in parentheses when there is none."""
    open_ = opener.open if opener is not None else urllib.request.urlopen
    try:
        with open_(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UpstreamUnavailable("gateway_unreachable", f"{unreachable} ({reason})") from None
