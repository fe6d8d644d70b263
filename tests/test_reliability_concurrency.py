"""Concurrency: one sync at a time, token refreshes that race, and locks left by killed processes.

- A sync that finds the lock held exits 75 having changed nothing in the state directory (every
  file's bytes and modification time, the token store included), and sends no request.
- Two syncs: while the first provably holds the lock (its requests are held at a gate), the second
  exits 75 at once, writes nothing, says why.
- Several processes find the QBO access token expired at the same moment and refresh: the refresh
  token (rotated strictly: the old one dies once the new one is used) is never lost, nobody needs
  a new consent (exit 4), and the next sync still works.
- A sync killed with SIGKILL while it holds the lock does not block the next run; nor does a lock
  file that names a process that is gone.

Each runs against both readings of QBO's duplicate-DocNumber rule (conftest.QBO_MODES): lenient QBO
accepts a second PO with a DocNumber in use, so one PO per DocNumber is ionqbo's doing; strict QBO
would refuse it, and the refusals it sent (6140, 6240) must be 0.
"""

from __future__ import annotations

import collections
import json
import signal
from pathlib import Path

import pytest

from conftest import QBO_MODES, Env, duplicates_found, po_batches_after, refusals

pytestmark = pytest.mark.parametrize("sandbox", QBO_MODES, indirect=True)
ORDERED = {"1042", "1043", "1044"}


def _one_of_each(env: Env) -> None:
    """QBO holds one PO per DocNumber and one item per part, and refused no duplicate."""
    assert (duplicates_found(env.box), refusals(env.box)) == (0, 0), env.box.qbo.counters


def _add_pos(env: Env, count: int, first: int = 7000) -> None:
    for i in range(count):
        env.box.ion.add_purchase_order({
            "id": first + i, "status": "ORDERED", "supplierId": 1, "currencyId": 1,
            "purchaseOrderLines": [{"id": 71000 + first + i, "partId": 10, "quantity": 1 + i % 3, "unitCost": 42.5,
                                    "totalCost": 42.5 * (1 + i % 3)}]})


def _docs(env: Env) -> collections.Counter[str]:
    return collections.Counter(str(p["DocNumber"]) for p in env.box.qbo.dump()["PurchaseOrder"])


