"""Sample data for the sandbox and the demo: a small machine shop's ION purchasing and its QBO books.

It shows the whole mission: several suppliers, parts with revisions, ordered POs with item lines,
category lines, classes and fees, a ship-to address, a foreign-currency PO, and one PO whose expense
code does not exist in QBO, so the error path is visible.

The ION records are dated relative to the moment the sample is made (parts months old, purchase
orders days to weeks old, need dates next week), never on fixed dates: a test must not depend on
the machine's clock being later than the sample, nor a fixed date drift into a cursor's overlap.
"""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime, timedelta
from typing import Any

# ---- QBO: the sample company's chart of accounts and lists ---------------------------------------

AP_ACCOUNT_ID = "33"
INVENTORY_ASSET_ACCOUNT_ID = "81"
INCOME_ACCOUNT_ID = "79"
COGS_ACCOUNT_ID = "80"
FEE_ACCOUNT_ID = "92"


def _account(acct_id: str, name: str, acct_type: str, subtype: str, classification: str,
             number: str | None = None) -> dict[str, Any]:
    account: dict[str, Any] = {"Id": acct_id, "Name": name, "AccountType": acct_type, "AccountSubType": subtype,
                               "Classification": classification, "Active": True}
    if number:
        account["AcctNum"] = number
    return account


QBO_ACCOUNTS = [
    _account(AP_ACCOUNT_ID, "Accounts Payable (A/P)", "Accounts Payable", "AccountsPayable", "Liability", "2000"),
    _account(INVENTORY_ASSET_ACCOUNT_ID, "Inventory Asset", "Other Current Asset", "Inventory", "Asset", "1300"),
    _account(INCOME_ACCOUNT_ID, "Sales of Product Income", "Income", "SalesOfProductIncome", "Revenue", "4000"),
    _account(COGS_ACCOUNT_ID, "Cost of Goods Sold", "Cost of Goods Sold", "SuppliesMaterialsCogs", "Expense", "5000"),
    _account("90", "Tooling", "Expense", "SuppliesMaterials", "Expense", "6100"),
    _account("91", "Test & Inspection Services", "Expense", "OtherMiscellaneousServiceCost", "Expense", "6200"),
    _account(FEE_ACCOUNT_ID, "Freight & Delivery", "Cost of Goods Sold", "ShippingFreightDeliveryCos", "Expense", "5100"),
    _account("93", "Software Subscriptions", "Expense", "OfficeGeneralAdministrativeExpenses", "Expense", "6300"),
    _account("94", "Expedite Fees", "Expense", "OtherMiscellaneousServiceCost", "Expense", "6400"),
    _account("35", "Checking", "Bank", "Checking", "Asset", "1000"),
]

QBO_VENDORS = [
    {"Id": "41", "DisplayName": "Acme Corp", "CompanyName": "Acme Corp", "Active": True,
     "CurrencyRef": {"value": "USD"}},
    {"Id": "42", "DisplayName": "Precision Machining, LLC", "CompanyName": "Precision Machining, LLC",
     "Active": True, "CurrencyRef": {"value": "USD"}},
    {"Id": "43", "DisplayName": "Orbital Fasteners", "Active": True, "CurrencyRef": {"value": "USD"}},
    {"Id": "44", "DisplayName": "Kessler Präzision GmbH", "Active": True, "CurrencyRef": {"value": "EUR"}},
]

QBO_CLASSES = [
    {"Id": "5000000000000007280", "Name": "Engineering", "FullyQualifiedName": "Engineering", "Active": True},
    {"Id": "5000000000000007281", "Name": "Production", "FullyQualifiedName": "Production", "Active": True},
    {"Id": "5000000000000007282", "Name": "R&D", "FullyQualifiedName": "R&D", "Active": True},
]

QBO_CURRENCIES = [
    {"Id": "1", "Code": "EUR", "Name": "Euro", "Active": True},
]


# The same shop in another country: its QBO company's home currency and name, and where it ships to.
# The tax codes come with the emulated company (ionqbo.sandbox.qbo_tax).
COUNTRY_SHOPS: dict[str, dict[str, Any]] = {
    "AU": {"currency": "AUD", "currency_name": "Australian Dollar", "name": "Resonant Machine Works Pty Ltd",
           "ship_to": {"name": "Resonant Machine Works", "street1": "8 Foundry Rd", "street2": "Dock 2",
                       "city": "Port Melbourne", "state": "VIC", "postalCode": "3207", "country": "Australia"}},
    "GB": {"currency": "GBP", "currency_name": "British Pound Sterling", "name": "Resonant Machine Works Ltd",
           "ship_to": {"name": "Resonant Machine Works", "street1": "14 Forge Lane", "street2": "Unit 3",
                       "city": "Sheffield", "state": None, "postalCode": "S9 2RX", "country": "United Kingdom"}},
    "CA": {"currency": "CAD", "currency_name": "Canadian Dollar", "name": "Resonant Machine Works Inc.",
           "ship_to": {"name": "Resonant Machine Works", "street1": "55 Mill St", "street2": "Bay 6",
                       "city": "Mississauga", "state": "ON", "postalCode": "L5B 1B1", "country": "Canada"}},
}


