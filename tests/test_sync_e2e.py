"""End to end: the real CLI (a subprocess) against the sandbox emulators over HTTP on 127.0.0.1."""

from __future__ import annotations

import collections
import contextlib
import signal
from decimal import Decimal
from typing import Any

import pytest

from conftest import QBO_MODES, Env, duplicates_found, po_batches_after, refusals

ORDERED = {"1042", "1043", "1044"}  # the sample's ordered POs that map cleanly; 1045 lacks an account


def qbo_pos(env: Env) -> list[dict[str, Any]]:
    return [po for po in env.box.qbo.dump()["PurchaseOrder"] if po.get("status") != "Deleted"]


def docnumbers(env: Env) -> collections.Counter[str]:
    return collections.Counter(str(po.get("DocNumber")) for po in qbo_pos(env))


def test_first_sync_creates_everything_and_the_second_writes_nothing(env: Env) -> None:
    first = env.run("sync", "--json")
    assert first.code == 3, first.stderr
    report = first.json()
    assert report["purchase_orders"]["created"] == 3
    assert report["parts"]["created"] == 5
    assert [(f["kind"], f["ion_id"], f["code"]) for f in report["failures"]] == [
        ("purchase_order", "1045", "mapping")]
    assert "7777" in report["failures"][0]["message"]
    assert docnumbers(env) == collections.Counter(ORDERED)

    env.box.qbo.reset_counters()
    second = env.run("sync", "--json")
    assert second.code == 3  # 1045 is still parked: the books are not complete
    assert env.box.qbo.counters["writes"] == 0
    assert second.json()["purchase_orders"]["created"] == 0
    assert docnumbers(env) == collections.Counter(ORDERED)


def test_json_report_has_the_contract_fields(env: Env) -> None:
    report = env.run("sync", "--json").json()
    for key in ("ok", "exit_code", "dry_run", "purchase_orders", "parts", "failures", "requests"):
        assert key in report
    assert set(report["purchase_orders"]) >= {"created", "updated", "unchanged", "closed", "failed"}
    assert set(report["parts"]) >= {"created", "updated", "unchanged", "failed"}
    assert set(report["failures"][0]) >= {"kind", "ion_id", "code", "message"}
    assert report["requests"]["ion"] > 0 and report["requests"]["qbo"] > 0
    assert report["ok"] is False and report["exit_code"] == 3


def test_an_ion_edit_gives_exactly_one_update(env: Env) -> None:
    assert env.run("sync").code == 3
    env.box.ion.update_line(1042, 5001, {"quantity": 30, "totalCost": 1275.0})
    env.box.qbo.reset_counters()
    run = env.run("sync", "--json")
    report = run.json()
    assert report["purchase_orders"]["updated"] == 1, run.stdout
    assert env.box.qbo.counters["writes"] == 1
    po = next(p for p in qbo_pos(env) if p["DocNumber"] == "1042")
    line = next(ln for ln in po["Line"] if ln.get("Description", "").startswith("Bracket"))
    assert Decimal(str(line["ItemBasedExpenseLineDetail"]["Qty"])) == 30
    assert Decimal(str(line["Amount"])) == Decimal("1275.00")
    assert po["SyncToken"] == "1"


def test_an_update_keeps_the_qbo_line_ids_and_a_bill_linked_to_a_line(env: Env) -> None:
    """A bill received against a PO line links to that line: updating the PO must not cut the link."""
    assert env.run("sync").code == 3
    po = next(p for p in qbo_pos(env) if p["DocNumber"] == "1042")
    ids_before = [ln["Id"] for ln in po["Line"]]
    stored = env.box.qbo.store.get("PurchaseOrder", po["Id"])
    assert stored is not None
    link = {"TxnId": "9001", "TxnType": "Bill"}
    stored["Line"][0]["LinkedTxn"] = [link]
    stored["LinkedTxn"] = [link]
    env.box.qbo.store.put("PurchaseOrder", stored)
    env.box.ion.update_line(1042, 5001, {"quantity": 30, "totalCost": 1275.0})
    assert env.run("sync", "--json").json()["purchase_orders"]["updated"] == 1
    po = next(p for p in qbo_pos(env) if p["DocNumber"] == "1042")
    assert [ln["Id"] for ln in po["Line"]] == ids_before
    assert po["Line"][0].get("LinkedTxn") == [link] and po["LinkedTxn"] == [link]


