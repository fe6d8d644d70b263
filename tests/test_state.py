"""Tests for ionqbo.state: cursors, the queue, versioned atomic saves, file modes and the sync lock."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from ionqbo.errors import (
    ExitCode,
    LockedError,
    MappingError,
    QboRejectedError,
    RecordError,
    StateError,
    TransientRecordError,
)
from ionqbo.state import (
    STATE_VERSION,
    LedgerEntry,
    SqliteLedger,
    State,
    StateStore,
    SyncLock,
    backoff,
    payload_sha256,
    queue_key,
    state_to_dict,
)

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CET = timezone(timedelta(hours=2))


def _names(directory: Path) -> list[str]:
    """The files in ``directory``, but the ledger's SQLite files (checked apart)."""
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("state.ledger.sqlite"))


def _mapping_gap(ion_id: str = "1042") -> MappingError:
    return MappingError(
        "supplier 'Acme Corp' has no QBO vendor",
        kind="purchase_order",
        ion_id=ion_id,
        field="supplier",
        hint="create the vendor 'Acme Corp' in QBO (Expenses > Vendors)",
    )


def _transient(ion_id: str = "1042") -> TransientRecordError:
    return TransientRecordError("QBO timed out writing the PO", kind="purchase_order", ion_id=ion_id)


def _ledger(qbo_id: str = "77") -> LedgerEntry:
    return LedgerEntry(
        qbo_id=qbo_id,
        sync_token="3",
        payload_sha256=payload_sha256({"DocNumber": "1042"}),
        ion_updated_at=T0 - timedelta(minutes=3),
        ion_etag="etag-abc",
        synced_at=T0,
    )


def _full_state() -> State:
    state = State()
    state.advance_cursor("parts", T0 - timedelta(hours=1))
    state.advance_cursor("purchase_orders", datetime(2024, 5, 1, 13, 30, 15, 123456, tzinfo=CET))
    state.record_failure("purchase_order", "1042", _mapping_gap(), T0)
    state.record_failure("part", "P-9", _transient("P-9"), T0)
    state.record_success("purchase_order", "1001", _ledger())
    state.last_run = {
        "start": "2024-05-01T12:00:00+00:00",
        "exit_code": 3,
        "dry_run": False,
        "counts": {"a": 1},
    }
    state.cache = {"vendors": {"fetched_at": "2024-05-01T11:00:00+00:00", "rows": [{"Id": "5", "Name": "Ä"}]}}
    state.alerts = {"sent": ["purchase_order:1042"]}
    return state


# ---- round trip and the document ---------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    state = _full_state()
    store.save(state)
    loaded = store.load()
    assert loaded == state
    assert loaded.cursors["purchase_orders"] == datetime(2024, 5, 1, 11, 30, 15, 123456, tzinfo=UTC)
    assert loaded.cursors["purchase_orders"].tzinfo is not None
    assert loaded.queue["purchase_order:1042"].parked is True
    assert loaded.ledger["purchase_order:1001"].ion_etag == "etag-abc"
    # a second save of the loaded state gives the same bytes (stable key order, stable formatting)
    first = store.path.read_bytes()
    store.save(loaded)
    assert store.path.read_bytes() == first


