"""Control-plane persistence: each experiment's state (a versioned JSON document) and its
audit trail, shared by every replica.

Admins (through the API) and guardrail rollbacks change an experiment's state with `commit`,
a compare-and-set on the version that also appends an audit entry and notifies the other
replicas; each replica applies what `changes()` names and, as a safety net, compares
`versions()` with what it holds every half second. The documents and audit entries are
opaque JSON text here (the control module defines them).

* `FileControlStore`: one process without Redis; the states in one JSON file replaced
  atomically, the audit as JSON lines beside it.
* `RedisControlStore`: every replica through Redis: a state hash, a version hash, an audit
  stream per experiment and a changes channel (`ControlKeys`; the layout is in
  `gateway.stores.keys`). All keys share one hash tag, so the commit script may touch them
  together in a Redis Cluster.

Notifications are best effort (pub/sub keeps nothing for a subscriber that is away), which
is why replicas also reconcile on `versions()`; a version is the truth.

A Redis that is unavailable, or a state or audit file that cannot be read or written,
raises `StoreUnavailable` from `load`, `versions`, `commit`, `audit` and `restore`;
`changes()` never raises it (it re-subscribes with backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Final, TypeAlias, cast

from redis.asyncio.cluster import RedisCluster

from gateway.control.ports import StoredState
from gateway.logging import get_logger
from gateway.stores.failures import store_call
from gateway.stores.files import cut_torn_tail, fsync_directory
from gateway.stores.keys import ControlKeys
from gateway.stores.redis_client import REDIS_ERRORS, SOCKET_TIMEOUT_S, RedisClient

log = get_logger(__name__)

AUDIT_FIELD: Final = "a"
# Lua compares versions as doubles: above 2**53 two versions could compare equal.
MAX_VERSION: Final = 2**53 - 1

# The change subscription: reconnect backoff, how often a closed store is noticed, and the
# keepalive that detects a connection the network silently dropped (no error ever arrives).
_BACKOFF_INITIAL_S: Final = 0.05
_BACKOFF_MAX_S: Final = 1.0
_POLL_S: Final = 0.25
_KEEPALIVE_IDLE_S: Final = 5.0
_KEEPALIVE_TIMEOUT_S: Final = SOCKET_TIMEOUT_S
_SUBSCRIBE_TIMEOUT_S: Final = 2 * SOCKET_TIMEOUT_S

_RESTORE_CHUNK: Final = 500  # states per restore script, so one call never blocks Redis long
_TAIL_BLOCK: Final = 64 * 1024


def _check_commit(expected_version: int, state: StoredState) -> None:
    """ValueError unless `0 <= expected_version < state.version <= MAX_VERSION`."""
    if not 0 <= expected_version < state.version <= MAX_VERSION:
        raise ValueError(
            f"a commit needs 0 <= expected_version < state.version <= {MAX_VERSION}, "
            f"got expected_version={expected_version}, state.version={state.version}"
        )


def _check_restored(states: Mapping[str, StoredState]) -> None:
    for experiment, state in states.items():
        if not 1 <= state.version <= MAX_VERSION:
            raise ValueError(
                f"restore: {experiment!r} has version {state.version}, "
                f"not between 1 and {MAX_VERSION}"
            )


async def _sleep_unless_set(event: asyncio.Event, seconds: float) -> None:
    """Sleep for `seconds`, or less if `event` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


# -- the embedded store ---------------------------------------------------------------------


