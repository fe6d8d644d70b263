"""Probe the QBO emulator with every element of Intuit's schema, valid and invalid, at every depth.

For each entity the emulator serves, every element path the derived model (ionqbo/sandbox/qbo_model.json,
from Intuit's XSD) defines under it is probed with values of its type and with values that are not:

- a valid value must never be refused as a schema error (2010) nor crash the emulator; business rules may
  still refuse it with their own codes (2500 unknown reference, 6000, ...), as QBO does;
- an invalid value (an element the schema does not define, a malformed date, decimal, boolean or
  enumeration value, an object where a value belongs, a value where a list belongs) must be refused
  with 2010 naming that element.

Entities the emulator does not write (Preferences, CompanyInfo, TaxCode, TaxRate, ...) are probed
against the model's checker directly.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from ionqbo.sandbox.httpd import Request
from ionqbo.sandbox.qbo import FIELDS, MODEL, RESOURCES, TAX_ENTITIES, QboEmulator
from ionqbo.sandbox.qbo_schema import SchemaViolation

REALM = "9341455130"

BASE_DATA: dict[str, Any] = {
    "Account": [
        {"Id": "33", "Name": "Accounts Payable (A/P)", "AccountType": "Accounts Payable"},
        {"Id": "80", "Name": "Cost of Goods Sold", "AccountType": "Cost of Goods Sold"},
        {"Id": "79", "Name": "Sales of Product Income", "AccountType": "Income"},
        {"Id": "81", "Name": "Inventory Asset", "AccountType": "Other Current Asset"},
    ],
    "Vendor": [{"Id": "41", "DisplayName": "Hicks Hardware"}],
    "Item": [{"Id": "38", "Name": "Garden Supplies", "Type": "NonInventory", "ExpenseAccountRef": {"value": "80"}}],
}


def base_body(entity: str, n: int) -> dict[str, Any]:
    """A create body the emulator accepts, with a name unique to probe ``n``."""
    if entity == "PurchaseOrder":
        return {"VendorRef": {"value": "41"}, "APAccountRef": {"value": "33"},
                "Line": [{"DetailType": "ItemBasedExpenseLineDetail", "Amount": 10,
                          "ItemBasedExpenseLineDetail": {"ItemRef": {"value": "38"}, "Qty": 1, "UnitPrice": 10}}]}
    if entity == "Item":
        return {"Name": f"Probe item {n}", "Type": "NonInventory", "ExpenseAccountRef": {"value": "80"}}
    if entity in ("Vendor", "Customer", "Employee"):
        return {"DisplayName": f"Probe person {n}"}
    if entity == "Account":
        return {"Name": f"Probe account {n}", "AccountType": "Expense"}
    if entity == "Class":
        return {"Name": f"Probe class {n}"}
    return {"Code": "EUR"}


SAMPLES = {
    "string": ["Probe text", 7],
    "decimal": [12.5, "3.25", 0],
    "int": [2, "4"],
    "boolean": [True, "false"],
    "date": ["2026-01-31", "2024-02-29", "2026-01-31-07:00"],
    "dateTime": ["2026-01-31T10:00:00-07:00", "2026-01-31T10:00:00.125Z", "2026-01-31T10:00:00"],
    "time": ["10:00:00"],
}
BAD = {
    "string": [{"value": "x"}, ["x"]],
    "decimal": ["abc", True, "1,5", {"value": 1}],
    "int": ["four", "1.5", False],
    "boolean": ["yes", "1", 1.5, {"value": True}],
    "date": ["2026-13-45", "2026-02-30", "31/01/2026", "2026-1-5", 20260131],
    "dateTime": ["2026-01-31 10:00:00", "2026-01-31T25:00:00", "2026-02-30T10:00:00Z", "yesterday"],
    "time": ["25:00:00", "10h00"],
}


def walk(type_name: str, path: tuple[str, ...], seen: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every (path, field) under ``type_name``; a type already on the path is not entered again."""
    for name, field in MODEL.fields(type_name).items():
        here = (*path, name)
        yield here, field
        child = field["type"]
        if MODEL.kind(child) == "complex" and child not in seen:
            yield from walk(child, here, (*seen, child))


def put(body: dict[str, Any], entity: str, path: tuple[str, ...], value: Any) -> None:
    """Set ``value`` at ``path`` in ``body``, creating objects (and one-element lists) on the way."""
    node: Any = body
    type_name = entity
    for index, key in enumerate(path):
        field = MODEL.fields(type_name)[key]
        last = index == len(path) - 1
        if last:
            node[key] = value
            return
        if field.get("list"):
            items = node.get(key)
            if not isinstance(items, list) or not items:
                items = node[key] = [{}]
            node = items[0]
        else:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        type_name = field["type"]


def valid_values(field: dict[str, Any]) -> list[Any]:
    type_name = field["type"]
    kind = MODEL.kind(type_name)
    enum = MODEL.enum(type_name)
    if enum:
        values: list[Any] = list(enum)
    elif kind == "complex":
        spec = MODEL.types[type_name]
        values = [{"value": "1"} if spec.get("value") else {}]
    elif kind == "any":
        values = [{"Anything": [1, "two"]}]
    else:
        values = [*SAMPLES[kind], None]
    if field.get("list"):
        return [*([v] for v in values), []]
    return values