def _snapshot(state_dir: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file in the state directory (and the directory itself): modification time, size, bytes."""
    files = {p.name: (p.stat().st_mtime_ns, p.stat().st_size, p.read_bytes()) for p in sorted(state_dir.iterdir())}
    files["."] = (state_dir.stat().st_mtime_ns, 0, b"")
    return files


def test_a_sync_that_finds_the_lock_held_exits_75_and_changes_nothing(env: Env) -> None:
    from ionqbo.state import SyncLock

    lock_path = env.state_dir / "sync.lock"
    # A first run on an empty state directory: with the lock free it would seed the token store.
    with SyncLock(lock_path):
        before = _snapshot(env.state_dir)
        assert set(before) == {".", "sync.lock"}
        for args in (("sync", "--json"), ("sync", "--po", "1042"), ("retry",)):
            run = env.run(*args)
            assert run.code == 75, (args, run.stderr)
            assert "another ionqbo sync holds the lock" in run.stderr
            assert run.stdout == ""
            assert _snapshot(env.state_dir) == before, args  # no token store, no state file, no log of either
    assert env.box.qbo.counters.get("total", 0) == 0  # nor a request to QBO
    assert env.run("sync").code == 3  # the sample's PO 1045 stays queued
    # And with a state directory that holds tokens, state, ledger: not one file touched.
    with SyncLock(lock_path):
        before = _snapshot(env.state_dir)
        assert {"qbo-tokens.json", "state.json"} <= set(before)
        env.box.qbo.reset_counters()
        env.box.qbo.expire_access_tokens()  # a run that got past the lock would refresh and store tokens
        for args in (("sync", "--json"), ("retry",)):
            run = env.run(*args)
            assert run.code == 75, (args, run.stderr)
            assert _snapshot(env.state_dir) == before, args
        assert env.box.qbo.counters.get("total", 0) == 0


def test_two_syncs_started_together_one_runs_the_other_exits_75(env: Env) -> None:
    _add_pos(env, 60)
    env.set(IONQBO_HTTP_TIMEOUT="150")  # a held request is not timed out
    gate = env.gate
    gate.close()  # every request: the first sync is held at its first one
    first = env.popen("sync", "--json")
    try:
        gate.wait_holding(first)  # the first sync holds the lock and waits on its first request
        holder = json.loads((env.state_dir / "sync.lock").read_text())
        assert holder["pid"] == first.pid
        before = _snapshot(env.state_dir)
        lose = env.run("sync", "--json", timeout=60)  # while the first still holds the lock
        assert first.poll() is None
        assert lose.code == 75, lose.stderr
        assert "another ionqbo sync holds the lock" in lose.stderr
        assert lose.stdout == ""  # no report: it did nothing
        assert len(lose.stderr.strip().splitlines()) <= 2
        assert _snapshot(env.state_dir) == before  # and changed nothing
    finally:
        gate.open()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 3, err  # the sample's PO 1045 stays queued
    assert json.loads(out)["exit_code"] == 3
    counts = _docs(env)
    assert set(counts) == ORDERED | {str(7000 + i) for i in range(60)}
    assert all(n == 1 for n in counts.values())
    _one_of_each(env)
    state = json.loads((env.state_dir / "state.json").read_text())
    assert state["last_run"]["exit_code"] == 3  # the winner's run, not overwritten by the loser


def test_processes_refreshing_the_token_at_once_never_lose_the_refresh_token(env: Env) -> None:
    assert env.run("sync").code == 3
    env.box.qbo.configure(refresh_grace=0, faults_on_token=True)  # strict rotation
    env.box.qbo.faults.configure(latency=0.15)  # slow token answers: the refreshes overlap
    rounds = []
    for _ in range(3):
        env.box.qbo.expire_access_tokens()
        env.box.qbo.reset_counters()
        procs = [env.popen("sync", "--dry-run", "--json") for _ in range(4)]
        results = [(p.wait(timeout=120), p.communicate()) for p in procs]
        for code, (_out, err) in results:
            assert code == 3, err  # never 4: nobody lost the refresh token
            assert "connect" not in err.lower()
        rounds.append(env.box.qbo.counters["token"])
        store = json.loads((env.state_dir / "qbo-tokens.json").read_text())
        assert store["refresh_token"]
    assert all(1 <= n <= 4 for n in rounds), rounds
    env.box.qbo.faults.configure(latency=0.0)
    env.box.qbo.expire_access_tokens()
    after = env.run("sync", "--json")
    assert after.code == 3, after.stderr  # the stored refresh token still works
    tokens = env.run("status", "--json").json()["tokens"]
    assert tokens["connected"] is True and tokens["warnings"] == []
    _one_of_each(env)


def test_a_lock_left_by_a_killed_sync_does_not_block_the_next_run(env: Env) -> None:
    _add_pos(env, 60)
    env.set(IONQBO_HTTP_TIMEOUT="150")
    gate = env.gate
    gate.close(po_batches_after(1))  # the kill lands mid-run: one batch of POs written, the next request held
    proc = env.popen("sync")
    try:
        gate.wait_holding(proc)
        lock = env.state_dir / "sync.lock"
        holder = json.loads(lock.read_text())
        assert holder["pid"] == proc.pid
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        gate.open()
    assert proc.returncode == -signal.SIGKILL
    assert lock.exists()  # left behind, naming a dead process
    assert 0 < len(env.box.qbo.dump()["PurchaseOrder"]) < 63  # killed with part of the run written
    run = env.run("sync", "--json")
    assert run.code == 3, run.stderr
    counts = _docs(env)
    assert all(n == 1 for n in counts.values())
    assert set(counts) == ORDERED | {str(7000 + i) for i in range(60)}
    _one_of_each(env)


def test_a_lock_file_naming_a_gone_process_does_not_block(env: Env) -> None:
    env.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (env.state_dir / "sync.lock").write_text(json.dumps({"pid": 999_999, "started_at": "2026-01-01T00:00:00+00:00"}))
    run = env.run("sync", "--json")
    assert run.code == 3, run.stderr
    assert _docs(env) == collections.Counter(ORDERED)
    _one_of_each(env)
