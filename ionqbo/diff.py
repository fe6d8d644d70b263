"""Pure diff: the QBO payload ionqbo wants vs the object QBO holds -> create, update or unchanged.

Rules:

* Only the fields ionqbo owns are compared, and of those only the ones the desired payload carries:
  a field ionqbo does not send (e.g. ``CurrencyRef`` when multicurrency is off) is left as QBO has it.
* Inside a compared field, only the keys ionqbo sends are compared: what QBO adds on its own
  (``TaxCodeRef``, ``BillableStatus``, line ``Id``, ``ShipAddr.Id``, a ref's ``name``) is ignored.
* Values are normalised before comparing: numbers as Decimal (``25 == 25.0 == "25.00"``), refs by
  ``value`` only, text with surrounding whitespace and CR-LF line ends ignored, and ``None``, ``""``,
  ``{}``, ``[]`` and a missing key all count as empty.
* ``Line`` lists are compared line by line, in ``LineNum`` order when every line has one; paths are
  1-based (``Line[2].Amount`` is the second line), like QBO's ``LineNum``.
* An update body is a FULL update (QBO omits-means-null semantics): the existing object as read,
  so ``Id``, ``SyncToken`` and every field the accountant added (``Memo``, ``PrivateNote``,
  ``CustomField``, ``LinkedTxn``...) are kept, with the owned fields the desired payload carries
  replaced as a whole and the read-only fields QBO computes (``TotalAmt``, ``MetaData``...)
  dropped. New lines carry the ``Id`` (and ``LinkedTxn``) of the QBO line with the same item or
  account they replace (:func:`keep_line_ids`), so a bill linked to a line stays linked, with the
  line fields ionqbo does not set (``CustomerRef``, ``BillableStatus``, ``MarkupInfo``,
  ``TaxCodeRef`` where ionqbo sends none, ``ProjectRef``...) as QBO has them (:func:`keep_line_fields`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

Action = Literal["create", "update", "unchanged"]

# Fields QBO computes or that only describe the response; they are never sent back in an update.
# Source: docs/reference/qbo.md sections 3 and 4 (TotalAmt "any value you supply is over-written", MetaData,
# domain, sparse; Item FullyQualifiedName read-only). HomeTotalAmt/RecurDataRef: read-only in the
# Intuit entity references.
READ_ONLY_FIELDS = frozenset(
    {
        "TotalAmt",
        "HomeTotalAmt",
        "MetaData",
        "domain",
        "sparse",
        "FullyQualifiedName",
        "RecurDataRef",
        "time",
    }
)

MISSING = "(none)"


@dataclass(frozen=True)
class FieldChange:
    """One owned field that differs; ``old`` and ``new`` are rendered for a dry-run table."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Change:
    """What a write would do: the action, the changed fields, and the body to send."""

    action: Action
    fields: list[FieldChange] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)


def diff(desired: Mapping[str, Any], existing: Mapping[str, Any] | None, owned: Iterable[str]) -> Change:
    """Compare the payload ionqbo wants with the object QBO holds.

    Args:
        desired: the payload mapping built (QBO JSON shape).
        existing: the object as read from QBO, or None when QBO has none.
        owned: the top-level fields ionqbo keeps in step (e.g. ``mapping.PO_OWNED_FIELDS``).

    Returns:
        A Change. ``create``: body is the desired payload and ``fields`` lists every value sent.
        ``update``: body is the full-update body (see the module docstring). ``unchanged``: no
        fields; body is what an update would send, for callers that want it.
    """
    owned_set = set(owned)
    keys = [k for k in desired if k in owned_set]
    if existing is None:
        changes: list[FieldChange] = []
        for key in keys:
            _compare(key, desired[key], None, changes)
        return Change("create", changes, copy.deepcopy(dict(desired)))
    changes = []
    for key in keys:
        _compare(key, desired[key], existing.get(key), changes)
    body = update_body(existing, {k: desired[k] for k in keys})
    if changes and "Line" in keys and isinstance(body.get("Line"), list) and isinstance(existing.get("Line"), list):
        body["Line"] = keep_line_ids(body["Line"], existing["Line"])
    return Change("update" if changes else "unchanged", changes, body)


_LINE_REFS = {"ItemBasedExpenseLineDetail": "ItemRef", "AccountBasedExpenseLineDetail": "AccountRef"}


