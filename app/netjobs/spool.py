"""Durable writes of job history and dead letters: storable values, bad-row isolation, Redis spool.

PostgreSQL can refuse what netjobs writes after a task for two very different reasons, handled
differently (see :func:`database_unavailable`):

* **The row**: a NUL byte, text longer than a column, a value JSONB cannot hold. Values are made
  storable before writing (:func:`storable_text`, :func:`storable_json`); a batch that still fails
  for a row-level reason is split in halves until the bad rows are isolated (:func:`write_rows`);
  the rest is written, each bad row is logged once and written in a minimal form, or dropped if even
  that is refused. Nothing is retried forever.
* **The database**: it is unreachable (connection errors) or cannot take writes at all (missing
  table, no permission, read-only, disk full). The rows then go to a spool in Redis, the broker,
  which is AOF-persisted, so they survive the process that spooled them (even SIGKILL):

  ================================  ==========================================================
  ``netjobs:spool:job_runs``        list of JSON entries, each a batch of job_runs rows
  ``netjobs:spool:dead_letters``    list of JSON entries, each a batch of dead letters
  ``netjobs:spool:<list>:bytes``    bytes held by that list (for the size cap)
  ``netjobs:spool:replay-lock``     who is replaying (``SET NX PX``, token, LOCK_SECONDS)
  ``netjobs:spool:unreadable``      entries that could not be decoded (last UNREADABLE_KEEP)
  ================================  ==========================================================

  An entry is a JSON object whose first members are a unique ``"id"`` and ``"at"``, when it was
  pushed (Unix seconds); timestamps inside are ISO 8601 with their UTC offset. Producers RPUSH; a
  list holds at most MAX_ENTRIES entries and MAX_BYTES bytes (a push that does not fit is refused
  whole and the caller keeps the rows in memory, saying so once).

  The job_runs list is also the normal way a worker hands a finished task's events over before the
  task's ack (netjobs.history): one RPUSH instead of a PostgreSQL transaction per task, written to
  PostgreSQL in batches within a second. So an entry's age, not the list's length, tells whether
  history is stuck (:func:`oldest_ages`, STALE_SECONDS).

  Replay (:func:`replay`, run by any netjobs process whose flusher finds PostgreSQL reachable) is
  at-least-once: read a batch from the head, write it with the idempotent upserts, then remove it
  only if its first entry is still the head (a Lua script comparing its id). A process killed
  between the write and the removal leaves the entries for the next replayer, which writes them
  again harmlessly. One replayer at a time holds the lock; a lost lock only means two replayers,
  which is still correct.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import redis.exceptions

log = logging.getLogger(__name__)

PREFIX = "netjobs:spool:"
HISTORY_KEY = PREFIX + "job_runs"
DEAD_LETTERS_KEY = PREFIX + "dead_letters"
LOCK_KEY = PREFIX + "replay-lock"
UNREADABLE_KEY = PREFIX + "unreadable"

MAX_ENTRIES = 100_000  # per list
MAX_BYTES = 512 * 1024 * 1024  # per list; the broker runs with noeviction: never let the spool fill it
LOCK_SECONDS = 15  # refreshed after each entry; a replayer that died holds it this long at most
UNREADABLE_KEEP = 1000
REPLAY_BATCH_ENTRIES = 500  # entries written per transaction by a replay...
REPLAY_BATCH_BYTES = 2 * 1024 * 1024  # ...and at most this many bytes of them (one entry at least)
STALE_SECONDS = 60.0  # an entry older than this is not a hand-off in progress: PostgreSQL is not taking history
WRITE_PAGE = 1000  # rows per INSERT statement

NUL_REPLACEMENT = "\ufffd"  # a NUL becomes U+FFFD REPLACEMENT CHARACTER
TRUNCATED = "...[truncated]"
MAX_JSON_DEPTH = 100
BIG_INT = 10**300  # larger integers are stored as strings (JSONB numeric, Python's int-to-str limit)

# SQLSTATE classes that blame the row, not the database: 21 cardinality violation, 22 data exception,
# 23 integrity constraint violation, 54 program limit exceeded.
ROW_ERROR_CLASSES = frozenset({"21", "22", "23", "54"})


# --- storable values ----------------------------------------------------------------------------


def storable_text(value: object, limit: int, keep_tail: bool = False) -> str | None:
    """``value`` as text PostgreSQL accepts: NUL replaced, unencodable code points (lone surrogates)
    replaced, at most ``limit`` characters (cut at the end, or in the middle with ``keep_tail``)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        text = text.replace("\x00", NUL_REPLACEMENT)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) > limit:
        if keep_tail:
            head = limit // 4
            tail = limit - head - len(TRUNCATED)
            text = text[:head] + TRUNCATED + text[-tail:]
        else:
            text = text[: limit - len(TRUNCATED)] + TRUNCATED
    return text


