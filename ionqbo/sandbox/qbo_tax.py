"""The QBO emulator's tax model for companies outside the US (Australia, the UK, Canada).

Kept apart from :mod:`ionqbo.sandbox.qbo` so that the entity rules there and the tax rules here
change independently. Sources (docs/reference/qbo-tax.md has them in full):

- Intuit, "Manage sales tax for non-US locales": purchase transactions carry a TaxCode on each line;
  the code's ``PurchaseTaxRateList`` names the TaxRate(s) used; QBO returns the tax it computed in
  ``TxnTaxDetail``. TaxCode and TaxRate are created through the TaxService endpoint, not as entities.
- Intuit's XSD (Finance.xsd, Apache-2.0): ``TaxCode`` (Name, Active, Taxable, TaxGroup,
  SalesTaxRateList, PurchaseTaxRateList), ``TaxRate`` (Name, Active, RateValue, AgencyRef...),
  ``TaxRateDetail`` (TaxRateRef, TaxTypeApplicable, TaxOrder), ``TxnTaxDetail`` (TotalTax, TaxLine
  of ``TaxLineDetail``: TaxRateRef, PercentBased, TaxPercent, NetAmountTaxable),
  ``GlobalTaxCalculationEnum`` (TaxExcluded, TaxInclusive, NotApplicable), line ``TaxInclusiveAmt``
  ("the total amount of line item including tax"); ``TotalAmt`` "includes all charges ... taxes".
- Change data capture does not cover TaxCode and TaxRate (Intuit's CDC page).

Rules emulated for a non-US company's purchase order (``apply``):

- ``GlobalTaxCalculation`` is required (2020) and must be one of the enum's values (2010).
- Every item and category line needs a ``TaxCodeRef`` (6000 "Make sure all your transactions have a
  GST/VAT rate before you save"); the code must exist and be active (2500) and have a purchase rate
  (6000). The emulator never fills a tax code in.
- Tax per line and rate: Line.Amount is the net amount; tax = round(net x rate, 2), half-up (QBO's
  global edition computes tax line by line). With TaxInclusive and a ``TaxInclusiveAmt``, the line's
  tax is TaxInclusiveAmt - Amount, which must be within a cent of that computed tax (6000 otherwise).
  NotApplicable: no tax. ``TxnTaxDetail`` (one TaxLine per rate) and ``TotalAmt`` = lines + tax are
  computed on every write; a supplied TxnTaxDetail is replaced (overrides are not emulated).

The tax codes of each country are the ones such a company has in QuickBooks Online; names and
rates follow the tax authorities (ATO GST 10%; HMRC VAT 20% standard, 5% reduced, 0% zero; CRA GST
5%, Ontario HST 13%, Québec QST 9.975%). Their Ids are the emulator's own.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

Json = dict[str, Any]

CENT = Decimal("0.01")
CALCULATIONS = ("TaxExcluded", "TaxInclusive", "NotApplicable")
NO_TAX_CODE = "Make sure all your transactions have a GST/VAT rate before you save."
US_NAMES = frozenset({"US", "USA", "UNITED STATES", "UNITED STATES OF AMERICA"})
ALIASES = {"UK": "GB"}  # QBO's UK edition; CompanyInfo.Country is the ISO code


class TaxRuleError(Exception):
    """A tax rule refused the write: QBO's error code, detail and element."""

    def __init__(self, code: str, detail: str, element: str = "") -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.element = element


def country_code(name: str) -> str:
    """"AU", "GB", "CA" or "US" from what a person types (``uk`` is ``GB``)."""
    code = name.strip().upper()
    return ALIASES.get(code, code)


def is_global(company_info: Mapping[str, Any]) -> bool:
    """The company uses the global (non-US) tax model: its Country is set and is not the US."""
    country = str(company_info.get("Country") or "").strip().upper()
    return bool(country) and country not in US_NAMES


