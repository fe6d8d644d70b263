"""ION's live schema decides what ionqbo asks for.

ION's GraphQL schema is not published. Public First Resonance code (ion-examples, ion-importers; see
``docs/reference/ion.md``) shows a handful of names; everything else ionqbo reads is an inference. So
ionqbo keeps three things apart (the same split meltano's and dlt's stream declarations make):

- **What it needs** (:data:`NEEDS`): one row per thing ionqbo reads (a line's quantity, a fee's amount,
  the ship-to postal code...), each with ordered candidate field paths, the shapes it accepts (a scalar,
  or an object whose ``code`` / ``name`` / ``id`` holds the value), whether it is required, and the
  evidence for the first candidate.
- **Where this ION keeps it** (:func:`resolve`): the needs against the introspected schema, plus the
  user's overrides (``[ion_fields]`` in the IONQBO_MAPPINGS file). Pure: tested with small SDL strings.
- **What goes on the wire** (:mod:`ionqbo.ion.queries`): documents built from the resolution and
  validated against the same schema before they leave, so ION cannot refuse them for a name.

Answers are translated back into the *canonical* node shape (the names of the bundled reference schema)
by :meth:`Plan.canonical`, so :mod:`ionqbo.ion.models`, mapping and diff never learn that ION spelled
something differently.

The introspection answer is cached in the state directory under its SHA-256 (:class:`SchemaCache`);
it is read again at least daily, and when ION rejects a query built from the cached copy.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    build_schema,
    is_leaf_type,
    print_schema,
)

from ionqbo.errors import ConfigError

log = logging.getLogger("ionqbo.ion")

SETTING = "IONQBO_MAPPINGS"
TABLE = "ion_fields"
SCHEMA_MAX_AGE = timedelta(days=1)
REFERENCE_SCHEMA = Path(__file__).resolve().parents[1] / "sandbox" / "ion-schema.graphql"

# Evidence labels (full citations in docs/reference/ion.md).
FR_EXAMPLES = "ion-examples queries.py GET_PURCHASES / GET_PURCHASE_LINES"
FR_PARTS = "ion-importers mutations.py GET_PARTS; FR manual parts guide"
FR_SUPPLIERS = "ion-examples download_supplier_attribute_files"
FR_MANUAL_QBO = "FR manual /integrations/quickbooks lists it; the field name is inferred"
INFERRED = "not in public FR material; inferred"

SCALAR = ("scalar",)
OBJ_CODE = ("code", "name", "id")
OBJ_NAME = ("name", "code", "id")
OBJ_UOM = ("type", "name", "code", "abbreviation")


@dataclass(frozen=True)
class Need:
    """One thing ionqbo reads from ION.

    Attributes:
        key: the stable name, also the key of an ``[ion_fields]`` override (``line.expenseCode``).
        owner: the role of the type it is read from: ``po``, ``line``, ``fee`` or ``part``.
        canonical: where the models read it in the canonical node (``("currency", "code")``).
        candidates: dotted field paths on the owner's type, most likely first.
        subfields: when the field found is an object, its sub-fields that may hold the value, in order.
        kind: ``value``, ``list`` (of ``child`` records) or ``object`` (one ``child`` record).
        child: the role of the records a list or object holds.
        required: True when a sync cannot be right without it (it stops before any write).
        what: how a person calls it.
        evidence: where the first candidate comes from.
    """

    key: str
    owner: str
    canonical: tuple[str, ...]
    candidates: tuple[str, ...]
    required: bool
    what: str
    evidence: str
    subfields: tuple[str, ...] = OBJ_CODE
    kind: str = "value"
    child: str = ""


def _address(canonical: str, spellings: tuple[str, ...], what: str) -> Need:
    roots = ("shippingAddress", "shipToAddress", "shipTo", "deliveryAddress", "shippingLocation", "address")
    return Need(f"po.shippingAddress.{canonical}", "po", ("shippingAddress", canonical),
                tuple(f"{r}.{s}" for r in roots for s in spellings), False, f"the ship-to {what}",
                FR_MANUAL_QBO + " (PO Shipping Address)", OBJ_NAME)


NEEDS: tuple[Need, ...] = (
    # ---- purchase order ----
    Need("po.id", "po", ("id",), ("id",), True, "a purchase order's id", FR_EXAMPLES),
    Need("po.etag", "po", ("_etag",), ("_etag", "etag"), False, "a purchase order's _etag", FR_EXAMPLES),
    Need("po.status", "po", ("status",), ("status", "state", "purchaseOrderStatus"), True,
         "a purchase order's status", FR_EXAMPLES, OBJ_CODE),
    Need("po.createdAt", "po", ("createdAt",), ("createdAt", "created", "createdOn"), False,
         "a purchase order's creation time", INFERRED),
    Need("po.updatedAt", "po", ("updatedAt",), ("updatedAt", "updated", "modifiedAt", "lastModified"), False,
         "a purchase order's last change time", INFERRED),
    Need("po.estimatedTotalCost", "po", ("estimatedTotalCost",), ("estimatedTotalCost", "totalCost", "total"),
         False, "a purchase order's total", "ion-examples Actions/purchases/purchase_approvals.py"),
    Need("po.notes", "po", ("notes",), ("notes", "note", "memo", "comments", "externalNotes"), False,
         "a purchase order's notes", INFERRED),
    Need("po.currency.id", "po", ("currency", "id"), ("currency.id", "currencyId"), False,
         "a purchase order's currency id", "ion-api reference 9.4 (currency { id })", ("id",)),
    Need("po.currency.code", "po", ("currency", "code"),
         ("currency.code", "currency.isoCode", "currency.abbreviation", "currencyCode", "currency"), False,
         "a purchase order's currency code", FR_MANUAL_QBO + " (PO Currency)", ("code", "isoCode", "abbreviation")),
    Need("po.currency.name", "po", ("currency", "name"), ("currency.name", "currencyName"), False,
         "a purchase order's currency name", INFERRED, ("name",)),
    Need("po.supplier.id", "po", ("supplier", "id"), ("supplier.id", "supplierId", "vendor.id", "vendorId"), False,
         "a purchase order's supplier id", FR_SUPPLIERS, ("id",)),
    Need("po.supplier.name", "po", ("supplier", "name"),
         ("supplier.name", "vendor.name", "supplierName", "vendorName", "supplier"), True,
         "a purchase order's supplier name", FR_SUPPLIERS + " (Supplier.name); the PO link is inferred", ("name",)),
    _address("name", ("name", "attention", "contactName"), "name"),
    _address("street1", ("street1", "line1", "addressLine1", "address1", "street"), "street (first line)"),
    _address("street2", ("street2", "line2", "addressLine2", "address2"), "street (second line)"),
    _address("city", ("city", "locality", "town"), "city"),
    _address("state", ("state", "region", "province", "stateProvince", "county"), "state"),
    _address("postalCode", ("postalCode", "zip", "zipCode", "postcode", "postCode"), "postal code"),
    _address("country", ("country", "countryCode"), "country"),
    Need("po.lines", "po", ("purchaseOrderLines",), ("purchaseOrderLines", "lines", "lineItems"), True,
         "a purchase order's lines", "ion-examples GET_RECEIPTS (Receipt.purchaseOrderLines); on PO inferred",
         kind="list", child="line"),
    Need("po.fees", "po", ("fees",), ("fees", "purchaseOrderFees"), False, "a purchase order's fees",
         FR_EXAMPLES + " (fees { id })", kind="list", child="fee"),
    # ---- line ----
    Need("line.id", "line", ("id",), ("id",), True, "a line's id", FR_EXAMPLES),
    Need("line.etag", "line", ("_etag",), ("_etag", "etag"), False, "a line's _etag", FR_EXAMPLES),
    Need("line.status", "line", ("status",), ("status", "state"), False, "a line's status", FR_EXAMPLES),
    Need("line.description", "line", ("description",), ("description", "name", "memo"), False,
         "a line's description", "ion-examples Actions/purchases/purchase_approvals.py"),
    Need("line.needDate", "line", ("needDate",), ("needDate", "dueDate"), False, "a line's need date",
         "ion-examples Actions/purchases/block_purchase_line_if_no_need_date.py"),
    Need("line.quantity", "line", ("quantity",), ("quantity", "quantityOrdered", "orderedQuantity", "qty"), True,
         "a line's quantity", FR_MANUAL_QBO + " (PO Line Quantity)", ("value", "amount")),
    Need("line.unitCost", "line", ("unitCost",), ("unitCost", "unitPrice", "price", "cost"), True,
         "a line's unit cost", FR_MANUAL_QBO + " (PO Line Unit Cost)", ("amount", "value")),
    Need("line.totalCost", "line", ("totalCost",), ("totalCost", "totalPrice", "total", "extendedCost", "amount"),
         True, "a line's total cost", FR_MANUAL_QBO + " (PO Line Total Cost)", ("amount", "value")),
    Need("line.expenseCode", "line", ("expenseCode",),
         ("expenseCode", "expenseAccount", "accountCode", "glCode", "glAccount"), True,
         "a line's expense code", FR_MANUAL_QBO + " (PO Line Expense Account)", OBJ_CODE),
    Need("line.accountingClass", "line", ("accountingClass",),
         ("accountingClass", "class", "className", "qboClass", "costCenter"), False,
         "a line's accounting class", FR_MANUAL_QBO + " (PO Line Class)", OBJ_NAME),
    Need("line.part", "line", ("part",), ("part",), True, "a line's part", FR_MANUAL_QBO + " (Part Number)",
         kind="object", child="part"),
    # ---- fee ----
    Need("fee.id", "fee", ("id",), ("id",), True, "a fee's id", FR_EXAMPLES),
    Need("fee.etag", "fee", ("_etag",), ("_etag", "etag"), False, "a fee's _etag", INFERRED),
    Need("fee.name", "fee", ("name",), ("name", "type", "feeType", "description", "label"), True,
         "a fee's name", FR_MANUAL_QBO + " (PO Fee Name)", OBJ_NAME),
    Need("fee.value", "fee", ("value",), ("value", "amount", "cost", "price", "total"), True,
         "a fee's amount", FR_MANUAL_QBO + " (PO Fee Value)", ("amount", "value")),
    # ---- part ----
    Need("part.id", "part", ("id",), ("id",), True, "a part's id", FR_PARTS),
    Need("part.etag", "part", ("_etag",), ("_etag", "etag"), False, "a part's _etag", INFERRED),
    Need("part.partNumber", "part", ("partNumber",), ("partNumber", "number", "sku"), True,
         "a part's number", FR_PARTS),
    Need("part.revision", "part", ("revision",), ("revision", "rev"), False, "a part's revision", FR_PARTS),
    Need("part.description", "part", ("description",), ("description",), False, "a part's description", FR_PARTS),
    Need("part.trackingType", "part", ("trackingType",), ("trackingType",), False, "a part's tracking type",
         FR_PARTS),
    Need("part.cost", "part", ("cost",), ("cost", "unitCost", "standardCost", "price"), False, "a part's cost",
         "FR docs part attributes (Cost); the field name is inferred", ("amount", "value")),
    Need("part.unitOfMeasure", "part", ("unitOfMeasure", "type"),
         ("unitOfMeasure", "unitOfMeasurement", "uom", "unit"), False, "a part's unit of measure",
         "ion-importers (UnitOfMeasurement { id type }); the Part field is inferred", OBJ_UOM),
    Need("part.isLatestRevision", "part", ("isLatestRevision",), ("isLatestRevision", "latestRevision"), False,
         "whether a part is the latest revision", "ion-importers excel import (filter)"),
    Need("part.createdAt", "part", ("createdAt",), ("createdAt", "created"), False, "a part's creation time",
         INFERRED),
    Need("part.updatedAt", "part", ("updatedAt",), ("updatedAt", "updated", "modifiedAt"), False,
         "a part's last change time", INFERRED),
)

NEEDS_BY_KEY: dict[str, Need] = {n.key: n for n in NEEDS}
ROLE_LABEL = {"po": "purchase order", "line": "purchase order line", "fee": "purchase order fee", "part": "part"}


class IonSchemaError(ConfigError):
    """ION's live schema lacks something a sync needs: stops before any write (exit 2)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems, hint=f"see `ionqbo check-mappings`; a field ION keeps under another name is "
                                        f"named in the [{TABLE}] table of the {SETTING} file")
        lines = self.problems
        self.message = ("ION's schema lacks what a sync needs: " + lines[0]) if len(lines) == 1 else \
            "ION's schema lacks what a sync needs:\n" + "\n".join(f"  - {p}" for p in lines)


