"""Tests for ionqbo.mapping: golden pairs (tests/golden) and tables for each rule."""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import replace
from datetime import date
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from ionqbo.errors import ConfigError, MappingError
from ionqbo.ion.models import Part, parse_part, parse_purchase_order
from ionqbo.mapping import (
    ITEM_OWNED_FIELDS,
    PO_OWNED_FIELDS,
    ExplicitMappings,
    MappingProblems,
    References,
    close_payload,
    item_name,
    line_amounts,
    parse_mappings,
    part_to_item,
    po_to_payload,
    reference_gap,
    resolve_class,
    resolve_expense_account,
    resolve_fee_account,
    resolve_vendor,
    suggest,
)

GOLDEN = Path(__file__).parent / "golden"
# Set IONQBO_REGEN_GOLDEN=1 to rewrite the expected files; the test still fails so that every
# regenerated file is reviewed before it is trusted. Nothing is ever regenerated silently.
REGEN = os.environ.get("IONQBO_REGEN_GOLDEN") == "1"


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def golden_refs(patch: dict[str, Any] | None = None) -> References:
    data = _merge(_load(GOLDEN / "references.json"), patch or {})
    return References.build(
        vendors=data["vendors"],
        accounts=data["accounts"],
        classes=data["classes"],
        company_currencies=data["company_currencies"],
        preferences=data["preferences"],
        mappings=parse_mappings(data["mappings"]),
        ap_account_id=data["ap_account_id"],
        fee_account_id=data["fee_account_id"],
        asset_account_id=data["asset_account_id"],
        income_account_id=data["income_account_id"],
        cogs_account_id=data["cogs_account_id"],
        item_name_template=data["item_name_template"],
        company_info=data["company_info"],
        tax_codes=data["tax_codes"],
        tax_rates=data["tax_rates"],
        purchase_tax_code=data["purchase_tax_code"],
        tax_amounts=data["tax_amounts"],
        tax_model=data["tax_model"],
    )


def _run_case(case: dict[str, Any]) -> tuple[str, Any]:
    """('qbo', payload) or ('error', {message, field, hint})."""
    refs = golden_refs(case.get("references"))
    try:
        if case["kind"] == "purchase_order":
            return "qbo", po_to_payload(parse_purchase_order(case["record"]), refs, case["item_ids"])
        if case["kind"] == "part":
            part = parse_part(case["record"])
            return "qbo", part_to_item(part, refs, start_date=date.fromisoformat(case["start_date"]))
        if case["kind"] == "close":
            return "qbo", close_payload(_plain_json(case["record"]))
    except MappingError as exc:
        out: dict[str, Any] = {
            "message": exc.message,
            "field": exc.field,
            "hint": exc.hint,
            "kind": exc.kind,
            "ion_id": exc.ion_id,
        }
        if isinstance(exc, MappingProblems):
            out["problems"] = len(exc.problems)
        return "error", out
    raise AssertionError(f"unknown kind {case['kind']}")