def dotted(entity: str, path: tuple[str, ...]) -> str:
    """The element name QBO's fault gives for ``path``: ``[0]`` after each list on the way (``put``)."""
    parts = []
    type_name = entity
    for index, key in enumerate(path):
        field = MODEL.fields(type_name)[key]
        parts.append(f"{key}[0]" if field.get("list") and index < len(path) - 1 else key)
        type_name = field["type"]
    return ".".join(parts)


def invalid_values(entity: str, path: tuple[str, ...], field: dict[str, Any]) -> list[tuple[Any, str]]:
    """(value, the element the 2010 must name)."""
    type_name = field["type"]
    kind = MODEL.kind(type_name)
    where = dotted(entity, path)
    enum = MODEL.enum(type_name)
    out: list[tuple[Any, str]] = []
    if kind == "any":
        return out
    if kind == "complex":
        spec = MODEL.types[type_name]
        sample: dict[str, Any] = {"value": "1"} if spec.get("value") else {}
        bogus = {**sample, "BogusProbeField": 1}
        out += [("a string", where), (7, where)]
        if not spec.get("open"):
            member = f"{where}[0].BogusProbeField" if field.get("list") else f"{where}.BogusProbeField"
            out.append(([bogus] if field.get("list") else bogus, member))
    elif enum:
        out += [("NotAnEnumValue", where), ("", where), (enum[0].upper() if enum[0] != enum[0].upper() else
                                                         enum[0].lower(), where), ({"value": enum[0]}, where)]
    else:
        out += [(v, where) for v in BAD[kind]]
    if field.get("list"):
        lifted = []
        for value, element in out:
            if isinstance(value, list):
                lifted.append((value, element))
            else:
                lifted.append(([value], element.replace(where, f"{where}[0]", 1)))
        lifted.append(({} if kind != "complex" else "not a list", where))
        return lifted
    return out


