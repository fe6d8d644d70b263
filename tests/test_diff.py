"""Tests for ionqbo.diff: desired payload vs the QBO object as read -> create / update / unchanged."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from ionqbo.diff import FieldChange, diff, keep_line_ids, render, update_body
from ionqbo.mapping import ITEM_OWNED_FIELDS, PO_OWNED_FIELDS, close_payload


def _desired() -> dict[str, Any]:
    return {
        "DocNumber": "1042",
        "TxnDate": "2024-05-02",
        "VendorRef": {"value": "41"},
        "APAccountRef": {"value": "33"},
        "ShipAddr": {"Line1": "Receiving", "City": "Los Angeles"},
        "Line": [
            {
                "DetailType": "ItemBasedExpenseLineDetail",
                "Amount": 25,
                "Description": "Bracket",
                "ItemBasedExpenseLineDetail": {"ItemRef": {"value": "101"}, "Qty": 10, "UnitPrice": 2.5},
                "LineNum": 1,
            },
            {
                "DetailType": "AccountBasedExpenseLineDetail",
                "Amount": 45.5,
                "Description": "Shipping",
                "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "90"}},
                "LineNum": 2,
            },
        ],
    }


def _existing() -> dict[str, Any]:
    """What QBO returns for the desired PO: defaults added, numbers re-typed, names on refs."""
    return {
        "Id": "257",
        "SyncToken": "4",
        "domain": "QBO",
        "sparse": False,
        "POStatus": "Open",
        "EmailStatus": "NotSet",
        "DocNumber": "1042",
        "TxnDate": "2024-05-02",
        "TotalAmt": 70.5,
        "VendorRef": {"value": "41", "name": "Acme, Inc."},
        "APAccountRef": {"value": "33", "name": "Accounts Payable (A/P)"},
        "CurrencyRef": {"value": "USD", "name": "United States Dollar"},
        "ShipAddr": {"Id": "121", "Line1": "Receiving", "City": "Los Angeles"},
        "Memo": "Call before delivery",
        "CustomField": [
            {"DefinitionId": "1", "Name": "Project", "Type": "StringType", "StringValue": "Apollo"}
        ],
        "Line": [
            {
                "Id": "1",
                "LineNum": 1,
                "DetailType": "ItemBasedExpenseLineDetail",
                "Amount": 25.0,
                "Description": "Bracket",
                "ItemBasedExpenseLineDetail": {
                    "ItemRef": {"value": "101", "name": "820412-001 Rev B"},
                    "Qty": 10.0,
                    "UnitPrice": "2.50",
                    "TaxCodeRef": {"value": "NON"},
                    "BillableStatus": "NotBillable",
                },
            },
            {
                "Id": "2",
                "LineNum": 2,
                "DetailType": "AccountBasedExpenseLineDetail",
                "Amount": 45.50,
                "Description": "Shipping ",
                "AccountBasedExpenseLineDetail": {
                    "AccountRef": {"value": "90", "name": "Freight"},
                    "TaxCodeRef": {"value": "NON"},
                    "BillableStatus": "NotBillable",
                },
            },
        ],
        "MetaData": {
            "CreateTime": "2024-05-02T06:31:00-07:00",
            "LastUpdatedTime": "2024-05-03T10:00:00-07:00",
        },
    }


def _with(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    node: Any = out
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = keys[-1]
    if value is _DELETE:
        if last.isdigit():
            del node[int(last)]
        else:
            del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return out


_DELETE = object()

CASES = [
    pytest.param(_desired(), _existing(), "unchanged", [], id="unchanged-with-qbo-defaults"),
    pytest.param(
        _with(_desired(), "ShipAddr.City", "Pasadena"),
        _existing(),
        "update",
        [FieldChange("ShipAddr.City", "Los Angeles", "Pasadena")],
        id="one-field",
    ),
    pytest.param(
        _with(_desired(), "Line.0.Amount", 26),
        _existing(),
        "update",
        [FieldChange("Line[1].Amount", "25", "26")],
        id="line-amount",
    ),
    pytest.param(
        _with(_desired(), "VendorRef", {"value": "42"}),
        _existing(),
        "update",
        [FieldChange("VendorRef", "41", "42")],
        id="ref-by-value",
    ),
    pytest.param(
        _with(_desired(), "Line.0.ItemBasedExpenseLineDetail.UnitPrice", 2.4),
        _existing(),
        "update",
        [FieldChange("Line[1].ItemBasedExpenseLineDetail.UnitPrice", "2.50", "2.4")],
        id="nested",
    ),
    pytest.param(
        _with(
            _desired(),
            "Line",
            [
                *_desired()["Line"],
                {
                    "DetailType": "AccountBasedExpenseLineDetail",
                    "Amount": 20,
                    "Description": "Expedite",
                    "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "92"}},
                    "LineNum": 3,
                },
            ],
        ),
        _existing(),
        "update",
        [FieldChange("Line[3]", "(none)", "Amount=20, Description=Expedite, AccountRef=92")],
        id="line-added",
    ),
    pytest.param(
        _with(_desired(), "Line.1", _DELETE),
        _existing(),
        "update",
        [
            FieldChange(
                "Line[2]",
                "Amount=45.5, Description=Shipping , AccountRef=90, TaxCodeRef=NON, "
                "BillableStatus=NotBillable",
                "(none)",
            )
        ],
        id="line-removed",
    ),
    pytest.param(
        _with(_desired(), "ShipAddr.Line2", ""), _existing(), "unchanged", [], id="empty-equals-missing"
    ),
    pytest.param(
        _with(_desired(), "Memo", "ionqbo must not compare this"),
        _existing(),
        "unchanged",
        [],
        id="not-owned-ignored",
    ),
    pytest.param(
        _with(_desired(), "TxnDate", "2024-05-03"),
        _existing(),
        "update",
        [FieldChange("TxnDate", "2024-05-02", "2024-05-03")],
        id="date",
    ),
    pytest.param(
        _with(_desired(), "CurrencyRef", {"value": "EUR"}),
        _existing(),
        "update",
        [FieldChange("CurrencyRef", "USD", "EUR")],
        id="currency-sent",
    ),
]


@pytest.mark.parametrize(("desired", "existing", "action", "fields"), CASES)
def test_diff(
    desired: dict[str, Any], existing: dict[str, Any], action: str, fields: list[FieldChange]
) -> None:
    change = diff(desired, existing, PO_OWNED_FIELDS)
    assert change.action == action
    assert change.fields == fields


def test_update_body_keeps_the_accountants_fields_and_replaces_owned_ones() -> None:
    desired = _with(_desired(), "ShipAddr.City", "Pasadena")
    existing = _existing()
    before = copy.deepcopy(existing)
    change = diff(desired, existing, PO_OWNED_FIELDS)
    body = change.body
    assert existing == before  # inputs are not modified
    # kept: identity, concurrency, and everything the accountant owns
    assert body["Id"] == "257"
    assert body["SyncToken"] == "4"
    assert body["Memo"] == "Call before delivery"
    assert body["CustomField"] == existing["CustomField"]
    assert body["POStatus"] == "Open"
    assert body["EmailStatus"] == "NotSet"
    assert body["CurrencyRef"] == existing["CurrencyRef"]  # owned but not sent: left as QBO has it
    # dropped: read-only
    for key in ("TotalAmt", "MetaData", "domain", "sparse"):
        assert key not in body
    # replaced as a whole: ShipAddr loses QBO's Id; each line carries the Id of the QBO line it replaces
    # and the line fields ionqbo does not set (here QBO's TaxCodeRef and BillableStatus)
    assert body["ShipAddr"] == {"Line1": "Receiving", "City": "Pasadena"}
    for n, (line, sent) in enumerate(zip(desired["Line"], body["Line"], strict=True), 1):
        assert sent["Id"] == str(n)
        assert {k: v for k, v in sent.items() if k not in ("Id", line["DetailType"])} == {
            k: v for k, v in line.items() if k != line["DetailType"]}
        qbo_detail = existing["Line"][n - 1][line["DetailType"]]
        assert sent[line["DetailType"]] == {**qbo_detail, **line[line["DetailType"]]}
    json.dumps(body)


def _item_line(item: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {"DetailType": "ItemBasedExpenseLineDetail", "Amount": amount,
            "ItemBasedExpenseLineDetail": {"ItemRef": {"value": item}, "Qty": 1, "UnitPrice": amount}, **extra}


def _category_line(account: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {"DetailType": "AccountBasedExpenseLineDetail", "Amount": amount,
            "AccountBasedExpenseLineDetail": {"AccountRef": {"value": account}}, **extra}


def test_new_lines_take_the_ids_and_bill_links_of_the_lines_they_replace() -> None:
    linked = [{"TxnId": "900", "TxnType": "Bill"}]
    existing = [
        _item_line("101", 10, Id="1", LineNum=1, LinkedTxn=linked),
        _item_line("101", 20, Id="2", LineNum=2),
        _category_line("60", 5, Id="3", LineNum=3),
        _item_line("102", 7, Id="4", LineNum=4),  # removed in ION
    ]
    new = [
        _category_line("60", 6),  # moved first, amount changed
        _item_line("101", 11),
        _item_line("103", 8),  # a new item: a new line
        _item_line("101", 20),
        _category_line("61", 1),  # another account: a new line
    ]
    out = keep_line_ids(new, existing)
    assert [line.get("Id") for line in out] == ["3", "1", None, "2", None]
    assert out[1]["LinkedTxn"] == linked and "LinkedTxn" not in out[3]
    assert out[1]["Amount"] == 11  # the values are ION's; only the identity is QBO's
    assert all("Id" not in line for line in new)  # inputs are not modified


def test_a_bill_link_stays_with_the_unchanged_line_when_a_line_before_it_is_removed() -> None:
    linked = [{"TxnId": "900", "TxnType": "Bill"}]
    existing = [_item_line("101", 10, Id="1", LineNum=1), _item_line("101", 20, Id="2", LineNum=2, LinkedTxn=linked)]
    out = keep_line_ids([_item_line("101", 20)], existing)  # ION removed the first line
    assert [(line["Id"], line.get("LinkedTxn")) for line in out] == [("2", linked)]
    existing = [_item_line("101", 10, Id="1", LineNum=1, LinkedTxn=linked), _item_line("101", 20, Id="2", LineNum=2)]
    out = keep_line_ids([_item_line("101", 20)], existing)
    assert [(line["Id"], line.get("LinkedTxn")) for line in out] == [("2", None)]  # the billed line is gone
    out = keep_line_ids([_item_line("101", 11), _item_line("101", 20)], existing)  # first line edited
    assert [(line["Id"], line.get("LinkedTxn")) for line in out] == [("1", linked), ("2", None)]


def test_lines_keep_their_ids_only_when_qbo_gave_them_one() -> None:
    existing = [_item_line("101", 10), _item_line("101", 10, Id="")]
    assert [line.get("Id") for line in keep_line_ids([_item_line("101", 10)], existing)] == [None]
    assert keep_line_ids([{"DetailType": "DescriptionOnly"}], [{"Id": "1", "DetailType": "DescriptionOnly"}]) == [
        {"DetailType": "DescriptionOnly"}]


def test_create() -> None:
    change = diff(_desired(), None, PO_OWNED_FIELDS)
    assert change.action == "create"
    assert change.body == _desired()
    paths = [f.path for f in change.fields]
    assert paths[:5] == ["DocNumber", "TxnDate", "VendorRef", "APAccountRef", "ShipAddr.Line1"]
    assert (
        FieldChange("Line[2]", "(none)", "Amount=45.5, Description=Shipping, AccountRef=90") in change.fields
    )
    assert all(f.old == "(none)" for f in change.fields)


def test_lines_are_compared_in_linenum_order() -> None:
    existing = _existing()
    existing["Line"].reverse()
    assert diff(_desired(), existing, PO_OWNED_FIELDS).action == "unchanged"


def test_item_update_never_touches_quantity_or_accounts() -> None:
    desired = {
        "Name": "820412-001 Rev B",
        "Sku": "820412-001",
        "Type": "Inventory",
        "TrackQtyOnHand": True,
        "QtyOnHand": 0,
        "InvStartDate": "2024-04-30",
        "AssetAccountRef": {"value": "81"},
        "IncomeAccountRef": {"value": "79"},
        "ExpenseAccountRef": {"value": "80"},
        "PurchaseDesc": "Bracket v2",
        "Description": "Bracket v2",
        "PurchaseCost": 2.75,
    }
    existing = {
        "Id": "101",
        "SyncToken": "7",
        "Name": "820412-001 Rev B",
        "Sku": "820412-001",
        "FullyQualifiedName": "820412-001 Rev B",
        "Type": "Inventory",
        "TrackQtyOnHand": True,
        "QtyOnHand": 140,
        "InvStartDate": "2023-01-01",
        "AssetAccountRef": {"value": "81"},
        "IncomeAccountRef": {"value": "79"},
        "ExpenseAccountRef": {"value": "85"},
        "PurchaseDesc": "Bracket",
        "Description": "Bracket",
        "PurchaseCost": 2.5,
        "UnitPrice": 9,
        "Active": True,
        "MetaData": {},
    }
    change = diff(desired, existing, ITEM_OWNED_FIELDS)
    assert change.action == "update"
    assert [f.path for f in change.fields] == ["PurchaseDesc", "Description", "PurchaseCost"]
    body = change.body
    assert body["QtyOnHand"] == 140
    assert body["InvStartDate"] == "2023-01-01"
    assert body["ExpenseAccountRef"] == {"value": "85"}  # an accountant re-pointed it: kept
    assert body["UnitPrice"] == 9
    assert body["PurchaseCost"] == 2.75
    assert "FullyQualifiedName" not in body
    assert "MetaData" not in body


def test_close_via_diff_matches_close_payload() -> None:
    existing = _existing()
    change = diff({"POStatus": "Closed"}, existing, ["POStatus"])
    assert change.action == "update"
    assert change.fields == [FieldChange("POStatus", "Open", "Closed")]
    assert change.body == close_payload(existing)
    assert change.body["Line"] == [{k: v for k, v in line.items()} for line in existing["Line"]]  # Ids kept
    closed = {**existing, "POStatus": "Closed"}
    assert diff({"POStatus": "Closed"}, closed, ["POStatus"]).action == "unchanged"


RENDER = [
    pytest.param(25.0, "25", id="float-integral"),
    pytest.param("25.00", "25.00", id="string-as-is"),
    pytest.param(0.1, "0.1", id="float"),
    pytest.param(1e-7, "0.0000001", id="no-exponent"),
    pytest.param(True, "true", id="bool"),
    pytest.param(None, "(none)", id="none"),
    pytest.param("", "(none)", id="empty"),
    pytest.param({"value": "41", "name": "Acme"}, "41", id="ref"),
]


@pytest.mark.parametrize(("value", "expected"), RENDER)
def test_render(value: Any, expected: str) -> None:
    assert render(value) == expected


NUMBERS = [
    pytest.param(25, 25.0, True, id="int-float"),
    pytest.param(25, "25.00", True, id="int-string"),
    pytest.param(0.1, "0.10", True, id="float-string"),
    pytest.param(2.5, 2.51, False, id="different"),
    pytest.param(True, 1, False, id="bool-is-not-a-number"),
]


@pytest.mark.parametrize(("new", "old", "equal"), NUMBERS)
def test_numbers_compare_as_decimal(new: Any, old: Any, equal: bool) -> None:
    change = diff({"Amount": new}, {"Amount": old}, ["Amount"])
    assert (change.action == "unchanged") is equal


def test_update_body_empty_value_removes_field() -> None:
    assert update_body({"Id": "1", "ShipAddr": {"City": "X"}, "TotalAmt": 3}, {"ShipAddr": {}}) == {"Id": "1"}


def test_a_kept_line_keeps_every_field_ionqbo_does_not_set() -> None:
    """CustomerRef, BillableStatus, MarkupInfo, TaxCodeRef (US), ProjectRef, CustomField: the accountant's."""
    accountant = {
        "CustomerRef": {"value": "58", "name": "Cool Cars"},
        "BillableStatus": "Billable",
        "MarkupInfo": {"PercentBased": True, "Percent": 10},
        "TaxCodeRef": {"value": "NON"},
        "ClassRef": {"value": "7"},
        "TaxInclusiveAmt": 10,
    }
    existing = [
        {**_item_line("101", 10, Id="1", LineNum=1, ProjectRef={"value": "300"},
                      CustomField=[{"DefinitionId": "1", "StringValue": "x"}], Received=2),
         "Description": "old text"},
        _category_line("60", 5, Id="2", LineNum=2),
    ]
    existing[0]["ItemBasedExpenseLineDetail"].update(accountant)
    existing[1]["AccountBasedExpenseLineDetail"].update({"CustomerRef": {"value": "59"}, "BillableStatus": "HasBeenBilled"})
    new = [_category_line("60", 6), {**_item_line("101", 11), "Description": "new text"}]
    out = keep_line_ids(new, existing)
    item, category = out[1], out[0]
    assert item["Id"] == "1" and item["Amount"] == 11 and item["Description"] == "new text"
    assert item["ProjectRef"] == {"value": "300"} and item["Received"] == 2
    assert item["CustomField"] == [{"DefinitionId": "1", "StringValue": "x"}]
    assert "LineNum" not in item  # the order is ionqbo's
    detail = item["ItemBasedExpenseLineDetail"]
    assert detail == {"ItemRef": {"value": "101"}, "Qty": 1, "UnitPrice": 11, **accountant}
    assert category["AccountBasedExpenseLineDetail"] == {
        "AccountRef": {"value": "60"}, "CustomerRef": {"value": "59"}, "BillableStatus": "HasBeenBilled"}
    assert "CustomerRef" not in new[1]["ItemBasedExpenseLineDetail"]  # inputs are not modified


