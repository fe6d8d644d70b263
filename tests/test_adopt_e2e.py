"""End to end: a QBO company that already holds items and POs, and what the accountant owns in it.

The real CLI (a subprocess) against the sandbox emulators over HTTP on 127.0.0.1; the QBO company is
filled first, the way QBO holds such data, then ionqbo runs.
"""

from __future__ import annotations

import collections
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


# ---- a company that is already full -----------------------------------------------------------------

ACCOUNTS = {"AssetAccountRef": {"value": "81"}, "IncomeAccountRef": {"value": "79"},
            "ExpenseAccountRef": {"value": "80"}}
BILL = {"TxnId": "9001", "TxnType": "Bill"}


def _inventory(item_id: str, name: str, sku: str, qty: int, **extra: Any) -> dict[str, Any]:
    return {"Id": item_id, "Name": name, "Sku": sku, "Type": "Inventory", "TrackQtyOnHand": True, "QtyOnHand": qty,
            "InvStartDate": "2025-01-01", "PurchaseCost": 1, **ACCOUNTS, **extra}


def fill_company(env: Env) -> dict[str, Any]:
    """The QBO company as another integration left it: items under other names with the ION part numbers
    as SKUs (two revisions of one part, an inactive one, a non-inventory one), and PO 1042 with a billed
    line and lines that carry a customer and a billable status."""
    data: dict[str, Any] = {
        "Customer": [{"Id": "501", "DisplayName": "Cool Cars"}],
        "Item": [
            _inventory("301", "820412-001 Rev A", "820412-001", 12),  # the old revision, named by the rule
            _inventory("302", "Bracket 6061", "820412-001", 40),  # the current revision, another name
            _inventory("303", "SHCS 10-32", "nas1352-3", 500),  # SKU in another case
            _inventory("304", "CFRP plate", "HX-CFRP:PLATE", 0, Active=False),  # inactive
            {"Id": "305", "Name": "TVA assembly", "Sku": "TV-ASSY-100", "Type": "NonInventory",
             "ExpenseAccountRef": {"value": "80"}},  # not an inventory item
        ],
        "PurchaseOrder": [{
            "Id": "701", "DocNumber": "1042", "VendorRef": {"value": "42"}, "APAccountRef": {"value": "33"},
            "TxnDate": "2026-11-02", "PrivateNote": "entered by the ION integration",
            "LinkedTxn": [BILL],
            "Line": [
                {"Id": "1", "DetailType": "ItemBasedExpenseLineDetail", "Amount": 1020, "Description": "Bracket",
                 "LinkedTxn": [BILL],
                 "ItemBasedExpenseLineDetail": {"ItemRef": {"value": "302"}, "Qty": 24, "UnitPrice": 42.5,
                                                "CustomerRef": {"value": "501"}, "BillableStatus": "Billable",
                                                "TaxCodeRef": {"value": "NON"}}},
                {"Id": "2", "DetailType": "ItemBasedExpenseLineDetail", "Amount": 0.66,
                 "ItemBasedExpenseLineDetail": {"ItemRef": {"value": "303"}, "Qty": 2, "UnitPrice": 0.33,
                                                "CustomerRef": {"value": "501"}, "BillableStatus": "NotBillable",
                                                "TaxCodeRef": {"value": "NON"}}},
            ],
        }],
    }
    env.box.qbo.load(data)
    return data


def _plain(value: Any) -> Any:
    return value.get("value") if isinstance(value, dict) else str(value)


def items_by_sku(env: Env) -> collections.Counter[str]:
    return collections.Counter(str(i.get("Sku") or "").casefold() for i in env.box.qbo.dump()["Item"])


