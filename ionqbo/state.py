"""Sync state: per-stream cursors, the record queue, the write ledger, and the single-run lock.

The state file is versioned JSON, written atomically (temp file in the same directory, flush, fsync,
``os.replace``, fsync of the directory) with mode 0600, so a crash at any instant leaves either the
old or the new state, never a truncated one (design.md section 5, style.md R10). The ledger (one
entry per record ever written: a 20,000-PO company has 28,000) lives beside it in an SQLite file
(``state.ledger.sqlite``, fsync on commit), so a run holds none of it in memory and a save writes
only what changed; it is committed before the state file at every save, with the settings hash its
entries were written under. Nothing here reads
the clock: every method that needs the time takes it as an argument, and :class:`SyncLock` takes an
injectable clock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ionqbo import clock
from ionqbo.errors import DiskFullError, LockedError, RecordError, StateDirError, StateError

log = logging.getLogger("ionqbo.state")

STATE_VERSION = 2  # 2: the ledger moved out of the JSON document into SQLite

# Cursor streams (design.md section 5: "per stream (parts, purchase orders)").
STREAMS = ("parts", "purchase_orders")
# Record kinds in queue and ledger keys ("<kind>:<ion_id>").
KINDS = ("purchase_order", "part")
# Where a state built in memory (and format 1) keeps the ledger's tag: ``cache[LEDGER_TAG_KEY]``.
LEDGER_TAG_KEY = "config_hash"

# Backoff for retryable record failures: 5 min, 10 min, 20 min, ... capped at 6 h. The first retry
# comes a few sync intervals later (cron runs every few minutes), the cap keeps a stuck record
# retried a few times a day without flooding the logs.
BACKOFF_BASE = timedelta(minutes=5)
BACKOFF_CAP = timedelta(hours=6)

_DIR_MODE = 0o700  # the state directory also holds the token store
_FILE_MODE = 0o600
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW


def _utcnow() -> datetime:
    return clock.utcnow()


def queue_key(kind: str, ion_id: str) -> str:
    """The queue and ledger key of a record: ``"<kind>:<ion_id>"``.

    Args:
        kind: ``"purchase_order"`` or ``"part"``.
        ion_id: The record's ION id.

    Returns:
        The key, e.g. ``"purchase_order:1042"``.

    Raises:
        ValueError: The kind is unknown or the id is empty.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not ion_id:
        raise ValueError("a record needs an ION id")
    return f"{kind}:{ion_id}"


def backoff(attempts: int) -> timedelta:
    """The wait before retry number ``attempts`` (1-based): ``min(5 min * 2**(attempts-1), 6 h)``.

    Args:
        attempts: How many times the record has failed so far (>= 1).

    Returns:
        The delay after the last failure before the record is due again.
    """
    exponent = max(attempts, 1) - 1
    if exponent >= 16:  # 5 min * 2**16 is far past the cap; avoid huge timedeltas
        return BACKOFF_CAP
    return min(BACKOFF_BASE * (1 << exponent), BACKOFF_CAP)


def payload_sha256(payload: Mapping[str, Any]) -> str:
    """A stable sha256 of a QBO payload, for :attr:`LedgerEntry.payload_sha256`.

    Keys are sorted and whitespace removed; ``Decimal`` values are written in plain notation with
    trailing zeros removed, so ``Decimal("10.50")`` and ``Decimal("10.5")`` hash alike.

    Args:
        payload: The JSON body written to QBO.

    Returns:
        The hex digest.
    """
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_canonical_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical_default(value: object) -> object:
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "0") else text
    if isinstance(value, datetime):
        return _dt_out(value, "payload")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# ---- records ---------------------------------------------------------------------------------


@dataclass
class QueueEntry:
    """One record that failed and waits for a retry (on a schedule) or for a person (parked).

    Attributes:
        kind: ``"purchase_order"`` or ``"part"``.
        ion_id: The ION id of the record.
        code: The error code (``RecordError.code``: ``mapping``, ``transient``, ...).
        message: The error message, for ``ionqbo status``.
        hint: What to do about it, if known.
        field: The field the error is about, if known.
        attempts: How many times the record failed since it was queued (or released).
        first_failed_at: When it first failed.
        last_failed_at: When it last failed.
        next_retry_at: When a retryable failure is due again.
        parked: True when a person must act (a mapping gap); parked records are re-checked by every
            sync (mapping is pure and cheap) and never retried on a backoff schedule.
    """

    kind: str
    ion_id: str
    code: str
    message: str
    hint: str | None
    field: str | None
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    next_retry_at: datetime
    parked: bool = False

    @property
    def key(self) -> str:
        """The queue key, ``"<kind>:<ion_id>"``."""
        return queue_key(self.kind, self.ion_id)