# ---- each country's company -----------------------------------------------------------------


def _rate(rate_id: str, name: str, value: str, agency: str, description: str = "") -> Json:
    return {"Id": rate_id, "Name": name, "Description": description or name, "Active": True,
            "RateValue": json.loads(value), "AgencyRef": {"value": agency}, "SpecialTaxType": "NONE",
            "DisplayType": "ReadOnly"}


def _code(code_id: str, name: str, description: str, *, sales: list[str], purchases: list[str],
          active: bool = True) -> Json:
    def rates(ids: list[str]) -> Json:
        return {"TaxRateDetail": [{"TaxRateRef": {"value": r}, "TaxTypeApplicable": "TaxOnAmount",
                                   "TaxOrder": order} for order, r in enumerate(ids)]}
    return {"Id": code_id, "Name": name, "Description": description, "Active": active, "Hidden": False,
            "Taxable": True, "TaxGroup": len(sales) > 1 or len(purchases) > 1,
            "SalesTaxRateList": rates(sales), "PurchaseTaxRateList": rates(purchases),
            "TaxCodeConfigType": "SYSTEM_GENERATED"}


def _australia() -> Json:
    ato = "1"
    return {
        "currency": "AUD",
        "company": {"CompanyName": "Sandbox Company_AU_1", "Country": "AU",
                    "CompanyAddr": {"Line1": "12 Harbour St", "City": "Sydney", "CountrySubDivisionCode": "NSW",
                                    "PostalCode": "2000", "Country": "AU"}},
        "TaxRate": [
            _rate("10", "GST (sales)", "10", ato), _rate("11", "GST (purchases)", "10", ato),
            _rate("12", "GST free (sales)", "0", ato), _rate("13", "GST free (purchases)", "0", ato),
            _rate("14", "Input taxed (sales)", "0", ato), _rate("15", "Input taxed (purchases)", "0", ato),
            _rate("16", "GST on capital (purchases)", "10", ato), _rate("17", "Export (sales)", "0", ato),
            _rate("18", "Wine equalisation tax (sales)", "29", ato),
        ],
        "TaxCode": [
            _code("20", "GST", "GST", sales=["10"], purchases=["11"]),
            _code("21", "GST free", "GST free", sales=["12"], purchases=["13"]),
            _code("22", "Input taxed", "Input taxed", sales=["14"], purchases=["15"]),
            _code("23", "GST on capital", "GST on capital purchases", sales=[], purchases=["16"]),
            _code("24", "Export", "GST-free exports", sales=["17"], purchases=[]),
            _code("25", "WET", "Wine equalisation tax", sales=["18"], purchases=[], active=False),
        ],
    }


def _united_kingdom() -> Json:
    hmrc = "1"
    return {
        "currency": "GBP",
        "company": {"CompanyName": "Sandbox Company_GB_1", "Country": "GB",
                    "CompanyAddr": {"Line1": "1 Canal Street", "City": "Manchester", "PostalCode": "M1 3HE",
                                    "Country": "GB"}},
        "TaxRate": [
            _rate("10", "20.0% S (sales)", "20", hmrc), _rate("11", "20.0% S (purchases)", "20", hmrc),
            _rate("12", "5.0% R (sales)", "5", hmrc), _rate("13", "5.0% R (purchases)", "5", hmrc),
            _rate("14", "0.0% Z (sales)", "0", hmrc), _rate("15", "0.0% Z (purchases)", "0", hmrc),
            _rate("16", "Exempt (sales)", "0", hmrc), _rate("17", "Exempt (purchases)", "0", hmrc),
            _rate("18", "No VAT", "0", hmrc),
        ],
        "TaxCode": [
            _code("20", "20.0% S", "Standard rated", sales=["10"], purchases=["11"]),
            _code("21", "5.0% R", "Reduced rate", sales=["12"], purchases=["13"]),
            _code("22", "0.0% Z", "Zero rated", sales=["14"], purchases=["15"]),
            _code("23", "Exempt", "Exempt", sales=["16"], purchases=["17"]),
            _code("24", "No VAT", "Outside the scope of VAT", sales=["18"], purchases=["18"]),
        ],
    }