class FileControlStore:
    """The states in one JSON file, the audit as JSON lines in `<stem>.audit.jsonl` beside it.

    State file: `{"experiments": {id: {"version": n, "document": "..."}}}`, replaced as a
    whole (temporary file in the same directory, fsync, rename, fsync of the directory), so
    a reader or a crash sees the old file or the new one. Audit lines are
    `{"experiment": id, "entry": "<audit JSON text>"}`, fsync'd; the entry stays a string so
    that `audit` returns exactly the text committed.

    A commit appends the audit line before it replaces the state file (and cuts the line off
    again if that fails), so a crash between the two can leave an audit entry of a commit
    that never took effect, never a change without its entry. Commits hold an exclusive
    `flock` on the audit file, so two stores on one path (or a second process) cannot both
    win one compare-and-set. There is no one to notify: `changes()` never yields.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.audit_path = path.with_name(f"{path.stem}.audit.jsonl")
        # The asyncio lock keeps waiting commits off the thread pool; the thread lock keeps
        # the work of a commit whose caller was cancelled from interleaving with the next.
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int, int], dict[str, StoredState]] | None = None
        self._closed = asyncio.Event()

    @store_call
    async def load(self) -> dict[str, StoredState]:
        return dict(await asyncio.to_thread(self._read_locked))

    @store_call
    async def versions(self) -> dict[str, int]:
        states = await asyncio.to_thread(self._read_locked)
        return {experiment: state.version for experiment, state in states.items()}

    @store_call
    async def commit(
        self, experiment: str, expected_version: int, state: StoredState, audit: str
    ) -> bool:
        _check_commit(expected_version, state)
        async with self._lock:
            return await asyncio.to_thread(self._commit, experiment, expected_version, state, audit)

    @store_call
    async def audit(self, experiment: str, limit: int) -> list[str]:
        if limit <= 0:
            return []
        return await asyncio.to_thread(self._audit, experiment, limit)

    @store_call
    async def restore(self, states: Mapping[str, StoredState]) -> list[str]:
        _check_restored(states)
        async with self._lock:
            return await asyncio.to_thread(self._restore, dict(states))

    async def changes(self) -> AsyncGenerator[str, None]:
        await self._closed.wait()
        return
        yield  # an async generator that never yields

    async def close(self) -> None:
        self._closed.set()

    # -- in a thread ----------------------------------------------------------------------

    def _read_locked(self) -> dict[str, StoredState]:
        with self._thread_lock:
            return self._read()

    def _read(self) -> dict[str, StoredState]:
        """The stored states; parsed again only when the file changed (another inode after
        each replace), since `versions()` is asked twice a second."""
        try:
            file = open(self.path, "rb")  # noqa: SIM115 - closed below; absence is no error
        except FileNotFoundError:
            return {}
        with file:
            status = os.fstat(file.fileno())
            identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
            if self._cache is not None and self._cache[0] == identity:
                return self._cache[1]
            states = _parse_state_file(file.read(), self.path)
        self._cache = (identity, states)
        return states

    def _commit(self, experiment: str, expected: int, state: StoredState, audit: str) -> bool:
        line = json.dumps({"experiment": experiment, "entry": audit}) + "\n"
        with self._thread_lock, self._audit_file() as audit_file:
            states = dict(self._read())
            current = states.get(experiment)
            if (current.version if current is not None else 0) != expected:
                return False
            start = _append(audit_file, line.encode("ascii"))
            states[experiment] = state
            self._write(states, undo=lambda: audit_file.truncate(start))
            return True

    def _restore(self, given: dict[str, StoredState]) -> list[str]:
        with self._thread_lock, self._audit_file():
            states = dict(self._read())
            written: list[str] = []
            for experiment, state in given.items():
                current = states.get(experiment)
                if current is None:
                    states[experiment] = state
                    written.append(experiment)
            if written:
                self._write(states)
            return written

    @contextlib.contextmanager
    def _audit_file(self) -> Iterator[IO[bytes]]:
        """The audit file, open for appending under an exclusive flock: the commit lock."""
        self.audit_path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.audit_path.exists()
        # Unbuffered, so that nothing is left in a buffer to be written after a truncate.
        with open(self.audit_path, "a+b", buffering=0) as file:
            if created:
                fsync_directory(self.audit_path.parent)
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # released when the file is closed
            cut_torn_tail(file, self.audit_path, "control_audit_torn_tail_removed")
            yield file

    def _write(
        self, states: Mapping[str, StoredState], undo: Callable[[], object] | None = None
    ) -> None:
        """Replace the state file; `undo` runs if that fails before the rename (after it,
        the new states are in place and a failure to fsync the directory just raises)."""
        experiments = {
            experiment: {"version": state.version, "document": state.document}
            for experiment, state in sorted(states.items())
        }
        data = (json.dumps({"experiments": experiments}, indent=1) + "\n").encode("ascii")
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600, which the state file keeps.
        descriptor, temporary = tempfile.mkstemp(
            dir=directory, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            if undo is not None:
                undo()
            raise
        fsync_directory(directory)

    def _audit(self, experiment: str, limit: int) -> list[str]:
        """Read from the end of the file backwards, so memory holds at most `limit` entries
        and one block however long the history is."""
        found: list[str] = []
        bad = 0
        try:
            file = open(self.audit_path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return found
        with file:
            for line in _lines_backwards(file):
                if not line:
                    continue
                try:
                    data = json.loads(line)
                    owner, entry = data["experiment"], data["entry"]
                except (ValueError, KeyError, TypeError):
                    bad += 1
                    continue
                if owner == experiment and isinstance(entry, str):
                    found.append(entry)
                    if len(found) >= limit:
                        break
        if bad:
            log.warning("control_audit_lines_unreadable", path=str(self.audit_path), lines=bad)
        return found


def _parse_state_file(data: bytes, path: Path) -> dict[str, StoredState]:
    """The states of a state file; ValueError naming the file and the problem."""

    def corrupt(problem: str) -> ValueError:
        return ValueError(f"control state file {path} is corrupt: {problem}")

    try:
        parsed: Any = json.loads(data)
    except ValueError as exc:
        raise corrupt(f"not JSON ({exc})") from None
    experiments = parsed.get("experiments") if isinstance(parsed, dict) else None
    if not isinstance(experiments, dict):
        raise corrupt('expected an object with an "experiments" object')
    states: dict[str, StoredState] = {}
    for experiment, entry in experiments.items():
        version = entry.get("version") if isinstance(entry, dict) else None
        document = entry.get("document") if isinstance(entry, dict) else None
        if type(version) is not int or not 1 <= version <= MAX_VERSION:
            raise corrupt(f"experiments.{experiment}.version must be an integer >= 1")
        if not isinstance(document, str):
            raise corrupt(f"experiments.{experiment}.document must be a string")
        states[experiment] = StoredState(version, document)
    return states


def _append(file: IO[bytes], data: bytes) -> int:
    """Append in one write and fsync; cut a failed write off again. Returns where it began."""
    start = file.seek(0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[file.write(view) or 0 :]
        os.fsync(file.fileno())
    except OSError:
        file.truncate(start)
        raise
    return start


def _lines_backwards(file: IO[bytes]) -> Iterator[bytes]:
    """The file's complete lines, last first, without their newlines. An unterminated last
    line (an append torn by a crash) is skipped."""
    position = file.seek(0, os.SEEK_END)
    head = b""  # the beginning of the file up to `position` back to its last newline
    torn = True  # the text after the last newline (empty, or a torn line) is not yet cut
    while position > 0:
        size = min(_TAIL_BLOCK, position)
        position -= size
        file.seek(position)
        lines = (file.read(size) + head).split(b"\n")
        head = lines.pop(0)
        if torn and lines:
            lines.pop()
            torn = False
        yield from reversed(lines)
    if not torn:
        yield head


# -- the Redis store ------------------------------------------------------------------------


# KEYS: state hash, version hash, the experiment's audit stream.
# ARGV: experiment, expected version, new version, document, audit entry, audit maxlen,
#       the changes channel, the audit field.
# An absent version is 0. PUBLISH inside the script: a notification goes out exactly when
# the write happens (a classic channel reaches every node of a cluster).
COMMIT_SCRIPT: Final = """
local current = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if current ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', ARGV[8], ARGV[5])
redis.call('PUBLISH', ARGV[7], ARGV[1])
return 1
"""

# KEYS: state hash, version hash. ARGV: the changes channel, then per state: experiment,
# version, document. Returns the experiments written.
RESTORE_SCRIPT: Final = """
local written = {}
for i = 2, #ARGV, 3 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call('PUBLISH', ARGV[1], ARGV[i])
    written[#written + 1] = ARGV[i]
  end
end
return written
"""

# KEYS: state hash, version hash. Both read at one instant, so they agree.
LOAD_SCRIPT: Final = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""


_StreamEntries: TypeAlias = list[tuple[bytes, dict[bytes, bytes]]]


def _str(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _pairs(flat: list[Any]) -> Iterator[tuple[str, str]]:
    for position in range(0, len(flat), 2):
        yield _str(flat[position]), _str(flat[position + 1])


def _version(value: str, key: str, experiment: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key}: the version of {experiment!r} is not an integer") from None


class RedisControlStore:
    """Experiment states in Redis, shared by every replica (keys: `ControlKeys`).

    `commit` and `restore` are Lua scripts, so a compare-and-set, its audit entry and its
    notification happen together or not at all. `changes()` holds its own pub/sub
    connection (one per iterator; close the iterator or the store to release it). Through
    a Redis Cluster client it subscribes on the node serving the channel's slot, which
    hears every node's PUBLISH.

    The store does not own `client`: `close()` ends the `changes()` iterators only.
    """

    def __init__(self, client: RedisClient, prefix: str, *, audit_maxlen: int = 10_000) -> None:
        if audit_maxlen < 1:
            raise ValueError(f"audit_maxlen must be >= 1, got {audit_maxlen}")
        self.client = client
        self.keys = ControlKeys(prefix)
        self.audit_maxlen = audit_maxlen
        self._commit_script = client.register_script(COMMIT_SCRIPT)
        self._restore_script = client.register_script(RESTORE_SCRIPT)
        self._load_script = client.register_script(LOAD_SCRIPT)
        self._closed = asyncio.Event()

    @store_call
    async def load(self) -> dict[str, StoredState]:
        documents, versions = await self._load_script([self.keys.state, self.keys.version])
        texts = dict(_pairs(documents))
        states: dict[str, StoredState] = {}
        for experiment, value in _pairs(versions):
            document = texts.get(experiment)
            if document is None:
                raise ValueError(f"{self.keys.state}: {experiment!r} has a version, no state")
            states[experiment] = StoredState(
                _version(value, self.keys.version, experiment), document
            )
        return states

    @store_call
    async def versions(self) -> dict[str, int]:
        key = self.keys.version
        stored = await self.client.hgetall(key)
        versions = ((_str(field), _str(value)) for field, value in stored.items())
        return {experiment: _version(value, key, experiment) for experiment, value in versions}

    @store_call
    async def commit(
        self, experiment: str, expected_version: int, state: StoredState, audit: str
    ) -> bool:
        _check_commit(expected_version, state)
        keys = [self.keys.state, self.keys.version, self.keys.audit(experiment)]
        args = [
            experiment,
            str(expected_version),
            str(state.version),
            state.document,
            audit,
            str(self.audit_maxlen),
            self.keys.changes,
            AUDIT_FIELD,
        ]
        return bool(await self._commit_script(keys, args))

    @store_call
    async def audit(self, experiment: str, limit: int) -> list[str]:
        if limit <= 0:
            return []
        # redis-py types the reply as the union of its sync and async clients' replies.
        entries = cast(
            "_StreamEntries",
            await self.client.xrevrange(self.keys.audit(experiment), count=limit),
        )
        field = AUDIT_FIELD.encode()
        return [_str(fields[field]) for _entry_id, fields in entries if field in fields]

    @store_call
    async def restore(self, states: Mapping[str, StoredState]) -> list[str]:
        _check_restored(states)
        items = list(states.items())
        written: list[str] = []
        for start in range(0, len(items), _RESTORE_CHUNK):
            args = [self.keys.changes]
            for experiment, state in items[start : start + _RESTORE_CHUNK]:
                args += (experiment, str(state.version), state.document)
            reply = await self._restore_script([self.keys.state, self.keys.version], args)
            written += (_str(experiment) for experiment in reply)
        return written

    async def changes(self) -> AsyncGenerator[str, None]:
        """Experiment ids from the changes channel, until `close()`.

        Notifications published while the subscription is down are lost. So after every
        re-subscription (by this loop, or by redis-py's own reconnect, which re-subscribes
        silently) the iterator names every stored experiment once: "any of these may have
        changed". An idle connection is probed with PING, so one the network dropped
        without a word is noticed within seconds and replaced.
        """
        backoff = _BACKOFF_INITIAL_S
        subscribed_once = False
        outage: str | None = None  # the error that began the current outage
        outage_since = 0.0
        loop = asyncio.get_running_loop()
        while not self._closed.is_set():
            pubsub = self.client.pubsub()
            try:
                async with asyncio.timeout(_SUBSCRIBE_TIMEOUT_S):
                    if isinstance(self.client, RedisCluster):
                        # A cluster pubsub picks its node from the slot table, which an
                        # unused client has not read yet (KeyError, not a RedisError).
                        await self.client.initialize()
                    await pubsub.subscribe(self.keys.changes)
                heard = loop.time()
                pinged: float | None = None
                while not self._closed.is_set():
                    message = await pubsub.get_message(timeout=_POLL_S)
                    now = loop.time()
                    if message is None:
                        if pinged is None and now - heard >= _KEEPALIVE_IDLE_S:
                            await pubsub.ping()
                            pinged = now
                        elif pinged is not None and now - pinged >= _KEEPALIVE_TIMEOUT_S:
                            raise TimeoutError("no answer to a PING on the change subscription")
                        continue
                    heard, pinged = now, None
                    kind = message["type"]
                    if kind == "message":
                        yield _str(message["data"])
                    elif kind == "subscribe":
                        backoff = _BACKOFF_INITIAL_S
                        if outage is not None:
                            log.info(
                                "control_changes_resubscribed",
                                error=outage,
                                outage_s=round(loop.time() - outage_since, 3),
                            )
                            outage = None
                        if subscribed_once:
                            for experiment in await self.client.hkeys(self.keys.version):
                                yield _str(experiment)
                        subscribed_once = True
            except REDIS_ERRORS as exc:
                if outage is None:
                    outage = f"{type(exc).__name__}: {exc or 'no reply in time'}"
                    outage_since = loop.time()
                    log.warning(
                        "control_changes_redis_unavailable",
                        error=outage,
                        detail="re-subscribing with backoff; replicas reconcile on versions",
                    )
            finally:
                with contextlib.suppress(*REDIS_ERRORS):
                    await pubsub.aclose()
            await _sleep_unless_set(self._closed, backoff)
            backoff = min(2 * backoff, _BACKOFF_MAX_S)

    async def close(self) -> None:
        self._closed.set()