class Harness:
    def __init__(self) -> None:
        self.emu = QboEmulator(realm_id=REALM, seed=7, clock=lambda: 1_780_000_000.0)
        self.emu.load(BASE_DATA)
        self.token = self._token()
        self.n = 0

    def _token(self) -> str:
        refresh = self.emu.issue_refresh_token()
        auth = base64.b64encode(f"{self.emu.client_id}:{self.emu.client_secret}".encode()).decode()
        body = urlencode({"grant_type": "refresh_token", "refresh_token": refresh}).encode()
        answer = self.emu(Request("POST", "/oauth2/v1/tokens/bearer", {}, {"authorization": f"Basic {auth}"}, body))
        return str(json.loads(answer.body)["access_token"])

    def create(self, entity: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.n += 1
        if self.n % 300 == 0:  # keep the store small: uniqueness checks scan it
            self.emu.reset()
            self.emu.load(BASE_DATA)
        resource = next(k for k, v in RESOURCES.items() if v == entity)
        request = Request("POST", f"/v3/company/{REALM}/{resource}", {},
                          {"authorization": f"Bearer {self.token}", "content-type": "application/json"},
                          json.dumps(body).encode())
        response = self.emu(request)
        return response.status, json.loads(response.body)


def _error(payload: dict[str, Any]) -> dict[str, Any] | None:
    fault = payload.get("Fault")
    return fault["Error"][0] if fault else None


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness()


# Entities the emulator writes through its entity endpoints; TaxCode and TaxRate are read and query only
# (QBO makes them through the TaxService), so they are probed against the model below instead.
SERVED = sorted(set(RESOURCES.values()) - TAX_ENTITIES)


def test_the_model_names_its_source_and_covers_every_served_entity() -> None:
    source = MODEL.source
    assert source["repository"] == "https://github.com/intuit/QuickBooks-V3-Java-SDK"
    assert len(source["commit"]) == 40 and source["licence"].startswith("Apache-2.0")
    assert {"Finance.xsd", "IntuitBaseTypes.xsd"} <= set(source["files"])
    for entity in (*SERVED, "Preferences", "CompanyInfo", "TaxCode", "TaxRate", "TxnTaxDetail", "TaxLineDetail",
                   "PhysicalAddress", "ReferenceType", "ItemBasedExpenseLineDetail", "AccountBasedExpenseLineDetail"):
        assert entity in MODEL.types, entity
    # elements the old top-level table refused although the schema defines them
    assert {"TaxReportingBasis"} <= set(MODEL.fields("Vendor"))
    assert {"ProjectRef", "ManuallyClosed", "ExpectedDate", "CustomField"} <= set(MODEL.fields("PurchaseOrder"))
    assert "OpeningBalance" in MODEL.fields("Account") or "OpenBalance" in MODEL.fields("Account") or \
        "OpeningBalanceDate" in MODEL.fields("Account")
    assert FIELDS["PurchaseOrder"] == frozenset(MODEL.fields("PurchaseOrder"))


@pytest.mark.parametrize("entity", SERVED)
def test_probe_every_element_of_the_schema_through_the_emulator(harness: Harness, entity: str) -> None:
    refused_valid: list[str] = []
    accepted_invalid: list[str] = []
    crashed: list[str] = []
    probes = 0
    for path, field in walk(entity, (), (entity,)):
        for value in valid_values(field):
            body = base_body(entity, harness.n)
            put(body, entity, path, copy.deepcopy(value))
            status, payload = harness.create(entity, body)
            probes += 1
            error = _error(payload)
            if status >= 500:
                crashed.append(f"{'.'.join(path)}={value!r}: {status} {error}")
            elif error is not None and error["code"] == "2010":
                refused_valid.append(f"{'.'.join(path)}={value!r}: {error['Detail']}")
        for value, element in invalid_values(entity, path, field):
            body = base_body(entity, harness.n)
            put(body, entity, path, copy.deepcopy(value))
            status, payload = harness.create(entity, body)
            probes += 1
            error = _error(payload)
            if error is None or error["code"] != "2010" or error["element"] != element:
                accepted_invalid.append(f"{'.'.join(path)}={value!r}: {status} {error}")
    print(f"{entity}: {probes} probes, {len(refused_valid)} valid refused, {len(accepted_invalid)} invalid accepted")
    assert probes > 50
    assert crashed == []
    assert refused_valid == []
    assert accepted_invalid == []


@pytest.mark.parametrize("entity", ["Preferences", "CompanyInfo", "TaxCode", "TaxRate", "TaxAgency", "Term"])
def test_probe_the_entities_the_emulator_only_reads_against_the_model(entity: str) -> None:
    probes = 0
    for path, field in walk(entity, (), (entity,)):
        for value in valid_values(field):
            body: dict[str, Any] = {}
            put(body, entity, path, copy.deepcopy(value))
            MODEL.check(entity, body)  # raises on a refusal
            probes += 1
        for value, element in invalid_values(entity, path, field):
            body = {}
            put(body, entity, path, copy.deepcopy(value))
            with pytest.raises(SchemaViolation) as refused:
                MODEL.check(entity, body)
            assert refused.value.element == element
            probes += 1
    assert probes > 20


def test_unknown_field_inside_a_po_line_is_refused_naming_it(harness: Harness) -> None:
    body = base_body("PurchaseOrder", 0)
    body["Line"][0]["BillableStatus"] = "NotBillable"  # python-quickbooks issue 38: on the line, not its detail
    status, payload = harness.create("PurchaseOrder", body)
    error = _error(payload)
    assert status == 400 and error is not None
    assert error["code"] == "2010" and error["element"] == "Line[0].BillableStatus"
    assert 'Unrecognized field "BillableStatus"' in error["Detail"]


def test_typed_values_are_stored_as_qbo_answers_them(harness: Harness) -> None:
    body = base_body("Item", 99_999)
    body.update({"Sku": 10, "PurchaseCost": "2.50", "Taxable": "true", "UnitPrice": ""})
    status, payload = harness.create("Item", body)
    assert status == 200, payload
    item = payload["Item"]
    assert item["Sku"] == "10" and item["PurchaseCost"] == 2.5 and item["Taxable"] is True
    assert item["UnitPrice"] == 0  # empty is absent; QBO's default applies


def test_batch_items_and_updates_are_read_against_the_schema_too(harness: Harness) -> None:
    status, payload = harness.create("Vendor", base_body("Vendor", 123_456))
    assert status == 200, payload
    vendor = payload["Vendor"]
    good = {"bId": "1", "operation": "create", "Vendor": base_body("Vendor", 123_457)}
    bad = {"bId": "2", "operation": "create", "Vendor": {**base_body("Vendor", 123_458),
                                                        "BillAddr": {"Line1": "1 Main St", "Planet": "Earth"}}}
    stale_typed = {"bId": "3", "operation": "update",
                   "Vendor": {**vendor, "Vendor1099": "maybe"}}  # the type is read before the SyncToken
    request = Request("POST", f"/v3/company/{REALM}/batch", {},
                      {"authorization": f"Bearer {harness.token}", "content-type": "application/json"},
                      json.dumps({"BatchItemRequest": [good, bad, stale_typed]}).encode())
    answers = {a["bId"]: a for a in json.loads(harness.emu(request).body)["BatchItemResponse"]}
    assert "Vendor" in answers["1"]
    assert answers["2"]["Fault"]["Error"][0]["code"] == "2010"
    assert answers["2"]["Fault"]["Error"][0]["element"] == "BillAddr.Planet"
    assert answers["3"]["Fault"]["Error"][0]["element"] == "Vendor1099"
    update = {**vendor, "OpenBalanceDate": "2026-02-30"}
    status, payload = harness.create("Vendor", update)
    assert status == 400 and payload["Fault"]["Error"][0]["element"] == "OpenBalanceDate"