def _plain_json(value: Any) -> Any:
    """Decimals (from parse_float=Decimal) back to JSON numbers, for dumping and diffs."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, dict):
        return {k: _plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_json(v) for v in value]
    return value


def _dump(value: Any) -> str:
    return json.dumps(_plain_json(value), indent=2, ensure_ascii=False) + "\n"


CASES = sorted(p.name[: -len(".ion.json")] for p in GOLDEN.glob("*.ion.json"))


def test_golden_files_pair_up() -> None:
    outputs = {p.name.rsplit(".", 2)[0] for p in GOLDEN.glob("*.qbo.json")} | {
        p.name.rsplit(".", 2)[0] for p in GOLDEN.glob("*.error.json")
    }
    assert len(CASES) >= 30
    assert sorted(outputs) == CASES, "every <name>.ion.json needs exactly one <name>.qbo.json or .error.json"
    for name in CASES:
        assert not ((GOLDEN / f"{name}.qbo.json").exists() and (GOLDEN / f"{name}.error.json").exists()), name


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    case = _load(GOLDEN / f"{name}.ion.json")
    kind, actual = _run_case(case)
    expected_path = GOLDEN / f"{name}.{kind}.json"
    if REGEN:
        for stale in (GOLDEN / f"{name}.qbo.json", GOLDEN / f"{name}.error.json"):
            stale.unlink(missing_ok=True)
        expected_path.write_text(_dump(actual), encoding="utf-8")
        pytest.fail(f"regenerated {expected_path.name}: review it, then rerun without IONQBO_REGEN_GOLDEN")
    other = "error" if kind == "qbo" else "qbo"
    assert expected_path.exists(), (
        f"{name}: mapping produced {kind}, but the golden file is {name}.{other}.json:\n{_dump(actual)}"
    )
    expected = _load(expected_path)
    # Numbers compare by value (25 == 25.0); the text diff below shows any mismatch.
    if _canon(actual) != _canon(expected):
        diff = "".join(
            difflib.unified_diff(
                _dump(expected).splitlines(keepends=True),
                _dump(actual).splitlines(keepends=True),
                f"{name}.{kind}.json (expected)",
                "mapping output (actual)",
            )
        )
        pytest.fail(f"{name} does not match its golden file:\n{diff}")
    json.dumps(actual)  # payloads are JSON-native: no Decimal, no date objects


def _canon(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value)).normalize()
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon(v) for v in value]
    raise AssertionError(f"unexpected value {value!r}")


def _round_any(value: Decimal) -> set[Decimal]:
    """value rounded to cents half-up and half-even: one element when no rounding mode can matter."""
    return {value.quantize(Decimal("0.01"), rounding=mode) for mode in (ROUND_HALF_UP, ROUND_HALF_EVEN)}


def test_golden_item_lines_satisfy_qbo_amount_rule() -> None:
    """Every item line in every golden payload has Amount == round(Qty x UnitPrice, 2) (QBO 6070)."""
    checked = 0
    for name in CASES:
        path = GOLDEN / f"{name}.qbo.json"
        if not path.exists():
            continue
        for line in _load(path).get("Line", []):
            detail = line.get("ItemBasedExpenseLineDetail")
            if detail and "Qty" in detail:
                product = Decimal(str(detail["Qty"])) * Decimal(str(detail["UnitPrice"]))
                assert _round_any(product) == {Decimal(str(line["Amount"]))}, (name, line)
                checked += 1
    assert checked >= 10


# ---- explicit mappings ---------------------------------------------------------------------


def test_parse_mappings_reads_every_table_case_insensitively() -> None:
    m = parse_mappings(
        '[suppliers]\n"Acme Corp" = "41"\n" Globex " = 56\n[suppliers."Initech"]\nusd = "57"\nEUR = "77"\n'
        '[expense_codes]\n"6100" = "90"\n[classes]\n"R&D" = "5000000000000007280"\n[fees]\nShipping = "90"\n'
    )
    assert m.lookup("suppliers", "ACME CORP") == "41"
    assert m.lookup("suppliers", "globex") == "56"
    assert m.supplier_currencies == {"initech": {"USD": "57", "EUR": "77"}}
    assert m.lookup("expense_codes", " 6100 ") == "90"
    assert m.lookup("classes", "r&d") == "5000000000000007280"
    assert m.lookup("fees", "SHIPPING") == "90"
    assert m.lookup("fees", "Handling") is None
    assert parse_mappings("") == ExplicitMappings()


BAD_MAPPINGS = [
    pytest.param("[suppliers\n", ["not valid TOML"], id="syntax"),
    pytest.param('[vendors]\n"A" = "1"\n', ["unknown table [vendors]"], id="unknown-table"),
    pytest.param('suppliers = "41"\n', ["suppliers must be a table"], id="not-a-table"),
    pytest.param(
        '[suppliers]\n"Acme" = "Acme, Inc."\n', ['[suppliers] "Acme"', "a QBO vendor id"], id="name-not-id"
    ),
    pytest.param('[classes]\n"R&D" = true\n', ['[classes] "R&D"', "a QBO class id"], id="bool"),
    pytest.param(
        '[fees]\nShip = "1"\nSHIP = "2"\n', ['[fees] "SHIP" repeats [fees] "Ship"'], id="duplicate-case"
    ),
    pytest.param(
        '[suppliers."Acme"]\nEuro = "1"\n', ["'Euro' is not an ISO 4217 currency code"], id="bad-currency"
    ),
    pytest.param('[expense_codes]\n"" = "1"\n', ["the name is empty"], id="empty-name"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_MAPPINGS)
def test_parse_mappings_rejects_bad_content_naming_the_key(text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mappings(text)
    for fragment in expected:
        assert fragment in str(info.value)
    assert "IONQBO_MAPPINGS" in str(info.value)


def test_parse_mappings_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_mappings('[suppliers]\nA = "x"\n[fees]\nB = "y"\n[other]\n')
    assert len(info.value.problems) == 3


# ---- resolution ------------------------------------------------------------------------------


@pytest.fixture
def refs() -> References:
    return golden_refs()


VENDORS = [
    pytest.param("Acme, Inc.", "", "41", id="exact"),
    pytest.param("  acme, inc. ", "", "41", id="case-and-whitespace"),
    pytest.param("ACME Corp", "", None, id="no-fuzzy-match"),
    pytest.param("Old Supplier", "", None, id="inactive"),
    pytest.param("ACME Corp", '[suppliers]\n"acme corp" = "42"\n', "42", id="explicit-wins"),
    pytest.param("Acme, Inc.", '[suppliers]\n"Acme, Inc." = "42"\n', "42", id="explicit-beats-name"),
    pytest.param(
        "Acme, Inc.", '[suppliers]\n"Acme, Inc." = "44"\n', None, id="explicit-inactive-no-fallback"
    ),
    pytest.param(
        "Acme, Inc.", '[suppliers]\n"Acme, Inc." = "999"\n', None, id="explicit-unknown-no-fallback"
    ),
]


@pytest.mark.parametrize(("name", "toml", "expected"), VENDORS)
def test_resolve_vendor(refs: References, name: str, toml: str, expected: str | None) -> None:
    refs = replace(refs, mappings=parse_mappings(toml))
    vendor = resolve_vendor(refs, name)
    assert (vendor or {}).get("Id") == expected


def test_resolve_vendor_per_currency_mapping(refs: References) -> None:
    refs = replace(refs, mappings=parse_mappings('[suppliers."Acme, Inc."]\nUSD = "41"\nEUR = "43"\n'))
    assert resolve_vendor(refs, "acme, inc.", "EUR")["Id"] == "43"  # type: ignore[index]
    assert resolve_vendor(refs, "acme, inc.")["Id"] == "41"  # type: ignore[index]  # home currency
    assert resolve_vendor(refs, "acme, inc.", "CAD") is None
    gap = reference_gap(refs, "supplier", "Acme, Inc.", currency="CAD")
    assert gap is not None
    assert "CAD" in gap.message
    assert '[suppliers."Acme, Inc."]' in gap.hint


def test_resolve_vendor_ambiguous_names_resolve_to_none(refs: References) -> None:
    refs = References.build(vendors=[{"Id": "1", "DisplayName": "Twin"}, {"Id": "2", "DisplayName": "twin"}])
    assert resolve_vendor(refs, "Twin") is None
    gap = reference_gap(refs, "supplier", "Twin")
    assert gap is not None
    assert "several QBO vendors (ids 1, 2)" in gap.message


ACCOUNTS = [
    pytest.param("6100", "", "90", id="acctnum"),
    pytest.param("shop expenses:tooling", "", "91", id="fully-qualified-name"),
    pytest.param("TOOLING", "", "91", id="name"),
    pytest.param("Freight and Shipping", "", "90", id="name-2"),
    pytest.param("6150", "", None, id="unknown"),
    pytest.param("6150", '[expense_codes]\n"6150" = "92"\n', "92", id="explicit"),
    pytest.param("6100", '[expense_codes]\n"6100" = "91"\n', "91", id="explicit-wins"),
]


@pytest.mark.parametrize(("code", "toml", "expected"), ACCOUNTS)
def test_resolve_expense_account(refs: References, code: str, toml: str, expected: str | None) -> None:
    refs = replace(refs, mappings=parse_mappings(toml))
    assert (resolve_expense_account(refs, code) or {}).get("Id") == expected


def test_resolve_expense_account_skips_inactive_and_flags_wrong_type(refs: References) -> None:
    accounts = [
        *refs.accounts,
        {"Id": "95", "Name": "Dead", "AcctNum": "6900", "AccountType": "Expense", "Active": False},
    ]
    refs = replace(refs, accounts=tuple(accounts))
    assert resolve_expense_account(refs, "6900") is None
    assert resolve_expense_account(refs, "1300")["Id"] == "93"  # type: ignore[index]
    gap = reference_gap(refs, "expense_code", "1300")
    assert gap is not None
    assert "Other Current Asset" in gap.message
    assert reference_gap(refs, "expense_code", "6100") is None


CLASSES = [
    pytest.param("R&D", "", "5000000000000007280", id="exact"),
    pytest.param("production", "", "5000000000000007281", id="case"),
    pytest.param("Prodution", "", None, id="typo"),
    pytest.param("Lab", '[classes]\nLab = "5000000000000007280"\n', "5000000000000007280", id="explicit"),
]


@pytest.mark.parametrize(("name", "toml", "expected"), CLASSES)
def test_resolve_class(refs: References, name: str, toml: str, expected: str | None) -> None:
    refs = replace(refs, mappings=parse_mappings(toml))
    assert (resolve_class(refs, name) or {}).get("Id") == expected


FEES = [
    pytest.param("Shipping", "90", "", id="default-account"),
    pytest.param("expedite", "90", "", id="mapped-case-insensitive"),
    pytest.param("Shipping", "", "QBO_FEE_ACCOUNT_ID is not set", id="no-default"),
    pytest.param(
        "Shipping", "12345", "QBO_FEE_ACCOUNT_ID=12345 is not an active QBO account", id="bad-default"
    ),
]


@pytest.mark.parametrize(("fee", "fee_account", "gap_text"), FEES)
def test_resolve_fee_account(refs: References, fee: str, fee_account: str, gap_text: str) -> None:
    refs = replace(refs, fee_account_id=fee_account)
    account = resolve_fee_account(refs, fee)
    gap = reference_gap(refs, "fee", fee)
    if gap_text:
        assert account is None
        assert gap is not None
        assert gap_text in gap.message
    else:
        assert account is not None
        assert account["Id"] == ("92" if fee.lower() == "expedite" else "90")
        assert gap is None


SUGGESTIONS = [
    pytest.param("ACME Inc", ["Acme, Inc.", "Hicks Hardware"], ["Acme, Inc."], id="company-form-words"),
    pytest.param("Acme Corporation", ["Acme, Inc.", "Acme Labs"], ["Acme, Inc."], id="corporation"),
    pytest.param("Hiks Hardware", ["Acme, Inc.", "Hicks Hardware"], ["Hicks Hardware"], id="typo"),
    pytest.param("Zeta", ["Acme, Inc.", "Hicks Hardware"], [], id="nothing-near"),
    pytest.param(
        "Bosch Rexroth",
        ["Bosch Rexroth GmbH", "Bosch Rexroth AG"],
        ["Bosch Rexroth GmbH", "Bosch Rexroth AG"],
        id="gmbh",
    ),
    pytest.param("Société Générale", ["Societe Generale SA"], ["Societe Generale SA"], id="accents"),
]


@pytest.mark.parametrize(("name", "candidates", "expected"), SUGGESTIONS)
def test_suggest(name: str, candidates: list[str], expected: list[str]) -> None:
    assert suggest(name, candidates) == expected


# ---- item names --------------------------------------------------------------------------------


def _part(number: str = "820412-001", revision: str = "B", **kw: Any) -> Part:
    return Part(id=kw.pop("id", "p1"), part_number=number, revision=revision, **kw)


ITEM_NAMES = [
    pytest.param(_part(), "{partNumber} Rev {revision}", "820412-001 Rev B", id="default"),
    pytest.param(_part("A:B:C"), "{partNumber} Rev {revision}", "A-B-C Rev B", id="colons"),
    pytest.param(_part("A\tB\nC\r\x00D"), "{partNumber}", "A B C D", id="controls"),
    pytest.param(_part("A\u2028B"), "{partNumber}", "A B", id="line-separator"),
    pytest.param(_part("  A   B  "), "{partNumber} Rev {revision}", "A B Rev B", id="whitespace"),
    pytest.param(_part(revision=""), "{partNumber} Rev {revision}", "820412-001 Rev", id="empty-revision"),
    pytest.param(
        _part(description="Bracket: big"),
        "{partNumber} {description:.7}",
        "820412-001 Bracket",
        id="format-spec",
    ),
    pytest.param(_part(description=None), "{partNumber} {description}", "820412-001", id="no-description"),
    pytest.param(_part(id="9"), "{id}-{partNumber}", "9-820412-001", id="id"),
    pytest.param(_part("x" * 100), "{partNumber}", "x" * 100, id="exactly-100"),
]


@pytest.mark.parametrize(("part", "template", "expected"), ITEM_NAMES)
def test_item_name(part: Part, template: str, expected: str) -> None:
    assert item_name(part, template) == expected


def test_item_name_long_names_are_cut_deterministically() -> None:
    a = item_name(_part("x" * 95 + "A"), "{partNumber} Rev {revision}")
    b = item_name(_part("x" * 95 + "B"), "{partNumber} Rev {revision}")
    assert len(a) == len(b) == 100
    assert a[:92] == b[:92] == "x" * 92
    assert a[92] == "~"
    assert a != b
    assert a == item_name(_part("x" * 95 + "A"), "{partNumber} Rev {revision}")


@pytest.mark.parametrize("template", ["{sku}", "{partNumber.__class__}", "{partNumber!r}", "{partNumber", ""])
def test_item_name_bad_templates(template: str) -> None:
    with pytest.raises(MappingError) as info:
        item_name(_part(), template)
    assert info.value.kind == "part"
    assert info.value.ion_id == "p1"


# ---- parts -------------------------------------------------------------------------------------


def test_part_to_item_errors_name_every_problem(refs: References) -> None:
    refs = replace(refs, asset_account_id="", cogs_account_id="90")
    part = _part("P" * 101, description="d" * 1001, cost=Decimal(-1))
    with pytest.raises(MappingProblems) as info:
        part_to_item(part, refs, start_date=date(2024, 1, 1))
    fields = [p[0] for p in info.value.problems]
    assert fields == [
        "partNumber",
        "QBO_INVENTORY_ASSET_ACCOUNT_ID",
        "QBO_COGS_ACCOUNT_ID",
        "description",
        "cost",
    ]
    assert "not Cost of Goods Sold" in info.value.message


def test_item_owned_fields_never_touch_quantity_or_accounts() -> None:
    forbidden = {
        "QtyOnHand",
        "InvStartDate",
        "Type",
        "TrackQtyOnHand",
        "AssetAccountRef",
        "IncomeAccountRef",
        "ExpenseAccountRef",
    }
    assert not forbidden & set(ITEM_OWNED_FIELDS)
    assert {"Name", "Sku", "PurchaseCost"} <= set(ITEM_OWNED_FIELDS)


def test_po_owned_fields() -> None:
    assert set(PO_OWNED_FIELDS) == {
        "DocNumber",
        "VendorRef",
        "APAccountRef",
        "CurrencyRef",
        "TxnDate",
        "ShipAddr",
        "Line",
        "POStatus",
        "GlobalTaxCalculation",  # non-US companies only; a US payload never carries it
    }


# ---- the amount rule ----------------------------------------------------------------------------

D = Decimal
AMOUNTS = [
    pytest.param("3", "0.3333", "1.00", ("1.00", "3", "0.3333"), id="thirds-kept"),
    pytest.param("7", "1.4285714", "10.00", ("10.00", "7", "1.4285714"), id="sevenths-kept"),
    pytest.param("3", "0.33", "1.00", ("1.00", "3", "0.333"), id="recomputed"),
    pytest.param("10", "5", "45", ("45.00", "10", "4.5"), id="discount"),
    pytest.param("1", "12.345", "12.345", ("12.35", "1", "12.35"), id="half-up"),
    pytest.param("2", "1.005", None, ("2.01", "2", "1.005"), id="no-total"),
    pytest.param("2", None, "3.00", ("3.00", "2", "1.5"), id="no-unit"),
    pytest.param("1.5", "2", "3", ("3.00", "1.5", "2"), id="fractional-qty"),
    pytest.param("3", "0", "0", ("0.00", "3", "0"), id="free"),
    pytest.param("6", "0.1666666667", "1.00", ("1.00", "6", "0.1666666667"), id="ten-decimals-kept"),
    pytest.param("6", "0.16666666666666", "1.00", ("1.00", "6", "0.167"), id="too-many-decimals"),
]


@pytest.mark.parametrize(("qty", "unit", "total", "expected"), AMOUNTS)
def test_line_amounts(qty: str, unit: str | None, total: str | None, expected: tuple[str, str, str]) -> None:
    amount, quantity, price = line_amounts(D(qty), D(unit) if unit else None, D(total) if total else None)
    assert (amount, quantity, price) == tuple(D(x) for x in expected)
    assert str(amount) == expected[0]  # two decimals, always
    assert _round_any(quantity * price) == {amount}


BAD_AMOUNTS = [
    pytest.param("0", "1", "0", "quantity is 0", id="zero-qty"),
    pytest.param("-1", "1", "-1", "quantity is -1", id="negative-qty"),
    pytest.param("1", "-2", None, "unit cost -2 is negative", id="negative-unit"),
    pytest.param("1", "2", "-2", "total cost -2 is negative", id="negative-total"),
    pytest.param("1", None, None, "neither a unit cost nor a total cost", id="no-cost"),
    pytest.param("1", "1", "10000000000", "beyond QBO's 10-digit limit", id="absurd-amount"),
    pytest.param("1000000000", None, "0.01", "no unit price", id="impossible"),
    pytest.param("1.0000000000000001", "1", "1", "more than 15 significant digits", id="qty-digits"),
]


@pytest.mark.parametrize(("qty", "unit", "total", "message"), BAD_AMOUNTS)
def test_line_amounts_rejects(qty: str, unit: str | None, total: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        line_amounts(D(qty), D(unit) if unit else None, D(total) if total else None)


def test_line_amounts_invariant_over_many_values() -> None:
    """round(Qty x UnitPrice, 2) == Amount == ION total to the cent, for a grid of awkward values."""
    quantities = [D("1"), D("3"), D("7"), D("12"), D("0.5"), D("2.75"), D("1000"), D("99999")]
    units = [D("0.01"), D("0.3333"), D("1.4285714"), D("19.99"), D("0.0001"), D("12345.6789")]
    for qty in quantities:
        for unit in units:
            for skew in (D("0"), D("0.01"), D("-0.01"), D("0.004")):
                total = (qty * unit).quantize(D("0.01")) + skew
                if total < 0:
                    continue
                amount, _, price = line_amounts(qty, unit, total)
                assert amount == total.quantize(D("0.01"))
                assert _round_any(qty * price) == {amount}, (qty, unit, total, price)
                assert -price.as_tuple().exponent <= 10  # type: ignore[operator]


# ---- purchase orders: unit checks beyond the golden files ----------------------------------------


def _po_node(**overrides: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": "1042",
        "status": "ORDERED",
        "createdAt": "2024-05-01T12:00:00Z",
        "currency": {"id": "1", "code": "USD"},
        "supplier": {"id": "s", "name": "Acme, Inc."},
        "fees": [],
        "purchaseOrderLines": [
            {
                "id": "77",
                "quantity": 1,
                "unitCost": 2,
                "totalCost": 2,
                "part": {"id": "p1", "partNumber": "X", "revision": "A"},
            }
        ],
    }
    node.update(overrides)
    return node


def test_po_without_created_at_sends_no_txn_date(refs: References) -> None:
    payload = po_to_payload(parse_purchase_order(_po_node(createdAt=None)), refs, {"p1": "101"})
    assert "TxnDate" not in payload
    assert payload["Line"][0]["ItemBasedExpenseLineDetail"]["ItemRef"] == {"value": "101"}


def test_po_payload_is_deterministic(refs: References) -> None:
    po = parse_purchase_order(_po_node())
    assert po_to_payload(po, refs, {"p1": "101"}) == po_to_payload(po, refs, {"p1": "101"})


def test_po_address_limits(refs: References) -> None:
    node = _po_node(shippingAddress={"street1": "s" * 501, "postalCode": "1" * 31})
    with pytest.raises(MappingProblems) as info:
        po_to_payload(parse_purchase_order(node), refs, {"p1": "101"})
    assert info.value.field == "shippingAddress.street1, shippingAddress.postalCode"
    assert "QBO allows 500" in info.value.message
    assert "QBO allows 30" in info.value.message


def test_po_line_description_limit(refs: References) -> None:
    lines = [
        {
            "id": "77",
            "quantity": 1,
            "unitCost": 2,
            "totalCost": 2,
            "description": "d" * 4001,
            "part": {"id": "p1", "partNumber": "X", "revision": "A"},
        }
    ]
    with pytest.raises(MappingError) as info:
        po_to_payload(parse_purchase_order(_po_node(purchaseOrderLines=lines)), refs, {"p1": "101"})
    assert info.value.field == "purchaseOrderLines[0].description"


def test_po_without_lines(refs: References) -> None:
    with pytest.raises(MappingError) as info:
        po_to_payload(parse_purchase_order(_po_node(purchaseOrderLines=[])), refs, {})
    assert info.value.message == "purchase order 1042: has no lines"


def test_po_ap_account_must_be_accounts_payable(refs: References) -> None:
    with pytest.raises(MappingError) as info:
        po_to_payload(parse_purchase_order(_po_node()), replace(refs, ap_account_id="90"), {"p1": "101"})
    assert info.value.field == "QBO_AP_ACCOUNT_ID"
    assert "not Accounts Payable" in info.value.message


def test_po_error_names_the_record_and_field(refs: References) -> None:
    node = _po_node(supplier={"id": "s", "name": "Nobody"})
    with pytest.raises(MappingError) as info:
        po_to_payload(parse_purchase_order(node), refs, {"p1": "101"})
    assert info.value.kind == "purchase_order"
    assert info.value.ion_id == "1042"
    assert info.value.field == "supplier"


def test_references_build_takes_ids_and_template_from_settings() -> None:
    from ionqbo.config import Settings

    settings = Settings(
        qbo_ap_account_id="33",
        qbo_fee_account_id="90",
        qbo_inventory_asset_account_id="81",
        qbo_income_account_id="79",
        qbo_cogs_account_id="80",
        item_name_template="{partNumber}",
    )
    refs = References.build(
        settings=settings,
        fee_account_id="92",
        preferences={
            "Preferences": {
                "CurrencyPrefs": {"MultiCurrencyEnabled": "true", "HomeCurrency": {"value": "usd"}}
            }
        },
    )
    assert (refs.ap_account_id, refs.fee_account_id, refs.asset_account_id) == ("33", "92", "81")
    assert (refs.income_account_id, refs.cogs_account_id, refs.item_name_template) == (
        "79",
        "80",
        "{partNumber}",
    )
    assert refs.multicurrency is True
    assert refs.home_currency == "USD"
    assert refs.class_tracking_per_line is False


# ---- tax codes (non-US companies) ------------------------------------------------------------


def test_tax_code_tables_parse_and_report_every_problem() -> None:
    parsed = parse_mappings('[tax_codes.expense_codes]\n"6100" = "GST"\n[tax_codes.fees]\n"Shipping" = 21\n'
                            '[tax_codes.parts]\n"820412-001" = "GST free"\n[tax_codes.suppliers]\n"Acme" = "10"\n')
    assert parsed.tax_lookup("expense_codes", " 6100 ") == "GST"
    assert parsed.tax_lookup("fees", "shipping") == "21"
    assert parsed.tax_lookup("parts", "820412-001") == "GST free"
    assert parsed.tax_lookup("suppliers", "ACME") == "10"
    # an empty [tax_codes] leaves repr (and so the sync's settings hash) as it was before tax codes existed
    assert "tax_codes" not in repr(parse_mappings('[fees]\n"Expedite" = "92"\n'))
    with pytest.raises(ConfigError) as caught:
        parse_mappings('[tax_codes.classes]\n"R&D" = "GST"\n[tax_codes.fees]\n"Shipping" = ""\n"x" = true\n')
    text = str(caught.value)
    assert "[tax_codes.classes]" in text and '"Shipping"' in text and '"x"' in text


def test_tax_codes_matter_only_outside_the_us() -> None:
    refs = golden_refs({"purchase_tax_code": "GST"})
    assert refs.country is None and not refs.global_tax
    assert golden_refs({"company_info": {"Country": "US"}}).global_tax is False
    assert golden_refs({"company_info": {"Country": "AU"}}).global_tax is True
    assert golden_refs({"company_info": {"Country": "GB"}, "tax_model": "us"}).global_tax is False
    assert golden_refs({"tax_model": "global"}).global_tax is True


def test_inclusive_amounts_keep_quantity_times_rate_and_ion_gross() -> None:
    from ionqbo.mapping import net_of_tax, tax_on

    for gross in ("1.00", "0.05", "33.33", "1020.00", "99999.99"):
        for rate in ("10", "20", "13", "14.975", "0"):
            net = net_of_tax(Decimal(gross), Decimal(rate))
            # QBO adds tax on the net: within a cent of ION's gross
            assert abs(net + tax_on(net, Decimal(rate)) - Decimal(gross)) <= Decimal("0.01")
