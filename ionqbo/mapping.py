"""Pure mapping: ION records + resolved QBO references -> QBO payloads, or a MappingError (R9).

Nothing here does I/O or reads a clock: every QBO object it needs (vendors, accounts, classes,
currencies, preferences) is read once by the caller and passed in as :class:`References`, and dates
come from the ION record or the caller. The same resolution functions serve ``sync`` and
``check-mappings``, so the two always agree on what is missing.

Payloads are plain JSON values (dicts, lists, str, int, float, bool): money and quantities are
computed as Decimal and emitted as int or float whose JSON text is exactly that Decimal (at most 15
significant digits, checked), so ``json.dumps`` works on any payload and nothing is rounded twice.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import string
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from ionqbo.config import DEFAULT_ITEM_NAME_TEMPLATE, TEMPLATE_FIELDS, Settings
from ionqbo.diff import update_body
from ionqbo.errors import ConfigError, MappingError
from ionqbo.ion.models import Address, Part, PurchaseOrder, PurchaseOrderFee, PurchaseOrderLine

# ---- QBO limits (docs/reference/qbo.md sections 3 and 4) ------------------------------------------------

DOC_NUMBER_MAX = 21  # PurchaseOrder.DocNumber
ITEM_NAME_MAX = 100  # Item.Name
SKU_MAX = 100  # Item.Sku
PURCHASE_DESC_MAX = 1000  # Item.PurchaseDesc (Item.Description allows 4000; we send the same text)
LINE_DESC_MAX = 4000  # Line.Description
ADDR_LINE_MAX = 500  # PhysicalAddress Line1..Line5 (combined <= 2000: three lines cannot exceed it)
ADDR_LIMITS = {"City": 255, "CountrySubDivisionCode": 255, "PostalCode": 30, "Country": 255}
ITEM_COST_MAX = Decimal("99999999999")  # Item.PurchaseCost "Maximum of 99999999999"
AMOUNT_INT_DIGITS = 10  # Line.Amount "Max 15 digits in 10.5 format"
UNIT_PRICE_MAX_DECIMALS = 10
JSON_DIGITS = 15  # significant digits a float carries exactly through JSON

CENT = Decimal("0.01")
HALF_CENT = Decimal("0.005")

# Account types a PO category line may post to. docs/reference/qbo.md section 3 says "where
# Account.AccountType=Expense"; QBO's UI also offers Other Expense and Cost of Goods Sold accounts
# on purchase forms, and ION's expense codes are commonly COGS accounts.
EXPENSE_ACCOUNT_TYPES = frozenset({"Expense", "Other Expense", "Cost of Goods Sold"})
AP_ACCOUNT_TYPE = "Accounts Payable"
ASSET_ACCOUNT_TYPE = "Other Current Asset"
INCOME_ACCOUNT_TYPES = frozenset({"Income"})
COGS_ACCOUNT_TYPE = "Cost of Goods Sold"

# What ionqbo keeps in step on an existing QBO object; everything else belongs to the accountant.
# POStatus is written only by close_payload (a PO canceled in ION); po_to_payload never sends it,
# so a PO QBO closed itself (fully billed) is not reopened.
PO_OWNED_FIELDS: tuple[str, ...] = (
    "DocNumber",
    "VendorRef",
    "APAccountRef",
    "CurrencyRef",
    "TxnDate",
    "ShipAddr",
    "Line",
    "POStatus",
    # Sent only to non-US companies (global tax model); a US payload never carries it, so diff leaves
    # a US PO's value as QBO has it.
    "GlobalTaxCalculation",
)
# Never QtyOnHand or InvStartDate (QBO reads a new InvStartDate as an inventory adjustment), never
# Type/TrackQtyOnHand (fixed once Inventory), never the accounts after creation (an accountant may
# have re-pointed them; changing them re-posts history).
ITEM_OWNED_FIELDS: tuple[str, ...] = ("Name", "Sku", "Description", "PurchaseDesc", "PurchaseCost")

MAPPINGS_SOURCE = "IONQBO_MAPPINGS"
# CompanyInfo.Country values that mean the US tax model. The XSD only says "Country name to which the
# company belongs for financial calculations"; Intuit's samples show "US".
US_COUNTRY_NAMES = frozenset({"US", "USA", "UNITED STATES", "UNITED STATES OF AMERICA"})
TAX_SETTING = "QBO_PURCHASE_TAX_CODE"
GLOBAL_TAX_CALCULATIONS = ("TaxExcluded", "TaxInclusive", "NotApplicable")
MAPPING_TABLES = ("suppliers", "expense_codes", "classes", "fees", "items")
# [tax_codes.<scope>] tables: ION name -> QBO TaxCode name or id (non-US companies). Most specific wins:
# a line's expense code, part number or fee name, then the PO's supplier, then QBO_PURCHASE_TAX_CODE.
TAX_TABLE = "tax_codes"
TAX_SCOPES = ("expense_codes", "parts", "fees", "suppliers")
_TAX_SCOPE_HELP = {
    "expense_codes": "ION expense code",
    "parts": "ION part number",
    "fees": "ION fee name",
    "suppliers": "ION supplier name",
}
_TABLE_HELP = {
    "suppliers": "a QBO vendor id",
    "expense_codes": "a QBO account id",
    "classes": "a QBO class id",
    "fees": "a QBO account id",
    "items": "a QBO item id",
}
_QBO_ID = re.compile(r"^[0-9]{1,30}$")
_CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")


def name_key(name: str) -> str:
    """How names are compared: surrounding whitespace dropped, case folded."""
    return name.strip().casefold()


# ---- explicit mappings -----------------------------------------------------------------------


@dataclass(frozen=True)
class ExplicitMappings:
    """Name -> QBO id tables from the IONQBO_MAPPINGS file; keys are stored as :func:`name_key`.

    ``supplier_currencies`` holds per-currency vendors (``[suppliers."Acme Corp"]`` with
    ``EUR = "77"``): a QBO vendor's currency is fixed, so one supplier buying in two currencies
    needs two vendors.
    """

    suppliers: dict[str, str] = field(default_factory=dict)
    expense_codes: dict[str, str] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)
    fees: dict[str, str] = field(default_factory=dict)
    supplier_currencies: dict[str, dict[str, str]] = field(default_factory=dict)
    items: dict[str, str] = field(default_factory=dict, repr=False)  # part number -> QBO item id (any revision)
    # part number -> revision -> QBO item id. Not in repr: the sync hashes repr() to tell when mappings
    # changed, and adds these only when there are any (no [items]: the hash is what it always was).
    item_revisions: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    # scope -> name_key -> QBO tax code name or id. Not in repr: the sync hashes repr() to tell when
    # mappings changed, and an empty table must leave that hash as it was before tax codes existed.
    tax_codes: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    def tax_lookup(self, scope: str, name: str) -> str | None:
        """The tax code (name or id) mapped for ``name`` under [tax_codes.<scope>], or None."""
        return self.tax_codes.get(scope, {}).get(name_key(name))

    def lookup(self, table: str, name: str) -> str | None:
        """The mapped QBO id for ``name`` in ``table`` (case-insensitive), or None."""
        values: dict[str, str] = getattr(self, table)
        return values.get(name_key(name))


def parse_mappings(text: str, *, source: str = MAPPINGS_SOURCE) -> ExplicitMappings:
    """Read the explicit-mappings TOML.

    Format::

        [suppliers]
        "Acme Corp" = "41"          # ION supplier name -> QBO vendor id
        [suppliers."Globex"]        # one vendor per currency (a QBO vendor's currency is fixed)
        USD = "56"
        EUR = "77"
        [expense_codes]
        "6100" = "80"               # ION expense code -> QBO account id
        [classes]
        "R&D" = "5000000000000007280"
        [fees]
        "Shipping" = "91"           # ION fee name -> QBO account id
        [items]
        "820412-001" = "57"         # ION part number -> the QBO item it is (every revision)
        [items."NAS1352-3"]         # one QBO item per revision
        A = "60"
        [tax_codes.expense_codes]   # non-US companies: the tax code of a line (QBO TaxCode name or id)
        "6100" = "GST"
        [tax_codes.parts]           # by ION part number
        "820412-001" = "GST free"
        [tax_codes.fees]            # by ION fee name
        "Shipping" = "GST"
        [tax_codes.suppliers]       # every line of the supplier's POs (less specific than the above)
        "Acme Corp" = "Input taxed"

    Ids may be written as strings or integers. Names are compared case-insensitively.

    Args:
        text: the file's content.
        source: how to name the file in errors.

    Raises:
        ConfigError: every problem at once, each naming the key.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML ({exc})"]) from None
    problems: list[str] = []
    tables: dict[str, dict[str, str]] = {t: {} for t in MAPPING_TABLES}
    per_currency: dict[str, dict[str, str]] = {}
    per_revision: dict[str, dict[str, str]] = {}
    seen: dict[tuple[str, str], str] = {}
    tax_codes: dict[str, dict[str, str]] = {}
    for table, content in data.items():
        if table == "ion_fields":
            continue  # ION field names for the live schema: read by ionqbo.ion.schema.read_overrides
        if table == TAX_TABLE:
            tax_codes = _parse_tax_tables(content, source, problems)
            continue
        if table not in MAPPING_TABLES:
            problems.append(
                f"{source}: unknown table [{table}] (expected one of: {', '.join((*MAPPING_TABLES, TAX_TABLE))})"
            )
            continue
        if not isinstance(content, dict):
            problems.append(f"{source}: {table} must be a table ([{table}])")
            continue
        for name, value in content.items():
            label = f'[{table}] "{name}"'
            key = name_key(name)
            if not key:
                problems.append(f"{source}: {label}: the name is empty")
                continue
            if (table, key) in seen:
                problems.append(
                    f'{source}: {label} repeats [{table}] "{seen[(table, key)]}" (names ignore case)'
                )
                continue
            seen[(table, key)] = name
            if table == "suppliers" and isinstance(value, dict):
                currencies: dict[str, str] = {}
                for code, sub in value.items():
                    sub_label = f'[suppliers."{name}"] {code}'
                    if not _CURRENCY_CODE.match(code.strip().upper()):
                        problems.append(f"{source}: {sub_label}: {code!r} is not an ISO 4217 currency code")
                        continue
                    vendor_id = _mapping_id(sub, sub_label, "a QBO vendor id", source, problems)
                    if vendor_id is not None:
                        currencies[code.strip().upper()] = vendor_id
                per_currency[key] = currencies
                continue
            if table == "items" and isinstance(value, dict):
                revisions: dict[str, str] = {}
                for revision, sub in value.items():
                    sub_label = f'[items."{name}"] "{revision}"'
                    item_id = _mapping_id(sub, sub_label, "a QBO item id", source, problems)
                    if item_id is not None:
                        revisions[name_key(revision)] = item_id
                per_revision[key] = revisions
                continue
            mapped = _mapping_id(value, label, _TABLE_HELP[table], source, problems)
            if mapped is not None:
                tables[table][key] = mapped
    if problems:
        raise ConfigError(problems, hint=f"correct the file named by {MAPPINGS_SOURCE}")
    return ExplicitMappings(
        suppliers=tables["suppliers"],
        expense_codes=tables["expense_codes"],
        classes=tables["classes"],
        fees=tables["fees"],
        supplier_currencies=per_currency,
        items=tables["items"],
        item_revisions=per_revision,
        tax_codes=tax_codes,
    )


