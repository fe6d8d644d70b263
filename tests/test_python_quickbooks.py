"""An independent client against the QBO emulator: python-quickbooks (PyPI, the `test` extra only).

python-quickbooks builds its own request bodies from its own object model, so it exercises the
emulator with payloads ionqbo never sends (every vendor carries ``TaxReportingBasis``, every PO
``GlobalTaxCalculation`` and empty ``LinkedTxn`` lists, ``SyncToken`` as a number, ...). Each test
expects what QBO documents (docs/reference/qbo.md): creates answer the stored object, queries escape
quotes with a backslash, an update with a stale SyncToken fails with 5010, one bad batch item faults
alone, and schema and reference faults carry QBO's codes. Only the API host is changed (to the
emulator on 127.0.0.1); requests go through python-quickbooks' own session and request code.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from ionqbo.sandbox.httpd import Server
from ionqbo.sandbox.qbo import QboEmulator

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the library's own import-time deprecations are not ours to fix
    from quickbooks import QuickBooks
    from quickbooks.batch import batch_create
    from quickbooks.exceptions import QuickbooksException, ValidationException
    from quickbooks.objects.account import Account
    from quickbooks.objects.base import Ref
    from quickbooks.objects.company_info import CompanyInfo
    from quickbooks.objects.detailline import (
        AccountBasedExpenseLine,
        AccountBasedExpenseLineDetail,
        ItemBasedExpenseLine,
        ItemBasedExpenseLineDetail,
    )
    from quickbooks.objects.item import Item
    from quickbooks.objects.purchaseorder import PurchaseOrder
    from quickbooks.objects.vendor import Vendor
    from requests_oauthlib import OAuth2Session

REALM = "9341455130"
DATA: dict[str, Any] = {
    "Account": [
        {"Id": "33", "Name": "Accounts Payable (A/P)", "AccountType": "Accounts Payable",
         "AccountSubType": "AccountsPayable"},
        {"Id": "80", "Name": "Cost of Goods Sold", "AccountType": "Cost of Goods Sold"},
        {"Id": "79", "Name": "Sales of Product Income", "AccountType": "Income"},
        {"Id": "81", "Name": "Inventory Asset", "AccountType": "Other Current Asset"},
        {"Id": "7", "Name": "Office Expenses", "AccountType": "Expense"},
    ],
}


@pytest.fixture
def qb(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[QuickBooks, QboEmulator]]:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the emulator is plain http on 127.0.0.1
    emu = QboEmulator(realm_id=REALM, seed=11, client_secret="s3cret")
    emu.load(copy.deepcopy(DATA))
    with Server(emu) as server, requests.Session() as http:
        answer = http.post(f"{server.url}/oauth2/v1/tokens/bearer", auth=(emu.client_id, emu.client_secret),
                           data={"grant_type": "refresh_token", "refresh_token": emu.issue_refresh_token()},
                           timeout=10)
        assert answer.status_code == 200, answer.text
        client = QuickBooks(company_id=REALM, minorversion=75)
        client.sandbox = True
        client.sandbox_api_url_v3 = f"{server.url}/v3"  # the only change: the host
        client.session = OAuth2Session(emu.client_id, token={"access_token": answer.json()["access_token"],
                                                             "token_type": "Bearer"})
        yield client, emu
        client.session.close()


def ref(value: str) -> Ref:
    out = Ref()
    out.value = value
    return out


def make_vendor(name: str) -> Vendor:
    vendor = Vendor()
    vendor.DisplayName = name
    vendor.CompanyName = name
    return vendor


def make_item(name: str) -> Item:
    item = Item()
    item.Name = name
    item.Type = "NonInventory"
    item.Sku = "SKU-" + name[:10]
    item.PurchaseCost = 12.5
    item.ExpenseAccountRef = ref("80")
    item.IncomeAccountRef = ref("79")
    return item


def make_po(vendor_id: str, item_id: str, qty: float = 2, price: float = 12.5) -> PurchaseOrder:
    po = PurchaseOrder()
    po.VendorRef = ref(vendor_id)
    po.APAccountRef = ref("33")
    po.DocNumber = "PQ-1001"
    po.TxnDate = "2026-01-15"
    line = ItemBasedExpenseLine()
    line.Amount = qty * price
    line.Description = "Bracket, anodised"
    line.ItemBasedExpenseLineDetail = ItemBasedExpenseLineDetail()
    line.ItemBasedExpenseLineDetail.ItemRef = ref(item_id)
    line.ItemBasedExpenseLineDetail.Qty = qty
    line.ItemBasedExpenseLineDetail.UnitPrice = price
    line.ItemBasedExpenseLineDetail.BillableStatus = "NotBillable"
    category = AccountBasedExpenseLine()
    category.Amount = 5
    category.AccountBasedExpenseLineDetail = AccountBasedExpenseLineDetail()
    category.AccountBasedExpenseLineDetail.AccountRef = ref("7")
    po.Line = [line, category]
    return po


def test_creates_answer_the_stored_objects(qb: tuple[QuickBooks, QboEmulator]) -> None:
    client, emu = qb
    vendor = make_vendor("Hicks Hardware").save(qb=client)
    assert vendor.Id and vendor.SyncToken == "0" and vendor.DisplayName == "Hicks Hardware"
    item = make_item("Bracket").save(qb=client)
    assert item.Id and item.Sku == "SKU-Bracket" and item.FullyQualifiedName == "Bracket"
    po = make_po(vendor.Id, item.Id).save(qb=client)
    assert po.Id and po.DocNumber == "PQ-1001" and float(po.TotalAmt) == 30.0  # 2 x 12.5 + 5: QBO's sum
    assert [line.LineNum for line in po.Line] == [1, 2]
    stored = emu.dump()["PurchaseOrder"][0]
    assert (stored["VendorRef"]["value"], stored["VendorRef"]["name"]) == (vendor.Id, "Hicks Hardware")
    assert stored["Line"][0]["ItemBasedExpenseLineDetail"]["BillableStatus"] == "NotBillable"
    # python-quickbooks sends TaxReportingBasis on every vendor: an element of QBO's schema
    assert "TaxReportingBasis" in make_vendor("x").to_dict()
    assert Vendor.get(vendor.Id, qb=client).DisplayName == "Hicks Hardware"
    account = Account()
    account.Name = "Freight In"
    account.AccountType = "Cost of Goods Sold"
    saved = account.save(qb=client)
    assert saved.Classification == "Expense"  # read-only, derived from the type


def test_queries_with_quotes_are_escaped_with_a_backslash(qb: tuple[QuickBooks, QboEmulator]) -> None:
    client, _ = qb
    make_vendor("O'Brien & Sons").save(qb=client)
    make_vendor("Obrien Other").save(qb=client)
    found = Vendor.filter(DisplayName="O'Brien & Sons", qb=client)  # sends DisplayName = 'O\'Brien & Sons'
    assert [v.DisplayName for v in found] == ["O'Brien & Sons"]
    assert [v.DisplayName for v in Vendor.where("DisplayName LIKE 'o\\'brien%'", qb=client)] == ["O'Brien & Sons"]
    assert Vendor.count("DisplayName LIKE 'O%'", qb=client) == 2
    with pytest.raises(ValidationException) as parse_error:  # an unescaped quote cannot be parsed
        Vendor.where("DisplayName = 'O'Brien & Sons'", qb=client)
    assert parse_error.value.error_code == 4000
    assert Vendor.filter(DisplayName="Nobody", qb=client) == []


def test_an_update_with_a_stale_sync_token_fails_with_5010(qb: tuple[QuickBooks, QboEmulator]) -> None:
    client, emu = qb
    created = make_vendor("Stale Vendor").save(qb=client)
    first = Vendor.get(created.Id, qb=client)
    second = Vendor.get(created.Id, qb=client)
    first.CompanyName = "First Writer Ltd"
    updated = first.save(qb=client)
    assert updated.SyncToken == "1" and updated.CompanyName == "First Writer Ltd"
    second.CompanyName = "Second Writer Ltd"
    with pytest.raises(QuickbooksException) as stale:
        second.save(qb=client)
    assert stale.value.error_code == 5010
    assert "Stale Object Error" in stale.value.message
    assert emu.dump()["Vendor"][0]["CompanyName"] == "First Writer Ltd"  # nothing lost, nothing overwritten
    # a PO round trip: read, change, full update with the fresh token
    item = make_item("Spacer").save(qb=client)
    po = make_po(created.Id, item.Id).save(qb=client)
    fresh = PurchaseOrder.get(po.Id, qb=client)
    fresh.Memo = "Deliver to dock 4"
    again = fresh.save(qb=client)
    assert again.SyncToken == "1" and again.Memo == "Deliver to dock 4"
    po.Memo = "stale"
    with pytest.raises(QuickbooksException) as stale_po:
        po.save(qb=client)
    assert stale_po.value.error_code == 5010


def test_a_batch_with_one_bad_item_faults_that_item_alone(qb: tuple[QuickBooks, QboEmulator]) -> None:
    client, emu = qb
    make_vendor("Taken Name").save(qb=client)
    vendors = [make_vendor("Batch One"), make_vendor("Taken Name"), make_vendor("Batch Three")]
    result = batch_create(vendors, qb=client)
    assert sorted(v.DisplayName for v in result.successes) == ["Batch One", "Batch Three"]
    assert len(result.faults) == 1
    fault = result.faults[0]
    assert fault.original_object.DisplayName == "Taken Name"
    assert fault.Error[0].code == "6240"
    assert sorted(v["DisplayName"] for v in emu.dump()["Vendor"]) == ["Batch One", "Batch Three", "Taken Name"]


def test_faults_carry_qbos_codes(qb: tuple[QuickBooks, QboEmulator]) -> None:
    client, _ = qb
    vendor = make_vendor("Fault Vendor").save(qb=client)
    item = make_item("Fault Item").save(qb=client)
    # an unknown reference: 2500 Invalid Reference Id
    with pytest.raises(ValidationException) as bad_ref:
        make_po("999", item.Id).save(qb=client)
    assert bad_ref.value.error_code == 2500
    # a field on the line instead of its detail (python-quickbooks issue 38): 2010 naming it
    po = make_po(vendor.Id, item.Id)
    po.Line[0].BillableStatus = "NotBillable"
    with pytest.raises(ValidationException) as unknown:
        po.save(qb=client)
    assert unknown.value.error_code == 2010 and 'Unrecognized field "BillableStatus"' in unknown.value.detail
    # an impossible date, a bad enumeration value, a number that is not one: 2010
    for field, value in (("TxnDate", "2026-13-45"), ("POStatus", "Pending"), ("ExchangeRate", "one")):
        po = make_po(vendor.Id, item.Id)
        setattr(po, field, value)
        with pytest.raises(ValidationException) as typed:
            po.save(qb=client)
        assert typed.value.error_code == 2010, (field, typed.value.detail)
    po = make_po(vendor.Id, item.Id)
    po.Line[0].ItemBasedExpenseLineDetail.BillableStatus = ""  # python-quickbooks issue 157
    with pytest.raises(ValidationException) as empty_enum:
        po.save(qb=client)
    assert empty_enum.value.error_code == 2010
    # Amount not Qty x UnitPrice: 6070 (a GeneralException in python-quickbooks' code ranges)
    po = make_po(vendor.Id, item.Id)
    po.Line[0].Amount = 99
    with pytest.raises(QuickbooksException) as amount:
        po.save(qb=client)
    assert amount.value.error_code == 6070
    # a duplicate DocNumber: 6140; reading what does not exist: 610
    make_po(vendor.Id, item.Id).save(qb=client)
    with pytest.raises(QuickbooksException) as duplicate:
        make_po(vendor.Id, item.Id).save(qb=client)
    assert duplicate.value.error_code == 6140
    with pytest.raises(QuickbooksException) as missing:
        Vendor.get("424242", qb=client)
    assert missing.value.error_code == 610


def test_reads_of_company_info_and_deletes(qb: tuple[QuickBooks, QboEmulator]) -> None:
    client, emu = qb
    info = CompanyInfo.get(REALM, qb=client)
    assert info.CompanyName and info.Country == "US"
    vendor = make_vendor("Delete Vendor").save(qb=client)
    item = make_item("Delete Item").save(qb=client)
    po = make_po(vendor.Id, item.Id).save(qb=client)
    answer = po.delete(qb=client)
    assert answer["PurchaseOrder"]["status"] == "Deleted"
    assert emu.dump()["PurchaseOrder"] == []