def _canada() -> Json:
    cra, quebec = "1", "2"
    return {
        "currency": "CAD",
        "company": {"CompanyName": "Sandbox Company_CA_1", "Country": "CA",
                    "CompanyAddr": {"Line1": "100 King St W", "City": "Toronto", "CountrySubDivisionCode": "ON",
                                    "PostalCode": "M5X 1A9", "Country": "CA"}},
        "TaxRate": [
            _rate("10", "GST", "5", cra), _rate("11", "HST ON", "13", cra), _rate("12", "QST", "9.975", quebec),
            _rate("13", "Zero-rated", "0", cra), _rate("14", "Exempt", "0", cra),
        ],
        "TaxCode": [
            _code("20", "HST ON", "Ontario HST", sales=["11"], purchases=["11"]),
            _code("21", "GST", "GST only", sales=["10"], purchases=["10"]),
            _code("22", "GST/QST QC - 9.975", "Québec GST and QST", sales=["10", "12"], purchases=["10", "12"]),
            _code("23", "Zero-rated", "Zero-rated", sales=["13"], purchases=["13"]),
            _code("24", "Exempt", "Exempt", sales=["14"], purchases=["14"]),
            {"Id": "25", "Name": "Out of Scope", "Description": "Out of scope", "Active": True, "Taxable": False,
             "TaxGroup": False, "TaxCodeConfigType": "SYSTEM_GENERATED"},
        ],
    }


COUNTRIES: dict[str, Callable[[], Json]] = {"AU": _australia, "GB": _united_kingdom, "CA": _canada}
# The tax code most purchases take, per country (what `Sandbox.env()` sets QBO_PURCHASE_TAX_CODE to).
DEFAULT_PURCHASE_CODE = {"AU": "GST", "GB": "20.0% S", "CA": "HST ON"}


def company_data(country: str) -> Json:
    """The load data (``QboEmulator.load``) that makes the emulated company one of ``country``.

    Raises:
        ValueError: the country has no emulated tax model.
    """
    code = country_code(country)
    if code == "US":
        return {}
    if code not in COUNTRIES:
        msg = f"no emulated company for country {country!r}; known: US, {', '.join(COUNTRIES)} (UK = GB)"
        raise ValueError(msg)
    spec = COUNTRIES[code]()
    return {
        "CompanyInfo": {**spec["company"], "LegalName": spec["company"]["CompanyName"]},
        "Preferences": {"CurrencyPrefs": {"HomeCurrency": {"value": spec["currency"]}},
                        "TaxPrefs": {"UsingSalesTax": True, "PartnerTaxEnabled": False}},
        "TaxRate": copy.deepcopy(spec["TaxRate"]),
        "TaxCode": copy.deepcopy(spec["TaxCode"]),
    }


# ---- the rules ----------------------------------------------------------------------------------


Lookup = Callable[[str, Any], Json | None]  # (entity, id) -> the stored object, or None


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _purchase_rates(code: Json, get: Lookup, element: str) -> list[tuple[Json, Decimal, str]]:
    details = (code.get("PurchaseTaxRateList") or {}).get("TaxRateDetail") or []
    if not details:
        raise TaxRuleError("6000", f"Business Validation Error: The tax code {code.get('Name')} can't be used on "
                                   "purchase transactions. Choose a tax code with a purchase tax rate.", element)
    out = []
    for detail in sorted(details, key=lambda d: int(d.get("TaxOrder") or 0)):
        rate = get("TaxRate", (detail.get("TaxRateRef") or {}).get("value"))
        if rate is None or rate.get("Active") is False:
            raise TaxRuleError("2500", f"Invalid Reference Id : TaxRate of tax code {code.get('Name')}", element)
        out.append((rate, _dec(rate.get("RateValue") or 0), str(detail.get("TaxTypeApplicable") or "TaxOnAmount")))
    return out