def test_saved_document_holds_exactly_what_was_put_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QBO_CLIENT_SECRET", "s3cr3t-client-secret-value")
    monkeypatch.setenv("QBO_REFRESH_TOKEN", "AB11-refresh-token-value")
    store = StateStore(tmp_path / "state.json")
    store.save(_full_state())
    text = store.path.read_text(encoding="utf-8")
    assert json.loads(text) == {
        "version": 2,
        "cursors": {
            "parts": "2024-05-01T11:00:00+00:00",
            "purchase_orders": "2024-05-01T11:30:15.123456+00:00",
        },
        "queue": {
            "part:P-9": {
                "kind": "part",
                "ion_id": "P-9",
                "code": "transient",
                "message": "QBO timed out writing the PO",
                "hint": None,
                "field": None,
                "attempts": 1,
                "first_failed_at": "2024-05-01T12:00:00+00:00",
                "last_failed_at": "2024-05-01T12:00:00+00:00",
                "next_retry_at": "2024-05-01T12:05:00+00:00",
                "parked": False,
            },
            "purchase_order:1042": {
                "kind": "purchase_order",
                "ion_id": "1042",
                "code": "mapping",
                "message": "supplier 'Acme Corp' has no QBO vendor",
                "hint": "create the vendor 'Acme Corp' in QBO (Expenses > Vendors)",
                "field": "supplier",
                "attempts": 1,
                "first_failed_at": "2024-05-01T12:00:00+00:00",
                "last_failed_at": "2024-05-01T12:00:00+00:00",
                "next_retry_at": "2024-05-01T12:00:00+00:00",
                "parked": True,
            },
        },
        "last_run": {
            "start": "2024-05-01T12:00:00+00:00",
            "exit_code": 3,
            "dry_run": False,
            "counts": {"a": 1},
        },
        "cache": {"vendors": {"fetched_at": "2024-05-01T11:00:00+00:00", "rows": [{"Id": "5", "Name": "Ä"}]}},
        "alerts": {"sent": ["purchase_order:1042"]},
    }
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"  # stable key order
    # the ledger is in its SQLite file beside the document
    assert store.ledger_path == tmp_path / "state.ledger.sqlite"
    assert dict(store.load().ledger) == {"purchase_order:1001": _ledger()}
    assert stat.S_IMODE(store.ledger_path.stat().st_mode) == 0o600
    store.save(store.load())
    assert store.path.read_text(encoding="utf-8") == text
    for secret in ("s3cr3t-client-secret-value", "AB11-refresh-token-value"):
        assert secret not in text


def test_free_form_datetimes_and_decimals_are_saved_as_strings(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    state = State(last_run={"start": datetime(2024, 5, 1, 14, 0, tzinfo=CET), "amount": Decimal("10.50")})
    store.save(state)
    assert store.load().last_run == {"start": "2024-05-01T12:00:00+00:00", "amount": "10.50"}


@pytest.mark.parametrize(
    ("state", "needle"),
    [
        pytest.param(State(cache={"x": object()}), "not JSON serializable", id="object"),
        pytest.param(State(alerts={"at": datetime(2024, 1, 1)}), "naive datetime", id="naive-free-form"),
        pytest.param(State(cursors={"parts": datetime(2024, 1, 1)}), "cursors.parts", id="naive-cursor"),
    ],
)
def test_unsaveable_state_raises_and_keeps_previous_file(tmp_path: Path, state: State, needle: str) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(_full_state())
    before = store.path.read_bytes()
    with pytest.raises(StateError, match=needle):
        store.save(state)
    assert store.path.read_bytes() == before
    assert _names(tmp_path) == ["state.json"]


def test_load_missing_file_gives_empty_state_and_writes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "sub" / "state.json")
    assert store.load() == State(version=STATE_VERSION, cursors={}, queue={}, ledger={}, last_run=None, cache={}, alerts={})
    assert not (tmp_path / "sub").exists()


# ---- cursors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "new", "moved", "expected"),
    [
        pytest.param(None, T0, True, T0, id="first"),
        pytest.param(T0, T0 + timedelta(seconds=1), True, T0 + timedelta(seconds=1), id="forward"),
        pytest.param(T0, T0 - timedelta(days=30), False, T0, id="backwards-ignored"),
        pytest.param(T0, T0, False, T0, id="same"),
        # 13:00+02:00 is 11:00 UTC: earlier than T0 although the wall time is later
        pytest.param(T0, datetime(2024, 5, 1, 13, 0, tzinfo=CET), False, T0, id="backwards-other-offset"),
        pytest.param(T0, datetime(2024, 5, 1, 15, 0, tzinfo=CET), True, T0 + timedelta(hours=1), id="fwd-offset"),
    ],
)
def test_cursor_never_moves_backwards(current: datetime | None, new: datetime, moved: bool, expected: datetime) -> None:
    state = State()
    if current is not None:
        state.cursors["purchase_orders"] = current
    assert state.advance_cursor("purchase_orders", new) is moved
    assert state.cursor("purchase_orders") == expected
    assert state.cursor("parts") is None


@pytest.mark.parametrize(
    ("stream", "value", "needle"),
    [
        pytest.param("orders", T0, "unknown cursor stream", id="unknown-stream"),
        pytest.param("parts", datetime(2024, 5, 1), "timezone-aware", id="naive"),
    ],
)
def test_advance_cursor_rejects_bad_input(stream: str, value: datetime, needle: str) -> None:
    state = State()
    with pytest.raises(ValueError, match=needle):
        state.advance_cursor(stream, value)
    assert state.cursors == {}