def qbo_sample(*, multicurrency: bool = True, country: str = "US") -> dict[str, Any]:
    """The sample company in the QBO emulator's load format (outside the US: in its home currency)."""
    shop = COUNTRY_SHOPS.get(country)
    home = shop["currency"] if shop else "USD"
    data: dict[str, Any] = {
        "Account": copy.deepcopy(QBO_ACCOUNTS),
        "Vendor": copy.deepcopy(QBO_VENDORS),
        "Class": copy.deepcopy(QBO_CLASSES),
        "Preferences": {"CurrencyPrefs": {"MultiCurrencyEnabled": multicurrency, "HomeCurrency": {"value": home}}},
        "CompanyInfo": {"CompanyName": f"{shop['name'] if shop else 'Resonant Machine Works'} (sandbox)",
                        "Country": country if shop else "US"},
    }
    for vendor in data["Vendor"]:
        if vendor["CurrencyRef"]["value"] == "USD":
            vendor["CurrencyRef"]["value"] = home
    if multicurrency:
        data["CompanyCurrency"] = copy.deepcopy(QBO_CURRENCIES)
    else:
        data["Vendor"] = [v for v in data["Vendor"] if v["CurrencyRef"]["value"] == home]
    return data


# ---- ION: the shop's purchasing ------------------------------------------------------------------


def _ago(days: int, hours: int = 0, minutes: int = 0) -> timedelta:
    """A time this long before the sample is made (resolved by :func:`ion_sample`)."""
    return timedelta(days=days, hours=hours, minutes=minutes)


def _ahead(days: int) -> timedelta:
    """A date this many days after the sample is made."""
    return -timedelta(days=days)


ION_SUPPLIERS = [
    {"id": 1, "name": "Acme Corp"},
    {"id": 2, "name": "Precision Machining, LLC"},
    {"id": 3, "name": "Orbital Fasteners"},
    {"id": 4, "name": "Kessler Präzision GmbH"},
]
ION_CURRENCIES = [{"id": 1, "code": "USD", "name": "US Dollar"}, {"id": 2, "code": "EUR", "name": "Euro"}]
ION_USERS = [{"id": 42, "name": "Ada Lovelace", "email": "ada@example.com"}]

ION_PARTS = [
    {"id": 10, "partNumber": "820412-001", "revision": "B", "description": "Bracket, machined, 6061-T6",
     "trackingType": "LOT", "cost": 42.5, "unitOfMeasure": "each", "isLatestRevision": True,
     "createdAt": _ago(85, 4, 0)},
    {"id": 11, "partNumber": "820412-001", "revision": "A", "description": "Bracket, machined (superseded)",
     "trackingType": "LOT", "cost": 40.0, "unitOfMeasure": "each", "isLatestRevision": False,
     "createdAt": _ago(177, 4, 0)},
    {"id": 12, "partNumber": "NAS1352-3", "revision": "A", "description": "Socket head cap screw, #10-32",
     "trackingType": None, "cost": 0.3333, "unitOfMeasure": "each", "isLatestRevision": True,
     "createdAt": _ago(102, 7, 0)},
    {"id": 13, "partNumber": "HX-CFRP:PLATE", "revision": "C", "description": "CFRP plate 300x300 (name has a colon)",
     "trackingType": "SERIAL", "cost": 310.0, "unitOfMeasure": "each", "isLatestRevision": True,
     "createdAt": _ago(128, 9, 30)},
    {"id": 14, "partNumber": "TV-ASSY-100", "revision": "1", "description": "Thrust vector actuator assembly",
     "trackingType": "SERIAL", "cost": 1850.0, "unitOfMeasure": "each", "isLatestRevision": True,
     "createdAt": _ago(54, 9, 0)},
]

_SHIP_TO = {"name": "Resonant Machine Works", "street1": "1200 Foundry Way", "street2": "Dock 4",
            "city": "Hawthorne", "state": "CA", "postalCode": "90250", "country": "USA"}