def _parse_tax_tables(content: Any, source: str, problems: list[str]) -> dict[str, dict[str, str]]:
    """[tax_codes.<scope>] tables: name -> tax code name or id (a non-empty string or an integer id)."""
    out: dict[str, dict[str, str]] = {}
    if not isinstance(content, dict):
        problems.append(f"{source}: {TAX_TABLE} must be a table of tables ([{TAX_TABLE}.expense_codes] ...)")
        return out
    for scope, names in content.items():
        if scope not in TAX_SCOPES:
            problems.append(f"{source}: unknown table [{TAX_TABLE}.{scope}] (expected one of: "
                            f"{', '.join(f'{TAX_TABLE}.{s}' for s in TAX_SCOPES)})")
            continue
        if not isinstance(names, dict):
            problems.append(f"{source}: {TAX_TABLE}.{scope} must be a table ([{TAX_TABLE}.{scope}])")
            continue
        table: dict[str, str] = {}
        for name, value in names.items():
            label = f'[{TAX_TABLE}.{scope}] "{name}"'
            key = name_key(name)
            if not key:
                problems.append(f"{source}: {label}: the name is empty")
                continue
            if key in table:
                problems.append(f"{source}: {label} repeats another name in [{TAX_TABLE}.{scope}] (names ignore case)")
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{source}: {label} = {value!r} must be a QBO tax code name or id "
                                f'(e.g. "GST" or "10"), for the {_TAX_SCOPE_HELP[scope]} "{name}"')
                continue
            table[key] = value.strip()
        out[scope] = table
    return out


def _mapping_id(value: Any, label: str, what: str, source: str, problems: list[str]) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _QBO_ID.match(value.strip()):
        problems.append(
            f'{source}: {label} = {value!r} must be {what} (the digits in its QuickBooks URL, e.g. "41")'
        )
        return None
    return value.strip()


# ---- references ------------------------------------------------------------------------------

QboObject = dict[str, Any]


def _active(obj: Mapping[str, Any]) -> bool:
    return _truthy(obj.get("Active", True))


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _dig(data: Mapping[str, Any], *path: str) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


@dataclass(frozen=True)
class _Index:
    vendors_by_id: dict[str, QboObject]
    vendors_by_name: dict[str, list[QboObject]]
    accounts_by_id: dict[str, QboObject]
    accounts_by_number: dict[str, list[QboObject]]
    accounts_by_fqn: dict[str, list[QboObject]]
    accounts_by_name: dict[str, list[QboObject]]
    classes_by_id: dict[str, QboObject]
    classes_by_fqn: dict[str, list[QboObject]]
    classes_by_name: dict[str, list[QboObject]]
    currencies: frozenset[str]
    tax_codes_by_id: dict[str, QboObject]
    tax_codes_by_name: dict[str, list[QboObject]]
    tax_rates_by_id: dict[str, QboObject]


def _group(objs: Iterable[QboObject], key: str) -> dict[str, list[QboObject]]:
    out: dict[str, list[QboObject]] = {}
    for obj in objs:
        value = obj.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and name_key(str(value)):
            out.setdefault(name_key(str(value)), []).append(obj)
    return out


