"""End to end: `ionqbo check-mappings` (the real CLI, a subprocess) against the sandbox over HTTP.

Every gap is made the way a person would make it (a vendor name that differs, an account of the wrong
type, a preference turned off, a field ION does not have) and must be reported by name, with its fix,
exit 3, and no write on either side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from conftest import Env

ION_MUTATIONS = {"dispatchNotification"}


def rows(report: dict[str, Any], section: str | None = None) -> list[dict[str, Any]]:
    return [row for name, found in report["sections"].items() if section in (None, name) for row in found]


def blocking(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for row in rows(report) if row["severity"] == "blocking"]


def find(report: dict[str, Any], section: str, subject: str) -> dict[str, Any]:
    matches = [row for row in rows(report, section) if row["subject"] == subject]
    assert len(matches) == 1, (subject, [r["subject"] for r in rows(report, section)])
    return matches[0]


def assert_read_only(env: Env) -> None:
    qbo = env.box.qbo.counters
    assert qbo["writes"] == 0 and qbo["create"] == 0 and qbo["update"] == 0 and qbo["batch"] == 0, qbo
    assert qbo["query"] > 0 and qbo["preferences"] >= 1  # it did read
    ops = env.box.ion.counters["by_operation"]
    assert not ION_MUTATIONS & set(ops), ops
    assert ops.get("purchaseOrders", 0) >= 1 or ops.get("__schema", 0) == 1


def check(env: Env, *extra: str) -> tuple[int, dict[str, Any]]:
    run = env.run("check-mappings", "--json", *extra)
    assert run.stdout.strip().startswith("{"), run.stderr
    report = run.json()
    assert report["exit_code"] == run.code
    return run.code, report


def add_calibration_account(env: Env) -> None:
    env.box.qbo.load({"Account": [{"Id": "95", "Name": "Calibration", "AcctNum": "7777", "AccountType": "Expense",
                                   "AccountSubType": "OtherMiscellaneousServiceCost"}]})


# ---- the sample and a clean setup ------------------------------------------------------------------------


def test_the_sample_reports_expense_code_7777_with_its_fix_and_writes_nothing(env: Env) -> None:
    code, report = check(env)
    assert code == 3
    assert [(r["section"], r["subject"]) for r in blocking(report)] == [("references", 'expense code "7777"')]
    gap = find(report, "references", 'expense code "7777"')
    assert gap["message"] == 'expense code "7777" has no QBO account'
    assert 'add an account numbered or named "7777"' in gap["fix"] and "[expense_codes]" in gap["fix"]
    assert gap["used_by"] == ["PO 1045"]
    assert report["checked"] == {"purchase_orders": 4, "parts": 5}  # the DRAFT PO 1046 is out of scope
    # names that resolve show what they resolve to, exactly as the sync will
    assert find(report, "references", 'supplier "Precision Machining, LLC"')["message"] == \
        '-> QBO vendor 42 "Precision Machining, LLC"'
    assert find(report, "references", 'fee "Shipping"')["used_by"] == ["PO 1042", "PO 1043"]
    assert_read_only(env)
    assert not (env.state_dir / "state.json").exists()  # no state written either


def test_a_clean_setup_exits_0_and_the_text_says_so(env: Env) -> None:
    add_calibration_account(env)
    code, report = check(env)
    assert code == 0, blocking(report)
    assert report["ok"] is True and report["blocking"] == 0
    assert find(report, "references", 'expense code "7777"')["message"] == '-> QBO account 95 7777 "Calibration"'
    text = env.run("check-mappings")
    assert text.code == 0
    assert "nothing blocks a sync (exit 0)" in text.stdout
    for section in ("== connectivity ==", "== ION schema ==", "== QBO settings ==", "== references ==",
                    "== parts ==", "== purchase orders =="):
        assert section in text.stdout
    assert_read_only(env)
    # and the sync agrees: nothing is refused
    assert env.run("sync", "--json").code == 0


# ---- each kind of gap --------------------------------------------------------------------------------------


def _vendor(env: Env) -> None:
    add_calibration_account(env)
    env.box.ion.add_supplier({"id": 9, "name": "ACME Inc"})
    env.box.ion.add_purchase_order({
        "id": 2001, "status": "ORDERED", "supplierId": 9, "currencyId": 1,
        "purchaseOrderLines": [{"id": 9001, "quantity": 1, "unitCost": 10, "totalCost": 10,
                                "expenseCode": "6100", "description": "end mills"}],
        "fees": [],
    })
    env.box.qbo.load({"Vendor": [{"DisplayName": "Acme, Inc.", "CurrencyRef": {"value": "USD"}}]})


def _class(env: Env) -> None:
    add_calibration_account(env)
    env.box.ion.update_line(1042, 5001, {"accountingClass": "Prodution"})


def _currency(env: Env) -> None:
    add_calibration_account(env)
    env.box.qbo.load({"CompanyCurrency": [{"Id": "1", "Code": "EUR", "Name": "Euro", "Active": False}]})


def _fee_account(env: Env) -> None:
    add_calibration_account(env)
    env.set(QBO_FEE_ACCOUNT_ID="35")  # Checking: a Bank account


def _ap_account(env: Env) -> None:
    add_calibration_account(env)
    env.set(QBO_AP_ACCOUNT_ID="90")  # Tooling: an Expense account


def _inventory_off(env: Env) -> None:
    add_calibration_account(env)
    env.box.qbo.load({"Preferences": {"ProductAndServicesPrefs": {"QuantityOnHand": False}}})


def _schema_field(env: Env) -> None:
    add_calibration_account(env)
    # This ION lacks PurchaseOrderLine.expenseCode: the emulator's own (per-instance) executable schema loses
    # the field, so introspection and execution both behave as such an ION would.
    del env.box.ion.schema.type_map["PurchaseOrderLine"].fields["expenseCode"]


GAPS = [
    pytest.param(_vendor, "references", 'supplier "ACME Inc"', 'supplier "ACME Inc" has no QBO vendor',
                 '"Acme, Inc."', "PO 2001", id="vendor"),
    pytest.param(lambda env: None, "references", 'expense code "7777"', 'expense code "7777" has no QBO account',
                 "Chart of accounts", "PO 1045", id="expense-account"),
    pytest.param(_class, "references", 'class "Prodution"', 'class "Prodution" has no QBO class',
                 'did you mean "Production"?', "PO 1042", id="class"),
    pytest.param(_currency, "references", "currency EUR", "currency EUR is not an active currency in QuickBooks",
                 "add EUR in QuickBooks", "PO 1044", id="currency"),
    pytest.param(_fee_account, "references", 'fee "Shipping"', 'QBO account "Checking" is of type Bank',
                 "[fees]", "PO 1042", id="fee-account"),
    pytest.param(_ap_account, "QBO settings", "QBO_AP_ACCOUNT_ID",
                 'account 90 "Tooling" is of type Expense, not Accounts Payable',
                 "set QBO_AP_ACCOUNT_ID to the id of an account of type Accounts Payable", None, id="ap-account-type"),
    pytest.param(_inventory_off, "QBO settings", "inventory tracking", "quantity on hand is not tracked",
                 "Track inventory quantity on hand", None, id="inventory-off"),
]


@pytest.mark.parametrize(("setup", "section", "subject", "message", "fix", "used_by"), GAPS)
def test_each_gap_is_named_with_its_fix_and_exit_3(env: Env, setup: Callable[[Env], None], section: str,
                                                   subject: str, message: str, fix: str, used_by: str | None) -> None:
    setup(env)
    env.box.qbo.reset_counters()
    env.box.ion.reset_counters()
    code, report = check(env)
    assert code == 3
    gap = find(report, section, subject)
    assert gap["severity"] == "blocking"
    assert message in gap["message"]
    assert fix in gap["fix"]
    if setup is _vendor:
        assert "did you mean" in gap["fix"]
    if used_by:
        assert used_by in gap["used_by"]
    assert_read_only(env)
    text = env.run("check-mappings")
    assert text.code == 3
    lines = text.stdout.splitlines()
    first_row = lines[next(i for i, line in enumerate(lines) if line.startswith("----")) + 1]
    assert first_row.startswith("BLOCKING")  # blocking problems come first
    assert text.stdout.index(f"== {section} ==") < text.stdout.index("== connectivity ==")
    assert "BLOCKING" in text.stdout and subject.split('"')[0].strip() in text.stdout


def test_a_missing_required_schema_field_is_a_settings_problem_naming_the_setting(env: Env) -> None:
    _schema_field(env)
    env.box.ion.reset_counters()
    code, report = check(env)
    assert code == 2
    gap = find(report, "ION schema", "line.expenseCode")
    assert gap["severity"] == "blocking"
    assert "ION has no field for a line's expense code (searched PurchaseOrderLine for expenseCode" in gap["message"]
    assert '[ion_fields] "line.expenseCode"' in gap["fix"] and "IONQBO_MAPPINGS" in gap["fix"]
    assert find(report, "ION schema", "line.quantity")["severity"] == "ok"
    # No record is read with queries a sync could not send.
    assert set(env.box.ion.counters["by_operation"]) <= {"me", "__schema"}


def test_multicurrency_off_blocks_a_foreign_currency_po(env: Env) -> None:
    add_calibration_account(env)
    env.box.qbo.load({"Preferences": {"CurrencyPrefs": {"MultiCurrencyEnabled": False}}})
    code, report = check(env)
    assert code == 3
    setting = find(report, "QBO settings", "multicurrency")
    assert setting["severity"] == "blocking" and setting["used_by"] == ["PO 1044"]
    assert "in use: EUR, USD" in setting["message"]
    currency = find(report, "references", "currency EUR")
    assert "multicurrency is off" in currency["message"]


def test_class_tracking_off_and_custom_numbers_off_block(env: Env) -> None:
    add_calibration_account(env)
    env.box.qbo.load({"Preferences": {
        "AccountingInfoPrefs": {"ClassTrackingPerTxnLine": False, "ClassTrackingPerTxn": True},
        "OtherPrefs": {"NameValue": [{"Name": "VendorAndPurchasesPrefs.PurchaseOrderEnabled", "Value": "true"},
                                     {"Name": "VendorAndPurchasesPrefs.UseCustomTxnNumbers", "Value": "false"}]},
    }})
    code, report = check(env)
    assert code == 3
    tracking = find(report, "QBO settings", "class tracking per line")
    assert tracking["severity"] == "blocking" and "per transaction, not per line" in tracking["message"]
    assert tracking["used_by"] == ["PO 1042", "PO 1043", "PO 1044"]
    numbers = find(report, "QBO settings", "custom transaction numbers")
    assert numbers["severity"] == "blocking" and "Custom transaction numbers" in numbers["fix"]


def test_part_names_that_collide_or_are_taken_by_another_sku(env: Env) -> None:
    add_calibration_account(env)
    env.box.ion.add_part({"id": 15, "partNumber": "HX-CFRP-PLATE", "revision": "C", "description": "same name",
                          "isLatestRevision": True})  # "HX-CFRP:PLATE Rev C" becomes this name too
    env.box.qbo.load({"Item": [{"Name": "NAS1352-3 Rev A", "Sku": "OTHER-SKU", "Type": "Inventory",
                                "TrackQtyOnHand": True, "QtyOnHand": 0}]})
    code, report = check(env)
    assert code == 3
    parts = {r["subject"]: r for r in blocking(report) if r["section"] == "parts"}
    assert set(parts) == {'part 15 "HX-CFRP-PLATE"', 'part 12 "NAS1352-3"'}
    assert "the same as that of part(s) 13, 15" in parts['part 15 "HX-CFRP-PLATE"']["message"]
    assert "belongs to SKU 'OTHER-SKU'" in parts['part 12 "NAS1352-3"']["message"]
    assert "PO 1042" in parts['part 12 "NAS1352-3"']["used_by"]


# ---- explicit mappings, settings, authorization ---------------------------------------------------------------


def test_an_explicit_mapping_wins_and_an_unused_one_is_a_warning(env: Env) -> None:
    mappings = env.path.parent / "mappings.toml"
    mappings.write_text('[expense_codes]\n"7777" = "91"\n\n[suppliers]\n"Nobody Ltd" = "41"\n')
    env.set(IONQBO_MAPPINGS=str(mappings))
    code, report = check(env)
    assert code == 0, blocking(report)
    assert find(report, "references", 'expense code "7777"')["message"] == \
        '-> QBO account 91 6200 "Test & Inspection Services"'
    unused = find(report, "references", '[suppliers] "nobody ltd"')
    assert unused["severity"] == "warning" and "not used" in unused["message"]


def test_an_invalid_mappings_file_is_a_settings_error(env: Env) -> None:
    mappings = env.path.parent / "mappings.toml"
    mappings.write_text('[expense_codes]\n"7777" = "not-an-id"\n')
    env.set(IONQBO_MAPPINGS=str(mappings))
    code, report = check(env)
    assert code == 2
    problem = find(report, "QBO settings", "IONQBO_MAPPINGS")
    assert '"7777"' in problem["message"] and "must be a QBO account id" in problem["message"]


def test_a_rejected_ion_key_exits_4(env: Env) -> None:
    env.set(ION_CLIENT_SECRET="wrong-secret")
    code, report = check(env)
    assert code == 4
    ion = find(report, "connectivity", "ION")
    assert ion["severity"] == "blocking" and ion["exit_code"] == 4
    assert "wrong-secret" not in env.run("check-mappings").stdout


def test_qbo_consent_needed_exits_4(env: Env) -> None:
    env.set(QBO_REFRESH_TOKEN="revoked-or-made-up")
    code, report = check(env)
    assert code == 4
    qbo = find(report, "connectivity", "QBO")
    assert "ionqbo connect" in qbo["fix"]
    assert env.box.qbo.counters["writes"] == 0


def test_fees_without_an_account_block_their_pos_and_a_missing_item_account_is_a_settings_error(env: Env) -> None:
    add_calibration_account(env)
    env.set(QBO_FEE_ACCOUNT_ID="")
    code, report = check(env)
    assert code == 3
    fee = find(report, "references", 'fee "Expedite"')
    assert fee["severity"] == "blocking" and "QBO_FEE_ACCOUNT_ID is not set" in fee["message"]
    assert find(report, "QBO settings", "QBO_FEE_ACCOUNT_ID")["severity"] == "warning"

    env.set(QBO_FEE_ACCOUNT_ID="92", QBO_COGS_ACCOUNT_ID="")
    code, report = check(env)
    assert code == 2  # the sync refuses to start without it, too
    cogs = find(report, "QBO settings", "QBO_COGS_ACCOUNT_ID")
    assert cogs["severity"] == "blocking" and cogs["exit_code"] == 2


def test_a_status_this_ion_does_not_have_is_a_settings_problem(env: Env) -> None:
    env.set(IONQBO_PO_STATUSES="ORDERED,IN_REVIEW")  # the UI's "In Review" is REQUESTED in ION's API
    code, report = check(env)
    assert code == 2
    gap = find(report, "ION schema", "IONQBO_PO_STATUSES")
    assert "ION has no purchase order status IN_REVIEW" in gap["message"] and "REQUESTED" in gap["message"]
    stopped = env.run("sync")
    assert stopped.code == 2 and "IN_REVIEW" in stopped.stderr
    assert env.box.qbo.counters["writes"] == 0
