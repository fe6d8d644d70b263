"""Typed ION records, parsed from GraphQL nodes; a malformed node raises an error naming the field.

Money and quantities are Decimal, parsed from the JSON text (``parse_float=Decimal``) so that no
binary rounding creeps in. Ids are strings (ION emits integers; ``ID`` accepts both).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from ionqbo.errors import MalformedRecordError

log = logging.getLogger("ionqbo.ion")


@dataclass(frozen=True)
class Address:
    name: str | None = None
    street1: str | None = None
    street2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class Currency:
    id: str
    code: str
    name: str | None = None


@dataclass(frozen=True)
class Supplier:
    id: str
    name: str


@dataclass(frozen=True)
class Part:
    id: str
    part_number: str
    revision: str
    etag: str = ""
    description: str | None = None
    tracking_type: str | None = None
    cost: Decimal | None = None
    unit_of_measure: str | None = None
    is_latest_revision: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class PurchaseOrderLine:
    id: str
    quantity: Decimal
    etag: str = ""
    status: str | None = None
    description: str | None = None
    need_date: date | None = None
    part: Part | None = None
    unit_cost: Decimal | None = None
    total_cost: Decimal | None = None
    expense_code: str | None = None
    accounting_class: str | None = None


@dataclass(frozen=True)
class PurchaseOrderFee:
    id: str
    name: str
    value: Decimal
    etag: str = ""


@dataclass(frozen=True)
class PurchaseOrder:
    id: str
    status: str
    etag: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    estimated_total_cost: Decimal | None = None
    currency: Currency | None = None
    supplier: Supplier | None = None
    shipping_address: Address | None = None
    notes: str | None = None
    fees: tuple[PurchaseOrderFee, ...] = ()
    lines: tuple[PurchaseOrderLine, ...] = ()


@dataclass(frozen=True)
class InvalidRecord:
    """A node that could not be parsed: it travels through the run as a failure, never a crash."""

    kind: str  # "purchase_order" or "part"
    ion_id: str
    error: MalformedRecordError
    updated_at: datetime | None = None


# ---- parsing ---------------------------------------------------------------------------------


class _Reader:
    """Reads typed fields from one node, naming the record and the field in every error."""

    def __init__(self, node: Any, kind: str, ion_id: str, prefix: str = "") -> None:
        if not isinstance(node, dict):
            raise MalformedRecordError(
                f"{kind} {ion_id or '?'}: {prefix or 'record'} is not an object", kind=kind, ion_id=ion_id,
                field=prefix or None, hint="report this ION record to First Resonance support")
        self.node = node
        self.kind = kind
        self.ion_id = ion_id
        self.prefix = prefix

    def _fail(self, name: str, reason: str) -> MalformedRecordError:
        path = f"{self.prefix}{name}"
        return MalformedRecordError(
            f"{_label(self.kind)} {self.ion_id or '?'}: field {path} {reason}",
            kind=self.kind, ion_id=self.ion_id, field=path,
            hint=f"correct {path} on this {_label(self.kind)} in ION",
        )

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.node.get(name)
        if value is None:
            if required:
                raise self._fail(name, "is missing")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self._fail(name, f"is not text ({value!r:.40})")
        return str(value)

    def req_str(self, name: str) -> str:
        value = self.text(name, required=True)
        assert value is not None
        return value

    def decimal(self, name: str, *, required: bool = False) -> Decimal | None:
        value = self.node.get(name)
        if value is None:
            if required:
                raise self._fail(name, "is missing")
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
            raise self._fail(name, f"is not a number ({value!r:.40})")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise self._fail(name, f"is not a number ({value!r:.40})") from None
        if not number.is_finite() or (isinstance(value, float) and not math.isfinite(value)):
            raise self._fail(name, f"is not a finite number ({value})")
        return number

    def datetime(self, name: str) -> datetime | None:
        value = self.text(name)
        if value is None:
            return None
        parsed = read_time(value)
        if parsed is None:
            raise self._fail(name, f"is not an ISO-8601 time ({value!r:.40})")
        return parsed

    def date(self, name: str) -> date | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            raise self._fail(name, f"is not a date ({value!r:.40})") from None

    def obj(self, name: str) -> _Reader | None:
        value = self.node.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._fail(name, "is not an object")
        return _Reader(value, self.kind, self.ion_id, f"{self.prefix}{name}.")

    def items(self, name: str) -> list[_Reader]:
        value = self.node.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._fail(name, "is not a list")
        return [_Reader(v, self.kind, self.ion_id, f"{self.prefix}{name}[{i}].") for i, v in enumerate(value)]


_naive_noted: list[bool] = []


def read_time(value: str) -> datetime | None:
    """An ION time as an aware datetime, or None when it is not ISO-8601.

    A time without a UTC offset is read as UTC (ION's database keeps UTC; its API's format is not
    documented): said once in the log, not per record.
    """
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        if not _naive_noted:
            _naive_noted.append(True)
            log.info("ION sends times without a UTC offset (e.g. %s); they are read as UTC", value[:40])
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _label(kind: str) -> str:
    return kind.replace("_", " ")


def node_id(node: Any) -> str:
    """The id of a raw node as text, or '' when it has none."""
    if isinstance(node, dict) and isinstance(node.get("id"), str | int) and not isinstance(node.get("id"), bool):
        return str(node["id"])
    return ""


def parse_part(node: Any, *, kind: str = "part", ion_id: str | None = None, prefix: str = "") -> Part:
    """A Part from a GraphQL node; raises MalformedRecordError naming the field."""
    pid = node_id(node)
    r = _Reader(node, kind, ion_id if ion_id is not None else pid, prefix)
    uom = r.obj("unitOfMeasure")
    latest = r.node.get("isLatestRevision", True)
    return Part(
        id=r.req_str("id"),
        part_number=r.req_str("partNumber"),
        revision=r.text("revision") or "",
        etag=r.text("_etag") or "",
        description=r.text("description"),
        tracking_type=r.text("trackingType"),
        cost=r.decimal("cost"),
        unit_of_measure=uom.text("type") if uom else None,
        is_latest_revision=bool(latest) if latest is not None else True,
        created_at=r.datetime("createdAt"),
        updated_at=r.datetime("updatedAt"),
    )


def parse_purchase_order(node: Any) -> PurchaseOrder:
    """A PurchaseOrder (with lines and fees) from a GraphQL node; raises MalformedRecordError."""
    po_id = node_id(node)
    r = _Reader(node, "purchase_order", po_id)
    r.req_str("id")
    currency = r.obj("currency")
    supplier = r.obj("supplier")
    address = r.obj("shippingAddress")
    lines = []
    for lr in r.items("purchaseOrderLines"):
        part_node = lr.node.get("part")
        part = None
        if part_node is not None:
            part = parse_part(part_node, kind="purchase_order", ion_id=po_id, prefix=f"{lr.prefix}part.")
        lines.append(PurchaseOrderLine(
            id=lr.req_str("id"),
            quantity=lr.decimal("quantity", required=True) or Decimal(0),
            etag=lr.text("_etag") or "",
            status=lr.text("status"),
            description=lr.text("description"),
            need_date=lr.date("needDate"),
            part=part,
            unit_cost=lr.decimal("unitCost"),
            total_cost=lr.decimal("totalCost"),
            expense_code=lr.text("expenseCode"),
            accounting_class=lr.text("accountingClass"),
        ))
    fees = [
        PurchaseOrderFee(id=fr.req_str("id"), name=fr.text("name") or "", value=fr.decimal("value", required=True)
                         or Decimal(0), etag=fr.text("_etag") or "")
        for fr in r.items("fees")
    ]
    return PurchaseOrder(
        id=po_id,
        status=r.req_str("status"),
        etag=r.text("_etag") or "",
        created_at=r.datetime("createdAt"),
        updated_at=r.datetime("updatedAt"),
        estimated_total_cost=r.decimal("estimatedTotalCost"),
        currency=Currency(id=currency.text("id") or "", code=currency.req_str("code"), name=currency.text("name"))
        if currency else None,
        supplier=Supplier(id=supplier.text("id") or "", name=supplier.req_str("name")) if supplier else None,
        shipping_address=Address(
            name=address.text("name"), street1=address.text("street1"), street2=address.text("street2"),
            city=address.text("city"), state=address.text("state"), postal_code=address.text("postalCode"),
            country=address.text("country"),
        ) if address else None,
        notes=r.text("notes"),
        fees=tuple(fees),
        lines=tuple(lines),
    )
