"""QBO's clock, not ours (issue 16): a clock 400 days ahead, then put right, delays nothing.

The clock ionqbo reads is shifted with IONQBO_TEST_CLOCK_OFFSET (the machine's clock is never
touched). With the clock 400 days ahead, a PO whose supplier has no QBO vendor is parked, as it
should be. The clock is put right, the accountant adds the vendor in QBO (as ionqbo's message asked),
and the next run must see the vendor (change data capture asks from QBO's own time, not from the
wrong clock's) and send the PO. The far clock is named in the log and by check-mappings.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ionqbo.errors import TransientRecordError
from ionqbo.state import BACKOFF_CAP, State

from conftest import Env

AHEAD = {"IONQBO_TEST_CLOCK_OFFSET": str(400 * 86400)}


def _clock_checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for rows in report["sections"].values() for c in rows if c.get("code") == "clock"]


def test_a_clock_400_days_ahead_then_put_right(env: Env, sandbox: Any) -> None:
    sandbox.ion.add_supplier({"id": 9, "name": "Newco Supply"})
    sandbox.ion.add_purchase_order({
        "id": 7100, "status": "ORDERED", "supplierId": 9, "currencyId": 1,
        "purchaseOrderLines": [{"id": 71001, "partId": 10, "quantity": 2, "unitCost": 42.5, "totalCost": 85}],
    })
    ahead = env.run("sync", "--json", extra_env=AHEAD)
    assert ahead.code == 3, ahead.stderr
    assert "this machine's clock is 400 days ahead of QBO's" in ahead.stderr
    assert "this machine's clock is 400 days ahead of ION's" in ahead.stderr
    failures = {f["ion_id"]: f for f in ahead.json()["failures"]}
    assert "Newco Supply" in failures["7100"]["message"]
    state = json.loads((env.state_dir / "state.json").read_text())
    fetched = datetime.fromisoformat(state["cache"]["qbo_refs"]["fetched_at"])
    assert abs((fetched - datetime.now(UTC)).total_seconds()) < 3600  # QBO's time, not the wrong clock's

    checks = env.run("check-mappings", "--json", extra_env=AHEAD)
    clock_checks = _clock_checks(checks.json())
    assert {c["severity"] for c in clock_checks} == {"warning"}, clock_checks
    assert any("400 days ahead of QBO's" in c["message"] for c in clock_checks)

    # The clock is put right; the accountant adds the vendor in QBO.
    sandbox.qbo.load({"Vendor": [{"DisplayName": "Newco Supply", "Active": True, "CurrencyRef": {"value": "USD"}}]})
    right = env.run("sync", "--json")
    assert right.code == 3, right.stderr  # the sample's PO 1045 still needs its expense code
    assert "7100" not in {f["ion_id"] for f in right.json()["failures"]}, right.stdout
    docs = [str(p["DocNumber"]) for p in sandbox.qbo.dump()["PurchaseOrder"]]
    assert docs.count("7100") == 1
    assert "clock is" not in right.stderr
    checks = env.run("check-mappings", "--json")
    assert {c["severity"] for c in _clock_checks(checks.json())} == {"ok"}


def test_a_retry_time_set_by_a_clock_that_ran_ahead_is_due() -> None:
    wrong = datetime(2028, 1, 5, tzinfo=UTC)
    right = wrong - timedelta(days=400)
    state = State()
    error = TransientRecordError("QBO could not take the write now", kind="purchase_order", ion_id="7")
    state.record_failure("purchase_order", "7", error, wrong)  # due 5 minutes after the wrong clock's now
    state.record_failure("purchase_order", "8", error, right)  # due 5 minutes after the right clock's now
    assert [e.ion_id for e in state.due("purchase_order", right)] == ["7"]
    assert sorted(e.ion_id for e in state.due("purchase_order", right + timedelta(minutes=6))) == ["7", "8"]
    # A retry time within the longest backoff is honoured as it is.
    soon = state.queue["purchase_order:7"].next_retry_at - BACKOFF_CAP + timedelta(minutes=1)
    assert "7" not in {e.ion_id for e in state.due("purchase_order", soon)}