@dataclass(frozen=True)
class References:
    """The QBO objects and settings a mapping depends on, read once per run, with indexes.

    ``vendors``, ``accounts``, ``classes`` and ``company_currencies`` are QBO JSON objects as the
    API returns them (inactive ones may be included: they are never matched, but they let errors
    say "inactive"). ``preferences`` is the body of ``GET /preferences``.
    """

    vendors: tuple[QboObject, ...] = ()
    accounts: tuple[QboObject, ...] = ()
    classes: tuple[QboObject, ...] = ()
    company_currencies: tuple[QboObject, ...] = ()
    preferences: QboObject = field(default_factory=dict)
    ap_account_id: str = ""
    fee_account_id: str = ""
    asset_account_id: str = ""
    income_account_id: str = ""
    cogs_account_id: str = ""
    mappings: ExplicitMappings = field(default_factory=ExplicitMappings)
    item_name_template: str = DEFAULT_ITEM_NAME_TEMPLATE
    # The tax model (non-US companies): CompanyInfo, the TaxCode and TaxRate lists, and the settings.
    company_info: QboObject = field(default_factory=dict)
    tax_codes: tuple[QboObject, ...] = ()
    tax_rates: tuple[QboObject, ...] = ()
    purchase_tax_code: str = ""
    tax_amounts: str = "exclusive"
    tax_model: str = "auto"
    index: _Index = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        accounts = [a for a in self.accounts if _active(a)]
        classes = [c for c in self.classes if _active(c)]
        currencies = {
            str(c.get("Code", "")).strip().upper()
            for c in self.company_currencies
            if _active(c) and c.get("Code")
        }
        object.__setattr__(
            self,
            "index",
            _Index(
                vendors_by_id={str(v.get("Id")): v for v in self.vendors},
                vendors_by_name=_group(self.vendors, "DisplayName"),
                accounts_by_id={str(a.get("Id")): a for a in self.accounts},
                accounts_by_number=_group(accounts, "AcctNum"),
                accounts_by_fqn=_group(accounts, "FullyQualifiedName"),
                accounts_by_name=_group(accounts, "Name"),
                classes_by_id={str(c.get("Id")): c for c in self.classes},
                classes_by_fqn=_group(classes, "FullyQualifiedName"),
                classes_by_name=_group(classes, "Name"),
                currencies=frozenset(currencies),
                tax_codes_by_id={str(t.get("Id")): t for t in self.tax_codes},
                tax_codes_by_name=_group(self.tax_codes, "Name"),
                tax_rates_by_id={str(r.get("Id")): r for r in self.tax_rates},
            ),
        )

    @classmethod
    def build(
        cls,
        *,
        vendors: Iterable[Mapping[str, Any]] = (),
        accounts: Iterable[Mapping[str, Any]] = (),
        classes: Iterable[Mapping[str, Any]] = (),
        company_currencies: Iterable[Mapping[str, Any]] = (),
        preferences: Mapping[str, Any] | None = None,
        settings: Settings | None = None,
        mappings: ExplicitMappings | None = None,
        ap_account_id: str | None = None,
        fee_account_id: str | None = None,
        asset_account_id: str | None = None,
        income_account_id: str | None = None,
        cogs_account_id: str | None = None,
        item_name_template: str | None = None,
        company_info: Mapping[str, Any] | None = None,
        tax_codes: Iterable[Mapping[str, Any]] = (),
        tax_rates: Iterable[Mapping[str, Any]] = (),
        purchase_tax_code: str | None = None,
        tax_amounts: str | None = None,
        tax_model: str | None = None,
    ) -> References:
        """Build the references once per run; explicit ids win over ``settings``.

        Args:
            vendors: QBO Vendor objects.
            accounts: QBO Account objects (the whole chart of accounts).
            classes: QBO Class objects.
            company_currencies: QBO CompanyCurrency objects (multicurrency companies).
            preferences: the ``GET /preferences`` body (``{"Preferences": {...}}`` or its content).
            settings: where the account ids and item name template come from by default.
            mappings: the explicit mappings (``parse_mappings``).
            ap_account_id: QBO_AP_ACCOUNT_ID.
            fee_account_id: QBO_FEE_ACCOUNT_ID.
            asset_account_id: QBO_INVENTORY_ASSET_ACCOUNT_ID.
            income_account_id: QBO_INCOME_ACCOUNT_ID.
            cogs_account_id: QBO_COGS_ACCOUNT_ID.
            item_name_template: IONQBO_ITEM_NAME_TEMPLATE.
            company_info: the ``GET /companyinfo/{realm}`` body (``{"CompanyInfo": {...}}`` or its content).
            tax_codes: QBO TaxCode objects (non-US companies).
            tax_rates: QBO TaxRate objects (non-US companies).
            purchase_tax_code: QBO_PURCHASE_TAX_CODE.
            tax_amounts: IONQBO_TAX_AMOUNTS ("exclusive" or "inclusive").
            tax_model: IONQBO_TAX_MODEL ("auto", "us" or "global").

        Returns:
            Frozen References with their indexes.
        """
        prefs = dict(preferences or {})
        if isinstance(prefs.get("Preferences"), Mapping):
            prefs = dict(prefs["Preferences"])
        info = dict(company_info or {})
        if isinstance(info.get("CompanyInfo"), Mapping):
            info = dict(info["CompanyInfo"])

        def pick(given: str | None, attr: str) -> str:
            if given is not None:
                return given.strip()
            return str(getattr(settings, attr, "") or "").strip() if settings is not None else ""

        template = item_name_template
        if template is None:
            template = settings.item_name_template if settings is not None else DEFAULT_ITEM_NAME_TEMPLATE
        return cls(
            vendors=tuple(dict(v) for v in vendors),
            accounts=tuple(dict(a) for a in accounts),
            classes=tuple(dict(c) for c in classes),
            company_currencies=tuple(dict(c) for c in company_currencies),
            preferences=prefs,
            ap_account_id=pick(ap_account_id, "qbo_ap_account_id"),
            fee_account_id=pick(fee_account_id, "qbo_fee_account_id"),
            asset_account_id=pick(asset_account_id, "qbo_inventory_asset_account_id"),
            income_account_id=pick(income_account_id, "qbo_income_account_id"),
            cogs_account_id=pick(cogs_account_id, "qbo_cogs_account_id"),
            mappings=mappings or ExplicitMappings(),
            item_name_template=template,
            company_info=info,
            tax_codes=tuple(dict(t) for t in tax_codes),
            tax_rates=tuple(dict(r) for r in tax_rates),
            purchase_tax_code=pick(purchase_tax_code, "qbo_purchase_tax_code"),
            tax_amounts=str(tax_amounts or getattr(settings, "tax_amounts", None) or "exclusive").lower(),
            tax_model=str(tax_model or getattr(settings, "tax_model", None) or "auto").lower(),
        )

    # --- preferences ---------------------------------------------------------------------

    @property
    def home_currency(self) -> str | None:
        """``CurrencyPrefs.HomeCurrency.value``, upper-case, or None when QBO did not say."""
        value = _dig(self.preferences, "CurrencyPrefs", "HomeCurrency", "value")
        return str(value).strip().upper() if value else None

    @property
    def multicurrency(self) -> bool:
        """``CurrencyPrefs.MultiCurrencyEnabled``."""
        return _truthy(_dig(self.preferences, "CurrencyPrefs", "MultiCurrencyEnabled"))

    @property
    def class_tracking_per_line(self) -> bool:
        """``AccountingInfoPrefs.ClassTrackingPerTxnLine``."""
        return _truthy(_dig(self.preferences, "AccountingInfoPrefs", "ClassTrackingPerTxnLine"))

    @property
    def country(self) -> str | None:
        """``CompanyInfo.Country`` upper-case ("US", "AU", "GB", "CA"...), or None when not read."""
        value = self.company_info.get("Country")
        return str(value).strip().upper() if isinstance(value, str) and value.strip() else None

    @property
    def global_tax(self) -> bool:
        """The company uses QBO's global (non-US) tax model: a tax code on every purchase line.

        IONQBO_TAX_MODEL decides when it is "us" or "global"; with "auto" it is any company whose
        CompanyInfo.Country is known and is not US (Intuit: "Manage sales tax for non-US locales").
        A company whose country was not read is taken to be US, as ionqbo always did.
        """
        if self.tax_model == "global":
            return True
        if self.tax_model == "us":
            return False
        return self.country is not None and self.country not in US_COUNTRY_NAMES

    @property
    def tax_calculation(self) -> str:
        """The GlobalTaxCalculation sent to a non-US company: TaxExcluded or TaxInclusive."""
        return "TaxInclusive" if self.tax_amounts == "inclusive" else "TaxExcluded"

    def account(self, account_id: str) -> QboObject | None:
        """The active account with this Id, or None."""
        acct = self.index.accounts_by_id.get(str(account_id))
        return acct if acct is not None and _active(acct) else None


# ---- resolution (shared by sync and check-mappings) ---------------------------------------


@dataclass(frozen=True)
class Gap:
    """Why a name does not resolve to a usable QBO object, and what a person should do."""

    message: str
    hint: str


@dataclass(frozen=True)
class _Found:
    obj: QboObject | None
    gap: Gap | None


def _unique(matches: list[QboObject] | None) -> QboObject | None:
    return matches[0] if matches and len(matches) == 1 else None


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    near = suggest(name, candidates)
    if not near:
        return ""
    return "; did you mean " + " or ".join(f'"{n}"' for n in near) + "?"


def _find_vendor(refs: References, supplier_name: str, currency: str | None = None) -> _Found:
    mappings = refs.mappings
    key = name_key(supplier_name)
    per_currency = mappings.supplier_currencies.get(key)
    if per_currency is not None:
        cur = (currency or refs.home_currency or "").upper()
        vendor_id = per_currency.get(cur)
        table = f'[suppliers."{supplier_name}"]'
        if vendor_id is None:
            return _Found(
                None,
                Gap(
                    f'supplier "{supplier_name}" has no QBO vendor mapped for {cur or "the PO currency"}',
                    f'add {cur or "the currency"} = "<vendor id>" under {table} in {MAPPINGS_SOURCE}',
                ),
            )
        return _by_mapped_id(refs, supplier_name, vendor_id, f"{table} {cur}")
    vendor_id = mappings.lookup("suppliers", supplier_name)
    if vendor_id is not None:
        return _by_mapped_id(refs, supplier_name, vendor_id, "[suppliers]")
    matches = refs.index.vendors_by_name.get(key, [])
    active = [v for v in matches if _active(v)]
    if len(active) == 1:
        return _Found(active[0], None)
    if active:
        ids = ", ".join(str(v.get("Id")) for v in active)
        return _Found(
            None,
            Gap(
                f'supplier "{supplier_name}" matches several QBO vendors (ids {ids})',
                f"map it under [suppliers] in {MAPPINGS_SOURCE} to the vendor id you mean",
            ),
        )
    if matches:
        return _Found(
            None,
            Gap(
                f'supplier "{supplier_name}" matches QBO vendor {matches[0].get("Id")}, which is inactive',
                f"make the vendor active in QuickBooks, or map the supplier under [suppliers] in "
                f"{MAPPINGS_SOURCE}",
            ),
        )
    names = [str(v.get("DisplayName")) for v in refs.vendors if _active(v) and v.get("DisplayName")]
    return _Found(
        None,
        Gap(
            f'supplier "{supplier_name}" has no QBO vendor',
            f'add a vendor named "{supplier_name.strip()}" in QuickBooks (Expenses > Vendors), or '
            f"map it under "
            f"[suppliers] in {MAPPINGS_SOURCE}{_did_you_mean(supplier_name, names)}",
        ),
    )


def _by_mapped_id(refs: References, name: str, vendor_id: str, table: str) -> _Found:
    vendor = refs.index.vendors_by_id.get(vendor_id)
    if vendor is not None and _active(vendor):
        return _Found(vendor, None)
    state = "inactive" if vendor is not None else "not found"
    return _Found(
        None,
        Gap(
            f'supplier "{name}" is mapped to QBO vendor id {vendor_id} under {table}, which is {state}',
            f"correct the id under {table} in {MAPPINGS_SOURCE} (it is the number in the vendor's QuickBooks "
            "URL), or make the vendor active",
        ),
    )


def resolve_vendor(refs: References, supplier_name: str, currency: str | None = None) -> QboObject | None:
    """The QBO vendor for an ION supplier name, or None.

    An explicit ``[suppliers]`` mapping wins (a per-currency mapping picks the vendor for
    ``currency``, default the home currency); otherwise the one active vendor whose DisplayName
    equals the name, case-insensitively and whitespace-trimmed.
    """
    return _find_vendor(refs, supplier_name, currency).obj


