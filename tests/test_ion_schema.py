"""Resolution of ionqbo's needs against small SDL schemas (pure: no HTTP)."""

from __future__ import annotations

import pytest
from graphql import build_schema

from ionqbo.errors import ConfigError
from ionqbo.ion import queries
from ionqbo.ion.schema import NEEDS, resolve

BASE = """
scalar DateTime
type Query {{
  purchaseOrders(filters: POFilters, first: Int, after: String): POConnection
  parts(filters: PartFilters, first: Int, after: String): PartConnection
}}
type PageInfo {{ hasNextPage: Boolean! endCursor: String }}
type POEdge {{ node: PurchaseOrder! }}
type POConnection {{ edges: [POEdge!]! pageInfo: PageInfo! }}
type PartEdge {{ node: Part! }}
type PartConnection {{ edges: [PartEdge!]! pageInfo: PageInfo! }}
input IDFilter {{ eq: ID in: [ID!] }}
input POFilters {{ id: IDFilter }}
input PartFilters {{ id: IDFilter }}
type Supplier {{ id: ID! name: String! }}
type PurchaseOrder {{ id: ID! _etag: String! status: String! supplier: Supplier lines: [Line!]! {po} }}
type Line {{ id: ID! quantity: Float! unitCost: Float totalCost: Float part: Part {line} }}
type Part {{ id: ID! _etag: String partNumber: String! }}
{extra}
"""


def schema(po: str = "", line: str = "expenseCode: String", extra: str = "") -> object:
    return build_schema(BASE.format(po=po, line=line, extra=extra))


def test_every_need_has_evidence_and_candidates() -> None:
    for need in NEEDS:
        assert need.candidates and need.evidence, need.key
        assert need.owner in ("po", "line", "fee", "part")


def test_first_candidate_wins_and_other_spellings_are_found() -> None:
    plan = resolve(schema())  # type: ignore[arg-type]
    assert plan.found["po.lines"].where == "PurchaseOrder.lines"
    assert plan.found["line.expenseCode"].where == "Line.expenseCode"
    assert plan.po is not None and plan.po.strategy == "scan"  # no updatedAt filter or sort
    assert "line.accountingClass" in [m.need.key for m in plan.optional_missing]


def test_an_object_typed_field_is_read_through_its_code() -> None:
    plan = resolve(schema(line="expenseCode: Code", extra="type Code { id: ID name: String code: String }"))  # type: ignore[arg-type]
    assert plan.found["line.expenseCode"].path == ("expenseCode", "code")
    node = plan.canonical("line", {"id": 1, "quantity": 2, "expenseCode": {"code": "6100", "name": "Tools"}})
    assert node["expenseCode"] == "6100" and node["quantity"] == 2


def test_a_missing_required_field_names_type_closest_names_and_setting() -> None:
    plan = resolve(schema(line="glExpense: String"))  # type: ignore[arg-type]
    [missing] = plan.blocking
    assert missing.need.key == "line.expenseCode"
    assert missing.type_name == "Line" and "glExpense" in missing.closest
    assert '[ion_fields] "line.expenseCode"' in missing.fix()


def test_an_override_is_used_and_a_wrong_one_is_a_settings_error() -> None:
    sdl = schema(line="glExpense: String")
    plan = resolve(sdl, overrides={"line.expenseCode": "glExpense"})  # type: ignore[arg-type]
    assert plan.blocking == [] and plan.found["line.expenseCode"].source == "setting"
    with pytest.raises(ConfigError) as info:
        resolve(sdl, overrides={"line.expenseCode": "glExpens"})  # type: ignore[arg-type]
    assert "Line has no field glExpens" in str(info.value) and "glExpense" in str(info.value)
    with pytest.raises(ConfigError, match="ionqbo reads no such thing"):
        resolve(sdl, overrides={"line.expensecode": "glExpense"})  # type: ignore[arg-type]


def test_sort_values_and_keyset_come_from_the_schema() -> None:
    sdl = BASE.format(po="updatedAt: DateTime", line="expenseCode: String", extra="""
enum POSort { id_ASC updatedAt_ASC updatedAt_DESC }
input TimeFilter { eq: DateTime gt: DateTime gte: DateTime }
""").replace("purchaseOrders(filters: POFilters,", "purchaseOrders(filters: POFilters, sort: [POSort],") \
        .replace("input POFilters { id: IDFilter }", "input POFilters { id: IDFilter updatedAt: TimeFilter }") \
        .replace("input IDFilter { eq: ID in: [ID!] }", "input IDFilter { eq: ID in: [ID!] notIn: [ID!] }")
    plan = resolve(build_schema(sdl))
    assert plan.po is not None
    assert (plan.po.sort_updated, plan.po.sort_id, plan.po.strategy) == ("updatedAt_ASC", "id_ASC", "keyset")
    docs = queries.build(plan)
    assert "$sort: [POSort]" in docs["PurchaseOrders"]
    assert queries.validate_documents(plan.schema, docs, records_only=True) == []


def test_statuses_are_checked_and_the_canceled_spelling_is_read() -> None:
    text = BASE.format(po="", line="expenseCode: String", extra="enum S { DRAFT ORDERED CANCELLED }") \
        .replace("status: String!", "status: S!")
    plan = resolve(build_schema(text), statuses=["ORDERED", "IN_REVIEW"])
    assert plan.canceled == "CANCELLED" and plan.status_out("CANCELED") == "CANCELLED"
    assert any("IN_REVIEW" in p and "DRAFT, ORDERED, CANCELLED" in p for p in plan.problems)
    assert plan.canonical("po", {"id": 1, "status": "CANCELLED"})["status"] == "CANCELED"
