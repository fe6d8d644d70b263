"""Edges of the pure core (diff.py, mapping.py) that mutation testing found unguarded.

Each test names the behaviour; scripts/mutation.sh runs these with tests/test_mapping.py and
tests/test_diff.py (docs/testing.md lists what survives and why).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from ionqbo.diff import diff, keep_line_ids, render, update_body
from ionqbo.errors import ConfigError, MappingError
from ionqbo.ion.models import Part, parse_purchase_order
from ionqbo.mapping import (
    ADDR_LINE_MAX,
    DOC_NUMBER_MAX,
    ITEM_COST_MAX,
    LINE_DESC_MAX,
    PURCHASE_DESC_MAX,
    References,
    item_name,
    parse_mappings,
    part_to_item,
    po_to_payload,
    reference_gap,
    resolve_class,
    resolve_expense_account,
    resolve_vendor,
    suggest,
)

ITEM = "ItemBasedExpenseLineDetail"
CATEGORY = "AccountBasedExpenseLineDetail"


def _item_line(item: str, amount: float, qty: float = 1, **extra: Any) -> dict[str, Any]:
    return {"DetailType": ITEM, "Amount": amount,
            ITEM: {"ItemRef": {"value": item}, "Qty": qty, "UnitPrice": amount / qty}, **extra}


# ---- diff: values -----------------------------------------------------------------------------------


def test_a_number_sent_as_text_equals_the_same_number_in_qbo() -> None:
    assert diff({"Amount": "25.00"}, {"Amount": 25}, ["Amount"]).action == "unchanged"
    assert diff({"Amount": 25}, {"Amount": "25.00"}, ["Amount"]).action == "unchanged"
    assert diff({"Amount": "25.01"}, {"Amount": 25}, ["Amount"]).action == "update"


def test_booleans_compare_by_value() -> None:
    assert diff({"Active": True}, {"Active": True}, ["Active"]).action == "unchanged"
    assert diff({"Active": False}, {"Active": True}, ["Active"]).action == "update"
    assert diff({"Active": True}, {"Active": 1}, ["Active"]).action == "update"  # a bool is not a number


def test_text_ignores_crlf_line_ends_and_surrounding_space() -> None:
    assert diff({"Memo": "first\nsecond"}, {"Memo": "first\r\nsecond "}, ["Memo"]).action == "unchanged"
    assert diff({"Memo": "first\nsecond"}, {"Memo": "first second"}, ["Memo"]).action == "update"


def test_an_owned_field_sent_empty_clears_what_qbo_holds() -> None:
    existing = {"Id": "1", "SyncToken": "0", "Line": [_item_line("7", 10, Description="old words")]}
    line = _item_line("7", 10, Description="")
    change = diff({"Line": [line]}, existing, ["Line"])
    assert change.action == "update"
    assert [c.path for c in change.fields] == ["Line[1].Description"]
    assert "Description" not in change.body["Line"][0] or change.body["Line"][0]["Description"] == ""


def test_a_ref_given_as_a_bare_id_compares_by_value() -> None:
    assert diff({"VendorRef": "41"}, {"VendorRef": {"value": "41", "name": "Acme"}}, ["VendorRef"]).action == "unchanged"
    assert diff({"VendorRef": "42"}, {"VendorRef": {"value": "41"}}, ["VendorRef"]).action == "update"


# ---- diff: bodies share nothing with their inputs ---------------------------------------------------


def test_a_create_body_is_a_deep_copy_of_the_desired_payload() -> None:
    desired = {"Line": [_item_line("7", 10)], "VendorRef": {"value": "41"}}
    before = copy.deepcopy(desired)
    change = diff(desired, None, ["Line", "VendorRef"])
    change.body["Line"][0][ITEM]["Qty"] = 99
    change.body["VendorRef"]["value"] = "0"
    assert desired == before


def test_an_update_body_shares_nothing_with_the_qbo_object_or_the_payload() -> None:
    existing = {"Id": "1", "SyncToken": "3", "CustomField": [{"Name": "Job", "StringValue": "7"}],
                "Line": [_item_line("7", 10)]}
    replace = {"ShipAddr": {"Line1": "1200 Foundry Way"}}
    kept, sent = copy.deepcopy(existing), copy.deepcopy(replace)
    body = update_body(existing, replace)
    body["CustomField"][0]["StringValue"] = "changed"
    body["ShipAddr"]["Line1"] = "changed"
    assert (existing, replace) == (kept, sent)


def test_an_update_body_removes_a_field_sent_empty_even_when_qbo_has_none() -> None:
    body = update_body({"Id": "1", "SyncToken": "0", "Memo": "x"}, {"Memo": "", "PrivateNote": None})
    assert body == {"Id": "1", "SyncToken": "0"}


# ---- diff: lines ------------------------------------------------------------------------------------


def test_qbo_lines_with_the_same_line_number_or_no_detail_do_not_break_the_diff() -> None:
    existing = {"Id": "1", "SyncToken": "0", "Line": [
        {**_item_line("7", 10), "Id": "1", "LineNum": 1},
        {**_item_line("8", 5), "Id": "2", "LineNum": 1},  # the same LineNum twice
        {"Id": "3", "LineNum": 2, "DetailType": ITEM, "Amount": 1},  # no detail object
    ]}
    change = diff({"Line": [_item_line("7", 10), _item_line("8", 5)]}, existing, ["Line"])
    assert change.action == "update"  # line 3 goes
    assert [line.get("Id") for line in change.body["Line"]] == ["1", "2"]


def test_a_line_that_already_names_its_qbo_line_keeps_that_id() -> None:
    existing = [{**_item_line("7", 10), "Id": "3"}, {**_item_line("7", 10), "Id": "4"}]
    out = keep_line_ids([{**_item_line("7", 10), "Id": "4"}, _item_line("7", 10)], existing)
    assert [line["Id"] for line in out] == ["4", "3"]


def test_a_non_object_in_qbos_lines_is_ignored() -> None:
    existing: list[Any] = ["garbage", {**_item_line("7", 10), "Id": "3"}]
    assert keep_line_ids([_item_line("7", 10)], existing)[0]["Id"] == "3"


# ---- render (the dry-run table) ---------------------------------------------------------------------


def test_render_shows_booleans_lists_and_lines_as_text() -> None:
    assert (render(True), render(False)) == ("true", "false")
    assert render([1, "two", {"value": "3"}]) == "[1; two; 3]"
    assert render(_item_line("7", 10, qty=2)) == "Amount=10, ItemRef=7, Qty=2, UnitPrice=5"
    assert render({"value": "3", "name": "Tooling", "type": "Account"}) == "value=3, name=Tooling, type=Account"
    assert render(2.50) == "2.5" and render(-0.0) == "0"


# ---- mapping: explicit mappings file ------------------------------------------------------------------


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_mappings(text)
    assert info.value.hint == "correct the file named by IONQBO_MAPPINGS"
    return list(info.value.problems)


def test_every_problem_in_the_mappings_file_is_reported_wherever_it_is() -> None:
    problems = _problems(
        '[other]\n[fees]\nShipping = "x"\n"" = "1"\nB = "2"\nb = "3"\nC = "y"\n'
        '[suppliers."Globex"]\nEURO = "5"\nUSD = "x"\nGBP = "7"\n[suppliers.Zed]\nUSD = "z"\n'
    )
    assert problems == [
        "IONQBO_MAPPINGS: unknown table [other] (expected one of: suppliers, expense_codes, classes, fees, items, tax_codes)",
        'IONQBO_MAPPINGS: [fees] "Shipping" = \'x\' must be a QBO account id (the digits in its QuickBooks URL, e.g. "41")',
        'IONQBO_MAPPINGS: [fees] "": the name is empty',
        'IONQBO_MAPPINGS: [fees] "b" repeats [fees] "B" (names ignore case)',
        'IONQBO_MAPPINGS: [fees] "C" = \'y\' must be a QBO account id (the digits in its QuickBooks URL, e.g. "41")',
        "IONQBO_MAPPINGS: [suppliers.\"Globex\"] EURO: 'EURO' is not an ISO 4217 currency code",
        'IONQBO_MAPPINGS: [suppliers."Globex"] USD = \'x\' must be a QBO vendor id (the digits in its QuickBooks URL, e.g. "41")',
        'IONQBO_MAPPINGS: [suppliers."Zed"] USD = \'z\' must be a QBO vendor id (the digits in its QuickBooks URL, e.g. "41")',
    ]
    assert _problems("fees = 3\n[classes]\nA = true\n") == [
        "IONQBO_MAPPINGS: fees must be a table ([fees])",
        "IONQBO_MAPPINGS: [classes] \"A\" = True must be a QBO class id (the digits in its QuickBooks URL, e.g. \"41\")",
    ]


def test_a_mapping_id_may_be_an_integer_but_not_a_boolean() -> None:
    assert parse_mappings("[fees]\nShipping = 91\n").lookup("fees", "shipping") == "91"
    assert len(_problems("[fees]\nShipping = false\n")) == 1


# ---- mapping: references ------------------------------------------------------------------------------


def _refs(**kw: Any) -> References:
    base: dict[str, Any] = {
        "vendors": [{"Id": "41", "DisplayName": "Acme", "Active": True},
                    {"Id": "42", "DisplayName": "Twin", "Active": True},
                    {"Id": "43", "DisplayName": "twin ", "Active": True},
                    {"Id": "44", "DisplayName": "Gone", "Active": False},
                    {"Id": "45", "DisplayName": "Acme EUR", "Active": True, "CurrencyRef": {"value": "EUR"}}],
        "accounts": [
            {"Id": "90", "Name": "Tooling", "FullyQualifiedName": "Tooling", "AcctNum": "6100",
             "AccountType": "Expense", "Active": True},
            {"Id": "91", "Name": "Prototype", "FullyQualifiedName": "R&D:Prototype", "AccountType": "Expense",
             "Active": True},
            {"Id": "92", "Name": "Freight", "FullyQualifiedName": "COGS:Freight", "AccountType": "Cost of Goods Sold",
             "Active": True},
            {"Id": "93", "Name": "Freight", "FullyQualifiedName": "Expenses:Freight", "AccountType": "Expense",
             "Active": True},
            {"Id": "94", "Name": "Old", "AcctNum": "6900", "AccountType": "Expense", "Active": False},
        ],
        "classes": [
            {"Id": "1", "Name": "Prototype", "FullyQualifiedName": "Engineering:Prototype", "Active": True},
            {"Id": "2", "Name": "Line", "FullyQualifiedName": "Production:Line", "Active": True},
            {"Id": "3", "Name": "Line", "FullyQualifiedName": "Service:Line", "Active": True},
            {"Id": "4", "Name": "Retired", "FullyQualifiedName": "Retired", "Active": False},
        ],
        "company_currencies": [{"Id": "1", "Code": " eur ", "Active": True}, {"Id": "2", "Active": True}],
        "preferences": {"CurrencyPrefs": {"MultiCurrencyEnabled": True, "HomeCurrency": {"value": "USD"}}},
        "fee_account_id": "92",
        "ap_account_id": "33",
    }
    base.update(kw)
    return References.build(**base)


def _gap(refs: References, kind: str, name: str, **kw: Any) -> tuple[str, str]:
    gap = reference_gap(refs, kind, name, **kw)
    assert gap is not None, (kind, name)
    return gap.message, gap.hint


def test_a_mapping_to_an_inactive_or_unknown_object_is_a_gap_that_says_which() -> None:
    refs = _refs(mappings=parse_mappings(
        '[suppliers]\nAcme = "44"\nNobody = "999"\n[expense_codes]\n"6100" = "94"\n"6200" = "999"\n'
        '[classes]\nPrototype = "4"\nLine = "999"\n[fees]\nShipping = "94"\n'
        '[suppliers."Globex"]\nEUR = "45"\nGBP = "44"\n'))
    assert _gap(refs, "supplier", "Acme") == (
        'supplier "Acme" is mapped to QBO vendor id 44 under [suppliers], which is inactive',
        "correct the id under [suppliers] in IONQBO_MAPPINGS (it is the number in the vendor's QuickBooks URL), "
        "or make the vendor active")
    assert _gap(refs, "supplier", "Nobody")[0].endswith("vendor id 999 under [suppliers], which is not found")
    assert _gap(refs, "expense_code", "6100") == (
        'expense code "6100" is mapped to QBO account id 94 under [expense_codes], which is inactive',
        "correct the id under [expense_codes] in IONQBO_MAPPINGS, or make the account active")
    assert _gap(refs, "expense_code", "6200")[0].endswith("account id 999 under [expense_codes], which is not found")
    assert _gap(refs, "class", "Prototype") == (
        'class "Prototype" is mapped to QBO class id 4 under [classes], which is inactive',
        "correct the id under [classes] in IONQBO_MAPPINGS, or make the class active")
    assert _gap(refs, "class", "Line")[0].endswith("class id 999 under [classes], which is not found")
    assert _gap(refs, "fee", "Shipping")[0] == (
        'fee "Shipping" is mapped to QBO account id 94 under [fees], which is inactive')
    assert reference_gap(refs, "supplier", "Globex", currency="eur") is None
    assert resolve_vendor(refs, "Globex", "EUR") == refs.index.vendors_by_id["45"]
    assert _gap(refs, "supplier", "Globex", currency="GBP")[0] == (
        'supplier "Globex" is mapped to QBO vendor id 44 under [suppliers."Globex"] GBP, which is inactive')
    assert _gap(refs, "supplier", "Globex") == (  # no currency given: the home currency
        'supplier "Globex" has no QBO vendor mapped for USD',
        'add USD = "<vendor id>" under [suppliers."Globex"] in IONQBO_MAPPINGS')
    no_home = _refs(preferences={}, mappings=parse_mappings('[suppliers."Globex"]\nEUR = "45"\n'))
    assert _gap(no_home, "supplier", "Globex") == (
        'supplier "Globex" has no QBO vendor mapped for the PO currency',
        'add the currency = "<vendor id>" under [suppliers."Globex"] in IONQBO_MAPPINGS')


def test_a_name_that_matches_several_objects_is_a_gap_that_names_them() -> None:
    refs = _refs()
    assert _gap(refs, "supplier", "TWIN") == (
        'supplier "TWIN" matches several QBO vendors (ids 42, 43)',
        "map it under [suppliers] in IONQBO_MAPPINGS to the vendor id you mean")
    assert _gap(refs, "expense_code", "freight") == (
        'expense code "freight" matches several QBO accounts (COGS:Freight, Expenses:Freight)',
        "map it under [expense_codes] in IONQBO_MAPPINGS to the account id you mean")
    assert _gap(refs, "class", "line") == (
        'class "line" matches several QBO classes (Production:Line, Service:Line)',
        "map it under [classes] in IONQBO_MAPPINGS to the class id you mean")
    assert _gap(refs, "supplier", "gone")[0] == 'supplier "gone" matches QBO vendor 44, which is inactive'


def test_accounts_and_classes_resolve_by_number_then_full_name_then_name() -> None:
    refs = _refs()
    assert resolve_expense_account(refs, "6100")["Id"] == "90"  # AcctNum
    assert resolve_expense_account(refs, "r&d:prototype")["Id"] == "91"  # FullyQualifiedName
    assert resolve_expense_account(refs, "Prototype")["Id"] == "91"  # Name
    assert resolve_expense_account(refs, "6900") is None  # inactive
    assert resolve_class(refs, "Engineering:Prototype")["Id"] == "1"
    assert resolve_class(refs, " prototype ")["Id"] == "1"
    assert resolve_class(refs, "Retired") is None
    assert refs.account("94") is None and refs.account("90")["Id"] == "90"  # active accounts only
    assert refs.index.currencies == frozenset({"EUR"})  # codes trimmed and upper-cased; none without a code


def test_references_take_explicit_ids_and_template_over_the_settings() -> None:
    from types import SimpleNamespace

    settings = SimpleNamespace(qbo_ap_account_id=" 33 ", qbo_fee_account_id=None, qbo_inventory_asset_account_id="81",
                               qbo_income_account_id="79", qbo_cogs_account_id="80",
                               item_name_template="{partNumber} ({revision})")
    built = References.build(vendors=[], accounts=[], classes=[], company_currencies=[], preferences={},
                             settings=settings, item_name_template="{partNumber}", fee_account_id=None)
    assert (built.ap_account_id, built.fee_account_id, built.asset_account_id) == ("33", "", "81")
    assert (built.income_account_id, built.cogs_account_id) == ("79", "80")
    assert built.item_name_template == "{partNumber}"
    from_settings = References.build(vendors=[], accounts=[], classes=[], company_currencies=[], preferences={},
                                     settings=settings)
    assert from_settings.item_name_template == "{partNumber} ({revision})"
    bare = References.build(vendors=[], accounts=[], classes=[], company_currencies=[], preferences={})
    assert (bare.ap_account_id, bare.fee_account_id) == ("", "")


# ---- mapping: limits are inclusive, and errors name the field and the fix ----------------------------


def _golden() -> References:
    from test_mapping import golden_refs

    return golden_refs()


def _po(**overrides: Any) -> Any:
    from test_mapping import _po_node

    return parse_purchase_order(_po_node(**overrides))


def _line(**extra: Any) -> dict[str, Any]:
    return {"id": "77", "quantity": 1, "unitCost": 2, "totalCost": 2,
            "part": {"id": "p1", "partNumber": "X", "revision": "A"}, **extra}


def test_values_exactly_at_qbos_limits_are_sent() -> None:
    refs = _golden()
    node = {"street1": "s" * ADDR_LINE_MAX, "city": "c" * 255, "postalCode": "1" * 30}
    payload = po_to_payload(_po(id="1" * DOC_NUMBER_MAX, shippingAddress=node,
                                purchaseOrderLines=[_line(description="d" * LINE_DESC_MAX)],
                                fees=[{"id": "9", "name": "Shipping", "value": 0}]), refs, {"p1": "101"})
    assert payload["DocNumber"] == "1" * DOC_NUMBER_MAX
    assert payload["ShipAddr"]["Line1"] == "s" * ADDR_LINE_MAX
    assert payload["Line"][0]["Description"] == "d" * LINE_DESC_MAX
    part = Part(id="p9", part_number="X", revision="A", description="d" * PURCHASE_DESC_MAX, cost=Decimal(0))
    item = part_to_item(part, refs, start_date=date(2026, 1, 1))
    assert item["PurchaseDesc"] == "d" * PURCHASE_DESC_MAX and item["PurchaseCost"] == 0
    top = replace(part, cost=ITEM_COST_MAX)
    assert part_to_item(top, refs, start_date=date(2026, 1, 1))["PurchaseCost"] == int(ITEM_COST_MAX)


def test_a_part_cost_outside_qbos_range_names_the_field_and_the_fix() -> None:
    refs = _golden()
    for cost in (Decimal(-1), ITEM_COST_MAX + 1):
        part = Part(id="p9", part_number="X", revision="A", cost=cost)
        with pytest.raises(MappingError) as info:
            part_to_item(part, refs, start_date=date(2026, 1, 1))
        assert (info.value.kind, info.value.ion_id, info.value.field) == ("part", "p9", "cost")
        assert info.value.message == f"part p9 (X): cost {cost} is outside 0..{ITEM_COST_MAX}"
        assert info.value.hint == "correct the part cost in ION"


def test_a_po_without_supplier_or_currency_names_the_field_and_the_fix() -> None:
    refs = _golden()
    with pytest.raises(MappingError) as info:
        po_to_payload(_po(supplier=None), refs, {"p1": "101"})
    assert (info.value.field, info.value.message, info.value.hint) == (
        "supplier", "purchase order 1042: has no supplier", "set the purchase order's supplier in ION")
    no_home = replace(refs, preferences={"CurrencyPrefs": {"MultiCurrencyEnabled": True}})
    with pytest.raises(MappingError) as info:
        po_to_payload(_po(currency=None), no_home, {"p1": "101"})
    assert info.value.field == "currency"
    assert info.value.message == "purchase order 1042: has no currency and QBO preferences carry no home currency"
    assert info.value.hint == "set the purchase order's currency in ION"


def test_item_name_errors_name_the_setting_or_the_field() -> None:
    part = Part(id="p9", part_number="  ", revision="")
    with pytest.raises(MappingError) as info:
        item_name(part, "{partNumber}")
    assert (info.value.field, info.value.message, info.value.hint) == (
        "partNumber", "part p9: the item name comes out empty",
        "give the part a part number in ION, or change IONQBO_ITEM_NAME_TEMPLATE")
    with pytest.raises(MappingError) as info:
        item_name(part, "{partNumber!r}")
    assert info.value.field == "IONQBO_ITEM_NAME_TEMPLATE"
    assert info.value.message == "part p9: the item name template '{partNumber!r}' is not valid ('partNumber')"
    assert info.value.hint == "use only the fields description, id, partNumber, revision in IONQBO_ITEM_NAME_TEMPLATE"
    assert item_name(Part(id="p9", part_number="A", revision="B"), "{partNumber!s}-{revision}") == "A-B"


def test_suggestions_are_unique_and_ties_go_alphabetically() -> None:
    assert suggest("Tooling", ["Toolinh", "Toolinf", "Toolinh", "", "Tooling"]) == ["Tooling", "Toolinf", "Toolinh"]