# ---- queue -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "minutes"),
    [(1, 5), (2, 10), (3, 20), (4, 40), (5, 80), (6, 160), (7, 320), (8, 360), (9, 360), (60, 360)],
)
def test_backoff_doubles_from_five_minutes_up_to_six_hours(attempts: int, minutes: int) -> None:
    assert backoff(attempts) == timedelta(minutes=minutes)


def test_retryable_failures_back_off_exponentially() -> None:
    state = State()
    now = T0
    seen = []
    for _ in range(9):
        entry = state.record_failure("purchase_order", "1042", _transient(), now)
        seen.append((entry.attempts, entry.next_retry_at - now))
        assert entry.parked is False
        assert entry.first_failed_at == T0
        assert entry.last_failed_at == now
        now = entry.next_retry_at  # the next run that retries it fails again
    assert [s[0] for s in seen] == list(range(1, 10))
    assert [s[1] for s in seen] == [timedelta(minutes=m) for m in (5, 10, 20, 40, 80, 160, 320, 360, 360)]
    assert list(state.queue) == ["purchase_order:1042"]


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(_mapping_gap(), id="mapping"),
        pytest.param(QboRejectedError("Amount mismatch", code="6070", field="Line"), id="qbo-rejected"),
        pytest.param(RecordError("bad record"), id="plain"),
    ],
)
def test_non_retryable_failures_are_parked(error: RecordError) -> None:
    state = State()
    entry = state.record_failure("purchase_order", "1042", error, T0)
    assert entry.parked is True
    assert entry.attempts == 1
    assert entry.code == error.code
    assert entry.message == error.message
    assert entry.hint == error.hint
    assert entry.field == error.field
    assert state.queue == {"purchase_order:1042": entry}


def test_entry_switches_between_parked_and_scheduled_and_keeps_history() -> None:
    state = State()
    state.record_failure("purchase_order", "1042", _transient(), T0)
    parked = state.record_failure("purchase_order", "1042", _mapping_gap(), T0 + timedelta(minutes=5))
    assert (parked.parked, parked.attempts, parked.code) == (True, 2, "mapping")
    again = state.record_failure("purchase_order", "1042", _transient(), T0 + timedelta(minutes=9))
    assert (again.parked, again.attempts, again.code) == (False, 3, "transient")
    assert again.next_retry_at == T0 + timedelta(minutes=9 + 20)
    assert again.first_failed_at == T0
    assert (again.hint, again.field) == (None, None)  # the old error's details do not linger


def test_record_success_clears_the_queue_and_fills_the_ledger() -> None:
    state = State()
    state.record_failure("purchase_order", "1042", _mapping_gap(), T0)
    state.record_failure("part", "1042", _transient(), T0)  # same id, other kind: kept
    state.record_success("purchase_order", "1042", _ledger("88"))
    assert list(state.queue) == ["part:1042"]
    assert state.ledger["purchase_order:1042"].qbo_id == "88"
    state.record_success("purchase_order", "1043", _ledger("89"))  # never failed: just the ledger
    assert sorted(state.ledger) == ["purchase_order:1042", "purchase_order:1043"]


def _queue_for_due() -> State:
    state = State()
    state.record_failure("purchase_order", "A", _transient("A"), T0)  # due at T0+5
    state.record_failure("purchase_order", "B", _mapping_gap("B"), T0 + timedelta(minutes=30))  # parked
    state.record_failure("purchase_order", "C", _transient("C"), T0 - timedelta(minutes=4))  # due at T0+1
    state.record_failure("part", "D", _transient("D"), T0 - timedelta(hours=1))  # other kind
    return state


@pytest.mark.parametrize(
    ("kind", "now", "expected"),
    [
        pytest.param("purchase_order", T0, ["B"], id="only-parked"),
        pytest.param("purchase_order", T0 + timedelta(minutes=1), ["C", "B"], id="boundary-included"),
        pytest.param("purchase_order", T0 + timedelta(minutes=5), ["C", "A", "B"], id="all"),
        pytest.param("part", T0 + timedelta(minutes=5), ["D"], id="other-kind"),
        pytest.param("part", T0 - timedelta(hours=1), [], id="part-not-yet"),
    ],
)
def test_due_returns_due_and_parked_entries(kind: str, now: datetime, expected: list[str]) -> None:
    assert [e.ion_id for e in _queue_for_due().due(kind, now)] == expected