# ---- resolution ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """Where the live schema keeps one need."""

    need: Need
    type_name: str
    path: tuple[str, ...]  # from the owner type, the sub-field (for an object shape) included
    source: str = "schema"  # or "setting"

    @property
    def where(self) -> str:
        return f"{self.type_name}.{'.'.join(self.path)}"


@dataclass(frozen=True)
class Missing:
    """A need the live schema has no field for."""

    need: Need
    type_name: str
    closest: tuple[str, ...]

    def message(self) -> str:
        names = self.need.candidates
        searched = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        near = f"; closest fields on {self.type_name}: {', '.join(self.closest)}" if self.closest else ""
        return f"ION has no field for {self.need.what} (searched {self.type_name} for {searched}{near})"

    def fix(self) -> str:
        return (f'name the field in the {SETTING} file: [{TABLE}] "{self.need.key}" = "<field>" '
                f"(a field of {self.type_name}, e.g. \"{self.closest[0] if self.closest else 'fieldName'}\")")


@dataclass(frozen=True)
class ListRead:
    """How one record list (purchase orders, parts) can be read on this ION."""

    root: str
    node_type: str
    args: dict[str, str]  # argument -> its type as GraphQL text, e.g. {"filters": "PurchaseOrdersInputFilters"}
    filter_ops: dict[str, frozenset[str]]  # filter field -> operators
    sort_updated: str | None  # the sort value for updatedAt ascending
    sort_id: str | None  # the sort value for id ascending
    single_root: str | None  # purchaseOrder(id:) / part(id:)
    filter_enums: dict[str, tuple[str, ...]] = field(default_factory=dict)  # filter field -> enum values

    @property
    def keyset(self) -> bool:
        ops = self.filter_ops.get("updatedAt", frozenset())
        return (self.sort_updated is not None and {"gte", "gt", "eq"} <= ops
                and "notIn" in self.filter_ops.get("id", frozenset()))

    @property
    def id_in(self) -> bool:
        return "in" in self.filter_ops.get("id", frozenset())

    @property
    def pages(self) -> bool:
        return "first" in self.args and "after" in self.args

    @property
    def strategy(self) -> str:
        return "keyset" if self.keyset else "scan"