def keep_line_ids(lines: list[Any], existing: list[Any]) -> list[Any]:
    """The new lines, each carrying the ``Id`` of the QBO line it replaces, where there is one.

    QBO reads a line with the ``Id`` of one of the object's lines as an update of that line, and a
    line without one as a new line; lines not sent are removed (docs/reference/qbo.md section 3). A bill
    received against a PO links to its lines (line ``LinkedTxn``), so replacing every line on each
    update would cut those links. A new line takes the Id of an unused QBO line of the same kind
    (item or category) and the same item or account: first one that also has the same amount,
    quantity, rate and description (the line did not change, so a bill linked to it stays with it
    even when a line before it was removed), then the first such line in line order. That line's
    ``LinkedTxn`` goes with it, and so does every field of it that ionqbo does not own
    (:func:`keep_line_fields`). Lines that match nothing are sent without an Id (created), and QBO
    lines that nothing matches are removed, as ION removed them.
    """
    unused: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for line in _ordered_lines(existing):
        key = _line_key(line)
        if key is not None and str(line.get("Id") or "").strip():
            unused.setdefault(key, []).append(line)
    taken: dict[int, Mapping[str, Any]] = {}
    for exact in (True, False):
        for index, line in enumerate(lines):
            key = _line_key(line)
            if index in taken or key is None or not unused.get(key) or line.get("Id"):
                continue
            candidates = unused[key]
            match = next((c for c in candidates if _same_line(c, line)), None) if exact else candidates[0]
            if match is not None:
                candidates.remove(match)
                taken[index] = match
    out = []
    for index, line in enumerate(lines):
        old = taken.get(index)
        out.append(line if old is None else keep_line_fields(line, old))
    return out


# The line fields ionqbo always sets (it owns them even when it sends them empty: an ION line whose
# description was cleared clears the QBO line's). Everything else on a QBO line it keeps belongs to
# the accountant, unless ionqbo sends it: the line's LinkedTxn (a bill), CustomField, ProjectRef,
# Received, and in the detail CustomerRef, BillableStatus, MarkupInfo, TaxInclusiveAmt,
# PriceLevelRef, and ClassRef / TaxCodeRef where ionqbo does not set them (Intuit's Finance.xsd,
# types Line, ItemLineDetail, ItemBasedExpenseLineDetail and AccountBasedExpenseLineDetail).
LINE_OWNED_KEYS = frozenset({"Amount", "Description", "DetailType", "LineNum"})  # LineNum: ionqbo orders the lines
DETAIL_OWNED_KEYS = {
    "ItemBasedExpenseLineDetail": frozenset({"ItemRef", "Qty", "UnitPrice"}),
    "AccountBasedExpenseLineDetail": frozenset({"AccountRef"}),
}