def test_due_rejects_unknown_kind_and_naive_time() -> None:
    with pytest.raises(ValueError, match="unknown record kind"):
        State().due("invoice", T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        State().due("part", datetime(2024, 1, 1))


@pytest.mark.parametrize(
    ("ids", "count", "released"),
    [
        pytest.param(None, 4, {"A", "B", "C", "D"}, id="all"),
        pytest.param(["B"], 1, {"B"}, id="ion-id"),
        pytest.param(["purchase_order:A", "part:D"], 2, {"A", "D"}, id="keys"),
        pytest.param(["nope", "part:A"], 0, set(), id="unknown"),
    ],
)
def test_release_unparks_and_resets_backoff(ids: list[str] | None, count: int, released: set[str]) -> None:
    state = _queue_for_due()
    before = {k: (e.parked, e.attempts, e.next_retry_at) for k, e in state.queue.items()}
    assert state.release(ids) == count
    for key, entry in state.queue.items():
        if entry.ion_id in released:
            assert (entry.parked, entry.attempts) == (False, 0)
            assert entry.next_retry_at == entry.last_failed_at
        else:
            assert (entry.parked, entry.attempts, entry.next_retry_at) == before[key]
    # released entries are due at the very moment of their last failure, so at any later run
    last = max(e.last_failed_at for e in state.queue.values())
    due_now = {e.ion_id for kind in ("purchase_order", "part") for e in state.due(kind, last)}
    assert released <= due_now


def test_released_entry_fails_again_with_a_five_minute_backoff() -> None:
    state = State()
    for i in range(4):
        state.record_failure("part", "P", _transient("P"), T0 + timedelta(hours=i))
    assert state.release(["P"]) == 1
    entry = state.record_failure("part", "P", _transient("P"), T0 + timedelta(hours=5))
    assert (entry.attempts, entry.next_retry_at) == (1, T0 + timedelta(hours=5, minutes=5))
    assert entry.first_failed_at == T0


def test_unknown_ids() -> None:
    assert _queue_for_due().unknown_ids(["A", "part:D", "Z", "part:A"]) == ["Z", "part:A"]


@pytest.mark.parametrize(("kind", "ion_id"), [("invoice", "1"), ("part", "")])
def test_queue_key_rejects_bad_input(kind: str, ion_id: str) -> None:
    with pytest.raises(ValueError, match=r"kind|id"):
        queue_key(kind, ion_id)
    with pytest.raises(ValueError, match=r"kind|id"):
        State().record_failure(kind, ion_id, _transient(), T0)


def test_payload_sha256_is_canonical() -> None:
    a = payload_sha256({"Line": [{"Amount": Decimal("10.50")}], "DocNumber": "1"})
    assert a == payload_sha256({"DocNumber": "1", "Line": [{"Amount": Decimal("10.5")}]})
    assert a != payload_sha256({"DocNumber": "1", "Line": [{"Amount": Decimal("10.51")}]})
    assert len(a) == 64
    assert payload_sha256({"x": Decimal("0.00")}) == payload_sha256({"x": Decimal("-0")})


# ---- versioning and damaged files -----------------------------------------------------------


def _write(path: Path, content: str) -> bytes:
    path.write_text(content, encoding="utf-8")
    return path.read_bytes()


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        pytest.param('{"version": 1, "cursors": {', ["not valid JSON", "move it aside"], id="truncated"),
        pytest.param("\x00\x00\x00", ["not valid JSON"], id="zeros"),
        pytest.param("", ["not valid JSON"], id="empty"),
        pytest.param('{"version": 3}', ["format version 3", "up to 2", "upgrade ionqbo"], id="future"),
        pytest.param('{"version": "1"}', ["version", "not a format version"], id="version-string"),
        pytest.param("[1, 2]", ["top level", "expected an object"], id="list"),
        pytest.param(
            '{"version": 1, "cursors": {"parts": "2024-05-01T12:00:00"}}',
            ["cursors.parts", "offset"],
            id="naive-cursor",
        ),
        pytest.param(
            '{"version": 1, "cursors": {"orders": "2024-05-01T12:00:00Z"}}',
            ["cursors.orders"],
            id="unknown-stream",
        ),
        pytest.param(
            '{"version": 1, "queue": {"part:1": {"kind": "part", "ion_id": "1"}}}',
            ["queue.part:1.code"],
            id="queue-missing-field",
        ),
        pytest.param(
            '{"version": 1, "queue": {"part:2": {"kind": "part", "ion_id": "1"}}}',
            ["does not match"],
            id="queue-key-mismatch",
        ),
        pytest.param('{"version": 1, "ledger": {"x": {}}}', ["ledger.x"], id="ledger-bad-key"),
        pytest.param('{"version": 1, "cache": []}', ["cache", "expected an object"], id="cache-list"),
    ],
)
def test_unreadable_state_raises_and_the_file_is_left_alone(tmp_path: Path, content: str, needles: list[str]) -> None:
    store = StateStore(tmp_path / "state.json")
    before = _write(store.path, content)
    with pytest.raises(StateError) as info:
        store.load()
    message = str(info.value)
    assert str(store.path) in message
    for needle in needles:
        assert needle in message
    assert info.value.exit_code == ExitCode.BUG
    assert store.path.read_bytes() == before
    assert _names(tmp_path) == ["state.json"]