@dataclass(frozen=True)
class LinesRoot:
    """Lines read from the root ``purchaseOrderLines`` query, by their order's id."""

    root: str
    node_type: str
    args: dict[str, str]
    filter_field: str  # the filter on the order's id, e.g. purchaseOrderId
    op: str  # "in" or "eq"
    po_link: tuple[str, ...]  # path from the line to its order's id, e.g. ("purchaseOrder", "id")


@dataclass
class Plan:
    """The resolution of :data:`NEEDS` against one schema: what to ask for and how to read it."""

    schema: GraphQLSchema
    types: dict[str, str]  # role -> type name
    found: dict[str, Found]
    missing: list[Missing]
    po: ListRead | None
    part: ListRead | None
    lines_root: LinesRoot | None = None
    statuses: tuple[str, ...] | None = None  # the status values this ION has (None: not an enum)
    canceled: str | None = None  # this ION's spelling of the canceled status
    problems: list[str] = field(default_factory=list)  # blocking, not about one need
    notes: list[str] = field(default_factory=list)  # warnings, not about one need
    schema_hash: str = ""

    # ---- what is missing ----

    @property
    def blocking(self) -> list[Missing]:
        return [m for m in self.missing if m.need.required]

    @property
    def optional_missing(self) -> list[Missing]:
        return [m for m in self.missing if not m.need.required]

    def role_found(self, role: str) -> list[Found]:
        return [f for f in self.found.values() if f.need.owner == role]

    def has(self, key: str) -> bool:
        return key in self.found

    # ---- answers -> canonical nodes ----

    def canonical(self, role: str, node: Any) -> Any:
        """A raw node of ``role`` in the canonical shape the models parse (names of the reference schema)."""
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for found in self.role_found(role):
            need = found.need
            if need.kind == "list" and found.path == ("__root__",):
                value = node.get("__lines__")
            else:
                value = _walk(node, found.path)
            if need.kind == "list":
                value = [self.canonical(need.child, v) for v in value] if isinstance(value, list) else value
            elif need.kind == "object":
                value = self.canonical(need.child, value)
            elif need.key.endswith(".status") and value is not None and value == self.canceled:
                value = "CANCELED"  # one spelling inside ionqbo, whatever ION's is
            _put(out, need.canonical, value)
        return out

    def status_out(self, status: str) -> str:
        """ionqbo's status name -> this ION's (only the canceled spelling differs)."""
        return self.canceled if status == "CANCELED" and self.canceled else status