def test_the_ledger_is_trusted_only_under_the_settings_it_was_written_with(env: Env) -> None:
    import sqlite3

    assert env.run("sync").code == 3
    env.box.qbo.reset_counters()
    again = env.run("sync", "--since", "2000-01-01", "--json").json()
    trusted = again["requests"]["qbo"]  # the queued PO's reference check only: the ledger vouches for the rest
    assert trusted <= 1 and again["purchase_orders"]["unchanged"] >= 3
    # as if a run under other settings had committed its ledger and been killed before the state file
    with contextlib.closing(sqlite3.connect(env.state_dir / "state.ledger.sqlite")) as db, db:
        db.execute("UPDATE meta SET value = 'written-under-other-settings' WHERE key = 'tag'")
    report = env.run("sync", "--since", "2000-01-01", "--json").json()
    assert report["requests"]["qbo"] > trusted and env.box.qbo.counters["writes"] == 0  # looked up, not rewritten
    assert report["purchase_orders"]["unchanged"] >= 3
    assert env.run("sync", "--since", "2000-01-01", "--json").json()["requests"]["qbo"] == trusted  # trusted again


def test_dry_run_writes_nothing_and_shows_the_field_changes(env: Env) -> None:
    assert env.run("sync").code == 3
    state_before = (env.state_dir / "state.json").read_text()
    files_before = {p.name: p.read_bytes() for p in env.state_dir.iterdir() if p.name != "qbo-tokens.json"}
    assert "state.ledger.sqlite" in files_before
    env.box.ion.update_line(1042, 5001, {"quantity": 30, "totalCost": 1275.0})
    env.box.qbo.reset_counters()
    run = env.run("sync", "--dry-run")
    # nothing in the state directory changes (the token store may rotate: that is QBO's rule)
    assert {p.name: p.read_bytes() for p in env.state_dir.iterdir() if p.name != "qbo-tokens.json"} == files_before
    assert env.box.qbo.counters["writes"] == 0
    assert "Dry run" in run.stdout
    assert "1042" in run.stdout and "Qty" in run.stdout and "30" in run.stdout and "24" in run.stdout
    assert (env.state_dir / "state.json").read_text() == state_before
    # and a real run afterwards still does the update
    assert env.run("sync", "--json").json()["purchase_orders"]["updated"] == 1


def test_missing_vendor_exits_3_and_syncs_once_the_vendor_exists(env: Env) -> None:
    env.box.ion.add_supplier({"id": 9, "name": "Nova Tooling Inc"}) if hasattr(env.box.ion, "add_supplier") else None
    env.box.ion.add_purchase_order({
        "id": 2001, "status": "ORDERED", "supplierId": 9, "currencyId": 1,
        "purchaseOrderLines": [{"id": 9001, "quantity": 1, "unitCost": 10, "totalCost": 10,
                                "expenseCode": "6100", "description": "end mills"}],
        "fees": [],
    })
    run = env.run("sync", "--json")
    assert run.code == 3
    failure = next(f for f in run.json()["failures"] if f["ion_id"] == "2001")
    assert "Nova Tooling Inc" in failure["message"]
    assert "2001" not in docnumbers(env)
    status = env.run("status", "--json").json()
    assert any(q["ion_id"] == "2001" and q["parked"] for q in status["queue"])

    env.box.qbo.load({"Vendor": [{"DisplayName": "Nova Tooling Inc", "Active": True, "CurrencyRef": {"value": "USD"}}]})
    again = env.run("sync", "--json")
    assert again.json()["purchase_orders"]["created"] == 1
    assert docnumbers(env)["2001"] == 1