ION_PURCHASE_ORDERS = [
    {   # item lines, a class, two fees, the ship-to address
        "id": 1042, "status": "ORDERED", "supplierId": 2, "currencyId": 1, "shippingAddress": _SHIP_TO,
        "notes": "Expedite: needed for TV-ASSY build 7", "createdAt": _ago(23, 2, 56),
        "purchaseOrderLines": [
            {"id": 5001, "partId": 10, "quantity": 24, "unitCost": 42.5, "totalCost": 1020.0,
             "description": "Bracket, machined, 6061-T6", "accountingClass": "Production", "needDate": _ahead(6),
             "status": "ORDERED"},
            {"id": 5002, "partId": 12, "quantity": 3, "unitCost": 0.3333, "totalCost": 1.0,
             "description": "SHCS #10-32 (priced per lot of 3)", "accountingClass": "Production",
             "needDate": _ahead(6), "status": "ORDERED"},
        ],
        "fees": [{"id": 7, "name": "Shipping", "value": 35.0}, {"id": 8, "name": "Expedite", "value": 150.0}],
    },
    {   # a category line (expense code) beside an item line, and a part whose number holds a colon
        "id": 1043, "status": "ORDERED", "supplierId": 1, "currencyId": 1, "shippingAddress": _SHIP_TO,
        "createdAt": _ago(20, 9, 48),
        "purchaseOrderLines": [
            {"id": 5003, "partId": 13, "quantity": 2, "unitCost": 310.0, "totalCost": 620.0,
             "description": "CFRP plate 300x300", "accountingClass": "R&D", "status": "ORDERED"},
            {"id": 5004, "partId": None, "quantity": 1, "unitCost": 480.0, "totalCost": 480.0,
             "description": "5-axis fixture plate", "expenseCode": "6100", "accountingClass": "Engineering",
             "status": "ORDERED"},
        ],
        "fees": [{"id": 9, "name": "Shipping", "value": 22.5}],
    },
    {   # a foreign-currency PO: EUR, from a vendor whose QBO currency is EUR
        "id": 1044, "status": "ORDERED", "supplierId": 4, "currencyId": 2, "shippingAddress": _SHIP_TO,
        "createdAt": _ago(15, 11, 0),
        "purchaseOrderLines": [
            {"id": 5005, "partId": 14, "quantity": 1, "unitCost": 1850.0, "totalCost": 1850.0,
             "description": "Thrust vector actuator assembly", "accountingClass": "Engineering", "status": "ORDERED"},
        ],
        "fees": [],
    },
    {   # the error path: expense code 7777 has no QBO account
        "id": 1045, "status": "ORDERED", "supplierId": 3, "currencyId": 1, "shippingAddress": _SHIP_TO,
        "createdAt": _ago(13, 5, 15),
        "purchaseOrderLines": [
            {"id": 5006, "partId": None, "quantity": 1, "unitCost": 95.0, "totalCost": 95.0,
             "description": "Calibration service, torque wrenches", "expenseCode": "7777", "status": "ORDERED"},
        ],
        "fees": [],
    },
    {   # a draft: not sent to QBO until it is Ordered
        "id": 1046, "status": "DRAFT", "supplierId": 1, "currencyId": 1, "createdAt": _ago(5, 9, 0),
        "purchaseOrderLines": [
            {"id": 5007, "partId": 10, "quantity": 10, "unitCost": 42.5, "totalCost": 425.0, "status": "DRAFT"},
        ],
        "fees": [],
    },
]


def _dated(value: Any, now: datetime, key: str = "") -> Any:
    if isinstance(value, timedelta):
        when = now - value
        return when.date().isoformat() if key == "needDate" else when.isoformat(timespec="microseconds")
    if isinstance(value, dict):
        return {k: _dated(v, now, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_dated(v, now, key) for v in value]
    return copy.deepcopy(value)


def ion_sample(now: float | None = None, *, country: str = "US") -> dict[str, Any]:
    """The sample shop in the ION emulator's load format, dated relative to ``now`` (seconds since
    the epoch; default: the machine's clock). Loaded records get updatedAt = createdAt. Outside the US
    the sample shop has its home currency and address."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC).replace(second=0, microsecond=0)
    sample: dict[str, Any] = _dated({
        "suppliers": ION_SUPPLIERS,
        "currencies": ION_CURRENCIES,
        "users": ION_USERS,
        "parts": ION_PARTS,
        "purchaseOrders": ION_PURCHASE_ORDERS,
    }, moment)
    shop = COUNTRY_SHOPS.get(country)
    if shop is not None:
        sample["currencies"][0].update(code=shop["currency"], name=shop["currency_name"])
        for po in sample["purchaseOrders"]:
            if po.get("shippingAddress"):
                po["shippingAddress"] = copy.deepcopy(shop["ship_to"])
    return sample