def apply(body: Json, get: Lookup) -> None:
    """Validate a non-US company's purchase order and compute TxnTaxDetail and TotalAmt in place.

    Call after the lines passed the entity rules (their amounts are numbers).

    Raises:
        TaxRuleError: what QBO would answer.
    """
    calculation = body.get("GlobalTaxCalculation")
    if calculation is None:
        raise TaxRuleError("2020", "Required parameter GlobalTaxCalculation is missing in the request",
                           "GlobalTaxCalculation")
    if calculation not in CALCULATIONS:
        raise TaxRuleError("2010", f"Invalid GlobalTaxCalculation {calculation!r}; expected one of "
                                   f"{', '.join(CALCULATIONS)}", "GlobalTaxCalculation")
    by_rate: dict[str, Json] = {}
    lines_total = Decimal(0)
    for index, line in enumerate(body.get("Line") or []):
        detail_type = str(line.get("DetailType"))
        detail = line.get(detail_type) or {}
        if detail_type == "ItemBasedExpenseLineDetail" and detail.get("ItemRef") is None:
            continue  # a documentation line: its Amount is ignored
        element = f"Line[{index}].{detail_type}.TaxCodeRef"
        ref = detail.get("TaxCodeRef")
        if not isinstance(ref, dict) or ref.get("value") in (None, ""):
            raise TaxRuleError("6000", f"Business Validation Error: {NO_TAX_CODE}", element)
        code = get("TaxCode", ref["value"])
        if code is None:
            raise TaxRuleError("2500", f"Invalid Reference Id : TaxCode {ref['value']}", element)
        if code.get("Active") is False:
            raise TaxRuleError("2500", "Invalid Reference Id : Something you're trying to use has been made "
                                       f"inactive: tax code {code.get('Name')}", element)
        ref["value"] = str(ref["value"])
        ref["name"] = code.get("Name")
        rates = _purchase_rates(code, get, element)
        net = _dec(line["Amount"])
        lines_total += net
        taxes: list[Decimal] = []
        for _rate_obj, value, applies in rates:
            base = net + sum(taxes, Decimal(0)) if applies == "TaxOnAmountPlusTax" else net
            taxes.append(_money(base * value / 100) if calculation != "NotApplicable" else Decimal(0))
        inclusive = detail.get("TaxInclusiveAmt")
        if calculation == "TaxInclusive" and inclusive is not None:
            line_tax = _dec(inclusive) - net
            if abs(line_tax - sum(taxes, Decimal(0))) > CENT:
                raise TaxRuleError("6000", f"Business Validation Error: TaxInclusiveAmt {inclusive} is not Amount {net} "
                                           f"plus its tax {sum(taxes, Decimal(0))}", f"Line[{index}].Amount")
            taxes[-1] += line_tax - sum(taxes, Decimal(0))
        for (rate_obj, value, _), tax in zip(rates, taxes, strict=True):
            entry = by_rate.setdefault(str(rate_obj["Id"]), {"rate": value, "net": Decimal(0), "tax": Decimal(0)})
            entry["net"] += net
            entry["tax"] += tax
    total_tax = sum((e["tax"] for e in by_rate.values()), Decimal(0))
    body["TxnTaxDetail"] = {
        "TotalTax": total_tax,
        "TaxLine": [{"Amount": e["tax"], "DetailType": "TaxLineDetail",
                     "TaxLineDetail": {"TaxRateRef": {"value": rate_id}, "PercentBased": True,
                                       "TaxPercent": e["rate"], "NetAmountTaxable": e["net"]}}
                    for rate_id, e in by_rate.items()],
    }
    body["TotalAmt"] = lines_total + total_tax
