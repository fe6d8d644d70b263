"""Adopting what a QBO company already holds: which QBO item an ION part gets (pure).

The sync and ``check-mappings`` both decide with :func:`match_item`, from the QBO items they looked up
in bulk, so the check and the sync never disagree. The rule (README, "A company that is not empty"),
in order, for one ION part:

1. **A mapping**: ``[items]`` in IONQBO_MAPPINGS names the QBO item id for the part number (or, in a
   ``[items."<part number>"]`` table, for one revision). The item must exist, be active, and be no
   other part's.
2. **The ledger**: the item ionqbo created or adopted for this part before, while it is active.
3. **The SKU** (``IONQBO_ITEM_MATCH=sku``, the default): the QBO items whose ``Sku`` is the part number
   (case and surrounding spaces ignored), leaving out the items already linked to another ION part:

   - the one whose name is the part's item name (the naming rule points at it), when it is an active
     inventory item: where several revisions share the SKU, each revision takes its own;
   - else the only one, when it is an active inventory item and the part is ION's latest revision (an
     older revision does not take an item that may be meant for the latest one);
   - else, when there are any, the part is an error that names each candidate and the fixes: several
     items, an inactive one, or one that is not an inventory item are never guessed at.

4. **The name**: the active item named as the naming rule says (when it has a SKU, it must be the part
   number).
5. **A new item**.

With ``IONQBO_ITEM_MATCH=name`` step 3 is skipped: items are matched by name only (ionqbo's behaviour
before SKU matching), for a company whose SKUs do not mean ION part numbers.

An item that is found (steps 1-4) keeps its name, its accounts and its quantity on hand: ionqbo then
keeps only :data:`ITEM_UPDATE_FIELDS` in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ionqbo.errors import MappingError
from ionqbo.ion.models import Part

MATCH_MODES = ("sku", "name")
DEFAULT_MATCH_MODE = "sku"
MAPPINGS_SOURCE = "IONQBO_MAPPINGS"
# What ionqbo keeps in step on an item it did not just create: never the name (the accountant's, and
# the reference people know the item by), never the accounts or the quantity on hand.
ITEM_UPDATE_FIELDS: tuple[str, ...] = ("Sku", "Description", "PurchaseDesc", "PurchaseCost")
# Item types a mapping may not point a PO line at (QBO: Category items hold no transactions, Group
# items are bundles the API cannot use).
_UNUSABLE_TYPES = frozenset({"Category", "Group"})

Item = Mapping[str, Any]


@dataclass(frozen=True)
class ItemMatch:
    """Which QBO item a part gets.

    Attributes:
        how: ``mapped`` (a mapping), ``linked`` (the ledger), ``sku`` (adopted by its SKU), ``name`` (the
            item with the part's item name, or the SKU item that also has that name), ``create`` (none:
            a new item), ``error`` (see ``error``).
        item: the QBO item, for mapped / linked / sku / name.
        error: why no item can be chosen, with the candidates and the fix.
    """

    how: str
    item: Item | None = None
    error: MappingError | None = None

    @property
    def adopted(self) -> bool:
        """An item ionqbo did not name: found by SKU or a mapping."""
        return self.how in ("sku", "mapped")


def sku_key(value: Any) -> str:
    """How SKUs are compared: surrounding whitespace dropped, case folded."""
    return str(value or "").strip().casefold()


def mapped_item_id(items: Mapping[str, str], revisions: Mapping[str, Mapping[str, str]], part: Part) -> str | None:
    """The QBO item id an ``[items]`` mapping names for ``part`` (a revision's own entry first)."""
    key = sku_key(part.part_number)
    per_revision = revisions.get(key) or {}
    found = per_revision.get(sku_key(part.revision))
    return found if found is not None else items.get(key)


def describe(item: Item, owners: Mapping[str, str] | None = None) -> str:
    """``item 57 "BRK-100" (Inventory, inactive, linked to part 11)``: a candidate, for people."""
    notes = [str(item.get("Type") or "no type")]
    if item.get("Active") is False:
        notes.append("inactive")
    owner = (owners or {}).get(str(item.get("Id")))
    if owner is not None:
        notes.append(f"linked to part {owner}")
    return f'item {item.get("Id")} "{item.get("Name")}" ({", ".join(notes)})'


def _usable(item: Item) -> bool:
    return item.get("Active") is not False and item.get("Type") == "Inventory"


def _label(part: Part) -> str:
    return f"part {part.id} ({part.part_number} rev {part.revision or '-'})"


def _error(part: Part, message: str, hint: str, code: str) -> ItemMatch:
    return ItemMatch("error", error=MappingError(f"{_label(part)}: {message}", kind="part", ion_id=part.id,
                                                 field="partNumber", hint=hint, code=code))


def _mapping_fix(part: Part) -> str:
    return (f'map the part to the right QBO item in {MAPPINGS_SOURCE}: [items] "{part.part_number}" = "<item id>" '
            f'(or [items."{part.part_number}"] "{part.revision}" = "<item id>" for this revision only)')


def match_item(
    part: Part,
    name: str,
    *,
    mode: str = DEFAULT_MATCH_MODE,
    mapped_id: str | None = None,
    mapped: Item | None = None,
    linked: Item | None = None,
    sku_items: Sequence[Item] = (),
    named: Item | None = None,
    owners: Mapping[str, str] | None = None,
) -> ItemMatch:
    """Choose the QBO item for one part (the rule in the module docstring).

    Args:
        part: the ION part.
        name: its item name (:func:`ionqbo.mapping.item_name`).
        mode: ``sku`` or ``name`` (IONQBO_ITEM_MATCH).
        mapped_id: the item id an ``[items]`` mapping names, if any; ``mapped`` is that item as QBO has
            it (None: QBO has no such item).
        linked: the item the ledger links to the part, as QBO has it now (None: no link, or gone).
        sku_items: every QBO item (active or not, of any type) whose SKU is the part number.
        named: the active QBO item with the name ``name``, if any.
        owners: QBO item id -> the other ION part each item is already linked to.
    """
    owners = {k: v for k, v in (owners or {}).items() if v != part.id}
    if mapped_id is not None:
        if mapped is None:
            return _error(part, f"{MAPPINGS_SOURCE} maps it to QBO item {mapped_id}, which QuickBooks does not have",
                          f"correct the [items] entry in {MAPPINGS_SOURCE}", "item_mapping")
        if mapped.get("Active") is False or mapped.get("Type") in _UNUSABLE_TYPES:
            return _error(part, f"{MAPPINGS_SOURCE} maps it to {describe(mapped)}, which a purchase order cannot use",
                          f"make the item active in QuickBooks, or correct the [items] entry in {MAPPINGS_SOURCE}",
                          "item_mapping")
        owner = owners.get(str(mapped.get("Id")))
        if owner is not None:
            return _error(part, f"{MAPPINGS_SOURCE} maps it to {describe(mapped, owners)}",
                          f"one QBO item per ION part: correct the [items] entries in {MAPPINGS_SOURCE}", "item_mapping")
        return ItemMatch("mapped", mapped)
    if linked is not None and linked.get("Active") is not False:
        return ItemMatch("linked", linked)
    wanted = sku_key(part.part_number)
    if mode == "sku" and wanted:
        candidates = [i for i in sku_items if sku_key(i.get("Sku")) == wanted and str(i.get("Id")) not in owners]
        same_name = [i for i in candidates if str(i.get("Name", "")).casefold() == name.casefold()]
        if len(same_name) == 1 and _usable(same_name[0]):
            return ItemMatch("name", same_name[0])
        if len(candidates) == 1 and _usable(candidates[0]) and part.is_latest_revision:
            return ItemMatch("sku", candidates[0])
        if candidates:
            return _ambiguous(part, name, candidates, [i for i in sku_items if str(i.get("Id")) in owners], owners)
    if named is not None:
        sku = named.get("Sku")
        if sku_key(sku) and sku_key(sku) != wanted:
            return _error(part, f"QBO item {named.get('Name')!r} (Id {named.get('Id')}) belongs to SKU {sku!r}, "
                          f"not {part.part_number!r}",
                          "rename one of the two QBO items, or change IONQBO_ITEM_NAME_TEMPLATE", "mapping")
        return ItemMatch("name", named)
    return ItemMatch("create")


def _ambiguous(part: Part, name: str, candidates: list[Item], taken: list[Item], owners: Mapping[str, str]) -> ItemMatch:
    listed = "; ".join(describe(i, owners) for i in [*candidates, *taken])
    if len(candidates) > 1:
        why = f"{len(candidates)} QBO items carry its SKU {part.part_number!r} and none is named {name!r}"
    elif candidates[0].get("Active") is False:
        why = f"the only QBO item with its SKU {part.part_number!r} is inactive"
    elif candidates[0].get("Type") != "Inventory":
        why = f"the only QBO item with its SKU {part.part_number!r} is a {candidates[0].get('Type')} item, not inventory"
    else:
        why = (f"the only QBO item with its SKU {part.part_number!r} is not named {name!r}, and this is not ION's "
               "latest revision of the part (the item may be meant for that one)")
    fixes = [_mapping_fix(part)]
    inactive = [str(i.get("Id")) for i in candidates if i.get("Active") is False]
    if inactive and len(candidates) == 1:
        fixes.insert(0, f"make item {inactive[0]} active in QuickBooks")
    fixes.append("or set IONQBO_ITEM_MATCH=name to match items by name only (ionqbo then creates "
                 f'"{name}" unless an item has that name)')
    return _error(part, f"{why}: {listed}", "; ".join(fixes), "item_ambiguous")


def sku_lookup_values(parts: Iterable[Part]) -> list[str]:
    """The part numbers to look up by SKU (distinct, as written)."""
    seen: dict[str, str] = {}
    for part in parts:
        number = part.part_number.strip()
        if number:
            seen.setdefault(sku_key(number), number)
    return list(seen.values())


def reserved_by_name(wanted: Iterable[tuple[Part, str]], by_sku: Mapping[str, Sequence[Item]]) -> dict[str, str]:
    """QBO item id -> ION part id, for each SKU candidate named exactly as one of these parts' items.

    Such an item is that part's (the naming rule points at it), so the other revisions that share the
    SKU do not count it as a candidate, whichever part is matched first.
    """
    out: dict[str, str] = {}
    for part, name in wanted:
        for item in by_sku.get(sku_key(part.part_number), ()):
            if str(item.get("Name", "")).casefold() == name.casefold() and _usable(item):
                out.setdefault(str(item.get("Id")), part.id)
    return out