def _find_account(refs: References, code: str, *, table: str, what: str) -> _Found:
    mapped = refs.mappings.lookup(table, code)
    if mapped is not None:
        acct = refs.account(mapped)
        if acct is not None:
            return _Found(acct, None)
        state = "inactive" if mapped in refs.index.accounts_by_id else "not found"
        return _Found(
            None,
            Gap(
                f'{what} "{code}" is mapped to QBO account id {mapped} under [{table}], which is {state}',
                f"correct the id under [{table}] in {MAPPINGS_SOURCE}, or make the account active",
            ),
        )
    key = name_key(code)
    for index in (refs.index.accounts_by_number, refs.index.accounts_by_fqn, refs.index.accounts_by_name):
        matches = index.get(key)
        if matches and len(matches) == 1:
            return _Found(matches[0], None)
        if matches:
            names = ", ".join(str(a.get("FullyQualifiedName") or a.get("Name")) for a in matches)
            return _Found(
                None,
                Gap(
                    f'{what} "{code}" matches several QBO accounts ({names})',
                    f"map it under [{table}] in {MAPPINGS_SOURCE} to the account id you mean",
                ),
            )
    candidates = [
        str(a[k])
        for a in refs.accounts
        if _active(a) and a.get("AccountType") in EXPENSE_ACCOUNT_TYPES
        for k in ("AcctNum", "Name")
        if a.get(k)
    ]
    return _Found(
        None,
        Gap(
            f'{what} "{code}" has no QBO account',
            f'add an account numbered or named "{code.strip()}" in QuickBooks (Settings > Chart of '
            f"accounts), "
            f"or map it under [{table}] in {MAPPINGS_SOURCE}{_did_you_mean(code, candidates)}",
        ),
    )


def resolve_expense_account(refs: References, code: str) -> QboObject | None:
    """The QBO account for an ION expense code, or None.

    An explicit ``[expense_codes]`` mapping wins; then the active account whose AcctNum equals the
    code, then whose FullyQualifiedName, then whose Name (case-insensitive). A name that matches
    several accounts resolves to none (map it explicitly). The account type is checked separately
    (:func:`expense_account_problem`).
    """
    return _find_account(refs, code, table="expense_codes", what="expense code").obj


def expense_account_problem(account: Mapping[str, Any]) -> str | None:
    """Why a PO category line cannot post to ``account``, or None when it can."""
    kind = account.get("AccountType")
    if kind in EXPENSE_ACCOUNT_TYPES:
        return None
    label = account.get("FullyQualifiedName") or account.get("Name") or account.get("Id")
    return f'QBO account "{label}" is of type {kind or "unknown"}, not {_or_list(EXPENSE_ACCOUNT_TYPES)}'


def _or_list(values: Iterable[str]) -> str:
    items = sorted(values)
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else "".join(items)


def _find_class(refs: References, name: str) -> _Found:
    mapped = refs.mappings.lookup("classes", name)
    if mapped is not None:
        cls = refs.index.classes_by_id.get(mapped)
        if cls is not None and _active(cls):
            return _Found(cls, None)
        state = "inactive" if cls is not None else "not found"
        return _Found(
            None,
            Gap(
                f'class "{name}" is mapped to QBO class id {mapped} under [classes], which is {state}',
                f"correct the id under [classes] in {MAPPINGS_SOURCE}, or make the class active",
            ),
        )
    key = name_key(name)
    for index in (refs.index.classes_by_fqn, refs.index.classes_by_name):
        matches = index.get(key)
        if matches and len(matches) == 1:
            return _Found(matches[0], None)
        if matches:
            names = ", ".join(str(c.get("FullyQualifiedName") or c.get("Name")) for c in matches)
            return _Found(
                None,
                Gap(
                    f'class "{name}" matches several QBO classes ({names})',
                    f"map it under [classes] in {MAPPINGS_SOURCE} to the class id you mean",
                ),
            )
    candidates = [str(c.get("FullyQualifiedName") or c.get("Name")) for c in refs.classes if _active(c)]
    return _Found(
        None,
        Gap(
            f'class "{name}" has no QBO class',
            f'add a class named "{name.strip()}" in QuickBooks (Settings > All lists > Classes), or '
            f"map it under "
            f"[classes] in {MAPPINGS_SOURCE}{_did_you_mean(name, candidates)}",
        ),
    )


def resolve_class(refs: References, name: str) -> QboObject | None:
    """The QBO class for an ION accounting class: explicit mapping, then FullyQualifiedName, then Name."""
    return _find_class(refs, name).obj


def _find_fee_account(refs: References, fee_name: str) -> _Found:
    if refs.mappings.lookup("fees", fee_name) is not None:
        return _find_account(refs, fee_name, table="fees", what="fee")
    if not refs.fee_account_id:
        return _Found(
            None,
            Gap(
                f'fee "{fee_name}" has no QBO account: QBO_FEE_ACCOUNT_ID is not set',
                f"set QBO_FEE_ACCOUNT_ID to an expense account id, or map the fee name under [fees] in "
                f"{MAPPINGS_SOURCE}",
            ),
        )
    acct = refs.account(refs.fee_account_id)
    if acct is None:
        return _Found(
            None,
            Gap(
                f"QBO_FEE_ACCOUNT_ID={refs.fee_account_id} is not an active QBO account",
                "set QBO_FEE_ACCOUNT_ID to the id of an active expense account (the number in its "
                "QuickBooks URL)",
            ),
        )
    return _Found(acct, None)


def resolve_fee_account(refs: References, fee_name: str) -> QboObject | None:
    """The QBO account for an ION fee: an explicit ``[fees]`` mapping, else QBO_FEE_ACCOUNT_ID."""
    return _find_fee_account(refs, fee_name).obj


def reference_gap(refs: References, kind: str, name: str, *, currency: str | None = None) -> Gap | None:
    """Why ``name`` cannot be used, for ``check-mappings`` (the same text a sync reports).

    Args:
        refs: the references.
        kind: "supplier", "expense_code", "class" or "fee".
        name: the ION name (supplier name, expense code, class, fee name).
        currency: for suppliers, the PO currency (per-currency mappings).

    Returns:
        None when the name resolves to a usable object, else a Gap with message and hint.
    """
    if kind == "supplier":
        return _find_vendor(refs, name, currency).gap
    if kind == "class":
        return _find_class(refs, name).gap
    found = (
        _find_account(refs, name, table="expense_codes", what="expense code")
        if kind == "expense_code"
        else _find_fee_account(refs, name)
    )
    if found.gap is not None or found.obj is None:
        return found.gap
    problem = expense_account_problem(found.obj)
    if problem is None:
        return None
    table = "expense_codes" if kind == "expense_code" else "fees"
    return Gap(
        f'{kind.replace("_", " ")} "{name}": {problem}',
        f"use an account of type {_or_list(EXPENSE_ACCOUNT_TYPES)}, or map it under [{table}] in "
        f"{MAPPINGS_SOURCE}",
    )


_STOP_WORDS = frozenset(
    {
        "inc",
        "incorporated",
        "llc",
        "ltd",
        "limited",
        "corp",
        "corporation",
        "co",
        "company",
        "plc",
        "gmbh",
        "the",
    }
)


def _normalise(name: str) -> str:
    text = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    words = re.sub(r"[^0-9a-z]+", " ", text).split()
    kept = [w for w in words if w not in _STOP_WORDS]
    return " ".join(kept or words)


def suggest(name: str, candidates: Iterable[str], *, limit: int = 3, cutoff: float = 0.75) -> list[str]:
    """Near matches for ``name`` among ``candidates``, best first.

    Names are compared on a normalised form without case, accents, punctuation and company-form
    words (inc, llc, ltd, corp, co...), so "ACME Inc" suggests "Acme, Inc.".
    """
    target = _normalise(name)
    scored: dict[str, float] = {}
    for candidate in candidates:
        if not candidate or candidate in scored:
            continue
        norm = _normalise(candidate)
        ratio = 1.0 if norm == target else difflib.SequenceMatcher(None, target, norm).ratio()
        if ratio >= cutoff:
            scored[candidate] = ratio
    return [c for c, _ in sorted(scored.items(), key=lambda p: (-p[1], p[0]))][:limit]


# ---- tax codes (non-US companies) ------------------------------------------------------------
#
# Intuit, "Manage sales tax for non-US locales": purchase transactions carry a TaxCode on each line;
# the code's PurchaseTaxRateList names the TaxRate(s) that apply, and QBO returns the tax it computed
# in TxnTaxDetail. TaxCode and TaxRate are read as lists (change data capture does not cover them).
# docs/reference/qbo-tax.md has the sources.


@dataclass(frozen=True)
class TaxChoice:
    """The tax code a purchase line gets, its purchase rate in percent, and where the choice came from."""

    code: QboObject
    rate: Decimal
    source: str

    @property
    def code_id(self) -> str:
        return str(self.code.get("Id"))

    @property
    def name(self) -> str:
        return str(self.code.get("Name") or self.code.get("Id"))


