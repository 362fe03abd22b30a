"""The alert webhook: health alerts POSTed as JSON to one configured URL, off the hot path.

`Webhook.send` only puts the alert on a bounded queue and returns at once, so neither a
canary round nor a client session ever waits for the receiver. One task owned by the
webhook posts the queue in order: each attempt has its own timeout, a failure that may pass
(no connection, a timeout, 408, 429, 5xx) is retried with exponential backoff up to
`attempts` times, any other answer is final. A full queue drops the new alert (logged and
counted) rather than grow without bound while the receiver is down.

The body is the alert's `to_dict()` plus `"text"` (its one-line message, which chat
webhooks such as Slack's display). Logs name the receiver by its origin only: a webhook URL
often carries its secret in the path or the query.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from gateway.health.alerts import Alert
from gateway.logging import get_logger

log = get_logger(__name__)

QUEUE_SIZE: Final = 100
BACKOFF_S: Final = 0.5  # before the second attempt; doubled before each further one
MAX_BACKOFF_S: Final = 30.0
CLOSE_GRACE_S: Final = 2.0  # how long `close` lets queued alerts go out
_RETRY_STATUSES: Final = frozenset({408, 425, 429})


def origin(url: str) -> str:
    """scheme://host[:port] of a URL: what logs may say about a webhook."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}"


class Webhook:
    """Posts alerts to `url`; `start` before the first `send`, `close` at the end."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        timeout_s: float,
        attempts: int,
        *,
        queue_size: int = QUEUE_SIZE,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts: at least 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s: must be above 0")
        self._http = http
        self._url = url
        self._origin = origin(url)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        # Outcomes so far, for the admin view and the tests.
        self.delivered = 0
        self.failed = 0  # given up on after the last attempt, or answered with a final error
        self.dropped = 0  # the queue was full

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._post_loop(), name="health-webhook")

    def send(self, alert: Alert) -> bool:
        """Queue `alert` for posting; False (and logged) if the queue is full. Never waits."""
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning(
                "health_webhook_dropped",
                webhook=self._origin,
                experiment=alert.experiment,
                kind=alert.kind,
                queued=self._queue.qsize(),
            )
            return False
        return True

    async def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Let queued alerts go out for at most `grace_s`, then stop the task."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._queue.join()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if not self._queue.empty():
            log.warning("health_webhook_unsent", webhook=self._origin, alerts=self._queue.qsize())

    async def _post_loop(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                await self._deliver(alert)
            except Exception:  # never end the loop: the next alert gets its chance
                self.failed += 1
                log.exception("health_webhook_failed", webhook=self._origin)
            finally:
                self._queue.task_done()

    async def _deliver(self, alert: Alert) -> None:
        body: dict[str, Any] = {"text": alert.message, **alert.to_dict()}
        problem = ""
        for attempt in range(1, self._attempts + 1):
            if attempt > 1:
                await asyncio.sleep(min(self._backoff_s * 2 ** (attempt - 2), MAX_BACKOFF_S))
            try:
                async with self._http.post(self._url, json=body, timeout=self._timeout) as reply:
                    status = reply.status
                    await reply.read()
            except TimeoutError:
                problem = "timeout"
                continue
            except aiohttp.ClientError as exc:
                problem = type(exc).__name__
                continue
            if status < 300:
                self.delivered += 1
                log.info(
                    "health_webhook_sent",
                    webhook=self._origin,
                    kind=alert.kind,
                    experiment=alert.experiment,
                    attempts=attempt,
                )
                return
            problem = f"HTTP {status}"
            if status < 500 and status not in _RETRY_STATUSES:
                break  # the receiver refuses this alert; asking again changes nothing
        self.failed += 1
        log.warning(
            "health_webhook_failed",
            webhook=self._origin,
            kind=alert.kind,
            experiment=alert.experiment,
            error=problem,
            attempts=attempt,
        )