def _walk(node: Any, path: tuple[str, ...]) -> Any:
    for step in path:
        if not isinstance(node, dict):
            return None
        node = node.get(step)
    return node


def _put(out: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    if value is None and len(path) > 1:
        return  # no parent object for a null (an absent currency is None, not {code: None})
    for step in path[:-1]:
        child = out.get(step)
        if not isinstance(child, dict):
            child = out[step] = {}
        out = child
    out[path[-1]] = value


def _unwrap(gtype: Any) -> tuple[Any, bool]:
    """(named type, is it a list) of a field's type."""
    is_list = False
    while isinstance(gtype, GraphQLNonNull | GraphQLList):
        if isinstance(gtype, GraphQLList):
            is_list = True
        gtype = gtype.of_type
    return gtype, is_list


def _fields(gtype: Any) -> dict[str, GraphQLField]:
    return dict(gtype.fields) if isinstance(gtype, GraphQLObjectType | GraphQLInterfaceType) else {}


_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_VAGUE = {"id", "the", "of", "is", "at"}


def closest_names(names: Iterable[str], gtype: Any, n: int = 3) -> tuple[str, ...]:
    """Field names of ``gtype`` that look like any of ``names`` (spelling first, then a shared word)."""
    fields = list(_fields(gtype))
    wanted = list(dict.fromkeys(names))
    close: list[str] = []
    for name in wanted:
        close += [f for f in difflib.get_close_matches(name, fields, n=n, cutoff=0.6) if f not in close]
    words = {w.lower() for name in wanted for w in _WORD.findall(name)} - _VAGUE
    for other in fields:
        if other not in close and words & ({w.lower() for w in _WORD.findall(other)} - _VAGUE):
            close.append(other)
    return tuple(close[:n])


def _try_path(schema_type: Any, dotted: str, need: Need) -> tuple[tuple[str, ...], Any] | str:
    """The full path (sub-field included) of ``dotted`` on ``schema_type`` for ``need``, or why not."""
    path = tuple(p for p in dotted.split(".") if p)
    if not path:
        return "the path is empty"
    gtype = schema_type
    for i, step in enumerate(path):
        fields = _fields(gtype)
        if step not in fields:
            owner = getattr(gtype, "name", "?")
            near = closest_names([step], gtype)
            return f"{owner} has no field {step}" + (f" (closest: {', '.join(near)})" if near else "")
        named, is_list = _unwrap(fields[step].type)
        last = i == len(path) - 1
        if not last:
            if is_list or not isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
                return f"{getattr(gtype, 'name', '?')}.{step} is not an object"
            gtype = named
            continue
        if need.kind == "list":
            if not is_list or not isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
                return f"{getattr(gtype, 'name', '?')}.{step} is not a list of records"
            return path, named
        if need.kind == "object":
            if is_list or not isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
                return f"{getattr(gtype, 'name', '?')}.{step} is not a record"
            return path, named
        if is_list:
            return f"{getattr(gtype, 'name', '?')}.{step} is a list, not one value"
        if is_leaf_type(named):
            return path, named
        sub = _fields(named)
        for name in need.subfields:
            if name in sub and is_leaf_type(_unwrap(sub[name].type)[0]) and not _unwrap(sub[name].type)[1]:
                return (*path, name), _unwrap(sub[name].type)[0]
        return (f"{getattr(gtype, 'name', '?')}.{step} is an object ({named.name}) without "
                f"{' / '.join(need.subfields)}")
    return "unreachable"


def _connection_node(schema: GraphQLSchema, root: str) -> tuple[Any, GraphQLField] | None:
    query = schema.query_type
    if query is None or root not in query.fields:
        return None
    fld = query.fields[root]
    conn, _ = _unwrap(fld.type)
    edges = _fields(conn).get("edges")
    if edges is None:
        return None
    edge, _ = _unwrap(edges.type)
    node = _fields(edge).get("node")
    if node is None:
        return None
    return _unwrap(node.type)[0], fld


def _type_text(gtype: Any) -> str:
    return str(gtype)


def _filter_ops(schema: GraphQLSchema, fld: GraphQLField) -> tuple[dict[str, frozenset[str]], dict[str, tuple[str, ...]]]:
    arg = fld.args.get("filters")
    ops: dict[str, frozenset[str]] = {}
    enums: dict[str, tuple[str, ...]] = {}
    if arg is None:
        return ops, enums
    ftype, _ = _unwrap(arg.type)
    if not isinstance(ftype, GraphQLInputObjectType):
        return ops, enums
    for name, sub in ftype.fields.items():
        stype, _ = _unwrap(sub.type)
        if isinstance(stype, GraphQLInputObjectType):
            ops[name] = frozenset(stype.fields)
            for op_field in stype.fields.values():
                etype, _ = _unwrap(op_field.type)
                if isinstance(etype, GraphQLEnumType):
                    enums[name] = tuple(etype.values)
    return ops, enums


def _sort_value(fld: GraphQLField, field_name: str) -> str | None:
    """The ascending sort value for ``field_name`` (``UPDATED_AT_ASC``, ``updatedAt_ASC``...), or None."""
    arg = fld.args.get("sort")
    if arg is None:
        return None
    etype, _ = _unwrap(arg.type)
    if not isinstance(etype, GraphQLEnumType):
        return None
    want = field_name.replace("_", "").lower()
    for value in etype.values:
        flat = value.replace("_", "").lower()
        if flat in (want + "asc", "asc" + want) or (flat == want and not value.endswith("DESC")):
            return value
    return None


def _list_read(schema: GraphQLSchema, root: str, single: str) -> ListRead | None:
    found = _connection_node(schema, root)
    if found is None:
        return None
    node, fld = found
    ops, enums = _filter_ops(schema, fld)
    query = schema.query_type
    single_root = single if query is not None and single in query.fields and "id" in query.fields[single].args \
        else None
    return ListRead(root=root, node_type=node.name, args={n: _type_text(a.type) for n, a in fld.args.items()},
                    filter_ops=ops, sort_updated=_sort_value(fld, "updatedAt"), sort_id=_sort_value(fld, "id"),
                    single_root=single_root, filter_enums=enums)


def _resolve_need(need: Need, gtype: Any, overrides: Mapping[str, str], problems: list[str]
                  ) -> tuple[Found | None, Any]:
    if need.key in overrides:
        result = _try_path(gtype, overrides[need.key], need)
        if isinstance(result, str):
            problems.append(f'{SETTING} [{TABLE}] "{need.key}" = "{overrides[need.key]}": {result} '
                            f"(looked for on ION type {gtype.name}, for {need.what})")
            return None, None
        return Found(need, gtype.name, result[0], "setting"), result[1]
    for candidate in need.candidates:
        result = _try_path(gtype, candidate, need)
        if not isinstance(result, str):
            return Found(need, gtype.name, result[0]), result[1]
    return None, None


def _lines_root(schema: GraphQLSchema, line_type: Any | None) -> LinesRoot | None:
    found = _connection_node(schema, "purchaseOrderLines")
    if found is None:
        return None
    node, fld = found
    ops, _ = _filter_ops(schema, fld)
    for name in ("purchaseOrderId", "purchaseOrder"):
        for op in ("in", "eq"):
            if op in ops.get(name, frozenset()):
                link: tuple[str, ...] | None = None
                fields = _fields(node)
                if "purchaseOrder" in fields and "id" in _fields(_unwrap(fields["purchaseOrder"].type)[0]):
                    link = ("purchaseOrder", "id")
                elif "purchaseOrderId" in fields:
                    link = ("purchaseOrderId",)
                if link is None:
                    return None
                return LinesRoot(root="purchaseOrderLines", node_type=node.name,
                                 args={n: _type_text(a.type) for n, a in fld.args.items()},
                                 filter_field=name, op=op, po_link=link)
    return None


def resolve(schema: GraphQLSchema, *, overrides: Mapping[str, str] | None = None,
            statuses: Iterable[str] = ()) -> Plan:
    """Resolve :data:`NEEDS` against ``schema``.

    Args:
        schema: the live schema (``build_client_schema`` of the introspection answer) or an SDL schema.
        overrides: ``[ion_fields]`` need key -> dotted field path.
        statuses: the purchase-order statuses the settings ask for (checked against the live values).

    Raises:
        ConfigError: an override names a need ionqbo does not have, or a field the type lacks.
    """
    overrides = dict(overrides or {})
    problems: list[str] = []
    unknown = sorted(set(overrides) - set(NEEDS_BY_KEY))
    for key in unknown:
        near = difflib.get_close_matches(key, list(NEEDS_BY_KEY), n=3)
        problems.append(f'{SETTING} [{TABLE}] "{key}": ionqbo reads no such thing'
                        + (f" (did you mean {', '.join(near)}?)" if near else ""))
    po = _list_read(schema, "purchaseOrders", "purchaseOrder")
    part = _list_read(schema, "parts", "part")
    found: dict[str, Found] = {}
    missing: list[Missing] = []
    types: dict[str, str] = {}
    role_types: dict[str, Any] = {}
    plan_problems: list[str] = []
    notes: list[str] = []
    if po is None:
        plan_problems.append("ION has no purchaseOrders connection at the query root: purchase orders cannot be read")
    else:
        role_types["po"] = schema.get_type(po.node_type)
    lines_root: LinesRoot | None = None

    def run(role: str) -> None:
        gtype = role_types.get(role)
        if gtype is None:
            return
        types[role] = gtype.name
        for need in NEEDS:
            if need.owner != role:
                continue
            got, target = _resolve_need(need, gtype, overrides, problems)
            if got is None:
                if need.key in overrides:
                    continue
                heads = [c.split(".")[0] for c in need.candidates] + [c.split(".")[-1] for c in need.candidates]
                missing.append(Missing(need, gtype.name, closest_names(heads, gtype)))
                continue
            found[need.key] = got
            if need.kind in ("list", "object") and need.child and need.child not in role_types:
                role_types[need.child] = target

    run("po")
    if "po.lines" not in found and po is not None and "po.lines" not in overrides:
        lines_root = _lines_root(schema, None)
        if lines_root is not None:
            missing[:] = [m for m in missing if m.need.key != "po.lines"]
            found["po.lines"] = Found(NEEDS_BY_KEY["po.lines"], "Query", ("__root__",))
            role_types["line"] = schema.get_type(lines_root.node_type)
            notes.append(f"purchase order lines are read from the root {lines_root.root}(filters: "
                         f"{{{lines_root.filter_field}: {{{lines_root.op}: ...}}}}), one extra request per page")
    run("line")
    run("fee")
    if "part" not in role_types and part is not None:
        role_types["part"] = schema.get_type(part.node_type)
    run("part")
    if problems:
        raise ConfigError(problems, hint=f"correct the [{TABLE}] table of the file named by {SETTING}")
    # statuses
    known: tuple[str, ...] | None = None
    status_found = found.get("po.status")
    if status_found is not None:
        gtype = role_types["po"]
        for step in status_found.path[:-1]:
            gtype = _unwrap(_fields(gtype)[step].type)[0]
        leaf = _unwrap(_fields(gtype)[status_found.path[-1]].type)[0]
        if isinstance(leaf, GraphQLEnumType):
            known = tuple(leaf.values)
    if known is None and po is not None and "status" in po.filter_enums:
        known = po.filter_enums["status"]
    canceled = next((v for v in (known or ()) if re.fullmatch(r"CANCELL?ED", v.upper())), None)
    if known is None:
        canceled = "CANCELED"
    if known is not None:
        for status in statuses:
            if status not in known and status != "CANCELED":
                near = difflib.get_close_matches(status, list(known), n=2)
                plan_problems.append(
                    f"IONQBO_PO_STATUSES: ION has no purchase order status {status} (ION's statuses: "
                    f"{', '.join(known)})" + (f"; did you mean {' or '.join(near)}?" if near else ""))
        if canceled is None:
            notes.append("ION has no canceled purchase order status: canceled orders are not closed in QBO")
    for read, label in ((po, "purchase orders"), (part, "parts")):
        if read is None:
            continue
        if not read.keyset:
            why = []
            if read.sort_updated is None:
                why.append(f"no sort by updatedAt on {read.root}")
            ops = read.filter_ops.get("updatedAt", frozenset())
            if not {"gte", "gt", "eq"} <= ops:
                why.append(f"no updatedAt filter with eq/gt/gte on {read.root}")
            if "notIn" not in read.filter_ops.get("id", frozenset()):
                why.append(f"no id notIn filter on {read.root}")
            notes.append(f"{label}: changes are found by comparing each record's _etag with the last sync "
                         f"({'; '.join(why)})")
        if not read.id_in and read.single_root is None:
            plan_problems.append(f"ION can read {label} by id neither with an id filter on {read.root} nor "
                                 f"with a single-record query: queued {label} cannot be retried")
    if part is None:
        plan_problems.append("ION has no parts connection at the query root: parts cannot be read")
    if po is not None and not po.keyset and "po.etag" not in found:
        plan_problems.append("ION offers neither an updatedAt filter and sort nor an _etag on purchase orders: "
                             "changed purchase orders cannot be found")
    return Plan(schema=schema, types=types, found=found, missing=missing, po=po, part=part, lines_root=lines_root,
                statuses=known, canceled=canceled, problems=plan_problems, notes=notes)


def notification_problems(schema: GraphQLSchema) -> list[str]:
    """What the notification path (users by e-mail, dispatchNotification WARNING) sends and ION lacks."""
    problems: list[str] = []
    query, mutation = schema.query_type, schema.mutation_type
    users = query.fields.get("users") if query is not None else None
    email_ops: frozenset[str] = frozenset()
    if users is None:
        problems.append("ION has no users query (the recipient is found by e-mail)")
    else:
        ops, _ = _filter_ops(schema, users)
        email_ops = ops.get("email", frozenset())
        if "eq" not in email_ops:
            problems.append("ION's users query has no filters: { email: { eq } } (the recipient is found by e-mail)")
    send = mutation.fields.get("dispatchNotification") if mutation is not None else None
    if send is None:
        problems.append("ION has no dispatchNotification mutation")
        return problems
    arg = send.args.get("input")
    itype = _unwrap(arg.type)[0] if arg is not None else None
    if not isinstance(itype, GraphQLInputObjectType):
        problems.append("dispatchNotification has no input object")
        return problems
    for name in ("userId", "notificationType", "title", "description"):
        if name not in itype.fields:
            problems.append(f"{itype.name} has no input field {name}")
    kind = itype.fields.get("notificationType")
    etype = _unwrap(kind.type)[0] if kind is not None else None
    if isinstance(etype, GraphQLEnumType) and "WARNING" not in etype.values:
        problems.append(f"{etype.name} has no value WARNING")
    return problems


# ---- overrides ------------------------------------------------------------------------------------


def read_overrides(path: Path | None) -> dict[str, str]:
    """The ``[ion_fields]`` table of the mappings file (need key -> dotted field path)."""
    if path is None or not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}  # the mappings parser reports an unreadable file
    table = data.get(TABLE)
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ConfigError([f"{SETTING}: {TABLE} must be a table ([{TABLE}])"])
    out: dict[str, str] = {}
    problems = []
    for key, value in table.items():
        if not isinstance(value, str) or not value.strip():
            problems.append(f'{SETTING} [{TABLE}] "{key}": the value must be a field name or dotted path')
            continue
        out[key] = value.strip()
    if problems:
        raise ConfigError(problems)
    return out