def _rate_details(code: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    details = _dig(code, "PurchaseTaxRateList", "TaxRateDetail")
    if isinstance(details, Mapping):
        details = [details]
    return [d for d in details or [] if isinstance(d, Mapping)]


def _rate_value(rate: Mapping[str, Any]) -> Decimal | None:
    value = rate.get("RateValue")
    if value is None:
        # EffectiveTaxRate is a list of dated rates; the last one is the one in force.
        effective = rate.get("EffectiveTaxRate")
        if isinstance(effective, list) and effective and isinstance(effective[-1], Mapping):
            value = effective[-1].get("RateValue")
    try:
        return Decimal(str(value)) if value is not None else None
    except ArithmeticError:
        return None


def purchase_rate(refs: References, code: Mapping[str, Any]) -> tuple[Decimal | None, str | None]:
    """The code's purchase rate in percent and None, or None and why it cannot be used on a purchase.

    The rates of PurchaseTaxRateList add up ("TaxOnAmount"); a rate applied to the amount plus the
    taxes before it ("TaxOnAmountPlusTax", older compound provincial taxes) compounds on them.
    """
    details = _rate_details(code)
    label = f'QBO tax code "{code.get("Name") or code.get("Id")}" ({code.get("Id")})'
    if not details:
        return None, f"{label} has no purchase tax rate (it is for sales only)"
    total = Decimal(0)
    ordered = sorted(details, key=lambda d: int(str(d.get("TaxOrder") or 0)) if str(d.get("TaxOrder") or 0).isdigit()
                     else 0)
    for detail in ordered:
        rate_id = str(_dig(detail, "TaxRateRef", "value") or "")
        rate = refs.index.tax_rates_by_id.get(rate_id)
        value = _rate_value(rate) if rate is not None else None
        if value is None:
            return None, f"{label} refers to QBO tax rate {rate_id or '(none)'}, which QBO did not list with a value"
        if detail.get("TaxTypeApplicable") == "TaxOnAmountPlusTax":
            total += value * (1 + total / 100)
        else:
            total += value
    return total, None


def _tax_gap_hint(refs: References) -> str:
    usable = [str(c.get("Name")) for c in refs.tax_codes
              if _active(c) and c.get("Name") and purchase_rate(refs, c)[1] is None]
    listed = ", ".join(f'"{n}"' for n in sorted(usable)[:12]) or "none: add one in QuickBooks (Taxes > Tax codes)"
    return f"purchase tax codes in this company: {listed}"


def _find_tax_code(refs: References, text: str, source: str) -> tuple[TaxChoice | None, Gap | None]:
    """A tax code by QBO Id, else by Name (case-insensitive), checked usable on a purchase."""
    wanted = text.strip()
    code = refs.index.tax_codes_by_id.get(wanted)
    if code is None:
        matches = refs.index.tax_codes_by_name.get(name_key(wanted), [])
        active = [c for c in matches if _active(c)]
        if len(active) > 1:
            ids = ", ".join(str(c.get("Id")) for c in active)
            return None, Gap(f'{source} names tax code "{wanted}", which matches several QBO tax codes (ids {ids})',
                             f"use the tax code's id under {source}")
        code = active[0] if active else (matches[0] if matches else None)
    if code is None:
        names = [str(c.get("Name")) for c in refs.tax_codes if _active(c) and c.get("Name")]
        return None, Gap(f'{source} names tax code "{wanted}", which QBO does not have'
                         f"{_did_you_mean(wanted, names)}",
                         f"correct {source} ({_tax_gap_hint(refs)})")
    if not _active(code):
        return None, Gap(f'{source} names QBO tax code "{code.get("Name")}" ({code.get("Id")}), which is inactive',
                         f"make the tax code active in QuickBooks, or change {source} ({_tax_gap_hint(refs)})")
    rate, why = purchase_rate(refs, code)
    if rate is None:
        return None, Gap(f"{source}: {why}",
                         f"choose a tax code with a purchase rate under {source} ({_tax_gap_hint(refs)})")
    return TaxChoice(code, rate, source), None


def tax_for(
    refs: References,
    *,
    supplier: str | None,
    expense_code: str | None = None,
    part_number: str | None = None,
    fee: str | None = None,
) -> tuple[TaxChoice | None, Gap | None]:
    """The tax code for one purchase line: the most specific mapping wins.

    Order: the line's fee name, expense code or part number under [tax_codes.fees|expense_codes|
    parts], then the PO's supplier under [tax_codes.suppliers], then QBO_PURCHASE_TAX_CODE. A line
    that resolves to nothing, or to an inactive code or one without a purchase rate, is a Gap.
    """
    m = refs.mappings
    candidates: list[tuple[str, str | None]] = []
    if fee is not None and fee.strip():
        candidates.append((f'[{TAX_TABLE}.fees] "{fee.strip()}"', m.tax_lookup("fees", fee)))
    if expense_code is not None and expense_code.strip():
        candidates.append((f'[{TAX_TABLE}.expense_codes] "{expense_code.strip()}"',
                           m.tax_lookup("expense_codes", expense_code)))
    if part_number is not None and part_number.strip():
        candidates.append((f'[{TAX_TABLE}.parts] "{part_number.strip()}"', m.tax_lookup("parts", part_number)))
    if supplier is not None and supplier.strip():
        candidates.append((f'[{TAX_TABLE}.suppliers] "{supplier.strip()}"', m.tax_lookup("suppliers", supplier)))
    candidates.append((TAX_SETTING, refs.purchase_tax_code or None))
    for source, value in candidates:
        if value:
            where = source if source == TAX_SETTING else f"{source} in {MAPPINGS_SOURCE}"
            return _find_tax_code(refs, value, where)
    what = (f'fee "{fee.strip()}"' if fee else f'expense code "{expense_code.strip()}"' if expense_code
            else f'part "{part_number.strip()}"' if part_number else "the line")
    table = "fees" if fee else "expense_codes" if expense_code else "parts"
    return None, Gap(
        f"{what} has no tax code, and QuickBooks needs one on every line in a company outside the US ({refs.country or '?'})",
        f"set {TAX_SETTING} to the purchase tax code most lines take, or map {what} under "
        f"[{TAX_TABLE}.{table}] in {MAPPINGS_SOURCE} ({_tax_gap_hint(refs)})",
    )


def net_of_tax(gross: Decimal, rate: Decimal) -> Decimal:
    """A tax-inclusive amount without its tax, rounded half-up to cents: gross / (1 + rate/100)."""
    with localcontext() as ctx:
        ctx.prec = 60
        return (gross / (1 + rate / 100)).quantize(CENT, rounding=ROUND_HALF_UP)


def tax_on(net: Decimal, rate: Decimal) -> Decimal:
    """The tax on a net amount, rounded half-up to cents (QBO computes tax per line for global companies)."""
    return (net * rate / 100).quantize(CENT, rounding=ROUND_HALF_UP)


def _apply_tax(line: QboObject, choice: TaxChoice, *, ion_inclusive: bool, calculation: str) -> str | None:
    """Put the tax code on a mapped line and turn ION's amount into what QBO takes; None, or why not.

    QBO's Line.Amount is the net amount (Intuit's TxnTaxDetail sums NetAmountTaxable from it and adds
    the tax). With tax-inclusive ION amounts the net is gross / (1 + rate), and the gross goes in
    ``TaxInclusiveAmt`` ("the total amount of line item including tax", XSD) when the PO is
    TaxInclusive, so QBO's total equals ION's to the cent. An item line's UnitPrice is recomputed
    from the net (quantity x rate still equals Amount).
    """
    detail_type = str(line["DetailType"])
    detail: QboObject = line[detail_type]
    figure = Decimal(str(line["Amount"]))
    net = net_of_tax(figure, choice.rate) if ion_inclusive else figure
    gross = figure if ion_inclusive else net + tax_on(net, choice.rate)
    detail["TaxCodeRef"] = {"value": choice.code_id}
    line["Amount"] = _json_number(net)
    if detail_type == "ItemBasedExpenseLineDetail" and net != figure:
        qty = Decimal(str(detail["Qty"]))
        try:
            _, _, price = line_amounts(qty, None, net)
        except ValueError as exc:
            return f"the amount net of {_plain(choice.rate)}% tax, {_plain(net)}: {exc}"
        detail["UnitPrice"] = _json_number(price)
    if calculation == "TaxInclusive":
        detail["TaxInclusiveAmt"] = _json_number(gross)
    return None


# ---- items -----------------------------------------------------------------------------------

_NAME_HASH_CHARS = 7


def _sanitize_name(text: str) -> str:
    text = text.replace(":", "-")
    text = "".join(" " if unicodedata.category(ch) in {"Cc", "Zl", "Zp"} else ch for ch in text)
    return " ".join(text.split())


def item_name(part: Part, template: str = DEFAULT_ITEM_NAME_TEMPLATE) -> str:
    """The QBO item name for an ION part.

    The rule, in order:

    1. Fill the template (``{partNumber} Rev {revision}`` by default; fields ``partNumber``,
       ``revision``, ``description``, ``id``; a format spec such as ``{description:.20}`` is
       allowed). A missing field (no revision, no description) is filled with nothing, and the
       clean-up below trims what is left, so a part without a revision is named
       ``"820412-001 Rev"``: still unique (ION allows one part per number and revision) and it
       shows an accountant that the revision is blank in ION.
    2. QBO refuses colons, tabs and new lines in item names: every ``:`` becomes ``-``; tabs, new
       lines and other control characters become spaces.
    3. Runs of whitespace become one space; leading and trailing whitespace is dropped.
    4. QBO names hold at most 100 characters. A longer name becomes its first 92 characters, ``~``,
       and the first 7 hex digits of the SHA-1 of the whole cleaned name (UTF-8): exactly 100
       characters, the same every run, and different for parts that share the first 92.

    Raises:
        MappingError: the template names an unknown field, or the name comes out empty.
    """
    values = {
        "partNumber": part.part_number or "",
        "revision": part.revision or "",
        "description": part.description or "",
        "id": part.id,
    }
    out: list[str] = []
    try:
        for literal, field_name, spec, conversion in string.Formatter().parse(template):
            out.append(literal)
            if field_name is None:
                continue
            if field_name not in TEMPLATE_FIELDS or conversion not in {None, "s"}:
                raise KeyError(field_name)
            out.append(format(values[field_name], spec or ""))
    except (KeyError, ValueError) as exc:
        raise MappingError(
            f"part {part.id}: the item name template {template!r} is not valid ({exc})",
            kind="part",
            ion_id=part.id,
            field="IONQBO_ITEM_NAME_TEMPLATE",
            hint=f"use only the fields {', '.join(sorted(TEMPLATE_FIELDS))} in IONQBO_ITEM_NAME_TEMPLATE",
        ) from None
    name = _sanitize_name("".join(out))
    if not name:
        raise MappingError(
            f"part {part.id}: the item name comes out empty",
            kind="part",
            ion_id=part.id,
            field="partNumber",
            hint="give the part a part number in ION, or change IONQBO_ITEM_NAME_TEMPLATE",
        )
    if len(name) > ITEM_NAME_MAX:
        digest = hashlib.sha1(name.encode("utf-8"), usedforsecurity=False).hexdigest()[:_NAME_HASH_CHARS]
        name = name[: ITEM_NAME_MAX - 1 - _NAME_HASH_CHARS] + "~" + digest
    return name


def _json_number(value: Decimal) -> int | float:
    """A Decimal as a JSON-native number whose text is exactly that value."""
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    if Decimal(repr(as_float)) != value:
        msg = f"{value} has more than {JSON_DIGITS} significant digits"
        raise ValueError(msg)
    return as_float


def _sig_digits(value: Decimal) -> int:
    return len(value.normalize().as_tuple().digits)


def _clean_text(value: str | None) -> str:
    return (value or "").replace("\r\n", "\n").strip()


def part_to_item(part: Part, refs: References, *, start_date: date) -> QboObject:
    """The QBO inventory Item payload for an ION part (for create; update via ITEM_OWNED_FIELDS).

    Name from :func:`item_name`; ``Sku`` = part number (at most 100 characters, never cut);
    ``Type`` Inventory, ``TrackQtyOnHand`` true, ``QtyOnHand`` 0 and ``InvStartDate`` = ``start_date``
    (the caller passes the part's createdAt date, so a PO never predates its item's start date); the
    asset, income and COGS accounts from the settings; ``PurchaseDesc`` and ``Description`` = the
    part description (at most 1000 characters, QBO's PurchaseDesc limit: longer is an error, never
    cut, the same rule as PO lines); ``PurchaseCost`` = the part cost when ION has one.

    Raises:
        MappingError: every problem with this part, in one error.
    """
    problems: list[_Problem] = []
    name = item_name(part, refs.item_name_template)
    sku = part.part_number.strip()
    if len(sku) > SKU_MAX:
        problems.append(
            _Problem(
                "partNumber",
                f"part number is {len(sku)} characters; a QBO SKU holds {SKU_MAX}",
                "shorten the part number in ION",
            )
        )
    accounts: dict[str, str] = {}
    for key, attr, setting, types in (
        ("AssetAccountRef", "asset_account_id", "QBO_INVENTORY_ASSET_ACCOUNT_ID", {ASSET_ACCOUNT_TYPE}),
        ("IncomeAccountRef", "income_account_id", "QBO_INCOME_ACCOUNT_ID", INCOME_ACCOUNT_TYPES),
        ("ExpenseAccountRef", "cogs_account_id", "QBO_COGS_ACCOUNT_ID", {COGS_ACCOUNT_TYPE}),
    ):
        account_id: str = getattr(refs, attr)
        problem = _settings_account_problem(refs, account_id, setting, types)
        if problem is not None:
            problems.append(problem)
        accounts[key] = account_id
    description = _clean_text(part.description)
    if len(description) > PURCHASE_DESC_MAX:
        problems.append(
            _Problem(
                "description",
                f"description is {len(description)} characters; a QBO item holds {PURCHASE_DESC_MAX}",
                f"shorten the part description in ION to at most {PURCHASE_DESC_MAX} characters",
            )
        )
    cost: int | float | None = None
    if part.cost is not None:
        if part.cost < 0 or part.cost > ITEM_COST_MAX:
            problems.append(
                _Problem(
                    "cost", f"cost {part.cost} is outside 0..{ITEM_COST_MAX}", "correct the part cost in ION"
                )
            )
        else:
            try:
                cost = _json_number(part.cost)
            except ValueError as exc:
                problems.append(_Problem("cost", f"cost {exc}", "correct the part cost in ION"))
    if problems:
        raise _error("part", part.id, f"part {part.id} ({part.part_number})", problems)
    item: QboObject = {
        "Name": name,
        "Sku": sku,
        "Type": "Inventory",
        "TrackQtyOnHand": True,
        "QtyOnHand": 0,
        "InvStartDate": start_date.isoformat(),
        "AssetAccountRef": {"value": accounts["AssetAccountRef"]},
        "IncomeAccountRef": {"value": accounts["IncomeAccountRef"]},
        "ExpenseAccountRef": {"value": accounts["ExpenseAccountRef"]},
    }
    if description:
        item["PurchaseDesc"] = description
        item["Description"] = description
    if cost is not None:
        item["PurchaseCost"] = cost
    return item


def _settings_account_problem(
    refs: References, account_id: str, setting: str, types: Iterable[str]
) -> _Problem | None:
    if not account_id:
        return _Problem(setting, f"{setting} is not set", f"set {setting} to a QBO account id")
    acct = refs.account(account_id)
    if acct is None:
        return _Problem(
            setting,
            f"{setting}={account_id} is not an active QBO account",
            f"set {setting} to the id of an active account (the number in its QuickBooks URL)",
        )
    allowed = set(types)
    if acct.get("AccountType") not in allowed:
        return _Problem(
            setting,
            f'{setting}={account_id} is QBO account "{acct.get("Name")}" of type {acct.get("AccountType")}, '
            f"not {_or_list(allowed)}",
            f"set {setting} to an account of type {_or_list(allowed)}",
        )
    return None


# ---- purchase orders ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    field: str
    message: str
    hint: str


class MappingProblems(MappingError):
    """One record has several mapping problems; ``problems`` lists (field, message, hint) for each."""

    def __init__(self, message: str, *, problems: list[tuple[str, str, str]], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.problems = problems


def _error(kind: str, ion_id: str, label: str, problems: list[_Problem]) -> MappingError:
    if len(problems) == 1:
        p = problems[0]
        return MappingError(f"{label}: {p.message}", kind=kind, ion_id=ion_id, field=p.field, hint=p.hint)
    message = f"{label}: {len(problems)} problems:" + "".join(f"\n  - {p.message}" for p in problems)
    fields = ", ".join(dict.fromkeys(p.field for p in problems))
    hint = "\n  fix: ".join(dict.fromkeys(p.hint for p in problems))
    return MappingProblems(
        message,
        problems=[(p.field, p.message, p.hint) for p in problems],
        kind=kind,
        ion_id=ion_id,
        field=fields,
        hint=hint,
    )


def line_amounts(
    quantity: Decimal, unit_cost: Decimal | None, total_cost: Decimal | None
) -> tuple[Decimal, Decimal, Decimal]:
    """THE AMOUNT RULE for an item line: ``(Amount, Qty, UnitPrice)`` that QBO accepts.

    QBO rejects an item line whose Amount is not round(Qty x UnitPrice, 2) (error 6070), while ION
    stores a line's unit cost and total cost separately. So:

    * Amount = ION's total cost rounded half-up to cents (no total: quantity x unit cost, rounded
      the same way). ION's total always wins, so the QBO PO total equals ION's to the cent.
    * Qty = ION's quantity, unchanged.
    * UnitPrice = ION's unit cost when round(Qty x unit cost, 2) == Amount (and it has at most 10
      decimals); otherwise Amount / Qty rounded half-up to the fewest decimals (0 to 10) for which
      round(Qty x UnitPrice, 2) == Amount. "Rounds to Amount" means strictly within half a cent,
      never on a tie, so it holds whichever rounding mode QBO uses (not documented). Examples:
      3 x 0.3333 with total 1.00 keeps 0.3333; 3 x 0.33 with total 1.00 sends 0.333; 10 x 5.00
      with total 45.00 (a discount) sends 4.5; 1 x 12.345 with total 12.345 sends Amount and
      UnitPrice 12.35.
    * Quantity 0 or less, a negative cost, an Amount beyond QBO's 10 integer digits, or no
      UnitPrice that works is an error: the PO waits for a fix rather than reach QBO inconsistent.
      A cost of 0 is allowed (free samples and no-charge replacements are real purchase lines).

    Raises:
        ValueError: the reason, for the caller to turn into a MappingError naming the line.
    """
    with localcontext() as ctx:
        ctx.prec = 60
        if quantity <= 0:
            msg = f"quantity is {_plain(quantity)}; it must be more than 0"
            raise ValueError(msg)
        if unit_cost is not None and unit_cost < 0:
            msg = f"unit cost {_plain(unit_cost)} is negative"
            raise ValueError(msg)
        if total_cost is not None and total_cost < 0:
            msg = f"total cost {_plain(total_cost)} is negative"
            raise ValueError(msg)
        if total_cost is None and unit_cost is None:
            msg = "has neither a unit cost nor a total cost"
            raise ValueError(msg)
        raw = total_cost if total_cost is not None else quantity * (unit_cost or Decimal(0))
        amount = raw.quantize(CENT, rounding=ROUND_HALF_UP)
        _check_magnitude("amount", amount)
        _check_magnitude("quantity", quantity)
        if _sig_digits(quantity) > JSON_DIGITS:
            msg = f"quantity {_plain(quantity)} has more than {JSON_DIGITS} significant digits"
            raise ValueError(msg)
        if unit_cost is not None and _fits(unit_cost) and _rounds_to(quantity * unit_cost, amount):
            return amount, quantity, unit_cost
        exact = amount / quantity
        for decimals in range(UNIT_PRICE_MAX_DECIMALS + 1):
            price = exact.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
            if _fits(price) and _rounds_to(quantity * price, amount):
                return amount, quantity, price
    msg = (
        f"no unit price with at most {UNIT_PRICE_MAX_DECIMALS} decimals gives the total "
        f"{_plain(amount)} for quantity {_plain(quantity)}"
    )
    raise ValueError(msg)


def _rounds_to(value: Decimal, amount: Decimal) -> bool:
    """round(value, 2) == amount, strictly inside the half-cent: true under any rounding mode."""
    return abs(value - amount) < HALF_CENT


def _fits(value: Decimal) -> bool:
    exponent = int(value.normalize().as_tuple().exponent)
    return -exponent <= UNIT_PRICE_MAX_DECIMALS and _sig_digits(value) <= JSON_DIGITS


def _check_magnitude(what: str, value: Decimal) -> None:
    if abs(value) >= Decimal(10) ** AMOUNT_INT_DIGITS:
        msg = f"{what} {_plain(value)} is beyond QBO's {AMOUNT_INT_DIGITS}-digit limit"
        raise ValueError(msg)


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


def _ship_addr(address: Address | None, problems: list[_Problem]) -> dict[str, str]:
    """QBO PhysicalAddress from ION's: name, street1, street2 fill Line1.. in order, skipping blanks."""
    if address is None:
        return {}
    out: dict[str, str] = {}
    lines = [("name", address.name), ("street1", address.street1), ("street2", address.street2)]
    number = 0
    for ion_field, value in lines:
        text = _clean_text(value)
        if not text:
            continue
        number += 1
        if len(text) > ADDR_LINE_MAX:
            problems.append(
                _Problem(
                    f"shippingAddress.{ion_field}",
                    f"shipping address {ion_field} is {len(text)} characters; QBO allows {ADDR_LINE_MAX}",
                    f"shorten the shipping address {ion_field} in ION",
                )
            )
        out[f"Line{number}"] = text
    for ion_field, qbo_field, value in (
        ("city", "City", address.city),
        ("state", "CountrySubDivisionCode", address.state),
        ("postalCode", "PostalCode", address.postal_code),
        ("country", "Country", address.country),
    ):
        text = _clean_text(value)
        if not text:
            continue
        limit = ADDR_LIMITS[qbo_field]
        if len(text) > limit:
            problems.append(
                _Problem(
                    f"shippingAddress.{ion_field}",
                    f"shipping address {ion_field} is {len(text)} characters; QBO allows {limit}",
                    f"shorten the shipping address {ion_field} in ION",
                )
            )
        out[qbo_field] = text
    return out


def _currency(
    po: PurchaseOrder, refs: References, vendor: QboObject | None, problems: list[_Problem]
) -> str | None:
    """The CurrencyRef value to send (multicurrency on), or None. Appends problems."""
    home = refs.home_currency
    # A PO without a currency is taken to be in the home currency: ION amounts are then in the
    # company's own money, and the vendor check below still catches a foreign-currency vendor.
    code = po.currency.code.strip().upper() if po.currency and po.currency.code.strip() else home
    if not refs.multicurrency:
        if code is not None and home is None:
            problems.append(
                _Problem(
                    "currency",
                    f"currency {code} cannot be checked: QBO preferences carry no home currency",
                    "check the QuickBooks company settings (Settings > Account and settings > "
                    "Advanced > Currency)",
                )
            )
        elif code is not None and code != home:
            problems.append(
                _Problem(
                    "currency",
                    f"currency {code} is not the QBO home currency ({home}) and multicurrency is off",
                    f"turn on multicurrency in QuickBooks (Settings > Account and settings > "
                    f"Advanced > Currency; "
                    f"it cannot be turned off again), or change the purchase order's currency in "
                    f"ION to {home}",
                )
            )
        return None
    if code is None:
        problems.append(
            _Problem(
                "currency",
                "has no currency and QBO preferences carry no home currency",
                "set the purchase order's currency in ION",
            )
        )
        return None
    if code != home and code not in refs.index.currencies:
        problems.append(
            _Problem(
                "currency",
                f"currency {code} is not an active currency in QuickBooks",
                f"add {code} in QuickBooks (Settings > Currencies), or change the purchase order's "
                f"currency in ION",
            )
        )
        return None
    if vendor is not None:
        vendor_currency = str(_dig(vendor, "CurrencyRef", "value") or home or "").upper()
        if vendor_currency and vendor_currency != code:
            supplier = po.supplier.name if po.supplier else ""
            problems.append(
                _Problem(
                    "currency",
                    f'currency {code} differs from QBO vendor "{vendor.get("DisplayName")}" '
                    f"({vendor.get('Id')}), "
                    f"whose currency is {vendor_currency}",
                    f"a QuickBooks vendor's currency cannot change: add a second vendor for this supplier in "
                    f'{code} and map it under [suppliers."{supplier}"] as {code} = "<vendor id>" in '
                    f"{MAPPINGS_SOURCE}, or change the purchase order's currency in ION",
                )
            )
    return code


def _line_label(index: int, line_id: str) -> str:
    return f"line {index + 1} (ION line {line_id})"


def _map_line(
    index: int,
    line: PurchaseOrderLine,
    refs: References,
    item_ids: Mapping[str, str],
    problems: list[_Problem],
) -> QboObject | None:
    label = _line_label(index, line.id)
    base = f"purchaseOrderLines[{index}]"
    before = len(problems)
    description = _clean_text(line.description)
    if len(description) > LINE_DESC_MAX:
        problems.append(
            _Problem(
                f"{base}.description",
                f"{label}: description is {len(description)} characters; QBO allows {LINE_DESC_MAX}",
                f"shorten the line description in ION to at most {LINE_DESC_MAX} characters",
            )
        )
    try:
        amount, qty, unit_price = line_amounts(line.quantity, line.unit_cost, line.total_cost)
    except ValueError as exc:
        problems.append(
            _Problem(
                f"{base}.quantity" if "quantity" in str(exc) else f"{base}.totalCost",
                f"{label}: {exc}",
                "correct the line's quantity and costs in ION",
            )
        )
        amount = qty = unit_price = Decimal(0)
    class_ref: dict[str, str] | None = None
    if line.accounting_class and line.accounting_class.strip() and refs.class_tracking_per_line:
        found = _find_class(refs, line.accounting_class)
        if found.gap is not None:
            problems.append(
                _Problem(f"{base}.accountingClass", f"{label}: {found.gap.message}", found.gap.hint)
            )
        elif found.obj is not None:
            class_ref = {"value": str(found.obj.get("Id"))}
    detail: QboObject
    code = (line.expense_code or "").strip()
    if code:
        found = _find_account(refs, code, table="expense_codes", what="expense code")
        account_id = ""
        if found.gap is not None:
            problems.append(_Problem(f"{base}.expenseCode", f"{label}: {found.gap.message}", found.gap.hint))
        elif found.obj is not None:
            wrong = expense_account_problem(found.obj)
            if wrong is not None:
                problems.append(
                    _Problem(
                        f"{base}.expenseCode",
                        f'{label}: expense code "{code}": {wrong}',
                        f"use an account of type {_or_list(EXPENSE_ACCOUNT_TYPES)}, or map the code under "
                        f"[expense_codes] in {MAPPINGS_SOURCE}",
                    )
                )
            account_id = str(found.obj.get("Id"))
        detail = {"AccountRef": {"value": account_id}}
        detail_type = "AccountBasedExpenseLineDetail"
    elif line.part is not None:
        item_id = item_ids.get(line.part.id)
        if not item_id:
            problems.append(
                _Problem(
                    f"{base}.part",
                    f'{label}: part {line.part.id} ("{line.part.part_number}") has no QBO item yet',
                    "sync the part first (the item is created before the purchase order)",
                )
            )
        detail = {"ItemRef": {"value": item_id or ""}, "Qty": 0, "UnitPrice": 0}
        detail_type = "ItemBasedExpenseLineDetail"
    else:
        problems.append(
            _Problem(
                f"{base}.part",
                f"{label} has neither a part nor an expense code",
                "set a part (for an item line) or an expense code (for a category line) on the line in ION",
            )
        )
        return None
    if len(problems) > before:
        return None
    if detail_type == "ItemBasedExpenseLineDetail":
        detail["Qty"] = _json_number(qty)
        detail["UnitPrice"] = _json_number(unit_price)
    if class_ref is not None:
        detail["ClassRef"] = class_ref
    out: QboObject = {"DetailType": detail_type, "Amount": _json_number(amount)}
    if description:
        out["Description"] = description
    out[detail_type] = detail
    return out


def _map_fee(
    index: int, fee: PurchaseOrderFee, refs: References, problems: list[_Problem]
) -> QboObject | None:
    base = f"fees[{index}]"
    name = fee.name.strip()
    label = f'fee "{name}"' if name else f"fee {index + 1} (ION fee {fee.id})"
    before = len(problems)
    if not name:
        problems.append(_Problem(f"{base}.name", f"{label} has no name", "name the fee in ION"))
    if fee.value < 0:
        problems.append(
            _Problem(
                f"{base}.value",
                f"{label} has a negative value ({_plain(fee.value)})",
                "QBO purchase order lines cannot be negative: remove the fee in ION and record the credit in "
                "QuickBooks (e.g. a vendor credit)",
            )
        )
    amount = fee.value.quantize(CENT, rounding=ROUND_HALF_UP)
    if abs(amount) >= Decimal(10) ** AMOUNT_INT_DIGITS:
        problems.append(
            _Problem(
                f"{base}.value",
                f"{label}: value {_plain(amount)} is beyond QBO's limit",
                "correct the fee value in ION",
            )
        )
    account_id = ""
    if name:
        found = _find_fee_account(refs, name)
        if found.gap is not None:
            problems.append(_Problem(f"{base}.name", found.gap.message, found.gap.hint))
        elif found.obj is not None:
            wrong = expense_account_problem(found.obj)
            if wrong is not None:
                problems.append(
                    _Problem(
                        f"{base}.name",
                        f"{label}: {wrong}",
                        f"map the fee under [fees] in {MAPPINGS_SOURCE}, or set QBO_FEE_ACCOUNT_ID, "
                        f"to an account "
                        f"of type {_or_list(EXPENSE_ACCOUNT_TYPES)}",
                    )
                )
            account_id = str(found.obj.get("Id"))
    if len(problems) > before:
        return None
    return {
        "DetailType": "AccountBasedExpenseLineDetail",
        "Amount": _json_number(amount),
        "Description": name,
        "AccountBasedExpenseLineDetail": {"AccountRef": {"value": account_id}},
    }


def _tax_line(
    mapped: QboObject,
    refs: References,
    po: PurchaseOrder,
    *,
    field_name: str,
    label: str,
    calculation: str,
    problems: list[_Problem],
    expense_code: str | None = None,
    part_number: str | None = None,
    fee: str | None = None,
) -> None:
    supplier = po.supplier.name if po.supplier else None
    choice, gap = tax_for(refs, supplier=supplier, expense_code=expense_code, part_number=part_number, fee=fee)
    if gap is not None or choice is None:
        assert gap is not None
        problems.append(_Problem(field_name, f"{label}: {gap.message}", gap.hint))
        return
    why = _apply_tax(mapped, choice, ion_inclusive=refs.tax_amounts == "inclusive", calculation=calculation)
    if why is not None:
        problems.append(_Problem(field_name, f"{label}: {why}", "correct the line's quantity and costs in ION"))


def po_to_payload(
    po: PurchaseOrder, refs: References, item_ids: Mapping[str, str], *, tax_calculation: str | None = None
) -> QboObject:
    """The QBO PurchaseOrder payload for an ION purchase order.

    ``DocNumber`` = the ION PO id (over 21 characters is an error, never cut: cut numbers could
    collide); ``VendorRef`` (:func:`resolve_vendor`); ``APAccountRef`` = QBO_AP_ACCOUNT_ID;
    ``CurrencyRef`` only with multicurrency on (the home currency or an active company currency, and
    the vendor's own currency); with multicurrency off the PO must be in the home currency. A PO
    without a currency counts as home currency. ``TxnDate`` = the PO's createdAt date in UTC (omitted
    when ION has none; QBO then dates it, and later updates keep that date). ``ShipAddr``: the
    address name, street1 and street2 fill Line1, Line2, Line3 in order (blank ones skipped), then
    City, CountrySubDivisionCode (state), PostalCode, Country, within QBO's lengths.

    Lines keep ION's order and are numbered (``LineNum``), fees after them. A line with an expense
    code is a category line (``AccountBasedExpenseLineDetail`` on an Expense, Other Expense or Cost
    of Goods Sold account) that carries the Amount only; ION's description is kept as it is.
    Otherwise its part makes an item line (``ItemBasedExpenseLineDetail`` with ``item_ids[part.id]``,
    Qty and UnitPrice per :func:`line_amounts`). A line with neither is an error. A line's class is
    sent as the detail's ``ClassRef`` and needs class tracking per line. Each fee is a category line
    on its account, described by the fee name.

    A non-US company (:attr:`References.global_tax`) also gets ``GlobalTaxCalculation`` (TaxExcluded,
    or TaxInclusive with IONQBO_TAX_AMOUNTS=inclusive) and a ``TaxCodeRef`` on every line
    (:func:`tax_for`); Amount is the net of tax and, when TaxInclusive, ``TaxInclusiveAmt`` the gross
    (:func:`_apply_tax`). A US company's payload carries neither, exactly as before.

    Args:
        po: the ION purchase order.
        refs: resolved QBO references.
        item_ids: ION part id -> QBO Item Id (the caller creates missing items first).
        tax_calculation: non-US only: keep this GlobalTaxCalculation instead of the setting's (the
            sync passes the QBO PO's own when a bill is linked to it: QBO's tax on it stays as it was).

    Raises:
        MappingError: every problem of this PO in one error (``MappingProblems`` when several).
    """
    problems: list[_Problem] = []
    if len(po.id) > DOC_NUMBER_MAX:
        problems.append(
            _Problem(
                "id",
                f"id is {len(po.id)} characters; a QBO DocNumber holds {DOC_NUMBER_MAX}",
                "ionqbo never cuts PO numbers (cut numbers could collide with other POs); enter "
                "this purchase "
                "order in QuickBooks by hand",
            )
        )
    vendor: QboObject | None = None
    currency_code = po.currency.code.strip().upper() if po.currency and po.currency.code.strip() else None
    if po.supplier is None or not po.supplier.name.strip():
        problems.append(_Problem("supplier", "has no supplier", "set the purchase order's supplier in ION"))
    else:
        found = _find_vendor(refs, po.supplier.name, currency_code)
        if found.gap is not None:
            problems.append(_Problem("supplier", found.gap.message, found.gap.hint))
        vendor = found.obj
    ap_problem = _settings_account_problem(refs, refs.ap_account_id, "QBO_AP_ACCOUNT_ID", {AP_ACCOUNT_TYPE})
    if ap_problem is not None:
        problems.append(ap_problem)
    currency = _currency(po, refs, vendor, problems)
    ship = _ship_addr(po.shipping_address, problems)
    classed = [
        i for i, line in enumerate(po.lines) if line.accounting_class and line.accounting_class.strip()
    ]
    if classed and not refs.class_tracking_per_line:
        numbers = ", ".join(str(i + 1) for i in classed)
        problems.append(
            _Problem(
                f"purchaseOrderLines[{classed[0]}].accountingClass",
                f"line{'s' if len(classed) > 1 else ''} {numbers} "
                f"carr{'y' if len(classed) > 1 else 'ies'} a class "
                "but class tracking per line is off in QuickBooks",
                'turn on "Track classes" with "One to each row in transaction" in QuickBooks '
                "(Settings > Account "
                "and settings > Advanced > Categories), or clear the classes in ION",
            )
        )
    if not po.lines and not po.fees:
        problems.append(
            _Problem("purchaseOrderLines", "has no lines", "add a line to the purchase order in ION")
        )
    lines: list[QboObject] = []
    calculation = tax_calculation if tax_calculation in GLOBAL_TAX_CALCULATIONS else refs.tax_calculation
    for i, line in enumerate(po.lines):
        mapped = _map_line(i, line, refs, item_ids, problems)
        if mapped is not None:
            if refs.global_tax:
                code = (line.expense_code or "").strip()
                _tax_line(mapped, refs, po, field_name=f"purchaseOrderLines[{i}].taxCode",
                          label=_line_label(i, line.id), calculation=calculation, problems=problems,
                          expense_code=code or None,
                          part_number=line.part.part_number if line.part is not None and not code else None)
            lines.append(mapped)
    for i, fee in enumerate(po.fees):
        mapped = _map_fee(i, fee, refs, problems)
        if mapped is not None:
            if refs.global_tax:
                _tax_line(mapped, refs, po, field_name=f"fees[{i}].taxCode", label=f"fee {i + 1}",
                          calculation=calculation, problems=problems, fee=fee.name)
            lines.append(mapped)
    if problems:
        raise _error("purchase_order", po.id, f"purchase order {po.id}", problems)
    payload: QboObject = {"DocNumber": po.id}
    if po.created_at is not None:
        payload["TxnDate"] = po.created_at.astimezone(UTC).date().isoformat()
    assert vendor is not None
    payload["VendorRef"] = {"value": str(vendor.get("Id"))}
    payload["APAccountRef"] = {"value": refs.ap_account_id}
    if currency is not None:
        payload["CurrencyRef"] = {"value": currency}
    if refs.global_tax:
        payload["GlobalTaxCalculation"] = calculation
    if ship:
        payload["ShipAddr"] = ship
    payload["Line"] = [{**line, "LineNum": n} for n, line in enumerate(lines, start=1)]
    return payload


def close_payload(existing: Mapping[str, Any]) -> QboObject:
    """The full-update body that closes a QBO PO whose ION PO was canceled (never deleted).

    It is the PO as read (Id, SyncToken, lines with their Ids and links, the accountant's fields)
    without read-only fields, with ``POStatus`` "Closed". Callers skip POs already closed
    (``existing["POStatus"] == "Closed"``), or use ``diff({"POStatus": "Closed"}, existing,
    ["POStatus"])`` to get the same body with an unchanged/update verdict.
    """
    return update_body(existing, {"POStatus": "Closed"})