def storable_json(value: object, text_limit: int, _depth: int = 0):
    """``value`` made of what JSONB holds: dict (str keys), list, str, int, finite float, bool, None.

    Tuples and sets become lists, bytes are decoded (UTF-8, replacing), NaN and infinities become
    their names as strings, datetimes ISO 8601 strings, other objects their repr; strings go through
    :func:`storable_text`.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return storable_text(value, text_limit)
    if isinstance(value, int):
        return value if -BIG_INT < value < BIG_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if _depth >= MAX_JSON_DEPTH:
        return storable_text(repr(value), text_limit)
    if isinstance(value, dict):
        return {storable_text(k, text_limit) if isinstance(k, str) else storable_text(str(k), text_limit):
                storable_json(v, text_limit, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [storable_json(v, text_limit, _depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return storable_text(bytes(value).decode("utf-8", "replace"), text_limit)
    if isinstance(value, datetime):
        return value.isoformat()
    return storable_text(repr(value), text_limit)


def ascii_text(value: object, limit: int) -> str | None:
    """The most conservative text: ASCII only (backslash escapes), at most ``limit`` characters."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    text = text.replace("\x00", "\\x00").encode("ascii", "backslashreplace").decode("ascii")
    return storable_text(text, limit)


def format_datetime(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def parse_datetime(value: str | None) -> datetime | None:
    """The inverse of :func:`format_datetime`; a timestamp without offset is taken as UTC."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


# --- which errors mean what ---------------------------------------------------------------------


def database_unavailable(exc: BaseException) -> bool:
    """True if PostgreSQL cannot take writes now (retry later: spool); False if it refused the rows."""
    import psycopg2
    import sqlalchemy.exc as sa

    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    orig = exc.orig if isinstance(exc, sa.StatementError) and exc.orig is not None else exc
    if isinstance(orig, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return True
    if isinstance(exc, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError, sa.TimeoutError)):
        return True
    if isinstance(orig, (ConnectionError, TimeoutError, socket.timeout)):
        return True
    if isinstance(orig, psycopg2.Error):
        # With a SQLSTATE outside the row classes the database itself refuses (undefined table,
        # insufficient privilege, read-only transaction, ...). Without one, psycopg2 itself
        # refused a value (e.g. "can't adapt type"): the row.
        code = orig.pgcode
        return code is not None and code[:2] not in ROW_ERROR_CLASSES
    return False


def describe(exc: BaseException) -> str:
    """One short line for a log message."""
    import sqlalchemy.exc as sa

    orig = exc.orig if isinstance(exc, sa.StatementError) and exc.orig is not None else exc
    text = str(orig).strip().splitlines()
    first = text[0] if text else ""
    line = f"{type(orig).__name__}: {first}" if first else type(orig).__name__
    return line if len(line) <= 300 else line[:297] + "..."


# --- writing with bad-row isolation -------------------------------------------------------------


def write_rows(sql: str, rows: list[tuple], *, minimal: Callable[[tuple], tuple], what: str,
               template: str | None = None) -> int:
    """Write ``rows`` with ``execute_values(sql)`` in one transaction; returns the rows written.

    Rows PostgreSQL refuses for a row-level reason are isolated by splitting the batch; each is
    logged once (``what``, then the row's first value, its task id) and written as ``minimal(row)``,
    or dropped if that is refused too. Raises only when :func:`database_unavailable` (nothing of the
    failing part was committed; rows written before are idempotent upserts, safe to write again).
    """
    from netjobs.db.engine import get_engine

    if not rows:
        return 0
    raw = get_engine().raw_connection()
    try:
        return _write_isolating(raw, sql, rows, template, minimal, what)
    except BaseException:
        try:
            raw.invalidate()  # do not give a connection of unknown state back to the pool
        except Exception:  # noqa: BLE001
            pass
        raise
    finally:
        raw.close()


def _execute(raw, sql: str, rows: list[tuple], template: str | None) -> None:
    from psycopg2.extras import execute_values

    try:
        with raw.cursor() as cursor:
            execute_values(cursor, sql, rows, template=template, page_size=WRITE_PAGE)
        raw.commit()
    except BaseException:
        try:
            raw.rollback()
        except Exception:  # noqa: BLE001 - the connection is gone; the original error says why
            pass
        raise


def _write_isolating(raw, sql, rows, template, minimal, what) -> int:
    try:
        _execute(raw, sql, rows, template)
        return len(rows)
    except Exception as exc:
        if database_unavailable(exc):
            raise
        if len(rows) > 1:
            half = len(rows) // 2
            return (_write_isolating(raw, sql, rows[:half], template, minimal, what)
                    + _write_isolating(raw, sql, rows[half:], template, minimal, what))
        log.error("%s: PostgreSQL refused the row of task %r (%s); writing a minimal form of it",
                  what, rows[0][0], describe(exc))
    try:
        _execute(raw, sql, [minimal(rows[0])], template)
        return 1
    except Exception as exc:
        if database_unavailable(exc):
            raise
        log.error("%s: the minimal row of task %r was refused too (%s); dropped", what, rows[0][0], describe(exc))
        return 0


# --- the Redis spool ----------------------------------------------------------------------------

# KEYS: list, its byte counter. ARGV: max entries, max bytes, entries...
# Returns the new length, or -1 if the entries do not fit (nothing pushed).
_PUSH = """
local n = redis.call('LLEN', KEYS[1])
if n == 0 then redis.call('DEL', KEYS[2]) end
local size = 0
for i = 3, #ARGV do size = size + string.len(ARGV[i]) end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if n + #ARGV - 2 > tonumber(ARGV[1]) or used + size > tonumber(ARGV[2]) then return -1 end
redis.call('INCRBY', KEYS[2], size)
return redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
"""

# KEYS: list, its byte counter, the unreadable list. ARGV: the head's expected prefix, '1' to keep it
# in the unreadable list, how many of those to keep. Removes the head only if it still starts with
# the prefix (another replayer may have removed it already). Returns 1 if removed.
_POP_HEAD = """
local head = redis.call('LINDEX', KEYS[1], 0)
if not head or string.sub(head, 1, string.len(ARGV[1])) ~= ARGV[1] then return 0 end
redis.call('LPOP', KEYS[1])
if redis.call('LLEN', KEYS[1]) == 0 or redis.call('DECRBY', KEYS[2], string.len(head)) < 0 then
  redis.call('DEL', KEYS[2])
end
if ARGV[2] == '1' then
  redis.call('RPUSH', KEYS[3], head)
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
end
return 1
"""

# KEYS: list. ARGV: most entries, most bytes. The entries at the head, in order, within both limits
# (the first one whatever its size).
_HEAD_BATCH = """
local out, size = {}, 0
for i = 0, tonumber(ARGV[1]) - 1 do
  local item = redis.call('LINDEX', KEYS[1], i)
  if not item or (i > 0 and size + string.len(item) > tonumber(ARGV[2])) then break end
  out[#out + 1] = item
  size = size + string.len(item)
end
return out
"""

# KEYS: list, its byte counter. ARGV: the head's expected prefix, how many entries, their bytes.
# Removes that many entries only if the head still starts with the prefix (entries are only ever
# removed from the head, so the same head means the same batch). Returns 1 if removed.
_DROP_HEAD_BATCH = """
local head = redis.call('LINDEX', KEYS[1], 0)
if not head or string.sub(head, 1, string.len(ARGV[1])) ~= ARGV[1] then return 0 end
redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
if redis.call('LLEN', KEYS[1]) == 0 or redis.call('DECRBY', KEYS[2], tonumber(ARGV[3])) < 0 then
  redis.call('DEL', KEYS[2])
end
return 1
"""

# KEYS: lists. Returns the first 100 bytes of each list's head ('' when empty), for its "at".
HEAD_PREFIXES = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = string.sub(redis.call('LINDEX', key, 0) or '', 1, 100) end
return out
"""

# KEYS: lock. ARGV: token, milliseconds (0: release). Returns 1 if the token held the lock.
_LOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

_client_lock = threading.Lock()
_client = None
_client_key: tuple | None = None  # (pid, url) it was made for
_scripts: dict = {}


def _after_fork_in_child() -> None:
    # A lock held by another thread of the parent at fork time would never be released here.
    global _client_lock, _client, _client_key
    _client_lock, _client, _client_key = threading.Lock(), None, None


os.register_at_fork(after_in_child=_after_fork_in_child)


def client():
    """This process's client of the broker's Redis (made again after a fork or a settings change)."""
    global _client, _client_key
    from netjobs.config import get_settings

    key = (os.getpid(), get_settings().broker_url)
    with _client_lock:
        if _client is None or _client_key != key:
            from netjobs.redis_clients import redis_from_url

            _client = redis_from_url(key[1], socket_connect_timeout=5, socket_timeout=30, health_check_interval=25)
            _client_key = key
            _scripts.clear()
            _scripts.update(push=_client.register_script(_PUSH), pop=_client.register_script(_POP_HEAD),
                            lock=_client.register_script(_LOCK), head=_client.register_script(_HEAD_BATCH),
                            drop=_client.register_script(_DROP_HEAD_BATCH))
        return _client


def entry(body: dict) -> str:
    """One spool entry: ``body`` as JSON with a unique ``"id"`` first (the replay compares it), then
    ``"at"``, when it was made (its age says whether it waits too long)."""
    encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    head = f'{{"id":"{uuid.uuid4().hex}","at":{time.time():.3f}'
    return f"{head},{encoded[1:]}" if encoded != "{}" else head + "}"


_AT = re.compile(rb'^\{"id":"[^"]*","at":([0-9.]+)[,}]')


def entry_time(raw: bytes | str) -> float | None:
    """When the entry ``raw`` (or its first 100 bytes) was made; None for an entry of a release
    before "at" was added."""
    match = _AT.match(raw.encode() if isinstance(raw, str) else raw)
    return float(match.group(1)) if match else None


def entry_age(raw: bytes | str, now: float) -> float:
    """Seconds the entry ``raw`` has waited at ``now``; ``math.inf`` for an entry of unknown age (an
    older release's)."""
    made = entry_time(raw)
    return math.inf if made is None else max(0.0, now - made)


def oldest_ages(client, keys: list[str], now: float | None = None) -> dict[str, float | None]:
    """Seconds each list's head entry has waited (:func:`entry_age`); None for an empty list."""
    now = time.time() if now is None else now
    heads = client.eval(HEAD_PREFIXES, len(keys), *keys)
    return {key: entry_age(head, now) if head else None for key, head in zip(keys, heads)}


def _id_prefix(raw: bytes) -> bytes:
    if raw.startswith(b'{"id":"'):
        end = raw.find(b'"', 7)
        if end > 0:
            return raw[: end + 1]
    return raw  # not one of ours: compare it whole


def push(key: str, entries: list[str], also: Callable | None = None) -> bool:
    """Append ``entries`` to the list ``key``; False if they do not fit its caps (nothing appended).
    ``also(pipeline)`` queues other commands (task counters) for the same round trip; they apply
    whether or not the entries fit. Raises redis.RedisError if Redis is unreachable."""
    if not entries and also is None:
        return True
    redis_client = client()
    script = _scripts["push"]
    keys, args = [key, key + ":bytes"], [MAX_ENTRIES, MAX_BYTES, *entries]
    # EVALSHA in a plain pipeline: with a Script object redis-py would send SCRIPT EXISTS first, a
    # round trip of its own. The script is sent only if Redis does not know it (after a restart).
    with redis_client.pipeline(transaction=False) as pipe:
        if also is not None:
            also(pipe)
        if entries:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies = pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, redis.exceptions.NoScriptError):
            return script(keys=keys, args=args) >= 0
        if isinstance(reply, Exception):
            raise reply
    return not entries or replies[-1] >= 0


def lengths() -> dict[str, int]:
    with client().pipeline(transaction=False) as pipe:
        pipe.llen(DEAD_LETTERS_KEY)
        pipe.llen(HISTORY_KEY)
        letters, runs = pipe.execute()
    return {HISTORY_KEY: runs, DEAD_LETTERS_KEY: letters}


@dataclass
class Replayed:
    counts: dict[str, int] = field(default_factory=dict)  # items written per list
    drained: bool = False  # every list was empty at the end
    busy: bool = False  # another process holds the replay lock
    oldest_age: float = 0.0  # seconds the oldest entry written had waited (inf: unknown)


def replay(writers: dict[str, Callable[[list[dict]], int]], budget: float | None = None) -> Replayed:
    """Write the entries of each list in ``writers`` (in that order), oldest first, in batches.

    ``writers[key](bodies)`` writes decoded entries in one go and returns how many items it wrote;
    it raises if PostgreSQL is unavailable, which ends the replay (the entries stay). A batch that
    fails for another reason is written again entry by entry: an entry that cannot be decoded or
    written is moved to UNREADABLE_KEY and logged. ``budget`` limits the seconds spent (the rest is
    left for the next call). Raises redis.RedisError if Redis is unreachable.
    """
    redis_client = client()
    token = uuid.uuid4().hex
    result = Replayed(counts={key: 0 for key in writers})
    if not redis_client.set(LOCK_KEY, token, nx=True, px=LOCK_SECONDS * 1000):
        result.busy = True
        return result
    deadline = math.inf if budget is None else time.monotonic() + budget
    try:
        for key, write in writers.items():
            while True:
                if time.monotonic() >= deadline:
                    return result
                batch = _scripts["head"](keys=[key], args=[REPLAY_BATCH_ENTRIES, REPLAY_BATCH_BYTES])
                if not batch:
                    break
                result.oldest_age = max(result.oldest_age, entry_age(batch[0], time.time()))
                try:
                    result.counts[key] += write([json.loads(raw) for raw in batch])
                except Exception as exc:
                    if database_unavailable(exc):
                        raise
                    result.counts[key] += _replay_one_by_one(key, write, batch)
                else:
                    _scripts["drop"](keys=[key, key + ":bytes"],
                                     args=[_id_prefix(batch[0]), len(batch), sum(len(raw) for raw in batch)])
                if not _scripts["lock"](keys=[LOCK_KEY], args=[token, LOCK_SECONDS * 1000]):
                    # Our lock expired (a very slow write) and someone else took over: let them.
                    result.busy = True
                    return result
        result.drained = True
        return result
    finally:
        try:
            _scripts["lock"](keys=[LOCK_KEY], args=[token, 0])
        except Exception:  # noqa: BLE001 - it expires by itself
            pass


def _replay_one_by_one(key: str, write: Callable[[list[dict]], int], batch: list[bytes]) -> int:
    """Write ``batch`` (read from the head of ``key``) an entry at a time, moving each entry that
    cannot be decoded or written to UNREADABLE_KEY; returns the items written."""
    written = 0
    for raw in batch:
        unreadable = False
        try:
            written += write([json.loads(raw)])
        except Exception as exc:
            if database_unavailable(exc):
                raise
            log.error("spool: entry %r of %s cannot be written (%s); moved to %s", raw[:60], key,
                      describe(exc), UNREADABLE_KEY)
            unreadable = True
        if not _scripts["pop"](keys=[key, key + ":bytes", UNREADABLE_KEY],
                               args=[_id_prefix(raw), "1" if unreadable else "0", UNREADABLE_KEEP]):
            break  # another replayer took over from here
    return written
