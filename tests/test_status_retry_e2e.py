"""End to end: `ionqbo status` and `ionqbo retry` (the real CLI, a subprocess) against the sandbox over HTTP."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ionqbo.qbo.auth import TokenStore
from ionqbo.state import StateStore

from conftest import Env


def qbo_docnumbers(env: Env) -> list[str]:
    return sorted(str(po.get("DocNumber")) for po in env.box.qbo.dump()["PurchaseOrder"])


def add_calibration_account(env: Env) -> None:
    env.box.qbo.load({"Account": [{"Id": "95", "Name": "Calibration", "AcctNum": "7777", "AccountType": "Expense"}]})


def status(env: Env, **extra_env: str) -> dict[str, Any]:
    run = env.run("status", "--json", extra_env=extra_env or None)
    assert run.code == 0, run.stderr
    return run.json()


def test_status_before_any_run(env: Env) -> None:
    run = env.run("status")
    assert run.code == 0, run.stderr
    assert "last run: none yet" in run.stdout
    assert "never synced" in run.stdout
    assert "queued records: none" in run.stdout
    assert "QBO_REFRESH_TOKEN is set: the first sync seeds the token store" in run.stdout
    data = status(env)
    assert data["cursors"] == {} and data["queue"] == [] and data["last_run"] is None
    assert data["tokens"]["connected"] is False


def test_status_shows_the_parked_record_and_retry_by_id_lets_the_fixed_record_through(env: Env) -> None:
    assert env.run("sync").code == 3
    run = env.run("status")
    assert run.code == 0
    row = next(line for line in run.stdout.splitlines() if line.startswith("PO ") and "1045" in line)
    assert "parked" in row and "mapping" in row and '"7777" has no QBO account' in run.stdout
    assert "1 parked until fixed" in run.stdout
    assert "exit 3" in run.stdout and "POs created 3" in run.stdout
    data = status(env)
    (entry,) = data["queue"]
    assert (entry["kind"], entry["ion_id"], entry["state"], entry["attempts"]) == ("purchase_order", "1045", "parked", 1)
    assert '"7777" has no QBO account' in entry["message"] and "Chart of accounts" in entry["hint"]
    assert data["last_run"]["exit_code"] == 3 and data["last_run"]["purchase_orders"]["created"] == 3
    assert set(data["cursors"]) == {"parts", "purchase_orders"}

    add_calibration_account(env)  # the fix, in QBO
    released = env.run("retry", "1045")
    assert released.code == 0 and "1 record(s)" in released.stdout
    after = status(env)["queue"][0]
    assert (after["parked"], after["state"], after["attempts"]) == (False, "due", 0)

    sync = env.run("sync", "--json")
    assert sync.code == 0, sync.stdout
    assert sync.json()["purchase_orders"]["created"] == 1
    assert "1045" in qbo_docnumbers(env)
    final = env.run("status")
    assert "queued records: none" in final.stdout and "exit 0" in final.stdout


def test_retry_makes_a_record_waiting_on_backoff_due_at_the_next_sync(env: Env) -> None:
    # A PO changed now moves the cursor past 1045 (by more than the overlap), so only the queue brings 1045 back.
    env.box.ion.add_purchase_order({
        "id": 2001, "status": "ORDERED", "supplierId": 1, "currencyId": 1, "fees": [],
        "purchaseOrderLines": [{"id": 9001, "quantity": 1, "unitCost": 10, "totalCost": 10, "expenseCode": "6100"}],
    })
    assert env.run("sync").code == 3
    store = StateStore(env.state_dir / "state.json")
    state = store.load()
    entry = state.queue["purchase_order:1045"]
    entry.parked, entry.next_retry_at = False, datetime.now(UTC) + timedelta(hours=6)  # a transient failure
    store.save(state)
    add_calibration_account(env)
    assert status(env)["queue"][0]["state"] == "waiting"

    assert env.run("sync").code == 3  # not due: the sync leaves it alone
    assert "1045" not in qbo_docnumbers(env)

    assert env.run("retry", "9999").stdout.startswith("0 record(s)")  # an unknown id releases nothing
    assert status(env)["queue"][0]["state"] == "waiting"
    assert env.run("retry").stdout.startswith("1 record(s)")  # all
    assert status(env)["queue"][0]["state"] == "due"
    assert env.run("sync").code == 0
    assert qbo_docnumbers(env).count("1045") == 1
    assert status(env)["queue"] == []


def test_token_health_reads_the_token_store_and_warns_30_days_ahead(env: Env) -> None:
    assert env.run("sync", "--po", "1042").code == 0  # seeds and refreshes the token store
    tokens = status(env)["tokens"]
    assert tokens["connected"] is True
    assert (tokens["environment"], tokens["realm_id"]) == ("sandbox", env.box.qbo.realm_id)
    for key in ("access_token_expires_at", "refresh_token_expires_at", "refresh_token_hard_expires_at"):
        assert tokens[key] and tokens[key].endswith("Z"), key
    assert tokens["warnings"] == []
    raw = (env.state_dir / "qbo-tokens.json").read_text()
    assert json.loads(raw)["refresh_token"] not in env.run("status", "--json").stdout  # never the token itself

    store = TokenStore(env.state_dir / "qbo-tokens.json")
    record = store.load()
    assert record is not None
    now = datetime.now(UTC).timestamp()
    store.save(dataclasses.replace(record, refresh_expires_at=now + 10 * 86400, refresh_hard_expires_at=now - 86400))
    text = env.run("status").stdout
    assert "warning: the QBO refresh token expires on" in text and "run `ionqbo connect` before then" in text
    assert "warning: the QBO refresh token's 5-year limit expired on" in text
    assert "QBO company " + env.box.qbo.realm_id in text

    other = status(env, QBO_REALM_ID="123")["tokens"]["warnings"]
    assert any("QBO_REALM_ID is 123" in w for w in other)