def test_a_po_canceled_in_ion_is_closed_in_qbo(env: Env) -> None:
    assert env.run("sync").code == 3
    env.box.ion.update_purchase_order(1043, {"status": "CANCELED"})
    report = env.run("sync", "--json").json()
    assert report["purchase_orders"]["closed"] == 1
    po = next(p for p in qbo_pos(env) if p["DocNumber"] == "1043")
    assert po["POStatus"] == "Closed"
    assert docnumbers(env)["1043"] == 1  # closed, never deleted


def _many_pos(env: Env, count: int) -> None:
    for i in range(count):
        env.box.ion.add_purchase_order({
            "id": 3000 + i, "status": "ORDERED", "supplierId": 1, "currencyId": 1,
            "purchaseOrderLines": [{"id": 30000 + i, "partId": 10, "quantity": 1 + i % 5, "unitCost": 42.5,
                                    "totalCost": 42.5 * (1 + i % 5)}],
            "fees": [{"id": 40000 + i, "name": "Shipping", "value": 5}],
        })


@pytest.mark.parametrize("sandbox", QBO_MODES, indirect=True)
def test_sigkill_in_the_middle_of_the_writes_leaves_one_qbo_po_per_ion_po(env: Env) -> None:
    _many_pos(env, 90)
    env.set(IONQBO_HTTP_TIMEOUT="150")  # a held request is not timed out
    env.gate.close(po_batches_after(1))  # one batch of POs written, the next request held: killed there
    proc = env.popen("sync")
    try:
        env.gate.wait_holding(proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        env.gate.open()
    assert proc.returncode == -signal.SIGKILL
    assert 0 < len(qbo_pos(env)) < 93
    run = env.run("sync", "--json")
    assert run.code == 3, run.stderr  # 1045 stays parked
    counts = docnumbers(env)
    expected = ORDERED | {str(3000 + i) for i in range(90)}
    assert set(counts) == expected
    assert all(n == 1 for n in counts.values()), [d for d, n in counts.items() if n > 1]
    assert (duplicates_found(env.box), refusals(env.box)) == (0, 0), env.box.qbo.counters


@pytest.mark.parametrize("sandbox", QBO_MODES, indirect=True)
def test_a_batch_whose_answers_are_lost_is_looked_up_not_written_twice(sandbox: Any, tmp_path: Any) -> None:
    """QBO commits a batch but every answer is lost (dropped connections): no duplicate.

    The batch used up its tries for an availability reason, so the run ends (exit 5, nothing more
    goes to QBO); the next run looks the records up by name and DocNumber before it writes.
    """
    from ionqbo.sandbox.httpd import Request, Response, Server

    from conftest import make_env

    lost = {"batches": 0}

    def proxy(request: Request) -> Response:
        response = sandbox.qbo(request)  # QBO does the work...
        if request.path.endswith("/batch") and lost["batches"] < 2:
            lost["batches"] += 1
            return Response(drop=True)  # ...and the answer never arrives
        return response

    with Server(proxy) as server:
        env = make_env(sandbox, tmp_path, QBO_BASE_URL=server.url, IONQBO_MAX_RETRIES="2")
        down = env.run("sync", "--json", "--no-parts")
        assert lost["batches"] == 2
        assert down.code == 5, down.stderr
        assert "QBO is unreachable" in down.stderr
        run = env.run("sync", "--json", "--no-parts")
        report = run.json()
        assert run.code == 3, run.stderr
        assert report["parts"]["created"] == 0  # the items the POs use, found by name after the lost answers
        assert report["purchase_orders"]["created"] == 3
        items = [i for i in sandbox.qbo.dump()["Item"]]
        assert len(items) == len({i["Name"] for i in items}) == 4
        assert docnumbers(env) == collections.Counter(ORDERED)
        assert (duplicates_found(sandbox), refusals(sandbox)) == (0, 0), sandbox.qbo.counters