# ---- the cache ----------------------------------------------------------------------------------


def schema_sha256(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class SchemaCache:
    """Introspection answers in the state directory: ``ion-schema-<sha256>.json``, named by ``ion-schema.json``."""

    def __init__(self, state_dir: Path, *, writable: bool = True) -> None:
        self.directory = state_dir
        self.pointer = state_dir / "ion-schema.json"
        self.writable = writable

    def _path(self, digest: str) -> Path:
        return self.directory / f"ion-schema-{digest}.json"

    def load(self, api_url: str, now: datetime, max_age: timedelta = SCHEMA_MAX_AGE) -> dict[str, Any] | None:
        """The cached answer for ``api_url`` when younger than ``max_age``, else None."""
        try:
            meta = json.loads(self.pointer.read_text(encoding="utf-8"))
            if meta.get("api_url") != api_url:
                return None
            fetched = datetime.fromisoformat(meta["fetched_at"])
            if not now - max_age < fetched <= now + timedelta(minutes=5):
                return None
            data = json.loads(self._path(str(meta["sha256"])).read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(data, dict) or schema_sha256(data) != meta.get("sha256"):
            return None
        return data

    def store(self, api_url: str, data: Mapping[str, Any], now: datetime) -> str:
        """Keep ``data`` (older copies are removed); returns its hash. Nothing is written when read-only."""
        digest = schema_sha256(data)
        if not self.writable:
            return digest
        from ionqbo.state import ensure_private_dir, replace_file

        try:
            ensure_private_dir(self.directory)
            replace_file(self._path(digest), json.dumps(data, sort_keys=True).encode())
            meta = {"sha256": digest, "fetched_at": now.astimezone(UTC).isoformat(), "api_url": api_url}
            replace_file(self.pointer, json.dumps(meta).encode())
            for old in self.directory.glob("ion-schema-*.json"):
                if old != self._path(digest):
                    old.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not cache ION's schema in %s: %s", self.directory, exc)
        return digest


def reference_schema() -> GraphQLSchema:
    """The bundled reference schema (what public ION material shows, plus ionqbo's inferences)."""
    return build_schema(REFERENCE_SCHEMA.read_text(encoding="utf-8"))


def sdl(schema: GraphQLSchema) -> str:
    """The schema as SDL text (types and fields only: it holds no data)."""
    return print_schema(schema) + "\n"
