"""The ION emulator over real HTTP: token endpoint, GraphQL (docs/reference/ion-api.md section 9), store, admin, faults."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from graphql import build_client_schema, build_schema, get_introspection_query, print_schema

from ionqbo.sandbox.httpd import Request, Response, Server
from ionqbo.sandbox.ion import SCHEMA_EXTENSIONS, SCHEMA_PATH, IonEmulator

TOKEN_PATH = "/realms/api-keys/protocol/openid-connect/token"
SECRET = "s3cret-value-for-tests"
ISO_MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


class Clock:
    """A settable clock (seconds since the epoch)."""

    def __init__(self, now: float = 1_790_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _po(po_id: int, status: str, supplier: int | None, updated: str, **extra: Any) -> dict[str, Any]:
    return {"id": po_id, "status": status, "supplierId": supplier, "currencyId": 1, "updatedAt": updated,
            "estimatedTotalCost": 100, "purchaseOrderLines": [], "fees": [], **extra}


DATA: dict[str, Any] = {
    "organization": {"id": 7, "domain": "acme.com"},
    "me": 42,
    "users": [{"id": 42, "name": "Ada Lovelace", "email": "ada@acme.com"},
              {"id": 3660, "name": "Grace", "email": "grace@acme.com"}],
    "suppliers": [{"id": 1, "name": "Widgets Inc"}, {"id": 2, "name": "Bolts Ltd"},
                  {"id": 3, "name": "Acme Corp"}],
    "currencies": [{"id": 1, "code": "USD", "name": "US Dollar"}],
    "parts": [
        {"id": 10, "partNumber": "820412-001", "revision": "B", "description": "Bracket",
         "trackingType": "LOT", "cost": 12.5, "unitOfMeasure": "each", "isLatestRevision": True,
         "updatedAt": "2026-01-01T00:00:00+00:00"},
        {"id": 11, "partNumber": "820412-001", "revision": "A", "description": "Bracket (old)",
         "trackingType": None, "cost": 11, "unitOfMeasure": "each", "isLatestRevision": False,
         "updatedAt": "2026-01-05T00:00:00+00:00"},
        {"id": 12, "partNumber": "ion-12", "revision": "A", "description": "Part for API docs.",
         "trackingType": "SERIAL", "cost": None, "unitOfMeasure": "kg", "isLatestRevision": True,
         "updatedAt": "2026-01-03T00:00:00+00:00"},
    ],
    "purchaseOrders": [
        _po(1042, "ORDERED", 1, "2026-01-01T00:00:00.000000+00:00", estimatedTotalCost=1250.5,
            shippingAddress={"name": "Dock 4", "street1": "1 Main St", "street2": None, "city": "Austin",
                             "state": "TX", "postalCode": "78701", "country": "US"},
            notes="rush",
            purchaseOrderLines=[{"id": 5001, "partId": 10, "quantity": 4, "unitCost": 12.5, "totalCost": 50,
                                 "description": "Bracket, machined", "expenseCode": None,
                                 "accountingClass": "Engineering", "needDate": "2026-12-01",
                                 "status": "ORDERED"},
                                {"id": 5002, "partId": None, "quantity": 1, "unitCost": 30, "totalCost": 30,
                                 "description": "Calibration", "expenseCode": "6100", "accountingClass": None,
                                 "needDate": None, "status": "ORDERED"}],
            fees=[{"id": 7, "name": "Shipping", "value": 25}]),
        _po(1043, "DRAFT", 2, "2026-01-02T00:00:00.000000+00:00"),
        _po(1044, "ORDERED", 2, "2026-01-03T00:00:00.000000+00:00"),
        _po(1045, "CANCELED", None, "2026-01-02T00:00:00.000000+00:00"),
    ],
}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emu(clock: Clock) -> IonEmulator:
    emulator = IonEmulator(client_secret=SECRET, clock=clock, seed=7, token_lifetime=300)
    emulator.load(DATA)
    return emulator


class Ion:
    """A tiny client for the tests: one session, one token."""

    def __init__(self, url: str, emulator: IonEmulator) -> None:
        self.url = url
        self.emu = emulator
        self.http = requests.Session()
        self.token = ""

    def get_token(self, **form: str) -> requests.Response:
        data = {"grant_type": "client_credentials", "client_id": self.emu.client_id,
                "client_secret": SECRET, **form}
        return self.http.post(self.url + TOKEN_PATH, data=data, timeout=5)

    def post(self, body: Any, auth: str | None = None) -> requests.Response:
        if not self.token:
            self.token = self.get_token().json()["access_token"]
        header = auth if auth is not None else f"Bearer {self.token}"
        return self.http.post(self.url + "/graphql", json=body, headers={"Authorization": header}, timeout=5)

    def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.post({"query": query, "variables": variables or {}})
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        result = self.gql(query, variables)
        assert "errors" not in result, result
        data: dict[str, Any] = result["data"]
        return data

    def admin(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.http.request(method, f"{self.url}/_admin/{path}", json=body, timeout=5)


class _Current:
    """The App of one module-wide server: forwards to the current test's emulator.

    (Stopping a Server waits for its poll interval, 0.5 s; one server per module keeps the file fast.)
    """

    app: IonEmulator | None = None

    def __call__(self, request: Request) -> Response:
        assert self.app is not None
        return self.app(request)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Server, _Current]]:
    current = _Current()
    with Server(current) as running:
        yield running, current


@pytest.fixture
def ion(emu: IonEmulator, server: tuple[Server, _Current]) -> Iterator[Ion]:
    running, current = server
    current.app = emu
    client = Ion(running.url, emu)
    yield client
    client.http.close()
    current.app = None


def _cursor(n: int) -> str:
    return base64.b64encode(f"arrayconnection:{n}".encode()).decode()


# ---- token endpoint ------------------------------------------------------------------------------


def test_token_success_is_keycloak_shaped(ion: Ion) -> None:
    response = ion.get_token(audience="https://api.buildwithion.com")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "refresh_expires_in", "token_type",
                         "not-before-policy", "scope"}
    assert (body["expires_in"], body["refresh_expires_in"], body["token_type"]) == (300, 0, "Bearer")
    assert body["scope"] == "profile email"
    assert len(body["access_token"]) >= 32
    assert ion.get_token().json()["access_token"] != body["access_token"]


def test_token_by_http_basic_and_legacy_path(ion: Ion) -> None:
    response = ion.http.post(ion.url + "/auth" + TOKEN_PATH, data={"grant_type": "client_credentials"},
                             auth=(ion.emu.client_id, SECRET), timeout=5)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert ion.post({"query": "{ me { id } }"}, auth=f"Bearer {token}").json() == {"data": {"me": {"id": 42}}}


@pytest.mark.parametrize(("form", "status", "error"), [
    pytest.param({"client_secret": "wrong"}, 401, "unauthorized_client", id="bad-secret"),
    pytest.param({"client_id": "someone-else"}, 401, "unauthorized_client", id="unknown-client"),
    pytest.param({"grant_type": "password"}, 400, "unsupported_grant_type", id="grant-type"),
    pytest.param({"grant_type": ""}, 400, "invalid_request", id="no-grant-type"),
])
def test_token_errors(ion: Ion, form: dict[str, str], status: int, error: str) -> None:
    response = ion.get_token(**form)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert SECRET not in response.text


def test_bad_credentials_body_is_keycloaks(ion: Ion) -> None:
    assert ion.get_token(client_secret="nope").json() == {
        "error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"}


@pytest.mark.parametrize("scheme", ["Bearer {}", "Token {}", "{}", "bearer {}"])
def test_all_header_forms_are_accepted(ion: Ion, scheme: str) -> None:
    token = ion.get_token().json()["access_token"]
    response = ion.post({"query": "{ me { id } }"}, auth=scheme.format(token))
    assert response.status_code == 200
    assert response.json() == {"data": {"me": {"id": 42}}}


@pytest.mark.parametrize("auth", ["", "Bearer not-a-token", "Basic abc def"])
def test_missing_or_unknown_token_is_401(ion: Ion, auth: str) -> None:
    response = ion.post({"query": "{ me { id } }"}, auth=auth)
    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized"}


def test_token_expires_by_the_clock_and_by_admin(ion: Ion, clock: Clock) -> None:
    assert ion.post({"query": "{ me { id } }"}).status_code == 200
    clock.now += 299
    assert ion.post({"query": "{ me { id } }"}).status_code == 200
    clock.now += 1
    assert ion.post({"query": "{ me { id } }"}).status_code == 401
    ion.token = ""
    assert ion.post({"query": "{ me { id } }"}).status_code == 200
    assert ion.admin("POST", "expire-tokens").status_code == 200
    assert ion.post({"query": "{ me { id } }"}).status_code == 401


# ---- the documented exchanges (docs/reference/ion-api.md section 9) -----------------------------------------------


def test_9_2_pagination(ion: Ion) -> None:
    ion.emu.load({"parts": [{"id": i, "partNumber": f"P{i}", "revision": "A", "isLatestRevision": True}
                            for i in range(20, 70, 2)]})  # 25 parts: 20, 22, ..., 68
    query = ("{ parts(first: 5) { edges { node { id } } "
             "pageInfo { endCursor hasNextPage totalCount count } } }")
    assert ion.data(query) == {"parts": {
        "edges": [{"node": {"id": 20}}, {"node": {"id": 22}}, {"node": {"id": 24}}, {"node": {"id": 26}},
                  {"node": {"id": 28}}],
        "pageInfo": {"endCursor": _cursor(4), "hasNextPage": True, "totalCount": 25, "count": 5}}}
    after = ion.data('{ parts(first: 5, after: "YXJyYXljb25uZWN0aW9uOjE5") { edges { node { id } } '
                     "pageInfo { endCursor hasNextPage totalCount count } } }")["parts"]
    assert [e["node"]["id"] for e in after["edges"]] == [60, 62, 64, 66, 68]
    assert after["pageInfo"] == {"endCursor": _cursor(24), "hasNextPage": False, "totalCount": 25, "count": 5}


def test_9_3_who_am_i(ion: Ion) -> None:
    response = ion.post({"query": "query { me { id name email organization { id domain } } }"})
    assert response.json() == {"data": {"me": {"id": 42, "name": "Ada Lovelace", "email": "ada@acme.com",
                                               "organization": {"id": 7, "domain": "acme.com"}}}}


PURCHASE_ORDERS_9_4 = """
query PurchaseOrders($filters: PurchaseOrdersInputFilters, $first: Int, $after: String) {
  purchaseOrders(filters: $filters, first: $first, after: $after) {
    edges { node { id _etag status estimatedTotalCost currencyId currency { id }
                   fees { id } approvals { id } approvalRequests { id } } }
    pageInfo { endCursor hasNextPage totalCount count }
  }
}
"""


def test_9_4_purchase_orders_list(ion: Ion) -> None:
    # The example query runs unchanged: approvals / approvalRequests are served as schema extensions.
    variables = {"filters": {"status": {"eq": "ORDERED"}, "id": {"eq": 1042}}, "first": 50}
    data = ion.data(PURCHASE_ORDERS_9_4, variables)
    etag = data["purchaseOrders"]["edges"][0]["node"]["_etag"]
    assert isinstance(etag, str)
    assert etag
    assert data == {"purchaseOrders": {"edges": [{"node": {
        "id": 1042, "_etag": etag, "status": "ORDERED", "estimatedTotalCost": 1250.5, "currencyId": 1,
        "currency": {"id": 1}, "fees": [{"id": 7}], "approvals": [], "approvalRequests": []}}],
        "pageInfo": {"endCursor": "YXJyYXljb25uZWN0aW9uOjA=", "hasNextPage": False, "totalCount": 1,
                     "count": 1}}}


def test_purchase_order_nested_objects(ion: Ion) -> None:
    node = ion.data("""query($id: ID!) { purchaseOrder(id: $id) {
        supplier { id name } currency { id code name } shippingAddress { name city postalCode }
        notes createdAt updatedAt
        purchaseOrderLines { id quantity unitCost totalCost expenseCode accountingClass needDate status
                             part { id partNumber revision unitOfMeasure { id type } } purchaseOrder { id } }
        fees { id _etag name value } } }""", {"id": "1042"})["purchaseOrder"]
    assert node["supplier"] == {"id": 1, "name": "Widgets Inc"}
    assert node["currency"] == {"id": 1, "code": "USD", "name": "US Dollar"}
    assert node["shippingAddress"] == {"name": "Dock 4", "city": "Austin", "postalCode": "78701"}
    assert node["notes"] == "rush"
    assert node["updatedAt"] == "2026-01-01T00:00:00.000000+00:00"
    line, expense = node["purchaseOrderLines"]
    assert line == {"id": 5001, "quantity": 4, "unitCost": 12.5, "totalCost": 50, "expenseCode": None,
                    "accountingClass": "Engineering", "needDate": "2026-12-01", "status": "ORDERED",
                    "part": {"id": 10, "partNumber": "820412-001", "revision": "B",
                             "unitOfMeasure": {"id": 1, "type": "each"}},
                    "purchaseOrder": {"id": 1042}}
    assert expense["part"] is None
    assert expense["expenseCode"] == "6100"
    assert node["fees"][0]["name"] == "Shipping"
    assert node["fees"][0]["value"] == 25
    assert ion.data('{ purchaseOrder(id: "9999") { id } part(id: 9999) { id } }') == {
        "purchaseOrder": None, "part": None}


def test_9_8_parts_list(ion: Ion) -> None:
    query = """query GetParts($filters: PartsInputFilters, $first: Int) {
      parts(filters: $filters, first: $first) { edges { node { id partNumber description quantity } } } }"""
    variables = {"filters": {"partNumber": {"eq": "ion-12"}}, "first": 10}
    assert ion.data(query, variables) == {"parts": {"edges": [{"node": {
        "id": 12, "partNumber": "ion-12", "description": "Part for API docs.", "quantity": 0}}]}}
    query = query.replace("quantity", "revision trackingType")
    assert ion.data(query, variables) == {"parts": {"edges": [{"node": {
        "id": 12, "partNumber": "ion-12", "description": "Part for API docs.", "revision": "A",
        "trackingType": "SERIAL"}}]}}


def test_9_9_suppliers(ion: Ion) -> None:
    query = """query GetSupplierAttributes($supplierFilters: SuppliersInputFilters, $first: Int,
                                           $after: String) {
      suppliers(filters: $supplierFilters, first: $first, after: $after) {
        edges { node { id name Attributes { key value type } } } pageInfo { hasNextPage endCursor } } }"""
    assert ion.data(query, {"first": 100, "supplierFilters": {"name": {"eq": "Acme Corp"}}}) == {
        "suppliers": {"edges": [{"node": {"id": 3, "name": "Acme Corp", "Attributes": []}}],
                      "pageInfo": {"hasNextPage": False, "endCursor": "YXJyYXljb25uZWN0aW9uOjA="}}}


NOTIFY = """mutation notification($input: DispatchNotificationInput!) {
  dispatchNotification(input: $input) { response { messageId } } }"""


def test_9_10_notification(ion: Ion) -> None:
    notice = {"userId": 3660, "notificationType": "WARNING", "title": "PO Versioned & PDF Generated",
              "description": "Purchase order versioned and PDF file generated. Please refresh.",
              "linkText": "This is the link", "path": "https://staging.firstresonance.io/"}
    data = ion.data(NOTIFY, {"input": notice})
    message_id = data["dispatchNotification"]["response"]["messageId"]
    assert isinstance(message_id, str)
    assert len(message_id) == 36
    sent = ion.admin("GET", "notifications").json()
    assert len(sent) == 1
    assert sent[0]["messageId"] == message_id
    assert sent[0]["userId"] == "3660"
    assert sent[0]["title"] == notice["title"]
    assert ion.emu.notifications == sent


def test_notification_to_unknown_user_is_an_error(ion: Ion) -> None:
    result = ion.gql(NOTIFY, {"input": {"userId": 1, "notificationType": "WARNING", "title": "t"}})
    assert result["data"] == {"dispatchNotification": None}
    assert result["errors"][0]["path"] == ["dispatchNotification"]
    assert "1" in result["errors"][0]["message"]
    assert ion.emu.notifications == []


COUNT_POS = "query($f: PurchaseOrdersInputFilters) { purchaseOrders(filters: $f) { pageInfo { count } } }"


@pytest.mark.parametrize(("query", "variables", "fragment"), [
    pytest.param("{ parts(first: 2) { edges { node { id } }", None, "Syntax Error", id="syntax"),
    pytest.param("{ parts { nope } }", None, "Cannot query field 'nope'", id="unknown-field"),
    pytest.param('{ parts(after: "garbage") { pageInfo { count } } }', None, "Invalid cursor",
                 id="bad-cursor"),
    pytest.param('{ parts(after: "YXJyYXljb25uZWN0aW9uOng=") { pageInfo { count } } }', None,
                 "Invalid cursor", id="cursor-not-a-number"),
    pytest.param("{ parts(first: -1) { pageInfo { count } } }", None, "non-negative", id="negative-first"),
    pytest.param(COUNT_POS, {"f": {"updatedAt": {"gte": "2026-01-01T00:00:00"}}}, "no UTC offset",
                 id="naive-datetime"),
    pytest.param(COUNT_POS, {"f": {"status": {"eq": "ordered"}}}, "ordered", id="bad-enum"),
])
def test_9_11_errors_are_in_the_errors_array_with_200(
        ion: Ion, query: str, variables: dict[str, Any] | None, fragment: str) -> None:
    result = ion.gql(query, variables)
    assert fragment in result["errors"][0]["message"]
    assert result.get("data") in (None, {"parts": None}, {"purchaseOrders": None})


def test_resolver_error_carries_locations_and_path(ion: Ion) -> None:
    result = ion.gql('{ me { id } parts(after: "x") { pageInfo { count } } }')
    assert result["data"] == {"me": {"id": 42}, "parts": None}
    assert result["errors"][0]["path"] == ["parts"]
    assert result["errors"][0]["locations"] == [{"line": 1, "column": 13}]


def test_9_12_batch(ion: Ion) -> None:
    response = ion.post([{"query": "{ me { id } }"}, {"query": "{ nope }"},
                         {"query": "query P($id: ID!) { part(id: $id) { partNumber } }",
                          "variables": {"id": 12}}])
    assert response.status_code == 200
    first, second, third = response.json()
    assert first == {"data": {"me": {"id": 42}}}
    assert "nope" in second["errors"][0]["message"]
    assert third == {"data": {"part": {"partNumber": "ion-12"}}}


@pytest.mark.parametrize(("body", "status"), [
    pytest.param(b"{not json", 400, id="malformed"),
    pytest.param(b"[]", 400, id="empty-batch"),
    pytest.param(b'{"variables": {}}', 400, id="no-query"),
    pytest.param(b'"just a string"', 400, id="not-an-object"),
])
def test_malformed_requests(ion: Ion, body: bytes, status: int) -> None:
    ion.post({"query": "{ me { id } }"})  # fetch a token
    response = ion.http.post(ion.url + "/graphql", data=body, timeout=5,
                             headers={"Authorization": ion.token, "Content-Type": "application/json"})
    assert response.status_code == status
    assert response.json()["errors"][0]["message"]


def test_introspection_works(ion: Ion) -> None:
    data = ion.data('{ __schema { queryType { name } } __type(name: "PurchaseOrdersInputFilters") '
                    "{ inputFields { name } } }")
    assert data["__schema"] == {"queryType": {"name": "Query"}}
    assert [f["name"] for f in data["__type"]["inputFields"]] == ["id", "status", "supplierId", "updatedAt"]


# ---- filters, sort, paging -----------------------------------------------------------------------------

PO_QUERY = """query($f: PurchaseOrdersInputFilters, $s: [PurchaseOrderSortEnum]) {
  purchaseOrders(filters: $f, sort: $s) { edges { node { id } } } }"""
T2 = "2026-01-02T00:00:00+00:00"


@pytest.mark.parametrize(("filters", "ids"), [
    pytest.param({"id": {"eq": "1043"}}, [1043], id="id-eq"),
    pytest.param({"id": {"eq": 1043}}, [1043], id="id-eq-int"),
    pytest.param({"id": {"neq": 1043}}, [1042, 1044, 1045], id="id-neq"),
    pytest.param({"id": {"in": ["1042", 1044, "77"]}}, [1042, 1044], id="id-in"),
    pytest.param({"id": {"notIn": [1042]}}, [1043, 1044, 1045], id="id-notIn"),
    pytest.param({"status": {"eq": "ORDERED"}}, [1042, 1044], id="status-eq"),
    pytest.param({"status": {"neq": "ORDERED"}}, [1043, 1045], id="status-neq"),
    pytest.param({"status": {"in": ["DRAFT", "CANCELED"]}}, [1043, 1045], id="status-in"),
    pytest.param({"supplierId": {"eq": 2}}, [1043, 1044], id="supplier-eq"),
    pytest.param({"supplierId": {"neq": 2}}, [1042], id="supplier-neq-excludes-null"),
    pytest.param({"supplierId": {"eq": None}}, [1045], id="supplier-is-null"),
    pytest.param({"updatedAt": {"eq": T2}}, [1043, 1045], id="updated-eq"),
    pytest.param({"updatedAt": {"eq": "2026-01-02T01:00:00+01:00"}}, [1043, 1045], id="updated-eq-offset"),
    pytest.param({"updatedAt": {"gt": T2}}, [1044], id="updated-gt"),
    pytest.param({"updatedAt": {"gte": T2}}, [1043, 1044, 1045], id="updated-gte"),
    pytest.param({"updatedAt": {"lt": T2}}, [1042], id="updated-lt"),
    pytest.param({"updatedAt": {"lte": T2}}, [1042, 1043, 1045], id="updated-lte"),
    pytest.param({"updatedAt": {"gt": "2026-01-01T00:00:00Z", "lt": "2026-01-03T00:00:00Z"}}, [1043, 1045],
                 id="updated-range"),
    pytest.param({"status": {"eq": "ORDERED"}, "supplierId": {"eq": "2"}}, [1044], id="and"),
    pytest.param({}, [1042, 1043, 1044, 1045], id="none"),
])
def test_purchase_order_filters(ion: Ion, filters: dict[str, Any], ids: list[int]) -> None:
    edges = ion.data(PO_QUERY, {"f": filters})["purchaseOrders"]["edges"]
    assert [e["node"]["id"] for e in edges] == ids


@pytest.mark.parametrize(("sort", "ids"), [
    pytest.param(None, [1042, 1043, 1044, 1045], id="default-id-asc"),
    pytest.param(["ID_ASC"], [1042, 1043, 1044, 1045], id="id-asc"),
    pytest.param(["ID_DESC"], [1045, 1044, 1043, 1042], id="id-desc"),
    pytest.param(["UPDATED_AT_ASC"], [1042, 1043, 1045, 1044], id="updated-asc-ties-by-id"),
    pytest.param(["UPDATED_AT_DESC"], [1044, 1043, 1045, 1042], id="updated-desc-ties-by-id"),
    pytest.param(["UPDATED_AT_ASC", "ID_DESC"], [1042, 1045, 1043, 1044], id="two-keys"),
])
def test_purchase_order_sort(ion: Ion, sort: list[str] | None, ids: list[int]) -> None:
    edges = ion.data(PO_QUERY, {"s": sort})["purchaseOrders"]["edges"]
    assert [e["node"]["id"] for e in edges] == ids


@pytest.mark.parametrize(("root", "filters", "sort", "ids"), [
    pytest.param("parts", {"partNumber": {"eq": "820412-001"}}, None, [10, 11], id="part-number-eq"),
    pytest.param("parts", {"partNumber": {"neq": "820412-001"}}, None, [12], id="part-number-neq"),
    pytest.param("parts", {"partNumber": {"in": ["ion-12", "x"]}}, None, [12], id="part-number-in"),
    pytest.param("parts", {"isLatestRevision": {"eq": True}}, None, [10, 12], id="latest-true"),
    pytest.param("parts", {"isLatestRevision": {"eq": False}}, None, [11], id="latest-false"),
    pytest.param("parts", {"id": {"notIn": [10]}}, ["ID_DESC"], [12, 11], id="part-id-notIn-desc"),
    pytest.param("parts", {"updatedAt": {"gte": "2026-01-03T00:00:00+00:00"}}, ["UPDATED_AT_ASC"], [12, 11],
                 id="part-updated"),
    pytest.param("suppliers", {"name": {"eq": "Bolts Ltd"}}, None, [2], id="supplier-name"),
    pytest.param("suppliers", {"id": {"neq": 2}}, None, [1, 3], id="supplier-id-neq"),
    pytest.param("users", {"email": {"eq": "grace@acme.com"}}, None, [3660], id="user-email"),
    pytest.param("users", {"id": {"in": [42]}}, None, [42], id="user-id-in"),
])
def test_other_filters(ion: Ion, root: str, filters: dict[str, Any], sort: list[str] | None,
                       ids: list[int]) -> None:
    types = {"parts": ("PartsInputFilters", ", sort: $s", ", $s: [PartSortEnum]"),
             "suppliers": ("SuppliersInputFilters", "", ""), "users": ("UserInputFilters", "", "")}
    ftype, sort_arg, sort_var = types[root]
    query = (f"query($f: {ftype}{sort_var}) "
             f"{{ {root}(filters: $f{sort_arg}) {{ edges {{ node {{ id }} }} }} }}")
    variables: dict[str, Any] = {"f": filters, **({"s": sort} if sort_arg else {})}
    assert [e["node"]["id"] for e in ion.data(query, variables)[root]["edges"]] == ids


def test_paging_cursors_and_page_info(ion: Ion) -> None:
    query = """query($first: Int, $after: String) { purchaseOrders(first: $first, after: $after) {
      edges { cursor node { id } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor totalCount count } } }"""
    page = ion.data(query, {"first": 2, "after": _cursor(0)})["purchaseOrders"]
    assert [(e["cursor"], e["node"]["id"]) for e in page["edges"]] == [(_cursor(1), 1043), (_cursor(2), 1044)]
    assert base64.b64decode(page["edges"][0]["cursor"]) == b"arrayconnection:1"
    assert page["pageInfo"] == {"hasNextPage": True, "hasPreviousPage": False, "startCursor": _cursor(1),
                                "endCursor": _cursor(2), "totalCount": 4, "count": 2}
    everything = ion.data(query)["purchaseOrders"]
    assert [e["cursor"] for e in everything["edges"]] == [_cursor(i) for i in range(4)]
    assert everything["pageInfo"]["count"] == 4
    assert everything["pageInfo"]["hasNextPage"] is False
    empty = ion.data(query, {"first": 0})["purchaseOrders"]
    assert empty["edges"] == []
    assert empty["pageInfo"] == {"hasNextPage": True, "hasPreviousPage": False, "startCursor": None,
                                 "endCursor": None, "totalCount": 4, "count": 0}
    past = ion.data(query, {"first": 5, "after": _cursor(3)})["purchaseOrders"]
    assert (past["edges"], past["pageInfo"]["hasNextPage"], past["pageInfo"]["count"]) == ([], False, 0)


def test_hook_runs_before_each_graphql_request(ion: Ion) -> None:
    seen: list[int] = []

    def hook(number: int) -> None:
        seen.append(number)
        if number == 2:  # between the pages: the first PO changes and moves to the end
            ion.emu.update_purchase_order(1042, {"notes": "changed"})

    ion.emu.hook = hook
    query = """query($after: String) { purchaseOrders(first: 2, after: $after, sort: [UPDATED_AT_ASC]) {
      edges { node { id } } pageInfo { endCursor } } }"""
    first = ion.data(query)["purchaseOrders"]
    second = ion.data(query, {"after": first["pageInfo"]["endCursor"]})["purchaseOrders"]
    assert seen == [1, 2]
    assert [e["node"]["id"] for e in first["edges"]] == [1042, 1043]
    assert [e["node"]["id"] for e in second["edges"]] == [1044, 1042]  # 1045 shifted into page one


# ---- the store: _etag, updatedAt, numbers -------------------------------------------------------------


def _po_state(ion: Ion, po_id: int) -> dict[str, Any]:
    query = """query($id: ID!) { purchaseOrder(id: $id) { _etag createdAt updatedAt notes status
      purchaseOrderLines { id _etag quantity } fees { id _etag value } } }"""
    state: dict[str, Any] = ion.data(query, {"id": po_id})["purchaseOrder"]
    return state


def test_generated_times_have_microseconds_and_offset(clock: Clock) -> None:
    clock.now = 1_790_000_000.0  # a whole second: the microseconds must still be written
    emulator = IonEmulator(clock=clock)
    emulator.load({"suppliers": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}]})
    first, second = emulator.dump()["suppliers"]
    assert first["updatedAt"] == "2026-09-21T14:13:20.000000+00:00"
    assert second["updatedAt"] == "2026-09-21T14:13:20.000001+00:00"  # same clock, still later
    assert first["createdAt"] == first["updatedAt"]
    assert ISO_MICRO.match(second["createdAt"])
    assert first["_etag"] != second["_etag"]


def test_writes_move_updated_at_and_etag(ion: Ion, clock: Clock) -> None:
    before = _po_state(ion, 1043)
    ion.emu.update_purchase_order(1043, {"status": "ORDERED", "notes": "go"})
    after = _po_state(ion, 1043)
    assert after["_etag"] != before["_etag"]
    assert after["updatedAt"] > before["updatedAt"]
    assert ISO_MICRO.match(after["updatedAt"])
    assert (after["status"], after["notes"], after["createdAt"]) == ("ORDERED", "go", before["createdAt"])
    ion.emu.update_purchase_order(1043, {"notes": "again"})  # the clock has not moved
    again = _po_state(ion, 1043)
    assert again["updatedAt"] > after["updatedAt"]
    assert again["_etag"] != after["_etag"]


def test_line_and_fee_changes_bump_the_order(ion: Ion) -> None:
    before = _po_state(ion, 1042)
    ion.emu.update_line(1042, 5001, {"quantity": 6})
    after_line = _po_state(ion, 1042)
    assert after_line["purchaseOrderLines"][0]["quantity"] == 6
    assert after_line["purchaseOrderLines"][0]["_etag"] != before["purchaseOrderLines"][0]["_etag"]
    assert after_line["purchaseOrderLines"][1]["_etag"] == before["purchaseOrderLines"][1]["_etag"]
    assert after_line["_etag"] != before["_etag"]
    assert after_line["updatedAt"] > before["updatedAt"]
    response = ion.admin("POST", "purchase-orders/1042/fees/7", {"value": 40.25})
    assert response.status_code == 200
    after_fee = _po_state(ion, 1042)
    assert after_fee["fees"] == [{"id": 7, "_etag": after_fee["fees"][0]["_etag"], "value": 40.25}]
    assert after_fee["fees"][0]["_etag"] != before["fees"][0]["_etag"]
    assert after_fee["_etag"] != after_line["_etag"]
    assert after_fee["updatedAt"] > after_line["updatedAt"]


def test_admin_http_writes(ion: Ion) -> None:
    new_po = _po(2000, "ORDERED", 3, "2026-02-01T00:00:00+00:00",
                 purchaseOrderLines=[{"id": 1, "partId": 12, "quantity": 2}])
    created = ion.admin("POST", "purchase-orders", new_po)
    assert created.status_code == 201
    assert created.json()["purchaseOrderLines"][0]["_etag"]
    lines = [{"id": 9, "partId": 10, "quantity": 1}]
    assert ion.admin("POST", "purchase-orders/2000", {"purchaseOrderLines": lines}).status_code == 200
    assert [ln["id"] for ln in _po_state(ion, 2000)["purchaseOrderLines"]] == [9]
    new_part = {"partNumber": "NEW-1", "revision": "A", "isLatestRevision": True}
    part = ion.admin("POST", "parts", new_part).json()
    assert part["id"] == 13  # next free id
    assert ion.admin("POST", "parts/13", {"description": "new"}).json()["description"] == "new"
    assert ion.admin("POST", "suppliers", {"id": 9, "name": "Nine"}).status_code == 201
    renamed = ion.admin("POST", "suppliers/9", {"name": "Nine Inc"}).json()
    assert renamed["name"] == "Nine Inc"
    assert ion.data('{ suppliers(filters: {name: {eq: "Nine Inc"}}) { edges { node { id } } } }') == {
        "suppliers": {"edges": [{"node": {"id": 9}}]}}


@pytest.mark.parametrize("path", ["purchase-orders/1", "purchase-orders/1042/lines/1",
                                  "purchase-orders/1042/fees/99", "parts/99", "suppliers/99", "nothing-here"])
def test_admin_unknown_id_is_404(ion: Ion, path: str) -> None:
    assert ion.admin("POST", path, {"notes": "x"}).status_code == 404


def test_admin_python_unknown_id_raises_and_duplicates_are_refused(emu: IonEmulator) -> None:
    with pytest.raises(KeyError):
        emu.update_part(99, {"cost": 1})
    with pytest.raises(ValueError):
        emu.add_purchase_order({"id": 1042, "status": "DRAFT"})


def test_dump_round_trips_and_load_over_http(ion: Ion) -> None:
    dumped = ion.admin("GET", "dump").json()
    assert [po["id"] for po in dumped["purchaseOrders"]] == [1042, 1043, 1044, 1045]
    assert all(po["_etag"] and ISO_MICRO.match(po["updatedAt"]) for po in dumped["purchaseOrders"])
    ion.emu.load({"parts": []})
    assert ion.admin("POST", "load", dumped).json()["purchaseOrders"] == 4
    assert ion.admin("GET", "dump").json() == dumped


def test_numbers_are_kept_exactly(ion: Ion) -> None:
    body = (b'{"parts": [{"id": 1, "partNumber": "X", "revision": "A", "isLatestRevision": true,'
            b' "cost": 12.345678901234567890123, "updatedAt": "2026-01-01T00:00:00+00:00"},'
            b' {"id": 2, "partNumber": "Y", "revision": "A", "isLatestRevision": true, "cost": 1e30}]}')
    response = ion.http.post(ion.url + "/_admin/load", data=body, timeout=5)
    assert response.status_code == 200
    raw = ion.post({"query": "{ parts { edges { node { cost } } } }"}).text
    assert "12.345678901234567890123" in raw
    costs = [e["node"]["cost"] for e in json.loads(raw, parse_float=Decimal)["data"]["parts"]["edges"]]
    assert costs == [Decimal("12.345678901234567890123"), Decimal("1E+30")]


def test_hostile_values_are_served_as_graphql_errors(ion: Ion) -> None:
    ion.emu.update_line(1042, 5001, {"quantity": None})
    ion.emu.update_part(12, {"cost": Decimal("NaN")})
    result = ion.gql('{ purchaseOrder(id: 1042) { purchaseOrderLines { quantity } } part(id: 12) { cost } }')
    messages = sorted(e["message"] for e in result["errors"])
    assert any("non-nullable field PurchaseOrderLine.quantity" in m for m in messages)
    assert any("Float cannot represent" in m for m in messages)
    assert result["data"] == {"purchaseOrder": None, "part": {"cost": None}}
    assert ion.admin("GET", "dump").json()["parts"][2]["cost"] == "NaN"  # the admin dump still answers


# ---- faults and counters -------------------------------------------------------------------------------


def test_counters(ion: Ion) -> None:
    ion.gql("{ me { id } parts(first: 1) { pageInfo { count } } }")
    ion.post([{"query": "{ purchaseOrders { pageInfo { count } } }"},
              {"query": "{ suppliers { pageInfo { count } } }"}])
    ion.gql("{ __schema { queryType { name } } }")
    ion.admin("GET", "dump")
    counters = ion.admin("GET", "counters").json()
    assert counters == {"total": 4, "token": 1, "graphql": 3, "by_operation": {
        "me": 1, "parts": 1, "purchaseOrders": 1, "suppliers": 1, "__schema": 1}}
    assert ion.emu.counters == counters
    assert ion.admin("POST", "counters/reset").status_code == 200
    assert ion.emu.counters == {"total": 0, "token": 0, "graphql": 0, "by_operation": {}}


def test_fault_statuses(ion: Ion) -> None:
    ion.post({"query": "{ me { id } }"})
    assert ion.admin("POST", "faults", {"fail_next": [502, 503, 429]}).status_code == 200
    assert ion.admin("GET", "counters").status_code == 200  # admin is never faulted
    gateway = ion.post({"query": "{ me { id } }"})
    assert gateway.status_code == 502
    assert gateway.headers["Content-Type"].startswith("text/html")
    assert "<h1>502 Bad Gateway</h1>" in gateway.text
    unavailable = ion.post({"query": "{ me { id } }"})
    assert (unavailable.status_code, unavailable.headers["Retry-After"]) == (503, "1")
    assert ion.get_token().status_code == 429  # the token endpoint is faulted too
    assert ion.post({"query": "{ me { id } }"}).status_code == 200
    assert ion.emu.faults.injected == {"status": 3}


def test_fault_drop(ion: Ion) -> None:
    ion.emu.faults.configure(fail_next=[0])
    with requests.Session() as fresh, pytest.raises(requests.ConnectionError):
        fresh.post(ion.url + TOKEN_PATH, data={"grant_type": "client_credentials"}, timeout=5)
    assert ion.get_token().status_code == 200


def test_fault_latency_slow_and_clear(ion: Ion) -> None:
    ion.post({"query": "{ me { id } }"})
    ion.admin("POST", "faults", {"latency": 0.15})
    started = time.monotonic()
    assert ion.post({"query": "{ me { id } }"}).status_code == 200
    assert time.monotonic() - started >= 0.15
    ion.admin("POST", "faults/clear")
    ion.emu.faults.configure(slow_rate=1.0, slow_seconds=0.15)
    started = time.monotonic()
    assert ion.post({"query": "{ me { id } }"}).status_code == 200
    assert time.monotonic() - started >= 0.15
    ion.admin("POST", "faults/clear")
    injected = dict(ion.emu.faults.injected)
    assert ion.post({"query": "{ me { id } }"}).status_code == 200
    assert ion.emu.faults.injected == injected  # cleared: no slow answer drawn (no wall-clock upper bound)
    assert ion.emu.faults.latency == 0 and ion.emu.faults.slow_rate == 0
    assert ion.admin("POST", "faults", {"bogus": 1}).status_code == 400


def test_secret_never_leaves_the_emulator(ion: Ion) -> None:
    responses = [ion.get_token(client_secret="wrong"), ion.get_token(), ion.admin("GET", "dump"),
                 ion.admin("GET", "faults"), ion.post({"query": "{ me { id } }"})]
    assert all(SECRET not in r.text for r in responses)


def test_random_secret_when_none_given() -> None:
    a, b = IonEmulator(), IonEmulator()
    assert a.client_secret != b.client_secret
    assert len(a.client_secret) >= 24
    assert a.client_id == "ion-sandbox-client"


# ---- the schema the emulator serves --------------------------------------------------------------


def test_the_emulator_serves_the_reference_schema_kept_in_the_repository(ion: Ion) -> None:
    """The reference schema is a file of the package, nothing outside the repository: introspection over
    HTTP answers exactly that file plus the verified extensions, and every repository path its
    provenance header names exists."""
    repo = Path(__file__).resolve().parents[1]
    assert SCHEMA_PATH.resolve().is_relative_to(repo / "ionqbo" / "sandbox")
    served = build_client_schema(ion.data(get_introspection_query()))
    expected = build_schema(SCHEMA_PATH.read_text(encoding="utf-8") + SCHEMA_EXTENSIONS)
    assert print_schema(served) == print_schema(expected)
    header = "\n".join(line for line in SCHEMA_PATH.read_text(encoding="utf-8").splitlines() if line.startswith("#"))
    for named in re.findall(r"\b(?:docs|tests|ionqbo|scripts)/[\w./-]*\w", header):
        assert (repo / named).exists(), f"{SCHEMA_PATH.name} names {named}, which is not in the repository"