def test_unversioned_state_is_upgraded_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore(tmp_path / "state.json")
    before = _write(
        store.path,
        json.dumps({"cursors": {"parts": "2024-05-01T12:00:00+00:00"}, "retry_ids": ["purchase_order:1042"]}),
    )
    mtime = datetime.fromtimestamp(store.path.stat().st_mtime, UTC)
    with caplog.at_level(logging.WARNING, logger="ionqbo.state"):
        state = store.load()
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "upgrading it to version 2" in caplog.records[0].getMessage()
    assert state.version == STATE_VERSION
    assert state.cursors == {"parts": T0}
    entry = state.queue["purchase_order:1042"]
    assert (entry.kind, entry.ion_id, entry.parked, entry.code) == (
        "purchase_order",
        "1042",
        False,
        "upgraded",
    )
    assert state.due("purchase_order", mtime) == [entry]
    assert store.path.read_bytes() == before  # load never writes; the next save writes version 2
    store.save(state)
    assert json.loads(store.path.read_text())["version"] == STATE_VERSION
    assert "retry_ids" not in store.path.read_text()


# ---- modes and temp files ----------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o077, 0o277])
def test_modes_dir_0700_and_file_0600(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        store = StateStore(tmp_path / "a" / "state" / "state.json")
        store.save(State())
        lock_path = tmp_path / "b" / "sync.lock"
        with SyncLock(lock_path, clock=lambda: T0):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE(lock_path.stat().st_mode) == 0o600


def test_save_tightens_a_loose_file_and_leaves_an_existing_dir_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    store = StateStore(tmp_path / "state.json")
    _write(store.path, "{}")
    store.path.chmod(0o644)
    store.save(State())
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


def test_save_fixes_the_mode_of_a_leftover_temp_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    mine = tmp_path / f".state.json.{os.getpid()}.tmp"  # left by an earlier save of this process
    _write(mine, "{")
    mine.chmod(0o644)
    store.save(State())
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.load() == State()


def test_save_sweeps_temp_files_of_dead_writers_only(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    dead = tmp_path / ".state.json.4194305.tmp"  # above any pid_max: no such process
    alive = tmp_path / f".state.json.{os.getppid()}.tmp"  # a running process: maybe mid-save
    other = tmp_path / ".other.json.4194305.tmp"
    for p in (dead, alive, other):
        _write(p, "{")
    store.save(State())
    assert _names(tmp_path) == sorted([alive.name, other.name, "state.json"])


# ---- atomicity under SIGKILL ---------------------------------------------------------------

_SAVER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta
    from ionqbo.errors import MappingError, TransientRecordError
    from ionqbo.state import LedgerEntry, State, StateStore

    path, first, count, entries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    state = State()
    for i in range(entries):
        gap = MappingError("no vendor " * 20, hint="add it")
        err = TransientRecordError("timeout " * 20) if i % 2 else gap
        state.record_failure("purchase_order", f"PO-{i}", err, t0)
        state.record_success("part", f"P-{i}", LedgerEntry(str(i), "0", "ab" * 32, t0, f"etag-{i}", t0))
    store = StateStore(path)
    for gen in range(first, first + count):
        state.advance_cursor("purchase_orders", t0 + timedelta(seconds=gen))
        state.alerts = {"generation": gen, "entries": entries}
        store.save(state)
        print(gen, flush=True)
    """
)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


def test_sigkill_during_saves_never_leaves_a_damaged_file(tmp_path: Path, children: list[subprocess.Popen[str]]) -> None:
    rng = random.Random(20240501)
    store = StateStore(tmp_path / "state.json")
    entries = 1500  # about 1.5 MB of JSON: each save takes long enough to be killed in the middle
    first = 0
    kills = 0
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(store.path), str(first), "50", str(entries)],
            stdout=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        children.append(child)
        assert child.stdout is not None
        wanted = rng.randint(1, 8)
        last_done = -1
        for _ in range(wanted):
            line = child.stdout.readline()
            assert line, "the saver ended before it was killed"
            last_done = int(line)
        time.sleep(rng.uniform(0, 0.05))  # a random moment inside one of the next saves (~50 ms each)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        kills += 1
        state = store.load()  # never a truncated or invalid file
        generation = state.alerts["generation"]
        assert last_done <= generation < first + 50  # a save reported done is durable
        assert state.alerts["entries"] == entries
        assert len(state.queue) == entries
        assert len(state.ledger) == entries
        assert state.cursors["purchase_orders"] == datetime(2024, 5, 1, tzinfo=UTC) + timedelta(seconds=generation)
        first = generation + 1
    assert kills == 6
    store.save(store.load())  # the temp files the killed writers left are swept by the next save
    assert _names(tmp_path) == ["state.json"]


class _Boom(Exception):
    """Stands in for a crash at one step of a save."""


def test_a_failure_mid_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(_full_state())
    before = store.path.read_bytes()
    real_write = os.write
    calls = []

    def short_then_full_disk(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[:100])  # a short write: the rest must follow
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full_disk)
    with pytest.raises(StateError, match="No space left on device"):
        store.save(State())
    assert len(calls) == 2
    assert store.path.read_bytes() == before
    assert _names(tmp_path) == ["state.json"]


def test_save_order_is_write_fsync_replace_fsync_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path / "state.json")
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        # the temp file is complete when it is fsynced
        if kind == "file":
            assert json.loads(Path(f"/proc/self/fd/{fd}").read_text())["version"] == STATE_VERSION
        events.append(f"fsync-{kind}")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append("replace")
        assert Path(dst) == store.path
        assert Path(src).parent == store.path.parent  # same directory: the rename is atomic
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.save(_full_state())
    assert events == ["fsync-file", "replace", "fsync-dir"]


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_a_crash_before_the_rename_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(_full_state())
    before = store.path.read_bytes()

    def crash(*_args: object) -> None:
        raise _Boom

    monkeypatch.setattr(os, step, crash)
    with pytest.raises(_Boom):  # (the ledger is committed first: entries are facts about QBO writes)
        store.save(State(ledger=dict(_full_state().ledger)))
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert store.load() == _full_state()
    assert _names(tmp_path) == ["state.json"]


# ---- the lock --------------------------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from ionqbo.state import SyncLock

    lock = SyncLock(sys.argv[1], clock=lambda: datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until stdin closes (or the process is killed)
    lock.release()
    print("released", flush=True)
    """
)


def _start_holder(lock_path: Path, children: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_child_env(),
    )
    children.append(child)
    assert child.stdout is not None
    assert child.stdout.readline() == "locked\n"
    return child


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Fail instead of hanging if a lock attempt blocks (it must be non-blocking)."""

    def expired(signum: int, frame: object) -> None:
        raise AssertionError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_second_process_gets_locked_error_at_once(tmp_path: Path, children: list[subprocess.Popen[str]]) -> None:
    lock_path = tmp_path / "sync.lock"
    holder = _start_holder(lock_path, children)
    # Non-blocking: a blocking flock would wait for the holder forever; the deadline turns that into a failure.
    with _deadline(30), pytest.raises(LockedError) as info, SyncLock(lock_path, clock=lambda: T0):
        pytest.fail("the lock was taken twice")
    assert f"pid {holder.pid}" in str(info.value)
    assert "started 2024-05-01T12:00:00+00:00" in str(info.value)
    assert info.value.exit_code == ExitCode.LOCKED
    assert int(info.value.exit_code) == 75
    # the holder lets go cleanly: the lock can be taken, and the file names the new holder
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.stdout is not None
    assert holder.stdout.readline() == "released\n"
    assert holder.wait(timeout=10) == 0
    with SyncLock(lock_path, clock=lambda: T0) as lock:
        assert lock.held
        assert json.loads(lock_path.read_text()) == {
            "pid": os.getpid(),
            "started_at": "2024-05-01T12:00:00+00:00",
        }
    assert lock_path.read_text() == ""  # released: no stale holder details
    assert lock_path.exists()  # never deleted (deleting races with a waiting opener)


def test_lock_left_by_a_killed_process_does_not_block(tmp_path: Path, children: list[subprocess.Popen[str]]) -> None:
    lock_path = tmp_path / "sync.lock"
    holder = _start_holder(lock_path, children)
    assert json.loads(lock_path.read_text())["pid"] == holder.pid
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=10) == -signal.SIGKILL
    assert json.loads(lock_path.read_text())["pid"] == holder.pid  # stale details stay behind...
    with _deadline(30), SyncLock(lock_path, clock=lambda: T0 + timedelta(hours=1)) as lock:  # ...but do not block
        assert lock.held
        assert json.loads(lock_path.read_text()) == {
            "pid": os.getpid(),
            "started_at": "2024-05-01T13:00:00+00:00",
        }


def test_lock_in_the_same_process(tmp_path: Path) -> None:
    lock_path = tmp_path / "sync.lock"
    first = SyncLock(lock_path, clock=lambda: T0)
    with first:
        with _deadline(2), pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            SyncLock(lock_path).acquire()
        with pytest.raises(RuntimeError, match="already held"):
            first.acquire()
    assert not first.held
    first.release()  # releasing twice is harmless
    with SyncLock(lock_path) as again:  # free again after the with block
        assert again.held


def test_lock_holder_details_unknown_when_file_is_empty(tmp_path: Path) -> None:
    # a holder that has locked but not yet written its details
    import fcntl

    lock_path = tmp_path / "sync.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with _deadline(2), pytest.raises(LockedError, match="pid unknown"):
            SyncLock(lock_path).acquire()
    finally:
        os.close(fd)


def test_a_large_ledger_lives_in_sqlite_and_a_save_writes_only_what_changed(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    state = _full_state()
    for n in range(2000, 7000):
        state.ledger[queue_key("purchase_order", str(n))] = _ledger(qbo_id=str(10_000 + n))
    store.save(state)
    assert store.path.stat().st_size < 4096  # the document holds no ledger
    loaded = store.load()
    assert isinstance(loaded.ledger, SqliteLedger) and len(loaded.ledger) == 5001
    assert dict(loaded.ledger) == dict(state.ledger)
    loaded.ledger[queue_key("part", "P-1")] = _ledger(qbo_id="5")
    del loaded.ledger[queue_key("purchase_order", "2007")]
    assert queue_key("purchase_order", "2007") not in loaded.ledger
    store.save(loaded)
    again = store.load().ledger
    assert len(again) == 5001 and again[queue_key("part", "P-1")].qbo_id == "5"
    assert again.get(queue_key("purchase_order", "2007")) is None


def test_ledger_writes_are_kept_only_once_saved(tmp_path: Path) -> None:
    """A crash before the save loses the entries since the last save, never the file."""
    store = StateStore(tmp_path / "state.json")
    store.save(_full_state())
    state = store.load()
    state.ledger[queue_key("part", "P-2")] = _ledger(qbo_id="6")
    assert isinstance(state.ledger, SqliteLedger)
    assert queue_key("part", "P-2") not in StateStore(store.path).load().ledger  # another reader: not yet
    state.ledger.clear()
    assert len(state.ledger) == 0
    assert len(StateStore(store.path).load().ledger) == 1  # the clear is not committed either
    store.save(state)
    assert len(StateStore(store.path).load().ledger) == 0


def test_reading_a_missing_ledger_creates_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state" / "state.json")
    state = store.load()
    assert state.ledger.get("part:P-1") is None and len(state.ledger) == 0 and list(state.ledger) == []
    state.ledger.clear()
    assert not (tmp_path / "state").exists()


def test_a_version_1_document_moves_its_ledger_to_sqlite_at_the_next_save(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    old = state_to_dict(_full_state())
    old["version"] = 1
    old["ledger"] = {"purchase_order:1001": {
        "qbo_id": "77", "sync_token": "3", "payload_sha256": payload_sha256({"DocNumber": "1042"}),
        "ion_updated_at": "2024-05-01T11:57:00+00:00", "ion_etag": "etag-abc", "synced_at": "2024-05-01T12:00:00+00:00"}}
    store.path.write_text(json.dumps(old))
    state = store.load()
    assert state.version == 2 and dict(state.ledger) == {"purchase_order:1001": _ledger()}
    assert not store.ledger_path.exists()  # loading writes nothing
    store.save(state)
    assert "ledger" not in json.loads(store.path.read_text())
    assert dict(store.load().ledger) == {"purchase_order:1001": _ledger()}


def test_a_damaged_ledger_is_a_state_error_that_names_the_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(_full_state())
    store.ledger_path.write_bytes(b"this is not an sqlite database" * 100)
    for name in ("state.ledger.sqlite-wal", "state.ledger.sqlite-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(StateError) as info:
        store.load().ledger.get("purchase_order:1001")
    assert str(store.ledger_path) in str(info.value) and "move" in (info.value.hint or "")


def test_a_value_that_is_not_json_leaves_the_old_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(_full_state())
    before = store.path.read_bytes()
    state = _full_state()
    state.alerts["bad"] = object()
    with pytest.raises(StateError, match="cannot save state"):
        store.save(state)
    assert store.path.read_bytes() == before
    assert _names(tmp_path) == ["state.json"]


def test_a_failed_move_of_an_in_memory_ledger_leaves_the_ledger_file_as_it_was(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(_full_state())
    state = _full_state()
    state.ledger = {"part:P-1": _ledger("1"), "part:P-2": dataclasses.replace(_ledger("2"), synced_at=datetime(2024, 5, 1))}
    with pytest.raises(StateError, match="naive"):
        store.save(state)
    assert dict(store.load().ledger) == {"purchase_order:1001": _ledger()}


def test_a_saved_in_memory_ledger_becomes_the_files_and_carries_the_settings_hash(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    state = _full_state()
    state.cache["config_hash"] = "abc123"
    store.save(state)
    assert isinstance(state.ledger, SqliteLedger)  # moved: the next save writes only what changed
    loaded = store.load().ledger
    assert isinstance(loaded, SqliteLedger) and loaded.tag == "abc123"
    loaded.tag = "def456"
    loaded.clear()
    assert StateStore(store.path).load().ledger.tag == "abc123"  # the hash and the entries commit together
    loaded.commit()
    other = StateStore(store.path).load().ledger
    assert other.tag == "def456" and len(other) == 0


def test_a_read_only_ledger_changes_nothing_and_does_without_a_file_it_cannot_read(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(_full_state())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    reader = StateStore(store.path, read_only=True).load()
    assert reader.ledger.get("purchase_order:1001") == _ledger() and len(reader.ledger) == 1
    with pytest.raises(StateError, match="read-only"):
        reader.ledger["part:P-3"] = _ledger()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # a journal a killed writer left: only a writer may roll it back; a dry run reads no ledger
    (tmp_path / "state.ledger.sqlite-journal").write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"\0" * 504)
    store.ledger_path.write_bytes(b"not a database" * 100)
    reader = StateStore(store.path, read_only=True).load()
    assert reader.ledger.get("purchase_order:1001") is None and len(reader.ledger) == 0
    assert not (tmp_path / "missing").exists()
    assert StateStore(tmp_path / "missing" / "state.json", read_only=True).load().ledger.get("part:P-1") is None
    assert not (tmp_path / "missing").exists()


def test_retag_keeps_the_links_and_forgets_the_versions(tmp_path: Path) -> None:
    from ionqbo.state import LedgerEntry, StateStore

    store = StateStore(tmp_path / "state.json")
    state = store.load()
    when = datetime(2026, 1, 1, tzinfo=UTC)
    state.ledger["part:10"] = LedgerEntry("57", "3", "abc", when, "etag-1", when)
    state.ledger["purchase_order:1042"] = LedgerEntry("701", "1", "def", when, "etag-2", when)
    state.reset_ledger("old")
    state.ledger["part:10"] = LedgerEntry("57", "3", "abc", when, "etag-1", when)
    state.ledger["purchase_order:1042"] = LedgerEntry("701", "1", "def", when, "etag-2", when)
    store.save(state)
    state = store.load()
    assert state.ledger_owners("part", ["57", "701", "999"]) == {"57": "10"}
    state.retag_ledger("new")
    store.save(state)
    state = store.load()
    assert state.ledger_tag() == "new"
    entry = state.ledger["part:10"]
    assert (entry.qbo_id, entry.sync_token, entry.ion_etag, entry.payload_sha256, entry.ion_updated_at) == \
        ("57", "3", "", "", None)
    assert state.ledger_owners("purchase_order", ["701"]) == {"701": "1042"}
