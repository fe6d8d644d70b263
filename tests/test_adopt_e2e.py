"""End to end: a QBO company that already holds items and POs, and what the accountant owns in it.

The real CLI (a subprocess) against the sandbox emulators over HTTP on 127.0.0.1; the QBO company is
filled first, the way QBO holds such data, then ionqbo runs.
"""

from __future__ import annotations

import copy
from typing import Any

from conftest import Env


def qbo_pos(env: Env) -> list[dict[str, Any]]:
    return [po for po in env.box.qbo.dump()["PurchaseOrder"] if po.get("status") != "Deleted"]


def po_by_doc(env: Env, doc: str) -> dict[str, Any]:
    (po,) = [p for p in qbo_pos(env) if p.get("DocNumber") == doc]
    return po


def test_an_update_keeps_the_line_fields_ionqbo_does_not_set(env: Env) -> None:
    assert env.run("sync").code == 3
    (customer_id,) = env.box.qbo.load({"Customer": [{"DisplayName": "Cool Cars"}]})["Customer"]
    po = po_by_doc(env, "1042")
    stored = env.box.qbo.store.get("PurchaseOrder", po["Id"])
    assert stored is not None
    accountant = {"CustomerRef": {"value": customer_id, "name": "Cool Cars"}, "BillableStatus": "Billable",
                  "MarkupInfo": {"PercentBased": True, "Percent": 15}}
    for line in stored["Line"]:
        line[line["DetailType"]].update(copy.deepcopy(accountant))
    stored["Line"][0]["ProjectRef"] = {"value": customer_id}
    env.box.qbo.store.put("PurchaseOrder", stored)
    before = copy.deepcopy(stored["Line"])
    env.box.ion.update_line(1042, 5001, {"quantity": 30, "totalCost": 1275.0})
    assert env.run("sync", "--json").json()["purchase_orders"]["updated"] == 1
    after = po_by_doc(env, "1042")["Line"]
    assert [ln["Id"] for ln in after] == [ln["Id"] for ln in before]
    for old, new in zip(before, after, strict=True):
        detail = new[new["DetailType"]]
        for key, value in accountant.items():
            assert detail[key] == value, (key, new)
        assert detail.get("TaxCodeRef") == old[old["DetailType"]].get("TaxCodeRef")  # a US company: QBO's
    assert after[0]["ProjectRef"] == {"value": customer_id}
    env.box.qbo.reset_counters()
    assert env.run("sync").code == 3
    assert env.box.qbo.counters["writes"] == 0
