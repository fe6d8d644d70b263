"""The item-matching rule (ionqbo.item_match.match_item): pure, one case per branch."""

from __future__ import annotations

from typing import Any

from ionqbo.ion.models import Part
from ionqbo.item_match import ItemMatch, mapped_item_id, match_item, reserved_by_name

NAME = "BRK-100 Rev B"


def part(revision: str = "B", *, latest: bool = True, part_id: str = "10") -> Part:
    return Part(id=part_id, part_number="BRK-100", revision=revision, is_latest_revision=latest)


def item(item_id: str, name: str, sku: str = "BRK-100", *, kind: str = "Inventory", active: bool = True) -> dict[str, Any]:
    return {"Id": item_id, "Name": name, "Sku": sku, "Type": kind, "Active": active}


def test_one_active_inventory_item_with_the_sku_is_adopted_whatever_its_name() -> None:
    match = match_item(part(), NAME, sku_items=[item("7", "Bracket")])
    assert (match.how, match.item and match.item["Id"], match.adopted) == ("sku", "7", True)


def test_the_sku_is_compared_without_case_or_spaces() -> None:
    assert match_item(part(), NAME, sku_items=[item("7", "Bracket", " brk-100 ")]).how == "sku"


def test_among_several_revisions_the_naming_rule_points_at_one() -> None:
    items = [item("7", "BRK-100 Rev A"), item("8", "brk-100 rev b")]
    match = match_item(part(), NAME, sku_items=items)
    assert (match.how, match.item and match.item["Id"], match.adopted) == ("name", "8", False)


def test_several_candidates_none_named_is_an_error_naming_each() -> None:
    match = match_item(part(), NAME, sku_items=[item("7", "Bracket"), item("8", "Bracket (old)")])
    assert match.how == "error" and match.error is not None
    assert 'item 7 "Bracket" (Inventory)' in match.error.message and 'item 8 "Bracket (old)"' in match.error.message
    assert "[items]" in (match.error.hint or "") and "IONQBO_ITEM_MATCH=name" in (match.error.hint or "")
    assert match.error.code == "item_ambiguous" and match.error.ion_id == "10"


def test_an_inactive_or_non_inventory_item_is_never_adopted() -> None:
    inactive = match_item(part(), NAME, sku_items=[item("7", "Bracket", active=False)])
    assert inactive.how == "error" and inactive.error is not None
    assert "inactive" in inactive.error.message and "make item 7 active" in (inactive.error.hint or "")
    other = match_item(part(), NAME, sku_items=[item("9", "Bracket svc", kind="NonInventory")])
    assert other.how == "error" and other.error is not None and "NonInventory" in other.error.message
    # named by the rule but inactive: still an error, not a new item beside it
    assert match_item(part(), NAME, sku_items=[item("7", NAME, active=False)]).how == "error"


def test_an_older_revision_does_not_take_a_lone_item_meant_for_the_latest() -> None:
    old = part("A", latest=False, part_id="11")
    match = match_item(old, "BRK-100 Rev A", sku_items=[item("7", "Bracket")])
    assert match.how == "error" and match.error is not None and "latest revision" in match.error.message
    # once the latest revision holds it, the older one gets its own item
    assert match_item(old, "BRK-100 Rev A", sku_items=[item("7", "Bracket")], owners={"7": "10"}).how == "create"


def test_items_linked_to_another_part_are_not_candidates() -> None:
    items = [item("7", "BRK-100 Rev A"), item("8", "Bracket")]
    match = match_item(part(), NAME, sku_items=items, owners={"7": "11"})
    assert (match.how, match.item and match.item["Id"]) == ("sku", "8")
    # the part's own link does not count against it
    assert match_item(part(), NAME, sku_items=[item("8", "Bracket")], owners={"8": "10"}).how == "sku"


def test_reserved_by_name_keeps_each_revisions_item_for_it_whatever_the_order() -> None:
    items = [item("7", "BRK-100 Rev A"), item("8", "Bracket")]
    owners = reserved_by_name([(part(), NAME), (part("A", latest=False, part_id="11"), "BRK-100 Rev A")],
                              {"brk-100": items})
    assert owners == {"7": "11"}
    assert match_item(part(), NAME, sku_items=items, owners=owners).item == items[1]


def test_the_ledger_link_wins_while_the_item_is_active() -> None:
    linked = item("5", "Renamed by the accountant")
    assert match_item(part(), NAME, linked=linked, sku_items=[item("7", "Bracket")]) == ItemMatch("linked", linked)
    gone = match_item(part(), NAME, linked={**linked, "Active": False}, sku_items=[{**linked, "Active": False}])
    assert gone.how == "error"  # made inactive in QBO: said, not replaced by a second item


def test_a_mapping_wins_and_is_checked() -> None:
    chosen = item("9", "TVA", kind="NonInventory")
    assert match_item(part(), NAME, mapped_id="9", mapped=chosen, sku_items=[item("7", "x"), item("8", "y")]).how == \
        "mapped"
    missing = match_item(part(), NAME, mapped_id="9", mapped=None)
    assert missing.how == "error" and missing.error is not None and "does not have" in missing.error.message
    assert match_item(part(), NAME, mapped_id="9", mapped={**chosen, "Active": False}).how == "error"
    assert match_item(part(), NAME, mapped_id="9", mapped=chosen, owners={"9": "12"}).how == "error"


def test_mapped_item_id_prefers_the_revisions_own_entry() -> None:
    items, revisions = {"brk-100": "50"}, {"brk-100": {"a": "51"}}
    assert mapped_item_id(items, revisions, part("A")) == "51"
    assert mapped_item_id(items, revisions, part("B")) == "50"
    assert mapped_item_id({}, {}, part()) is None


def test_name_matching_when_no_sku_matches_and_in_name_mode() -> None:
    named = item("3", NAME, sku="")
    assert match_item(part(), NAME, named=named).how == "name"
    taken = match_item(part(), NAME, named=item("3", NAME, sku="OTHER"))
    assert taken.how == "error" and taken.error is not None and "belongs to SKU 'OTHER'" in taken.error.message
    assert match_item(part(), NAME).how == "create"
    # IONQBO_ITEM_MATCH=name: SKU candidates are not looked at
    assert match_item(part(), NAME, mode="name", sku_items=[item("7", "Bracket")]).how == "create"


def test_the_items_table_of_the_mappings_file() -> None:
    import pytest

    from ionqbo.errors import ConfigError
    from ionqbo.mapping import parse_mappings

    maps = parse_mappings('[items]\n"BRK-100" = "57"\n[items."NAS1352-3"]\nA = 60\n')
    assert maps.items == {"brk-100": "57"} and maps.item_revisions == {"nas1352-3": {"a": "60"}}
    with pytest.raises(ConfigError) as info:
        parse_mappings('[items]\n"BRK-100" = "x"\n[items."NAS1352-3"]\nA = "y"\n')
    assert info.value.problems == [
        'IONQBO_MAPPINGS: [items] "BRK-100" = \'x\' must be a QBO item id (the digits in its QuickBooks URL, e.g. "41")',
        'IONQBO_MAPPINGS: [items."NAS1352-3"] "A" = \'y\' must be a QBO item id (the digits in its QuickBooks URL, '
        'e.g. "41")',
    ]