@dataclass(slots=True)  # one per record ever synced: kept small
class LedgerEntry:
    """What was last written to QBO for one ION record (idempotency and change detection).

    Attributes:
        qbo_id: The QBO entity Id.
        sync_token: The last SyncToken seen for it.
        payload_sha256: :func:`payload_sha256` of the last payload written.
        ion_updated_at: The ION ``updatedAt`` of the version synced.
        ion_etag: The ION ``_etag`` of the version synced.
        synced_at: When it was written.
    """

    qbo_id: str
    sync_token: str
    payload_sha256: str
    ion_updated_at: datetime | None
    ion_etag: str | None
    synced_at: datetime


@dataclass
class State:
    """Everything a sync remembers between runs.

    ``last_run``, ``cache`` and ``alerts`` are free-form JSON: strings, numbers, booleans, None,
    lists and dicts with string keys. For convenience, aware datetimes and Decimals are accepted
    and saved as strings (ISO 8601 with offset, plain decimal notation); they load back as strings.

    Attributes:
        version: The state format version (:data:`STATE_VERSION`).
        cursors: Per stream (``"parts"``, ``"purchase_orders"``), the ION ``updatedAt`` up to which
            every record has been handled; timezone-aware.
        queue: Failed records, keyed ``"<kind>:<ion_id>"``.
        ledger: Records written to QBO, keyed ``"<kind>:<ion_id>"``: a dict for a state built in
            memory, the store's :class:`SqliteLedger` for one it loaded.
        last_run: Summary of the last run (start, end, duration, counts, exit_code, dry_run).
        cache: Cached QBO reference data, each section with its ``fetched_at``.
        alerts: Free-form notification bookkeeping.
    """

    version: int = STATE_VERSION
    cursors: dict[str, datetime] = field(default_factory=dict)
    queue: dict[str, QueueEntry] = field(default_factory=dict)
    ledger: MutableMapping[str, LedgerEntry] = field(default_factory=dict)
    last_run: dict[str, Any] | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    alerts: dict[str, Any] = field(default_factory=dict)

    # -- cursors --

    def cursor(self, stream: str) -> datetime | None:
        """The stream's cursor, or None when the stream was never synced.

        Args:
            stream: ``"parts"`` or ``"purchase_orders"``.

        Returns:
            The cursor, timezone-aware, or None.
        """
        _check_stream(stream)
        return self.cursors.get(stream)

    def advance_cursor(self, stream: str, value: datetime) -> bool:
        """Move a stream's cursor to ``value``, unless that would move it backwards.

        Args:
            stream: ``"parts"`` or ``"purchase_orders"``.
            value: The new cursor; must be timezone-aware.

        Returns:
            True if the cursor moved, False if ``value`` is not later than the current cursor.

        Raises:
            ValueError: Unknown stream, or a naive datetime.
        """
        _check_stream(stream)
        _check_aware(value, f"cursor {stream}")
        current = self.cursors.get(stream)
        if current is not None and value <= current:
            return False
        self.cursors[stream] = value
        return True

    # -- ledger --

    def ledger_tag(self) -> str | None:
        """The tag the ledger's entries were written under (the sync's settings hash), or None.

        A file ledger keeps it in the same transaction as its entries; an in-memory one (and a
        format-1 state) keeps it in ``cache[LEDGER_TAG_KEY]``.
        """
        if isinstance(self.ledger, SqliteLedger):
            return self.ledger.tag
        value = self.cache.get(LEDGER_TAG_KEY)
        return value if isinstance(value, str) else None

    def reset_ledger(self, tag: str) -> None:
        """Forget every ledger entry and tag the ledger anew (a file ledger commits at the next save)."""
        self.ledger.clear()
        if isinstance(self.ledger, SqliteLedger):
            self.ledger.tag = tag
        self.cache[LEDGER_TAG_KEY] = tag

    # -- queue --

    def record_failure(self, kind: str, ion_id: str, error: RecordError, now: datetime) -> QueueEntry:
        """Queue a failed record, or update its entry: one more attempt, new error, new due time.

        Retryable errors (``error.retryable``) are due again after :func:`backoff`; the others
        (mapping gaps, validation) are parked until their mapping appears or ``ionqbo retry``.

        Args:
            kind: ``"purchase_order"`` or ``"part"``.
            ion_id: The ION id of the record.
            error: Why it failed.
            now: The time of the failure (timezone-aware).

        Returns:
            The queue entry, as stored.
        """
        key = queue_key(kind, ion_id)
        _check_aware(now, "now")
        previous = self.queue.get(key)
        attempts = (previous.attempts if previous else 0) + 1
        parked = not error.retryable
        # A parked entry is not on a schedule; `now` keeps next_retry_at meaningful (it is "due").
        next_retry_at = now if parked else now + backoff(attempts)
        entry = QueueEntry(
            kind=kind,
            ion_id=ion_id,
            code=str(error.code),
            # The message, not str(error): the hint has its own field. Record errors are built
            # from ION/QBO record data and redacted response excerpts, never from credentials.
            message=error.message,
            hint=error.hint,
            field=error.field,
            attempts=attempts,
            first_failed_at=previous.first_failed_at if previous else now,
            last_failed_at=now,
            next_retry_at=next_retry_at,
            parked=parked,
        )
        self.queue[key] = entry
        return entry

    def record_success(self, kind: str, ion_id: str, ledger_entry: LedgerEntry) -> None:
        """Note a record as written to QBO: remove it from the queue and update the ledger.

        Args:
            kind: ``"purchase_order"`` or ``"part"``.
            ion_id: The ION id of the record.
            ledger_entry: What was written.
        """
        key = queue_key(kind, ion_id)
        self.queue.pop(key, None)
        self.ledger[key] = ledger_entry

    def due(self, kind: str, now: datetime) -> list[QueueEntry]:
        """Queued records of one kind that the sync should try now.

        That is every entry whose ``next_retry_at`` has come, plus every parked entry: mapping gaps
        stay parked until the mapping exists, so each sync re-checks them (mapping is pure). A
        ``next_retry_at`` more than :data:`BACKOFF_CAP` ahead is treated as due (a clock that was wrong).

        Args:
            kind: ``"purchase_order"`` or ``"part"``.
            now: The current time (timezone-aware).

        Returns:
            The entries, oldest due time first.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
        _check_aware(now, "now")
        # A retry time further out than the longest backoff was set by a clock that ran ahead (and
        # was put right since): it is due now, so that a wrong clock delays nothing.
        latest = now + BACKOFF_CAP
        entries = [e for e in self.queue.values()
                   if e.kind == kind and (e.parked or e.next_retry_at <= now or e.next_retry_at > latest)]
        return sorted(entries, key=lambda e: (min(e.next_retry_at, latest), e.ion_id))

    def release(self, ids: Iterable[str] | None = None) -> int:
        """Make queued records due at the next sync (``ionqbo retry``): unpark, reset the backoff.

        Args:
            ids: ION ids (``"1042"``) or queue keys (``"purchase_order:1042"``); None for all.

        Returns:
            How many queue entries were released.
        """
        wanted = None if ids is None else set(ids)
        released = 0
        for key, entry in self.queue.items():
            if wanted is not None and key not in wanted and entry.ion_id not in wanted:
                continue
            entry.parked = False
            entry.attempts = 0  # the next failure starts the backoff again at 5 minutes
            # Due at once without reading the clock: the last failure is in the past of any run.
            entry.next_retry_at = entry.last_failed_at
            released += 1
        return released

    def unknown_ids(self, ids: Iterable[str]) -> list[str]:
        """The ids (ION ids or queue keys) that match no queue entry, for ``ionqbo retry`` to report.

        Args:
            ids: ION ids or queue keys.

        Returns:
            Those that match nothing, in the order given.
        """
        known = set(self.queue) | {e.ion_id for e in self.queue.values()}
        return [i for i in ids if i not in known]


def _check_stream(stream: str) -> None:
    if stream not in STREAMS:
        raise ValueError(f"unknown cursor stream {stream!r}; expected one of {', '.join(STREAMS)}")


def _check_aware(value: datetime, what: str) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")


# ---- serialization -----------------------------------------------------------------------------


def _dt_out(value: datetime, where: str) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise StateError(f"cannot save state: {where} is a naive datetime ({value.isoformat()})")
    return value.astimezone(UTC).isoformat()


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return _dt_out(value, "a free-form value")
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _opt_dt_out(value: datetime | None, where: str) -> str | None:
    return None if value is None else _dt_out(value, where)


def state_to_dict(state: State) -> dict[str, Any]:
    """The JSON document for a state (what :meth:`StateStore.save` writes, before encoding).

    The ledger is not in it: :meth:`StateStore.save` writes it to its SQLite file.

    Args:
        state: The state.

    Returns:
        A dict of JSON-compatible values (free-form sections are passed through as they are).
    """
    return {
        "version": STATE_VERSION,
        "cursors": {name: _dt_out(value, f"cursors.{name}") for name, value in state.cursors.items()},
        "queue": {
            key: {
                "kind": e.kind,
                "ion_id": e.ion_id,
                "code": e.code,
                "message": e.message,
                "hint": e.hint,
                "field": e.field,
                "attempts": e.attempts,
                "first_failed_at": _dt_out(e.first_failed_at, f"queue.{key}.first_failed_at"),
                "last_failed_at": _dt_out(e.last_failed_at, f"queue.{key}.last_failed_at"),
                "next_retry_at": _dt_out(e.next_retry_at, f"queue.{key}.next_retry_at"),
                "parked": e.parked,
            }
            for key, e in state.queue.items()
        },
        "last_run": state.last_run,
        "cache": state.cache,
        "alerts": state.alerts,
    }


class _Reader:
    """Typed access to a loaded JSON document; every problem becomes a StateError naming the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> StateError:
        return StateError(
            f"state file {self.path} is damaged: {where}: {problem}",
            hint=f"restore {self.path} from a backup, or move it aside to start afresh "
            "(the next sync re-reads ION from the beginning; writes to QBO are idempotent)",
        )

    def obj(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {type(value).__name__}")
        return value

    def str_(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"expected a string, got {type(value).__name__}")
        return value

    def opt_str(self, value: object, where: str) -> str | None:
        return None if value is None else self.str_(value, where)

    def int_(self, value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"expected an integer, got {type(value).__name__}")
        return value

    def bool_(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {type(value).__name__}")
        return value

    def dt(self, value: object, where: str) -> datetime:
        text = self.str_(value, where)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise self.fail(where, f"not an ISO 8601 time: {text[:40]!r}") from None
        if parsed.tzinfo is None:
            raise self.fail(where, f"time without a UTC offset: {text[:40]!r}")
        return parsed

    def opt_dt(self, value: object, where: str) -> datetime | None:
        return None if value is None else self.dt(value, where)

    def key_fields(self, value: dict[str, Any], key: str, where: str) -> tuple[str, str]:
        kind = self.str_(value.get("kind"), f"{where}.kind")
        ion_id = self.str_(value.get("ion_id"), f"{where}.ion_id")
        if kind not in KINDS:
            raise self.fail(f"{where}.kind", f"unknown record kind {kind!r}")
        if key != f"{kind}:{ion_id}":
            raise self.fail(where, f"key does not match kind {kind!r} and ion_id {ion_id!r}")
        return kind, ion_id


def state_from_dict(data: Mapping[str, Any], path: Path) -> State:
    """Build a State from a current-version JSON document.

    Args:
        data: The decoded document (``"version"`` must be :data:`STATE_VERSION`).
        path: The file it came from, for error messages.

    Returns:
        The state.

    Raises:
        StateError: A field is missing or has the wrong type.
    """
    r = _Reader(path)
    cursors: dict[str, datetime] = {}
    for name, value in r.obj(data.get("cursors", {}), "cursors").items():
        if name not in STREAMS:
            raise r.fail(f"cursors.{name}", f"unknown stream; expected one of {', '.join(STREAMS)}")
        cursors[name] = r.dt(value, f"cursors.{name}")
    queue: dict[str, QueueEntry] = {}
    for key, raw in r.obj(data.get("queue", {}), "queue").items():
        where = f"queue.{key}"
        e = r.obj(raw, where)
        kind, ion_id = r.key_fields(e, key, where)
        queue[key] = QueueEntry(
            kind=kind,
            ion_id=ion_id,
            code=r.str_(e.get("code"), f"{where}.code"),
            message=r.str_(e.get("message"), f"{where}.message"),
            hint=r.opt_str(e.get("hint"), f"{where}.hint"),
            field=r.opt_str(e.get("field"), f"{where}.field"),
            attempts=r.int_(e.get("attempts"), f"{where}.attempts"),
            first_failed_at=r.dt(e.get("first_failed_at"), f"{where}.first_failed_at"),
            last_failed_at=r.dt(e.get("last_failed_at"), f"{where}.last_failed_at"),
            next_retry_at=r.dt(e.get("next_retry_at"), f"{where}.next_retry_at"),
            parked=r.bool_(e.get("parked", False), f"{where}.parked"),
        )
    # Only a document upgraded from version 1 has its ledger inline; it is moved to SQLite at the next save.
    ledger: dict[str, LedgerEntry] = {}
    for key, raw in r.obj(data.get("ledger", {}), "ledger").items():
        where = f"ledger.{key}"
        e = r.obj(raw, where)
        _check_ledger_key(key, functools.partial(r.fail, where))
        ledger[key] = LedgerEntry(
            qbo_id=r.str_(e.get("qbo_id"), f"{where}.qbo_id"),
            sync_token=r.str_(e.get("sync_token"), f"{where}.sync_token"),
            payload_sha256=r.str_(e.get("payload_sha256"), f"{where}.payload_sha256"),
            ion_updated_at=r.opt_dt(e.get("ion_updated_at"), f"{where}.ion_updated_at"),
            ion_etag=r.opt_str(e.get("ion_etag"), f"{where}.ion_etag"),
            synced_at=r.dt(e.get("synced_at"), f"{where}.synced_at"),
        )
    last_run = data.get("last_run")
    if last_run is not None:
        last_run = r.obj(last_run, "last_run")
    unknown = sorted(set(data) - {"version", "cursors", "queue", "ledger", "last_run", "cache", "alerts"})
    if unknown:
        log.warning("state file %s: ignoring unknown sections %s", path, ", ".join(unknown))
    return State(
        version=STATE_VERSION,
        cursors=cursors,
        queue=queue,
        ledger=ledger,
        last_run=last_run,
        cache=r.obj(data.get("cache", {}), "cache"),
        alerts=r.obj(data.get("alerts", {}), "alerts"),
    )


# ---- upgrades ----------------------------------------------------------------------------------


def _upgrade_0(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Version 0: the unversioned draft format (style.md R10): cursors plus a ``retry_ids`` list.

    Each ``"<kind>:<ion_id>"`` in ``retry_ids`` becomes a queue entry that is due at once. Its
    times are the file's modification time: the clock is not read, and that time is in the past
    of any run.
    """
    r = _Reader(path)
    stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()
    queue: dict[str, Any] = {}
    for i, raw in enumerate(data.get("retry_ids") or []):
        key = r.str_(raw, f"retry_ids[{i}]")
        kind, _, ion_id = key.partition(":")
        if kind not in KINDS or not ion_id:
            raise r.fail(f"retry_ids[{i}]", f"not '<kind>:<ion_id>': {key[:60]!r}")
        queue[key] = {
            "kind": kind,
            "ion_id": ion_id,
            "code": "upgraded",
            "message": "queued for retry before the state format upgrade; the reason was not kept",
            "hint": None,
            "field": None,
            "attempts": 1,
            "first_failed_at": stamp,
            "last_failed_at": stamp,
            "next_retry_at": stamp,
            "parked": False,
        }
    upgraded = {k: v for k, v in data.items() if k != "retry_ids"}
    upgraded["queue"] = queue
    upgraded["version"] = 1
    return upgraded


def _upgrade_1(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Version 1 kept the ledger in the JSON document; it stays there until the next save moves it."""
    return {**data, "version": 2}


# version -> function that turns a document of that version into one of the next version
_UPGRADES: dict[int, Callable[[dict[str, Any], Path], dict[str, Any]]] = {0: _upgrade_0, 1: _upgrade_1}


def _check_ledger_key(key: str, fail: Callable[[str], Exception]) -> None:
    kind, _, ion_id = key.partition(":")
    if kind not in KINDS or not ion_id:
        raise fail("key is not '<kind>:<ion_id>'")


# ---- the ledger --------------------------------------------------------------------------------


class SqliteLedger(MutableMapping[str, LedgerEntry]):
    """The write ledger in an SQLite file: a mapping ``"<kind>:<ion_id>"`` -> :class:`LedgerEntry`.

    Reads go to the file (SQLite's page cache is bounded), so memory stays flat however many records
    a company has. Writes join one transaction that :meth:`commit` ends (:meth:`StateStore.save`
    does, before it writes the state file): a crash loses at most the entries since the last save,
    and the ledger only saves QBO requests (lookups are the truth), so a lost entry costs one lookup.
    The file is created 0600 at the first write, with a rollback journal (``-journal``) that the next
    writer rolls back after a crash. ``tag`` (the sync's settings hash) is kept in the same file and
    the same transaction as the entries it vouches for.

    A ``read_only`` ledger (a dry run) opens the file read-only and never creates, changes or recovers
    anything; if it cannot read the file (say a crashed writer left a journal to roll back) it reads
    as empty, which costs lookups and nothing else.
    """

    # Fixed SQL: values only ever travel as parameters.
    _SELECT = "SELECT qbo_id, sync_token, payload_sha256, ion_updated_at, ion_etag, synced_at FROM ledger WHERE key = ?"
    _UPSERT = (
        "INSERT OR REPLACE INTO ledger (key, qbo_id, sync_token, payload_sha256, ion_updated_at, ion_etag, synced_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS ledger (key TEXT PRIMARY KEY, qbo_id TEXT NOT NULL, sync_token TEXT NOT NULL,"
        " payload_sha256 TEXT NOT NULL, ion_updated_at TEXT, ion_etag TEXT, synced_at TEXT NOT NULL) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID",
    )

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._db: sqlite3.Connection | None = None
        self._unreadable = False

    def __repr__(self) -> str:
        return f"SqliteLedger({str(self.path)!r})"

    # -- connection --

    def _fail(self, exc: BaseException) -> StateError:
        fault = local_fault(exc, self.path)
        if isinstance(fault, DiskFullError | StateDirError):
            return fault
        return StateError(
            f"cannot use the ledger {self.path}: {exc}",
            hint=f"move {self.path} (and {self.path.name}-journal, if there is one) aside: it only saves QBO "
            "requests (the next sync looks every record up in QBO and writes nothing twice); check free space "
            "and that the state directory belongs to the user running ionqbo",
        )

    def _conn(self, *, write: bool) -> sqlite3.Connection | None:
        if write and self.read_only:
            raise StateError(f"the ledger {self.path} was opened read-only (a dry run) and cannot be written")
        if self._db is not None:
            return self._db
        if self._unreadable or (not write and not self.path.exists()):
            return None
        try:
            if self.read_only:
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
                return self._db
            ensure_private_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, _FILE_MODE)
            try:
                os.fchmod(fd, _FILE_MODE)
            finally:
                os.close(fd)
            db = sqlite3.connect(self.path, timeout=30)
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=FULL")
            for statement in self._SCHEMA:
                db.execute(statement)
            db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise self._fail(exc) from exc
        self._db = db
        return db

    def _run(self, sql: str, args: tuple[Any, ...] = (), *, write: bool = False) -> list[Any]:
        db = self._conn(write=write)
        if db is None:
            return []
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            if self.read_only:  # a dry run does without the ledger rather than touch it
                log.warning("cannot read the ledger %s (%s); this dry run looks every record up in QBO", self.path, exc)
                self.close()
                self._unreadable = True
                return []
            raise self._fail(exc) from exc

    def commit(self) -> None:
        """End the open transaction: what was written since the last commit is on disk."""
        if self._db is not None and self._db.in_transaction:
            try:
                self._db.commit()
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc

    def close(self) -> None:
        """Close the file, dropping what was not committed (reopened on the next use)."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()
            self._db.close()
            self._db = None

    @property
    def tag(self) -> str | None:
        """A caller's label for the entries (the sync's settings hash); None when never set."""
        rows = self._run("SELECT value FROM meta WHERE key = 'tag'")
        return None if not rows or rows[0][0] is None else str(rows[0][0])

    @tag.setter
    def tag(self, value: str | None) -> None:
        self._run("INSERT OR REPLACE INTO meta (key, value) VALUES ('tag', ?)", (value,), write=True)

    # -- the mapping --

    def _entry(self, key: str, row: tuple[Any, ...]) -> LedgerEntry:
        try:
            return LedgerEntry(
                qbo_id=str(row[0]),
                sync_token=str(row[1]),
                payload_sha256=str(row[2]),
                ion_updated_at=_aware(datetime.fromisoformat(row[3])) if row[3] is not None else None,
                ion_etag=None if row[4] is None else str(row[4]),
                synced_at=_aware(datetime.fromisoformat(row[5])),
            )
        except (TypeError, ValueError) as exc:
            raise StateError(f"the ledger {self.path} is damaged: {key}: {exc}", hint=self._fail(exc).hint) from exc

    def __getitem__(self, key: str) -> LedgerEntry:
        if not isinstance(key, str):
            raise KeyError(key)
        rows = self._run(self._SELECT, (key,))
        if not rows:
            raise KeyError(key)
        return self._entry(key, rows[0])

    def __setitem__(self, key: str, entry: LedgerEntry) -> None:
        _check_ledger_key(key, ValueError)
        row = (
            key,
            entry.qbo_id,
            entry.sync_token,
            entry.payload_sha256,
            _opt_dt_out(entry.ion_updated_at, f"ledger.{key}.ion_updated_at"),
            entry.ion_etag,
            _dt_out(entry.synced_at, f"ledger.{key}.synced_at"),
        )
        self._run(self._UPSERT, row, write=True)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._run("DELETE FROM ledger WHERE key = ?", (key,), write=True)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self._run("SELECT 1 FROM ledger WHERE key = ?", (key,)))

    def __iter__(self) -> Iterator[str]:
        return iter([row[0] for row in self._run("SELECT key FROM ledger ORDER BY key")])

    def __len__(self) -> int:
        rows = self._run("SELECT COUNT(*) FROM ledger")
        return int(rows[0][0]) if rows else 0

    def clear(self) -> None:
        if self._conn(write=False) is not None:
            self._run("DELETE FROM ledger", write=True)

    def replace_all(self, entries: Mapping[str, LedgerEntry], *, tag: str | None = None) -> None:
        """Make the ledger hold exactly ``entries`` and ``tag`` (committed at the next :meth:`commit`)."""
        if not entries and tag is None and self._conn(write=False) is None:
            return  # nothing to hold and no file: create none
        self.clear()
        self.tag = tag
        for key, entry in entries.items():
            self[key] = entry


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value.isoformat()} has no UTC offset")
    return value


# ---- the store ---------------------------------------------------------------------------------


class StateStore:
    """Loads and saves :class:`State` as versioned JSON, atomically, mode 0600.

    Saves are meant to happen under :class:`SyncLock` (one writer at a time); two processes
    saving at once cannot corrupt the file, but the last one wins.

    Args:
        path: The state file, e.g. ``$IONQBO_STATE_DIR/state.json``.
        read_only: Open the ledger read-only (a dry run); the state file is only ever read by load.
    """

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only

    @property
    def ledger_path(self) -> Path:
        """The ledger's SQLite file beside the state file (``state.json`` -> ``state.ledger.sqlite``)."""
        return self.path.with_name(f"{self.path.stem}.ledger.sqlite")

    def load(self) -> State:
        """Read the state file.

        Returns:
            The state; an empty State when the file does not exist yet.

        Raises:
            StateError: The file cannot be read, is not valid JSON, is damaged, or was written by a
                newer ionqbo. The file is left as it is.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return State(ledger=SqliteLedger(self.ledger_path, read_only=self.read_only))
        except NotADirectoryError as exc:
            raise local_fault(exc, self.path) from None
        except OSError as exc:
            raise StateError(
                f"cannot read state file {self.path}: {exc.strerror or exc}",
                hint="check that the file and its directory belong to the user running ionqbo",
            ) from exc
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StateError(
                f"state file {self.path} is not valid JSON ({exc})",
                hint=f"restore {self.path} from a backup, or move it aside to start afresh "
                "(the next sync re-reads ION from the beginning; writes to QBO are idempotent)",
            ) from None
        if not isinstance(data, dict):
            raise _Reader(self.path).fail("top level", f"expected an object, got {type(data).__name__}")
        version = data.get("version", 0)  # the unversioned draft format is version 0
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise _Reader(self.path).fail("version", f"not a format version: {version!r}")
        if version > STATE_VERSION:
            raise StateError(
                f"state file {self.path} has format version {version}; this ionqbo understands versions up to {STATE_VERSION}",
                hint="upgrade ionqbo to the version that wrote this file (pip install -U ionqbo)",
            )
        if version < STATE_VERSION:
            log.warning(
                "state file %s has format version %d; upgrading it to version %d (saved at the next write)",
                self.path,
                version,
                STATE_VERSION,
            )
            while version < STATE_VERSION:
                data = _UPGRADES[version](data, self.path)
                version = data["version"]
        state = state_from_dict(data, self.path)
        if "ledger" not in data:  # else: upgraded from version 1, moved to SQLite at the next save
            state.ledger = SqliteLedger(self.ledger_path, read_only=self.read_only)
        return state

    def save(self, state: State) -> None:
        """Commit the ledger, then write the state file atomically (:func:`replace_file`).

        The ledger goes first: its entries are facts about writes QBO already has, so a crash between
        the two leaves nothing wrong, only a cursor that reads a few records again. The files are
        created 0600, and their directory 0700 when it does not exist yet.

        Args:
            state: The state to write.

        Raises:
            StateError: The state holds something that is not JSON, or the file cannot be written.
                The previous file is then left as it was.
        """
        try:
            text = json.dumps(state_to_dict(state), indent=2, sort_keys=True, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise StateError(f"cannot save state to {self.path}: {exc}") from exc
        ledger = state.ledger
        if isinstance(ledger, SqliteLedger) and os.path.abspath(ledger.path) == os.path.abspath(self.ledger_path):
            ledger.commit()
        else:  # built in memory, or upgraded from version 1: the ledger moves into the file, whole or not at all
            target = SqliteLedger(self.ledger_path)
            try:
                target.replace_all(ledger, tag=state.ledger_tag())
                target.commit()
            except BaseException:
                target.close()
                raise
            state.ledger = target  # later saves write only what changed
        try:
            replace_file(self.path, (text + "\n").encode("utf-8"))
        except OSError as exc:
            raise local_fault(exc, self.path) from None


def replace_file(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data`` (the state file, the QBO token store).

    A 0600 temp file beside it (one name per process; one left by a killed writer is swept), every
    byte written, fsync, ``os.replace``, then an fsync of the directory, which is created 0700 when
    missing. On any error the temp file is removed and the old file is left as it was.
    """
    directory = path.parent
    ensure_private_dir(directory)
    _sweep_stale_temps(path)
    tmp = _temp_path(path)
    fd = os.open(tmp, _TEMP_FLAGS, _FILE_MODE)
    try:
        try:
            os.fchmod(fd, _FILE_MODE)  # O_CREAT's mode is cut by the umask; make it exact
            _write_fully(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(directory)


def _write_fully(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a write may be short)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` (and its parents) if missing; a directory created here gets mode 0700.

    An existing directory is left as it is (it may be one the user chose, such as a shared path).

    Args:
        directory: The directory.
    """
    if directory.is_dir():
        return
    directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(directory, _DIR_MODE)  # mkdir's mode is cut by the umask


def _temp_path(path: Path) -> Path:
    # One temp name per process: a writer killed mid-save leaves at most one file, swept later.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _sweep_stale_temps(path: Path) -> None:
    """Remove temp files left by writers that were killed mid-save (their pid no longer runs)."""
    prefix = f".{path.name}."
    for candidate in path.parent.glob(f"{prefix}*.tmp"):
        pid_text = candidate.name[len(prefix) : -len(".tmp")]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        if _pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            candidate.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on a directory; the rename is done
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


# ---- local faults ---------------------------------------------------------------------------------

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def local_fault(exc: BaseException, path: Path | str, *, setting: str = "IONQBO_STATE_DIR") -> StateError:
    """One plain account of a local fault on ``path``: what, why, and the fix.

    A full disk (ENOSPC, a quota, SQLite's "database or disk is full") may recover: exit 5. A
    read-only or missing directory, or a path that is not a directory, is a setting to fix: exit 2.
    Every write ionqbo makes is atomic (a temp file then a rename; SQLite's journal), so what was
    saved before stands and nothing is half-written.
    """
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    code = exc.errno if isinstance(exc, OSError) else None
    text = str(exc).lower()
    cause = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or type(exc).__name__
    who = f"uid {os.getuid()}" if hasattr(os, "getuid") else "the user running ionqbo"
    kept = "nothing was half-written: what the last save holds stands"
    if code in _FULL or "disk is full" in text or "database or disk is full" in text:
        return DiskFullError(
            f"cannot write {path}: the disk is full ({cause}); {kept}",
            hint=f"free space on the filesystem that holds {directory} (`df -h {directory}`); the next run resumes")
    if code in _READ_ONLY or "readonly database" in text or "read-only" in text:
        return StateDirError(
            f"cannot write {path} ({setting}): {cause}; nothing was written there",
            hint=f"make {directory} writable for the user running ionqbo ({who}), or set {setting} to a "
                 "writable directory")
    if code in (errno.ENOTDIR, errno.EEXIST) or isinstance(exc, NotADirectoryError | FileExistsError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        return StateDirError(
            f"{setting}: {blocker} is not a directory, so {path} cannot be used",
            hint=f"set {setting} to a directory, or move the file {blocker} aside")
    if code == errno.EISDIR or isinstance(exc, IsADirectoryError):
        return StateDirError(
            f"cannot write {path} ({setting}): a directory stands where ionqbo keeps that file; "
            "nothing was written there",
            hint=f"move the directory {path} aside (ionqbo makes the file again), or set {setting} to another "
                 "directory")
    if code == errno.ENOENT:
        return StateDirError(
            f"cannot use {path} ({setting}): its directory {directory} does not exist and could not be made "
            f"({cause})",
            hint=f"create {directory} (owned by the user running ionqbo), or set {setting} to an existing directory")
    return StateError(f"cannot use {path}: {cause}",
                      hint=f"check the filesystem that holds {directory} and that it belongs to {who}")


# ---- the lock ----------------------------------------------------------------------------------


class SyncLock:
    """One sync at a time: an exclusive, non-blocking ``flock`` on a lock file (created 0600).

    The kernel drops the lock when the holding process dies, however it dies, so a crashed run
    never blocks the next one. The holder writes its pid and start time into the file so that a
    second run can say who holds it. The file is never deleted: deleting a lock file races with a
    process that has opened it and is about to lock it.

    Example::

        with SyncLock(state_dir / "sync.lock"):
            run_sync(...)

    Args:
        path: The lock file, e.g. ``$IONQBO_STATE_DIR/sync.lock``.
        clock: Returns the current time, for the start time written into the lock file.
    """

    def __init__(self, path: Path | str, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.path = Path(path)
        self._clock = clock
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or fail at once.

        Raises:
            LockedError: Another process (or another SyncLock) holds it; the message names its pid
                and start time.
            StateError: The lock file cannot be opened.
            RuntimeError: This object already holds the lock.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this SyncLock")
        try:
            ensure_private_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, _FILE_MODE)
        except OSError as exc:
            raise local_fault(exc, self.path) from None
        with contextlib.suppress(OSError):
            os.fchmod(fd, _FILE_MODE)  # O_CREAT's mode is cut by the umask; make it exact
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockedError(
                    f"another ionqbo sync holds the lock {self.path} ({holder}); nothing was done",
                    hint="wait for it to finish; the lock is released when that process exits",
                ) from None
            raise StateError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        try:
            started = self._clock()
            info = json.dumps({"pid": os.getpid(), "started_at": _dt_out(started, "lock start time")})
            os.ftruncate(fd, 0)
            os.pwrite(fd, (info + "\n").encode("utf-8"), 0)
        except OSError as exc:
            os.close(fd)  # closing drops the lock
            raise local_fault(exc, self.path) from None
        except BaseException:
            os.close(fd)  # closing drops the lock
            raise
        self._fd = fd

    def release(self) -> None:
        """Release the lock (clearing the holder details); does nothing if not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """Describe the lock holder from what it wrote into the lock file."""
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode("utf-8"))
        pid = int(info["pid"])
        started = str(info["started_at"])
    except (OSError, ValueError, KeyError, TypeError):
        # The holder may have locked the file but not written its details yet.
        return "pid unknown, started at an unknown time"
    return f"pid {pid}, started {started}"
