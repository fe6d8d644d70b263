"""The QBO emulator as a company outside the US (AU, GB, CA): tax codes and rates, and the global tax rules.

An independent client (plain requests over HTTP), not ionqbo's: the rules are QBO's documented ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests

from ionqbo.sandbox.httpd import Server
from ionqbo.sandbox.qbo import QboEmulator

REALM = "9341455130"
DATA: dict[str, Any] = {
    "Account": [
        {"Id": "33", "Name": "Accounts Payable (A/P)", "AccountType": "Accounts Payable"},
        {"Id": "80", "Name": "Cost of Goods Sold", "AccountType": "Cost of Goods Sold"},
        {"Id": "81", "Name": "Inventory Asset", "AccountType": "Other Current Asset"},
        {"Id": "79", "Name": "Sales", "AccountType": "Income"},
        {"Id": "7", "Name": "Tooling", "AccountType": "Expense"},
    ],
    "Vendor": [{"Id": "41", "DisplayName": "Hicks Hardware"}],
    "Item": [{"Id": "38", "Name": "Bracket", "Type": "Inventory", "TrackQtyOnHand": True, "QtyOnHand": 0,
              "InvStartDate": "2025-01-01", "IncomeAccountRef": {"value": "79"}, "AssetAccountRef": {"value": "81"},
              "ExpenseAccountRef": {"value": "80"}}],
}


class Client:
    def __init__(self, emu: QboEmulator) -> None:
        self.emu = emu
        self.server = Server(emu).start()
        self.http = requests.Session()
        answer = self.http.post(f"{self.server.url}/oauth2/v1/tokens/bearer", timeout=10,
                                data={"grant_type": "refresh_token", "refresh_token": emu.issue_refresh_token()},
                                auth=(emu.client_id, emu.client_secret))
        self.token = answer.json()["access_token"]

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        return self.http.request(method, f"{self.server.url}/v3/company/{REALM}{path}", headers=headers,
                                 timeout=10, **kw)

    def post_po(self, body: dict[str, Any]) -> requests.Response:
        return self.call("POST", "/purchaseorder", json=body)

    def query(self, statement: str) -> list[dict[str, Any]]:
        answer = self.call("GET", "/query", params={"query": statement})
        assert answer.status_code == 200, answer.text
        body = answer.json()["QueryResponse"]
        return next((v for v in body.values() if isinstance(v, list)), [])

    def close(self) -> None:
        self.http.close()
        self.server.stop()


@pytest.fixture(params=["AU", "UK", "CA"])
def company(request: pytest.FixtureRequest) -> Iterator[Client]:
    emu = QboEmulator(realm_id=REALM, country=request.param)
    emu.load(DATA)
    client = Client(emu)
    yield client
    client.close()


@pytest.fixture
def au() -> Iterator[Client]:
    emu = QboEmulator(realm_id=REALM, country="AU")
    emu.load(DATA)
    client = Client(emu)
    yield client
    client.close()


def code_id(client: Client, name: str) -> str:
    rows = client.query(f"select * from TaxCode where Name = '{name}'")
    assert len(rows) == 1, rows
    return str(rows[0]["Id"])


def item_line(amount: Any, qty: Any, price: Any, tax: str | None, **extra: Any) -> dict[str, Any]:
    detail: dict[str, Any] = {"ItemRef": {"value": "38"}, "Qty": qty, "UnitPrice": price, **extra}
    if tax is not None:
        detail["TaxCodeRef"] = {"value": tax}
    return {"DetailType": "ItemBasedExpenseLineDetail", "Amount": amount, "ItemBasedExpenseLineDetail": detail}


def category_line(amount: Any, tax: str | None, **extra: Any) -> dict[str, Any]:
    detail: dict[str, Any] = {"AccountRef": {"value": "7"}, **extra}
    if tax is not None:
        detail["TaxCodeRef"] = {"value": tax}
    return {"DetailType": "AccountBasedExpenseLineDetail", "Amount": amount, "AccountBasedExpenseLineDetail": detail}


def po(lines: list[dict[str, Any]], calculation: str | None = "TaxExcluded") -> dict[str, Any]:
    body: dict[str, Any] = {"VendorRef": {"value": "41"}, "APAccountRef": {"value": "33"}, "DocNumber": "PO-1",
                            "Line": lines}
    if calculation is not None:
        body["GlobalTaxCalculation"] = calculation
    return body


def error(answer: requests.Response) -> dict[str, Any]:
    assert answer.status_code == 400, answer.text
    return dict(answer.json()["Fault"]["Error"][0])


DEFAULT = {"AU": "GST", "UK": "20.0% S", "CA": "HST ON"}
RATE = {"AU": Decimal(10), "UK": Decimal(20), "CA": Decimal(13)}


def test_each_country_has_its_tax_codes_and_rates_as_lists(company: Client) -> None:
    info = company.call("GET", f"/companyinfo/{REALM}").json()["CompanyInfo"]
    assert info["Country"] in {"AU", "GB", "CA"}
    codes = {c["Name"]: c for c in company.query("select * from TaxCode")}
    rates = {r["Id"]: r for r in company.query("select * from TaxRate")}
    country = {"GB": "UK"}.get(info["Country"], info["Country"])
    default = codes[DEFAULT[country]]
    purchase = default["PurchaseTaxRateList"]["TaxRateDetail"]
    assert Decimal(str(rates[purchase[0]["TaxRateRef"]["value"]]["RateValue"])) == RATE[country]
    expected = {"AU": {"GST", "GST free", "Input taxed"}, "UK": {"20.0% S", "5.0% R", "0.0% Z", "Exempt"},
                "CA": {"HST ON", "GST", "GST/QST QC - 9.975", "Zero-rated", "Exempt"}}[country]
    assert expected <= set(codes)
    prefs = company.call("GET", "/preferences").json()["Preferences"]
    assert prefs["TaxPrefs"]["UsingSalesTax"] is True
    assert prefs["CurrencyPrefs"]["HomeCurrency"]["value"] == {"AU": "AUD", "UK": "GBP", "CA": "CAD"}[country]


def test_a_line_without_a_tax_code_is_refused_and_never_filled_in(company: Client) -> None:
    answer = company.post_po(po([item_line(25, 1, 25, None)]))
    err = error(answer)
    assert err["code"] == "6000" and "GST/VAT rate" in err["Detail"]
    err = error(company.post_po(po([category_line(10, None)])))
    assert err["code"] == "6000" and "GST/VAT rate" in err["Detail"]
    assert company.query("select * from PurchaseOrder") == []


def test_global_tax_calculation_is_required_and_checked(company: Client) -> None:
    code = code_id(company, DEFAULT[{"GB": "UK"}.get(company.emu.country, company.emu.country)])
    err = error(company.post_po(po([category_line(10, code)], calculation=None)))
    assert err["code"] == "2020" and err["element"] == "GlobalTaxCalculation"
    err = error(company.post_po(po([category_line(10, code)], calculation="Gross")))
    assert err["code"] == "2010"


def test_tax_is_computed_per_line_into_txn_tax_detail_and_total(company: Client) -> None:
    country = {"GB": "UK"}.get(company.emu.country, company.emu.country)
    code = code_id(company, DEFAULT[country])
    answer = company.post_po(po([item_line(1020, 24, 42.5, code), category_line("35.05", code)]))
    assert answer.status_code == 200, answer.text
    stored = answer.json()["PurchaseOrder"]
    rate = RATE[country]
    tax = (Decimal(1020) * rate / 100).quantize(Decimal("0.01")) + (Decimal("35.05") * rate / 100).quantize(
        Decimal("0.01"), rounding="ROUND_HALF_UP")
    assert Decimal(str(stored["TxnTaxDetail"]["TotalTax"])) == tax
    assert Decimal(str(stored["TotalAmt"])) == Decimal("1055.05") + tax
    line = stored["TxnTaxDetail"]["TaxLine"][0]
    assert line["DetailType"] == "TaxLineDetail"
    assert Decimal(str(line["TaxLineDetail"]["NetAmountTaxable"])) == Decimal("1055.05")
    assert stored["Line"][0]["ItemBasedExpenseLineDetail"]["TaxCodeRef"]["value"] == code


def test_a_code_without_a_purchase_rate_or_an_inactive_or_unknown_code_is_refused(au: Client) -> None:
    err = error(au.post_po(po([category_line(10, code_id(au, "Export"))])))
    assert err["code"] == "6000" and "purchase" in err["Detail"]
    inactive = next(c for c in au.query("select * from TaxCode where Active = false") if c["Name"] == "WET")
    assert error(au.post_po(po([category_line(10, str(inactive["Id"]))])))["code"] == "2500"
    assert error(au.post_po(po([category_line(10, "999")])))["code"] == "2500"


def test_tax_inclusive_with_tax_inclusive_amt_keeps_the_gross(au: Client) -> None:
    gst = code_id(au, "GST")
    # 110 gross at 10%: net 100, tax 10; 33.33 gross: net 30.30, tax 3.03
    body = po([category_line(100, gst, TaxInclusiveAmt=110), category_line("30.30", gst, TaxInclusiveAmt="33.33")],
              calculation="TaxInclusive")
    answer = au.post_po(body)
    assert answer.status_code == 200, answer.text
    stored = answer.json()["PurchaseOrder"]
    assert Decimal(str(stored["TotalAmt"])) == Decimal("143.33")
    assert Decimal(str(stored["TxnTaxDetail"]["TotalTax"])) == Decimal("13.03")
    # a TaxInclusiveAmt that is not Amount plus its tax (the gross sent as Amount too) is refused
    wrong = po([category_line(110, gst, TaxInclusiveAmt=110)], calculation="TaxInclusive")
    wrong["DocNumber"] = "PO-2"
    assert error(au.post_po(wrong))["code"] == "6000"


def test_a_group_code_adds_its_rates(au: Client) -> None:
    del au
    emu = QboEmulator(realm_id=REALM, country="CA")
    emu.load(DATA)
    ca = Client(emu)
    try:
        group = code_id(ca, "GST/QST QC - 9.975")
        answer = ca.post_po(po([category_line(200, group)]))
        assert answer.status_code == 200, answer.text
        detail = answer.json()["PurchaseOrder"]["TxnTaxDetail"]
        assert Decimal(str(detail["TotalTax"])) == Decimal("10.00") + Decimal("19.95")
        assert len(detail["TaxLine"]) == 2
        out_of_scope = po([category_line(10, code_id(ca, "Out of Scope"))])
        out_of_scope["DocNumber"] = "PO-2"
        err = error(ca.post_po(out_of_scope))
        assert err["code"] == "6000"
    finally:
        ca.close()


def test_tax_lists_are_read_only_and_not_in_change_data_capture(au: Client) -> None:
    answer = au.call("POST", "/taxcode", json={"Name": "Mine"})
    assert answer.status_code == 400 and answer.json()["Fault"]["Error"][0]["code"] == "500"
    answer = au.call("GET", "/cdc", params={"entities": "TaxCode", "changedSince": "2026-01-01T00:00:00Z"})
    assert answer.status_code == 400


def test_a_us_company_is_unchanged_and_still_shows_non_on_item_lines() -> None:
    emu = QboEmulator(realm_id=REALM)
    emu.load(DATA)
    us = Client(emu)
    try:
        answer = us.post_po(po([item_line(25, 1, 25, None)], calculation=None))
        assert answer.status_code == 200, answer.text
        stored = answer.json()["PurchaseOrder"]
        # Intuit's PurchaseOrder sample answer: a US item line shows TaxCodeRef NON it was not sent
        assert stored["Line"][0]["ItemBasedExpenseLineDetail"]["TaxCodeRef"] == {"value": "NON"}
        assert "TxnTaxDetail" not in stored and Decimal(str(stored["TotalAmt"])) == 25
        assert us.query("select * from TaxCode") == []
    finally:
        us.close()