def keep_line_fields(line: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    """The line ionqbo sends, on top of the QBO line it replaces (same kind of line).

    The result carries the QBO line's ``Id`` and every field of it that ionqbo does not own
    (:data:`LINE_OWNED_KEYS`, :data:`DETAIL_OWNED_KEYS`, and what ``line`` itself sets), down to
    the fields of the line detail: a full update that left them out would clear them (QBO's
    omitted-means-null rule), so a customer, billable status or markup an accountant set stays.
    """
    detail_type = str(line.get("DetailType") or "")
    kept: dict[str, Any] = {k: copy.deepcopy(v) for k, v in old.items()
                            if k not in LINE_OWNED_KEYS and k != detail_type}
    for key, value in line.items():
        if key != detail_type:
            kept[key] = copy.deepcopy(value)
    new_detail = line.get(detail_type)
    old_detail = old.get(detail_type)
    if isinstance(new_detail, Mapping):
        owned = DETAIL_OWNED_KEYS.get(detail_type, frozenset())
        detail: dict[str, Any] = {}
        if isinstance(old_detail, Mapping) and old.get("DetailType") == detail_type:
            detail = {k: copy.deepcopy(v) for k, v in old_detail.items() if k not in owned}
        detail.update(copy.deepcopy(dict(new_detail)))
        kept[detail_type] = detail
    kept["Id"] = str(old["Id"])
    return kept


def _same_line(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """The line ionqbo would send equals the QBO line, in every value it sends."""
    changes: list[FieldChange] = []
    _compare("Line", new, old, changes)
    return not changes


def _line_key(line: Any) -> tuple[str, str] | None:
    if not isinstance(line, Mapping):
        return None
    detail_type = str(line.get("DetailType") or "")
    ref_name = _LINE_REFS.get(detail_type)
    detail = line.get(detail_type)
    if ref_name is None or not isinstance(detail, Mapping) or not isinstance(detail.get(ref_name), Mapping):
        return None
    return detail_type, str(detail[ref_name].get("value") or "")


def update_body(existing: Mapping[str, Any], replace: Mapping[str, Any]) -> dict[str, Any]:
    """A full-update body: ``existing`` without read-only fields, with ``replace`` applied.

    Args:
        existing: the object as read from QBO (keeps Id and SyncToken).
        replace: top-level fields to set; an empty value removes the field.

    Returns:
        A new dict; neither argument is modified.
    """
    body = {k: copy.deepcopy(v) for k, v in existing.items() if k not in READ_ONLY_FIELDS}
    for key, value in replace.items():
        if _is_empty(value):
            body.pop(key, None)
        else:
            body[key] = copy.deepcopy(value)
    return body


# ---- comparison ----------------------------------------------------------------------------


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    return isinstance(value, dict | list | tuple) and len(value) == 0


def _as_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _text(value: str) -> str:
    return value.replace("\r\n", "\n").strip()


def _scalar_equal(new: Any, old: Any) -> bool:
    if isinstance(new, bool) != isinstance(old, bool):
        return False
    if _is_number(new) or _is_number(old):
        a, b = _as_decimal(new), _as_decimal(old)
        if a is not None and b is not None:
            return a == b
    if isinstance(new, str) and isinstance(old, str):
        return _text(new) == _text(old)
    return bool(new == old)


def _is_ref(key: str, value: Any) -> bool:
    return key.endswith("Ref") and isinstance(value, Mapping)


def _ordered_lines(lines: list[Any]) -> list[Any]:
    """QBO lines in LineNum order when every line has a number, else as given."""
    numbered: list[tuple[Decimal, Any]] = []
    for line in lines:
        num = _as_decimal(line.get("LineNum")) if isinstance(line, Mapping) else None
        if num is None:
            return list(lines)
        numbered.append((num, line))
    return [line for _, line in sorted(numbered, key=lambda pair: pair[0])]


def _compare(path: str, new: Any, old: Any, out: list[FieldChange]) -> None:
    key = path.rsplit(".", 1)[-1]
    if _is_empty(new) and _is_empty(old):
        return
    if _is_ref(key, new) or _is_ref(key, old):
        new_v = new.get("value") if isinstance(new, Mapping) else new
        old_v = old.get("value") if isinstance(old, Mapping) else old
        if not _scalar_equal(_none_if_empty(new_v), _none_if_empty(old_v)):
            out.append(FieldChange(path, render(old), render(new)))
        return
    if isinstance(new, Mapping) and (old is None or isinstance(old, Mapping)):
        old_map: Mapping[str, Any] = old or {}
        for sub, value in new.items():
            _compare(f"{path}.{sub}", value, old_map.get(sub), out)
        return
    if isinstance(new, list | tuple) and (old is None or isinstance(old, list | tuple)):
        new_items = list(new)
        old_items = list(old or [])
        if key == "Line":
            old_items = _ordered_lines(old_items)
        for i in range(max(len(new_items), len(old_items))):
            item_path = f"{path}[{i + 1}]"
            if i >= len(old_items):
                out.append(FieldChange(item_path, MISSING, render(new_items[i])))
            elif i >= len(new_items):
                out.append(FieldChange(item_path, render(old_items[i]), MISSING))
            else:
                _compare(item_path, new_items[i], old_items[i], out)
        return
    if not _scalar_equal(_none_if_empty(new), _none_if_empty(old)):
        out.append(FieldChange(path, render(old), render(new)))


def _none_if_empty(value: Any) -> Any:
    return None if _is_empty(value) else value


# ---- rendering -----------------------------------------------------------------------------


def render(value: Any) -> str:
    """A value as text for a dry-run table: numbers plain, refs by value, objects as key=value."""
    if _is_empty(value):
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        number = _as_decimal(value)
        return _plain(number) if number is not None else str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        if set(value) <= {"value", "name"} and "value" in value:
            return str(value["value"])
        parts = [f"{k}={render(v)}" for k, v in _leaves("", value) if k not in {"Id", "LineNum"}]
        return ", ".join(parts)
    if isinstance(value, list | tuple):
        return "[" + "; ".join(render(v) for v in value) + "]"
    return str(value)


def _plain(number: Decimal) -> str:
    text = format(number.normalize(), "f")
    return "0" if text in {"-0", ""} else text


def _leaves(key: str, value: Any) -> list[tuple[str, Any]]:
    """Leaf values of an object, each named by its own key (``Amount``, ``ItemRef``, ``Qty``)."""
    if isinstance(value, Mapping) and not (set(value) <= {"value", "name"} and "value" in value):
        out: list[tuple[str, Any]] = []
        for sub, item in value.items():
            if sub != "DetailType" and not _is_empty(item):
                out.extend(_leaves(sub, item))
        return out
    return [(key, value)]