def test_a_kept_line_takes_what_ionqbo_sets_and_drops_what_ion_cleared() -> None:
    existing = [{**_item_line("101", 10, Id="1"), "Description": "was there"}]
    existing[0]["ItemBasedExpenseLineDetail"]["TaxCodeRef"] = {"value": "NON"}
    existing[0]["ItemBasedExpenseLineDetail"]["ClassRef"] = {"value": "7"}
    new = _item_line("101", 10)
    new["ItemBasedExpenseLineDetail"]["TaxCodeRef"] = {"value": "GST"}  # a non-US company: ionqbo sets it
    new["ItemBasedExpenseLineDetail"]["ClassRef"] = {"value": "8"}
    (out,) = keep_line_ids([new], existing)
    assert "Description" not in out  # ION's line has none: ionqbo owns the description
    assert out["ItemBasedExpenseLineDetail"]["TaxCodeRef"] == {"value": "GST"}
    assert out["ItemBasedExpenseLineDetail"]["ClassRef"] == {"value": "8"}


def test_an_update_body_keeps_the_accountants_line_fields() -> None:
    existing = {"Id": "9", "SyncToken": "2", "DocNumber": "1042",
                "Line": [_item_line("101", 10, Id="1", LineNum=1)]}
    existing["Line"][0]["ItemBasedExpenseLineDetail"].update(
        {"CustomerRef": {"value": "58"}, "BillableStatus": "Billable"})
    desired = {"DocNumber": "1042", "Line": [_item_line("101", 20)]}
    change = diff(desired, existing, ("DocNumber", "Line"))
    assert change.action == "update"
    detail = change.body["Line"][0]["ItemBasedExpenseLineDetail"]
    assert detail["CustomerRef"] == {"value": "58"} and detail["BillableStatus"] == "Billable"
    assert detail["UnitPrice"] == 20 and change.body["Line"][0]["Id"] == "1"