def test_a_full_company_is_adopted_not_duplicated(env: Env) -> None:
    seeded = fill_company(env)
    skus_before = items_by_sku(env)
    items_before = {i["Id"]: i for i in env.box.qbo.dump()["Item"]}

    # 1. check-mappings shows the plan before anything is written
    env.box.qbo.reset_counters()
    run = env.run("check-mappings", "--json")
    assert run.code == 3, run.stdout
    report = run.json()
    plan = {r["subject"]: r for r in report["sections"]["adoption plan"]}
    assert plan["QBO items"]["severity"] == "ok"
    items_plan = plan["QBO items"]["message"]
    assert items_plan.startswith("2 to adopt") and "1 found under the item name" in items_plan and \
        "0 to create" in items_plan
    assert set(plan["QBO items"]["used_by"]) == {"part 10", "part 12"}
    assert plan["QBO purchase orders"]["message"].startswith("1 to adopt") and "3 to create" in \
        plan["QBO purchase orders"]["message"]
    assert plan["QBO purchase orders"]["used_by"] == ["PO 1042"]
    inactive = plan['part 13 "HX-CFRP:PLATE"']
    assert inactive["severity"] == "blocking" and "inactive" in inactive["message"] and 'item 304 "CFRP plate"' in \
        inactive["message"]
    assert "make item 304 active" in inactive["fix"] and "[items]" in inactive["fix"] and \
        "IONQBO_ITEM_MATCH=name" in inactive["fix"]
    other_type = plan['part 14 "TV-ASSY-100"']
    assert other_type["severity"] == "blocking" and "NonInventory" in other_type["message"]
    assert "PO 1044" in other_type["used_by"]
    assert env.box.qbo.counters["writes"] == 0

    # 2. a dry run lists PO 1042 as "adopt", field by field
    dry = env.run("sync", "--dry-run")
    assert dry.code == 3
    assert "adopt" in dry.stdout and "1042" in dry.stdout and "Qty" in dry.stdout
    dry_json = env.run("sync", "--dry-run", "--json").json()
    (adopt_1042,) = [r for r in dry_json["records"] if r["ion_id"] == "1042"]
    assert adopt_1042["action"] == "adopted" and adopt_1042["qbo_id"] == "701"
    assert dry_json["parts"]["adopted"] == 2  # counted once, though the PO path meets the parts again
    assert any(c["path"].endswith("Qty") and c["old"] == "2" and c["new"] == "3" for c in adopt_1042["changes"])
    assert env.box.qbo.counters["writes"] == 0

    # 3. the first sync: no SKU gets a second item, no DocNumber a second PO
    first = env.run("sync", "--json")
    assert first.code == 3, first.stdout
    result = first.json()
    assert result["parts"]["created"] == 0 and result["parts"]["adopted"] == 2  # 10 and 12; 11 matched by name
    assert result["purchase_orders"]["adopted"] == 1
    failed = {(f["kind"], f["ion_id"]): f for f in result["failures"]}
    assert set(failed) == {("part", "13"), ("part", "14"), ("purchase_order", "1043"), ("purchase_order", "1044"),
                           ("purchase_order", "1045")}
    assert failed[("part", "13")]["code"] == "item_ambiguous"
    assert items_by_sku(env) == skus_before
    items_after = {i["Id"]: i for i in env.box.qbo.dump()["Item"]}
    for item_id, before in items_before.items():  # names, accounts and quantities on hand stay
        after = items_after[item_id]
        for key in ("Name", "QtyOnHand", "AssetAccountRef", "IncomeAccountRef", "ExpenseAccountRef", "Active"):
            assert _plain(after.get(key)) == _plain(before.get(key, True if key == "Active" else None)), (item_id, key)
    assert collections.Counter(p["DocNumber"] for p in qbo_pos(env)) == collections.Counter({"1042": 1})
    po = po_by_doc(env, "1042")
    assert po["Id"] == "701" and po["PrivateNote"] == "entered by the ION integration"
    lines = {ln["ItemBasedExpenseLineDetail"]["ItemRef"]["value"]: ln for ln in po["Line"]
             if ln["DetailType"] == "ItemBasedExpenseLineDetail"}
    assert lines["302"]["Id"] == "1" and lines["302"]["LinkedTxn"] == [BILL]  # the billed line keeps Id and bill
    assert lines["303"]["Id"] == "2" and lines["303"]["ItemBasedExpenseLineDetail"]["Qty"] == 3
    assert items_after["303"]["Sku"] == "nas1352-3"  # the same SKU in another case is left as QBO has it
    for ln, seeded_line in zip((lines["302"], lines["303"]), seeded["PurchaseOrder"][0]["Line"], strict=True):
        for key in ("CustomerRef", "BillableStatus", "TaxCodeRef"):  # no line loses a field ionqbo does not own
            old = seeded_line["ItemBasedExpenseLineDetail"][key]
            new = ln["ItemBasedExpenseLineDetail"][key]
            assert (new["value"] if isinstance(new, dict) else new) == (old["value"] if isinstance(old, dict) else old)
    assert po["LinkedTxn"] == [BILL]

    # 4. the second sync writes nothing
    env.box.qbo.reset_counters()
    second = env.run("sync", "--json")
    assert second.code == 3
    assert env.box.qbo.counters["writes"] == 0, second.stdout
    assert items_by_sku(env) == skus_before


