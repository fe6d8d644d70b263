"""Concurrency: one sync at a time, token refreshes that race, and locks left by killed processes.

- Two syncs started together: one runs; the other exits 75 at once, writes nothing, says why.
- Several processes find the QBO access token expired at the same moment and refresh: the refresh
  token (rotated strictly: the old one dies once the new one is used) is never lost, nobody needs
  a new consent (exit 4), and the next sync still works.
- A sync killed with SIGKILL while it holds the lock does not block the next run; nor does a lock
  file that names a process that is gone.
"""

from __future__ import annotations

import collections
import json
import signal
import time
from typing import Any

from conftest import Env

ORDERED = {"1042", "1043", "1044"}


def _add_pos(env: Env, count: int, first: int = 7000) -> None:
    for i in range(count):
        env.box.ion.add_purchase_order({
            "id": first + i, "status": "ORDERED", "supplierId": 1, "currencyId": 1,
            "purchaseOrderLines": [{"id": 71000 + first + i, "partId": 10, "quantity": 1 + i % 3, "unitCost": 42.5,
                                    "totalCost": 42.5 * (1 + i % 3)}]})


def _docs(env: Env) -> collections.Counter[str]:
    return collections.Counter(str(p["DocNumber"]) for p in env.box.qbo.dump()["PurchaseOrder"])


def test_two_syncs_started_together_one_runs_the_other_exits_75(env: Env) -> None:
    _add_pos(env, 60)
    env.box.qbo.faults.configure(latency=0.05)  # the winner holds the lock for a while
    first, second = env.popen("sync", "--json"), env.popen("sync", "--json")
    procs = {first: time.monotonic(), second: time.monotonic()}
    done: dict[Any, tuple[int, str, str, float]] = {}
    while len(done) < 2:
        for proc in procs:
            if proc not in done and proc.poll() is not None:
                out, err = proc.communicate()
                done[proc] = (proc.returncode, out, err, time.monotonic())
        time.sleep(0.01)
    lose, win = sorted(done.values(), key=lambda result: result[0] != 75)
    assert lose[0] == 75, (lose, win[2])
    assert win[0] == 3, win[2]  # the sample's PO 1045 stays queued
    assert lose[3] < win[3]  # it did not wait for the lock
    assert "another ionqbo sync holds the lock" in lose[2]
    assert lose[1] == ""  # no report: it did nothing
    assert len(lose[2].strip().splitlines()) <= 2
    counts = _docs(env)
    assert set(counts) == ORDERED | {str(7000 + i) for i in range(60)}
    assert all(n == 1 for n in counts.values())
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


def test_a_lock_left_by_a_killed_sync_does_not_block_the_next_run(env: Env) -> None:
    _add_pos(env, 60)
    env.box.qbo.faults.configure(latency=0.05)
    proc = env.popen("sync")
    lock = env.state_dir / "sync.lock"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.01)
    holder = json.loads(lock.read_text())
    assert holder["pid"] == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    env.box.qbo.faults.configure(latency=0.0)
    assert lock.exists()  # left behind, naming a dead process
    run = env.run("sync", "--json")
    assert run.code == 3, run.stderr
    counts = _docs(env)
    assert all(n == 1 for n in counts.values())
    assert set(counts) == ORDERED | {str(7000 + i) for i in range(60)}


def test_a_lock_file_naming_a_gone_process_does_not_block(env: Env) -> None:
    env.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (env.state_dir / "sync.lock").write_text(json.dumps({"pid": 999_999, "started_at": "2026-01-01T00:00:00+00:00"}))
    run = env.run("sync", "--json")
    assert run.code == 3, run.stderr
    assert _docs(env) == collections.Counter(ORDERED)