def test_adopted_pos_wait_for_their_next_ion_change_when_asked(env: Env) -> None:
    fill_company(env)
    env.set(IONQBO_ADOPT_POS="on_change")
    before = po_by_doc(env, "1042")
    report = env.run("sync", "--json").json()
    assert report["purchase_orders"]["adopted"] == 1
    (record,) = [r for r in report["records"] if r["ion_id"] == "1042"]
    assert record["action"] == "adopted" and record["changes"]  # what differs is shown, not written
    after = po_by_doc(env, "1042")
    assert after["SyncToken"] == before["SyncToken"] and after["Line"] == before["Line"]
    env.box.qbo.reset_counters()
    assert env.run("sync").code == 3
    assert env.box.qbo.counters["writes"] == 0  # linked: not adopted again, not rewritten
    env.box.ion.update_line(1042, 5002, {"quantity": 6, "totalCost": 2.0})
    again = env.run("sync", "--json").json()
    assert again["purchase_orders"]["updated"] == 1 and again["purchase_orders"]["adopted"] == 0
    po = po_by_doc(env, "1042")
    assert po["Id"] == "701" and [ln["Id"] for ln in po["Line"]][:2] == ["1", "2"]
    assert po["Line"][0]["LinkedTxn"] == [BILL]
    assert po["Line"][0]["ItemBasedExpenseLineDetail"]["CustomerRef"]["value"] == "501"


def test_the_fixes_named_in_the_errors_work(env: Env) -> None:
    fill_company(env)
    assert env.run("sync").code == 3
    skus_before = items_by_sku(env)
    # a mapping takes the non-inventory item for TV-ASSY-100; activating item 304 lets it be adopted
    mappings = env.path.parent / "mappings.toml"
    mappings.write_text('[items]\n"TV-ASSY-100" = "305"\n')
    env.set(IONQBO_MAPPINGS=str(mappings))
    stored = env.box.qbo.store.get("Item", "304")
    assert stored is not None
    env.box.qbo.store.put("Item", {**stored, "Active": True})
    check = env.run("check-mappings", "--json")
    assert check.code == 3, check.stderr  # only the sample's expense code 7777 blocks
    blocking = [(r["section"], r["subject"]) for rows in check.json()["sections"].values() for r in rows
                if r["severity"] == "blocking"]
    assert blocking == [("references", 'expense code "7777"')]
    run = env.run("sync", "--json")
    report = run.json()
    failed = {(f["kind"], f["ion_id"]) for f in report["failures"]}
    assert failed == {("purchase_order", "1045")}, run.stdout  # only the sample's expense code 7777 is left
    assert items_by_sku(env) == skus_before
    lines = [ln for ln in po_by_doc(env, "1044")["Line"] if ln["DetailType"] == "ItemBasedExpenseLineDetail"]
    assert [ln["ItemBasedExpenseLineDetail"]["ItemRef"]["value"] for ln in lines] == ["305"]
    lines = [ln for ln in po_by_doc(env, "1043")["Line"] if ln["DetailType"] == "ItemBasedExpenseLineDetail"]
    assert [ln["ItemBasedExpenseLineDetail"]["ItemRef"]["value"] for ln in lines] == ["304"]
    env.box.qbo.reset_counters()
    assert env.run("sync").code == 3
    assert env.box.qbo.counters["writes"] == 0


def test_name_matching_leaves_the_skus_alone(env: Env) -> None:
    fill_company(env)
    env.set(IONQBO_ITEM_MATCH="name")
    report = env.run("sync", "--json").json()
    assert report["parts"]["failed"] == 0 and report["parts"]["created"] == 4  # all but "820412-001 Rev A"
    names = {i["Name"] for i in env.box.qbo.dump()["Item"]}
    assert {"820412-001 Rev B", "NAS1352-3 Rev A", "HX-CFRP-PLATE Rev C", "TV-ASSY-100 Rev 1"} <= names
