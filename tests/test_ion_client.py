"""Unit tests of the ION client: auth, GraphQL errors, retries, paging, parsing, redaction (HTTP faked)."""

from __future__ import annotations

import base64
import json
import logging
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
import responses
from graphql import build_client_schema, build_schema, introspection_from_schema

from ionqbo.config import Settings
from ionqbo.errors import (
    ExitCode,
    FatalApiError,
    IonAuthError,
    IonGraphQLError,
    PaginationLoopError,
    RetriableApiError,
    UnavailableError,
)
from ionqbo.http import RetryPolicy
from ionqbo.ion import queries
from ionqbo.ion.client import IonClient
from ionqbo.ion.models import InvalidRecord, PurchaseOrder
from ionqbo.ion.schema import reference_schema, resolve

API = "https://ion.test/graphql"
TOKEN_URL = "https://auth.ion.test/realms/api-keys/protocol/openid-connect/token"
SECRET = "s3cret-Client-Value-42"
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "ionqbo" / "sandbox" / "ion-schema.graphql"
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def ts(minutes: float) -> str:
    return (BASE + timedelta(minutes=minutes)).isoformat(timespec="microseconds")


def make_client(*, page_size: int = 2, tries: int = 3, clock: Callable[[], float] | None = None,
                sleeps: list[float] | None = None) -> IonClient:
    settings = Settings(ion_api_url=API, ion_token_url=TOKEN_URL, ion_client_id="cid",
                        ion_client_secret=SECRET, page_size=page_size, po_statuses=("ORDERED",))
    policy = RetryPolicy(tries=tries, base=1.0, cap=8.0, throttle_wait=60.0,
                         sleep=(sleeps if sleeps is not None else []).append, rng=random.Random(7))
    return IonClient(settings, policy=policy, clock=clock or (lambda: 0.0), schema=reference_schema())


def token_reply(token: str = "tok-1", expires_in: Any = 300) -> dict[str, Any]:
    body: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
    if expires_in is not None:
        body["expires_in"] = expires_in
    return body


ME = {"data": {"me": {"id": 42, "name": "Ada", "email": "ada@acme.test", "organization": None}}}


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def graphql_calls(rsps: responses.RequestsMock) -> list[dict[str, Any]]:
    return [json.loads(c.request.body) for c in rsps.calls if c.request.url == API]


def token_calls(rsps: responses.RequestsMock) -> list[Any]:
    return [c for c in rsps.calls if c.request.url == TOKEN_URL]


# ---- auth ----------------------------------------------------------------------------------------


def test_token_fetched_once_and_reused(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=token_reply("tok-1"))
    rsps.post(API, json=ME)
    client = make_client()
    for _ in range(3):
        assert client.me()["id"] == 42
    assert len(token_calls(rsps)) == 1
    form = parse_qs(token_calls(rsps)[0].request.body)
    assert form == {"grant_type": ["client_credentials"], "client_id": ["cid"], "client_secret": [SECRET]}
    auths = [c.request.headers["Authorization"] for c in rsps.calls if c.request.url == API]
    assert auths == ["Bearer tok-1"] * 3
    assert graphql_calls(rsps)[0] == {"query": queries.ME, "variables": {}, "operationName": "Me"}
    assert client.request_count == 4


@pytest.mark.parametrize(("expires_in", "still_valid_at", "refetch_at"), [
    pytest.param(300, 239.0, 240.0, id="expires_in-300-refresh-60s-early"),
    pytest.param(None, 239.0, 240.0, id="no-expires_in-assume-300"),
    pytest.param(3600, 3539.0, 3540.0, id="expires_in-3600"),
    pytest.param(30, 14.0, 15.0, id="short-lifetime-halved-margin"),
    pytest.param("garbage", 239.0, 240.0, id="unreadable-expires_in"),
])
def test_token_refreshed_before_expiry(rsps: responses.RequestsMock, expires_in: Any, still_valid_at: float,
                                       refetch_at: float) -> None:
    rsps.post(TOKEN_URL, json=token_reply("tok-1", expires_in))
    rsps.post(TOKEN_URL, json=token_reply("tok-2", expires_in))
    rsps.post(API, json=ME)
    now = [0.0]
    client = make_client(clock=lambda: now[0])
    client.me()
    now[0] = still_valid_at
    client.me()
    assert len(token_calls(rsps)) == 1
    now[0] = refetch_at
    client.me()
    assert len(token_calls(rsps)) == 2
    auths = [c.request.headers["Authorization"] for c in rsps.calls if c.request.url == API]
    assert auths == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]


def test_401_fetches_a_new_token_once_and_goes_on(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=token_reply("tok-1"))
    rsps.post(TOKEN_URL, json=token_reply("tok-2"))
    rsps.post(API, status=401, json={"message": "Unauthorized"})
    rsps.post(API, json=ME)
    client = make_client()
    assert client.me()["name"] == "Ada"
    auths = [c.request.headers["Authorization"] for c in rsps.calls if c.request.url == API]
    assert auths == ["Bearer tok-1", "Bearer tok-2"]


def test_401_after_a_fresh_token_is_an_auth_error(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=token_reply("tok-1"))
    rsps.post(TOKEN_URL, json=token_reply("tok-2"))
    rsps.post(API, status=401, json={"message": "Unauthorized"})
    with pytest.raises(IonAuthError) as info:
        make_client().me()
    assert info.value.exit_code == ExitCode.AUTH
    assert "ION_CLIENT_ID" in str(info.value)
    assert len(token_calls(rsps)) == 2
    assert len(graphql_calls(rsps)) == 2


@pytest.mark.parametrize("status", [400, 401])
def test_token_endpoint_refuses_the_key(rsps: responses.RequestsMock, status: int) -> None:
    rsps.post(TOKEN_URL, status=status, json={
        "error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"})
    with pytest.raises(IonAuthError) as info:
        make_client().me()
    text = str(info.value)
    assert info.value.exit_code == 4
    assert "ION_CLIENT_ID" in text
    assert "ION_CLIENT_SECRET" in text
    assert "environment" in text
    assert "Invalid client" in text
    assert len(token_calls(rsps)) == 1  # a refused key is not retried


@pytest.mark.parametrize(("reply", "expected"), [
    pytest.param({"body": "<html>login</html>", "content_type": "text/html"}, "not JSON", id="html"),
    pytest.param({"json": {"token_type": "Bearer"}}, "no access_token", id="no-access-token"),
    pytest.param({"json": ["tok"]}, "no access_token", id="array"),
])
def test_token_endpoint_odd_answers_are_clear_errors(rsps: responses.RequestsMock, reply: dict[str, Any],
                                                     expected: str) -> None:
    rsps.post(TOKEN_URL, **reply)
    with pytest.raises(FatalApiError, match=expected):
        make_client().me()


# ---- GraphQL errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "body", "allow_partial", "match", "hint"), [
    pytest.param(200, {"errors": [{"message": "boom", "path": ["me"]}]}, False, r"rejected: boom \(at me\)",
                 None, id="errors-no-data"),
    pytest.param(200, {"data": None, "errors": [{"message": "boom"}]}, False, "rejected: boom", None,
                 id="errors-null-data"),
    pytest.param(200, {"data": {"me": None}, "errors": [{"message": "boom"}]}, False, "rejected", None,
                 id="errors-all-null-data"),
    pytest.param(200, {"data": {"me": {"id": 1}}, "errors": [{"message": "half"}]}, False,
                 "partial data and errors: half", None, id="errors-with-data"),
    pytest.param(200, {"errors": [{"message": "Cannot query field 'cost' on type 'Part'."}]}, False,
                 "Cannot query field", "check-mappings", id="schema-mismatch-hint"),
    pytest.param(200, {"errors": [{"message": "User does not have permission to update this resource."}]},
                 False, "permission", "permissions of the ION user", id="permission-hint"),
    pytest.param(400, {"errors": [{"message": "Syntax Error: Unexpected Name"}]}, False, "Syntax Error", None,
                 id="http-400-with-errors"),
])
def test_errors_array_raises(rsps: responses.RequestsMock, status: int, body: dict[str, Any],
                             allow_partial: bool, match: str, hint: str | None) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    rsps.post(API, status=status, json=body)
    with pytest.raises(IonGraphQLError, match=match) as info:
        make_client().execute(queries.ME, allow_partial=allow_partial)
    assert info.value.errors == body["errors"]
    assert info.value.hint == hint or (hint is not None and hint in (info.value.hint or ""))


def test_partial_data_tolerated_only_when_asked(rsps: responses.RequestsMock,
                                                caplog: pytest.LogCaptureFixture) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    rsps.post(API, json={"data": {"me": {"id": 1}}, "errors": [{"message": "half", "path": ["me", "email"]}]})
    with caplog.at_level(logging.WARNING, logger="ionqbo.ion"):
        data = make_client().execute(queries.ME, allow_partial=True)
    assert data == {"me": {"id": 1}}
    assert any("half (at me.email)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("reply", "error", "match"), [
    pytest.param({"body": "<html><body>Sign in</body></html>", "content_type": "text/html"}, FatalApiError,
                 "not JSON", id="html-200"),
    pytest.param({"body": "{\"data\": {\"me\": ", "content_type": "application/json"}, FatalApiError,
                 "not JSON", id="truncated-json"),
    pytest.param({"json": [1, 2]}, FatalApiError, "not a GraphQL response", id="json-array"),
    pytest.param({"json": {"data": "yes"}}, FatalApiError, "no data object", id="data-not-object"),
    pytest.param({"json": {}}, FatalApiError, "no data object", id="empty-object"),
    pytest.param({"status": 404, "body": "<h1>Not Found</h1>", "content_type": "text/html"}, FatalApiError,
                 "404", id="404-html"),
    pytest.param({"status": 500, "json": {"message": "oops"}}, RetriableApiError, "500", id="500"),
    pytest.param({"status": 403, "json": {"message": "forbidden"}}, IonAuthError, "forbidden", id="403"),
])
def test_odd_graphql_answers_are_clear_errors(rsps: responses.RequestsMock, reply: dict[str, Any],
                                              error: type[Exception], match: str) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    rsps.post(API, **reply)
    with pytest.raises(error, match=match):
        make_client().execute(queries.ME)
    assert len(graphql_calls(rsps)) == 1  # none of these is retried


@pytest.mark.parametrize(("data", "match"), [
    pytest.param({"purchaseOrders": None}, "`purchaseOrders` is NoneType", id="root-null"),
    pytest.param({"purchaseOrders": {"edges": {}, "pageInfo": {"hasNextPage": False}}}, "edges` is dict",
                 id="edges-not-list"),
    pytest.param({"purchaseOrders": {"edges": []}}, "pageInfo` is NoneType", id="no-pageinfo"),
    pytest.param({"purchaseOrders": {"edges": [{"cursor": "x"}], "pageInfo": {"hasNextPage": False}}},
                 r"edges\[0\]` has no node", id="edge-without-node"),
    pytest.param({"purchaseOrders": {"edges": [], "pageInfo": {}}}, "hasNextPage` is None",
                 id="no-hasnextpage"),
])
def test_wrong_shape_is_a_fatal_api_error_not_a_crash(rsps: responses.RequestsMock, data: dict[str, Any],
                                                      match: str) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    rsps.post(API, json={"data": data})
    with pytest.raises(FatalApiError, match=match):
        list(make_client().changed_purchase_orders(None, ["ORDERED"]))


# ---- retries -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "expected_first_sleep"), [
    pytest.param({"status": 429, "headers": {"Retry-After": "7"}, "json": {"message": "slow down"}}, 7.0,
                 id="429-retry-after"),
    pytest.param({"status": 429, "json": {"message": "slow down"}}, 60.0, id="429-no-retry-after"),
    pytest.param({"status": 503, "headers": {"Retry-After": "3"}, "json": {}}, 3.0, id="503-retry-after"),
])
def test_retries_with_backoff_and_retry_after(rsps: responses.RequestsMock, first: dict[str, Any],
                                              expected_first_sleep: float) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    rsps.post(API, **first)
    rsps.post(API, status=502, body="<html>Bad Gateway</html>", content_type="text/html")
    rsps.post(API, json=ME)
    sleeps: list[float] = []
    client = make_client(sleeps=sleeps)
    assert client.me()["id"] == 42
    assert len(graphql_calls(rsps)) == 3
    assert sleeps[0] == expected_first_sleep
    assert 1.0 <= sleeps[1] <= 2.0  # second backoff: base 1 s doubled, full jitter over its upper half
    assert client.request_count == 4


@pytest.mark.parametrize(("reply", "match"), [
    pytest.param({"status": 503, "json": {"message": "Service Unavailable"}}, "after 3 tries", id="503"),
    pytest.param({"status": 504, "body": "<html>504</html>", "content_type": "text/html"}, "504", id="504"),
    pytest.param({"body": requests.ConnectionError("connection refused")}, "unreachable after 3 tries",
                 id="connection-error"),
    pytest.param({"body": requests.ReadTimeout("read timed out")}, "ReadTimeout", id="timeout"),
])
def test_unavailable_after_the_tries(rsps: responses.RequestsMock, reply: dict[str, Any], match: str) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    rsps.post(API, **reply)
    sleeps: list[float] = []
    with pytest.raises(UnavailableError, match=match) as info:
        make_client(sleeps=sleeps).me()
    assert info.value.exit_code == ExitCode.UNAVAILABLE
    assert len([c for c in rsps.calls if c.request.url == API]) == 3
    assert len(sleeps) == 2


def test_token_endpoint_unavailable(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, status=502, body="<html>Bad Gateway</html>", content_type="text/html")
    with pytest.raises(UnavailableError):
        make_client().me()
    assert len(token_calls(rsps)) == 3


@pytest.mark.parametrize("reply", [
    pytest.param({"status": 502, "body": "<html>Bad Gateway</html>", "content_type": "text/html"}, id="502"),
    pytest.param({"body": requests.ConnectionError("reset")}, id="connection-error"),
])
def test_the_mutation_is_never_retried(rsps: responses.RequestsMock, reply: dict[str, Any]) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    rsps.post(API, **reply)
    sleeps: list[float] = []
    with pytest.raises(UnavailableError, match="not retried"):
        make_client(sleeps=sleeps).dispatch_notification("42", "Sync failed", "PO 1042: no vendor")
    assert len([c for c in rsps.calls if c.request.url == API]) == 1
    assert sleeps == []


def test_dispatch_notification_sends_variables(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    rsps.post(API, json={"data": {"dispatchNotification": {"response": {"messageId": "m-1"}}}})
    assert make_client().dispatch_notification("42", "Sync failed", "PO 1042: no vendor") == "m-1"
    call = graphql_calls(rsps)[0]
    assert call["operationName"] == "DispatchNotification"
    assert call["variables"] == {"input": {"userId": "42", "notificationType": "WARNING",
                                           "title": "Sync failed", "description": "PO 1042: no vendor"}}
    assert "1042" not in call["query"]


@pytest.mark.parametrize(("nodes", "expected"), [
    pytest.param([{"id": 42, "email": "ada@acme.test"}], "42", id="found"),
    pytest.param([], None, id="none"),
    pytest.param([{"id": 7}, {"id": 8}], "7", id="two-takes-first"),
])
def test_user_id_by_email(rsps: responses.RequestsMock, nodes: list[dict[str, Any]],
                          expected: str | None) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    rsps.post(API, json={"data": {"users": {"edges": [{"node": n} for n in nodes],
                                            "pageInfo": {"hasNextPage": False}}}})
    assert make_client().user_id_by_email("o'brien@acme.test") == expected
    call = graphql_calls(rsps)[0]
    assert call["variables"]["filters"] == {"email": {"eq": "o'brien@acme.test"}}
    assert "brien" not in call["query"]


# ---- a fake ION for paging ---------------------------------------------------------------------------


class FakeIon:
    """Serves purchase orders and parts with ION's filters, sort and offset cursors (just enough)."""

    def __init__(self, records: list[dict[str, Any]], *, honour_filters: bool = True) -> None:
        self.records = {str(r["id"]): r for r in records}
        self.honour_filters = honour_filters
        self.hook: Callable[[int], None] | None = None
        self.requests: list[dict[str, Any]] = []
        self.clock = max((datetime.fromisoformat(r["updatedAt"]) for r in records), default=BASE)

    def install(self, rsps: responses.RequestsMock) -> None:
        rsps.add_callback(responses.POST, TOKEN_URL, callback=lambda _r: (200, {}, json.dumps(token_reply())))
        rsps.add_callback(responses.POST, API, callback=self.graphql)

    def touch(self, record_id: Any, **changes: Any) -> None:
        """Update a record: it moves to the end of the updatedAt order."""
        self.clock += timedelta(seconds=1)
        self.records[str(record_id)].update(changes, updatedAt=self.clock.isoformat(timespec="microseconds"))

    def add(self, record: dict[str, Any]) -> None:
        self.clock += timedelta(seconds=1)
        stamp = self.clock.isoformat(timespec="microseconds")
        self.records[str(record["id"])] = {**record, "updatedAt": stamp}

    def graphql(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body or b"{}")
        self.requests.append(body)
        if self.hook is not None:
            self.hook(len(self.requests))
        variables = body["variables"]
        rows = sorted(self.records.values(), key=lambda r: int(r["id"]))
        if self.honour_filters:
            rows = [r for r in rows if self._matches(r, variables.get("filters") or {})]
            if variables.get("sort") == ["UPDATED_AT_ASC"]:
                rows.sort(key=lambda r: datetime.fromisoformat(r["updatedAt"]))
        after = variables.get("after")
        start = int(base64.b64decode(after).decode().split(":")[1]) + 1 if after else 0
        end = start + variables["first"] if variables.get("first") else len(rows)
        page = rows[start:end]
        root = "parts" if body["operationName"] == "Parts" else "purchaseOrders"
        cursor = base64.b64encode(f"arrayconnection:{start + len(page) - 1}".encode()).decode()
        answer = {"data": {root: {"edges": [{"node": dict(r)} for r in page],
                                  "pageInfo": {"hasNextPage": end < len(rows), "endCursor": cursor}}}}
        return 200, {}, json.dumps(answer)

    @staticmethod
    def _matches(record: dict[str, Any], filters: dict[str, Any]) -> bool:
        for field, ops in filters.items():
            value = record.get(field)
            for op, arg in ops.items():
                if field == "updatedAt":
                    have, want = datetime.fromisoformat(value), datetime.fromisoformat(arg)
                elif field == "id":
                    have, want = str(value), [str(a) for a in arg]
                else:
                    have, want = value, arg
                checks: dict[str, Callable[[], bool]] = {
                    "eq": lambda: have == want, "gt": lambda: have > want, "gte": lambda: have >= want,
                    "in": lambda: have in want, "notIn": lambda: have not in want}
                if not checks[op]():
                    return False
        return True


def po(po_id: int, minutes: float, status: str = "ORDERED", **extra: Any) -> dict[str, Any]:
    return {"id": po_id, "_etag": f"e{po_id}", "status": status, "updatedAt": ts(minutes), "fees": [],
            "purchaseOrderLines": [], **extra}


def ids_of(records: list[Any]) -> list[str]:
    return [r.id if isinstance(r, PurchaseOrder) else r.ion_id for r in records]


def test_naive_offset_paging_would_skip_a_record(rsps: responses.RequestsMock) -> None:
    """The scenario the keyset reads exist for: proves that FakeIon reproduces ION's offset shift."""
    fake = FakeIon([po(i, i) for i in range(1, 7)])
    fake.install(rsps)
    fake.hook = lambda n: fake.touch(1) if n == 2 else None
    client = make_client(page_size=2)
    seen = [item.node["id"] for page in client._pages("PurchaseOrders", {"sort": ["UPDATED_AT_ASC"]})
            for item in page]
    assert 3 not in seen  # record 3 shifted into the first page after it was read


def test_keyset_reads_never_skip_when_a_record_moves_to_the_end(rsps: responses.RequestsMock) -> None:
    fake = FakeIon([po(i, i) for i in range(1, 7)])
    fake.install(rsps)
    fake.hook = lambda n: fake.touch(1) if n == 2 else None
    got = list(make_client(page_size=2).changed_purchase_orders(None, ["ORDERED"]))
    assert ids_of(got) == ["1", "2", "3", "4", "5", "6", "1"]  # record 1 twice: old, then new version
    assert got[0].updated_at == BASE + timedelta(minutes=1)
    assert got[-1].updated_at is not None
    assert got[-1].updated_at > got[-2].updated_at
    for request in fake.requests:
        assert "after" not in request["variables"]  # keyset reads never use offset cursors


def test_keyset_reads_survive_many_updates_and_inserts(rsps: responses.RequestsMock) -> None:
    fake = FakeIon([po(i, i) for i in range(1, 21)])
    fake.install(rsps)

    def hook(n: int) -> None:
        if n in (2, 3, 4):
            for rid in (1, 2, 3, n + 5):
                fake.touch(rid)
            fake.add(po(100 + n, 0))
    fake.hook = hook
    got = ids_of(list(make_client(page_size=3).changed_purchase_orders(None, ["ORDERED"])))
    assert set(map(str, range(1, 21))) <= set(got)
    assert {"102", "103", "104"} <= set(got)  # inserted during the read: seen too


def test_more_records_share_one_updated_at_than_a_page_holds(rsps: responses.RequestsMock) -> None:
    fake = FakeIon([po(1, 1)] + [po(i, 5) for i in range(2, 9)] + [po(9, 9), po(10, 10)])
    fake.install(rsps)
    got = ids_of(list(make_client(page_size=2).changed_purchase_orders(None, ["ORDERED"])))
    assert sorted(got, key=int) == [str(i) for i in range(1, 11)]
    assert len(got) == len(set(got))
    tie_queries = [r for r in fake.requests if r["variables"]["filters"].get("updatedAt", {}).get("eq")]
    assert tie_queries
    assert all("notIn" in r["variables"]["filters"]["id"] for r in tie_queries)
    assert fake.requests[-1]["variables"]["filters"]["updatedAt"] == {"gt": ts(5)}


def test_equal_updated_at_across_a_page_boundary(rsps: responses.RequestsMock) -> None:
    fake = FakeIon([po(1, 1), po(2, 2), po(3, 2), po(4, 3), po(5, 3), po(6, 3), po(7, 4)])
    fake.install(rsps)
    got = ids_of(list(make_client(page_size=2).changed_purchase_orders(None, ["ORDERED"])))
    assert got == ["1", "2", "3", "4", "5", "6", "7"]
    # A page that shares one updatedAt is finished by id exclusion, then the read goes on after it.
    assert [r["variables"]["filters"].get("updatedAt") for r in fake.requests] == [
        None, {"gte": ts(2)}, {"eq": ts(2)}, {"gt": ts(2)}, {"eq": ts(3)}, {"gt": ts(3)}]
    assert fake.requests[4]["variables"]["filters"]["id"] == {"notIn": ["4", "5"]}


def test_a_tie_group_record_updated_during_the_read_is_not_lost(rsps: responses.RequestsMock) -> None:
    fake = FakeIon([po(i, 5) for i in range(1, 8)])
    fake.install(rsps)
    fake.hook = lambda n: fake.touch(7) if n == 3 else None
    got = ids_of(list(make_client(page_size=2).changed_purchase_orders(None, ["ORDERED"])))
    assert set(got) == {str(i) for i in range(1, 8)}


def test_since_and_statuses_travel_as_variables(rsps: responses.RequestsMock) -> None:
    fake = FakeIon([po(1, 1), po(2, 2, "DRAFT"), po(3, 3), po(4, 4, "CANCELED")])
    fake.install(rsps)
    since = BASE + timedelta(minutes=2)
    got = ids_of(list(make_client(page_size=5).changed_purchase_orders(since, ["ORDERED", "CANCELED"])))
    assert got == ["3", "4"]
    request = fake.requests[0]
    assert request["operationName"] == "PurchaseOrders"
    assert request["variables"] == {"filters": {"status": {"in": ["ORDERED", "CANCELED"]},
                                                "updatedAt": {"gte": since.isoformat()}},
                                    "sort": ["UPDATED_AT_ASC"], "first": 5}
    assert "2026" not in request["query"]
    assert "ORDERED" not in request["query"]


def test_no_statuses_reads_nothing(rsps: responses.RequestsMock) -> None:
    assert list(make_client().changed_purchase_orders(None, [])) == []
    assert len(rsps.calls) == 0


def test_naive_since_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        list(make_client().changed_parts(datetime(2026, 1, 1)))


def test_changed_parts(rsps: responses.RequestsMock) -> None:
    parts = [{"id": i, "partNumber": f"P-{i}", "revision": "A", "updatedAt": ts(i)} for i in range(1, 6)]
    fake = FakeIon(parts)
    fake.install(rsps)
    got = list(make_client(page_size=2).changed_parts(None))
    assert [p.part_number for p in got] == ["P-1", "P-2", "P-3", "P-4", "P-5"]  # type: ignore[union-attr]
    assert fake.requests[0]["operationName"] == "Parts"


def test_server_ignoring_the_filter_is_detected(rsps: responses.RequestsMock) -> None:
    fake = FakeIon([po(i, i) for i in range(1, 6)], honour_filters=False)
    fake.install(rsps)
    with pytest.raises(FatalApiError, match="not in updatedAt order"):
        list(make_client(page_size=2).changed_purchase_orders(None, ["ORDERED"]))


def test_server_ignoring_not_in_is_a_loop_error(rsps: responses.RequestsMock) -> None:
    fake = FakeIon([po(i, 5) for i in range(1, 6)], honour_filters=False)
    fake.install(rsps)
    with pytest.raises(PaginationLoopError):
        list(make_client(page_size=2).changed_purchase_orders(None, ["ORDERED"]))
    assert len(fake.requests) == 2


def test_relay_paging_loop_guard(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    info = {"hasNextPage": True, "endCursor": "YXJyYXljb25uZWN0aW9uOjA="}
    page = {"data": {"purchaseOrders": {"edges": [{"node": po(1, 1)}], "pageInfo": info}}}
    rsps.post(API, json=page)
    with pytest.raises(PaginationLoopError, match="returned before"):
        list(make_client().purchase_orders_by_id(["1", "2"]))
    assert len(graphql_calls(rsps)) == 2


def test_by_id_is_chunked_and_follows_pages(rsps: responses.RequestsMock) -> None:
    fake = FakeIon([po(i, i) for i in range(1, 8)])
    fake.install(rsps)
    got = ids_of(list(make_client(page_size=3).purchase_orders_by_id(["1", "2", "3", "5", "7", "2", "99"])))
    assert got == ["1", "2", "3", "5", "7"]
    chunks = [r["variables"]["filters"]["id"]["in"] for r in fake.requests]
    assert chunks == [["1", "2", "3"], ["5", "7", "99"]]


# ---- malformed records -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "field"), [
    pytest.param({"purchaseOrderLines": [{"id": 1, "quantity": "lots"}]}, "purchaseOrderLines[0].quantity",
                 id="line-quantity"),
    pytest.param({"status": None}, "status", id="no-status"),
    pytest.param({"supplier": {"id": 3}}, "supplier.name", id="supplier-without-name"),
    pytest.param({"purchaseOrderLines": [{"id": 1, "quantity": 1, "part": {"id": 4}}]},
                 "purchaseOrderLines[0].part.partNumber", id="part-without-number"),
    pytest.param({"fees": "none"}, "fees", id="fees-not-a-list"),
])
def test_malformed_node_becomes_an_invalid_record(rsps: responses.RequestsMock, bad: dict[str, Any],
                                                  field: str) -> None:
    fake = FakeIon([po(1, 1), po(2, 2, **bad), po(3, 3)])
    fake.records["2"].update(bad)
    fake.install(rsps)
    got = list(make_client(page_size=2).changed_purchase_orders(None, None))
    assert ids_of(got) == ["1", "2", "3"]
    invalid = got[1]
    assert isinstance(invalid, InvalidRecord)
    assert (invalid.kind, invalid.ion_id, invalid.error.field) == ("purchase_order", "2", field)
    assert invalid.updated_at == BASE + timedelta(minutes=2)
    assert field in invalid.error.message


def _page_answer(nodes: list[Any], errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"data": {"purchaseOrders": {"edges": [{"node": n} for n in nodes],
                                        "pageInfo": {"hasNextPage": False, "endCursor": None}}},
            "errors": errors}


def test_an_error_inside_one_node_spoils_that_node_only(rsps: responses.RequestsMock,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    # What graphql-core answers when Supplier.name (String!) is null: supplier becomes null, plus an error.
    error = {"message": "Cannot return null for non-nullable field Supplier.name.",
             "path": ["purchaseOrders", "edges", 1, "node", "supplier", "name"]}
    rsps.post(API, json=_page_answer([po(1, 1), po(2, 2, supplier=None), po(3, 3)], [error]))
    with caplog.at_level(logging.WARNING):
        got = list(make_client(page_size=5).changed_purchase_orders(None, ["ORDERED"]))
    assert ids_of(got) == ["1", "2", "3"]
    invalid = got[1]
    assert isinstance(invalid, InvalidRecord)
    assert isinstance(got[0], PurchaseOrder)
    assert (invalid.ion_id, invalid.error.field) == ("2", "supplier.name")
    assert "Cannot return null" in invalid.error.message
    assert invalid.updated_at == BASE + timedelta(minutes=2)


def test_nested_error_path_is_named_like_the_parser_names_it(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    path = ["purchaseOrders", "edges", 0, "node", "purchaseOrderLines", 2, "part", "partNumber"]
    error = {"message": "boom", "path": path}
    rsps.post(API, json=_page_answer([po(1, 1)], [error]))
    (invalid,) = list(make_client().purchase_orders_by_id(["1"]))
    assert isinstance(invalid, InvalidRecord)
    assert invalid.error.field == "purchaseOrderLines[2].part.partNumber"


@pytest.mark.parametrize("error", [
    pytest.param({"message": "rate accounting failed"}, id="no-path"),
    pytest.param({"message": "boom", "path": ["purchaseOrders", "pageInfo", "endCursor"]},
                 id="outside-nodes"),
])
def test_an_error_outside_the_nodes_fails_the_page(rsps: responses.RequestsMock,
                                                   error: dict[str, Any]) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    rsps.post(API, json=_page_answer([po(1, 1)], [error]))
    with pytest.raises(IonGraphQLError, match="partial data"):
        list(make_client().changed_purchase_orders(None, ["ORDERED"]))


def test_an_error_that_nulls_the_whole_connection_fails_the_page(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    rsps.post(API, json={"data": {"purchaseOrders": None}, "errors": [
        {"message": "Float cannot represent non numeric value: 'lots'",
         "path": ["purchaseOrders", "edges", 3, "node", "purchaseOrderLines", 0, "quantity"]}]})
    with pytest.raises(IonGraphQLError, match=r"rejected: Float cannot .* \(at purchaseOrders.edges.3.node"):
        list(make_client().changed_purchase_orders(None, ["ORDERED"]))


# ---- redaction ---------------------------------------------------------------------------------------------


def _echo_secret_token_endpoint(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, status=400, body=f"bad request: client_secret={SECRET} rejected")


def _echo_token_in_graphql_error(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=token_reply("tok-SUPERSECRET-123"))
    rsps.post(API, json={"errors": [{"message": "token tok-SUPERSECRET-123 lacks scope"}]})


def _echo_token_in_5xx(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=token_reply("tok-SUPERSECRET-123"))
    rsps.post(API, status=503, body="upstream said Authorization: Bearer tok-SUPERSECRET-123")


def _secret_in_connection_error(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, body=requests.ConnectionError(f"proxy refused client_secret {SECRET}"))


def _echo_token_in_401(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=token_reply("tok-SUPERSECRET-123"))
    rsps.post(API, status=401, body="expired: tok-SUPERSECRET-123")


@pytest.mark.parametrize("scenario", [
    pytest.param(_echo_secret_token_endpoint, id="token-endpoint-echoes-secret"),
    pytest.param(_echo_token_in_graphql_error, id="graphql-error-echoes-token"),
    pytest.param(_echo_token_in_5xx, id="5xx-echoes-token"),
    pytest.param(_secret_in_connection_error, id="connection-error-has-secret"),
    pytest.param(_echo_token_in_401, id="401-echoes-token"),
])
def test_secrets_never_reach_errors_or_logs(rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture,
                                            scenario: Callable[[responses.RequestsMock], None]) -> None:
    scenario(rsps)
    with caplog.at_level(logging.DEBUG), pytest.raises(Exception) as info:
        make_client().me()
    texts = [str(info.value), repr(info.value), info.value.args[0]]
    texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        assert SECRET not in text
        assert "tok-SUPERSECRET-123" not in text
    assert isinstance(info.value, UnavailableError | IonAuthError | IonGraphQLError)


# ---- queries and the schema --------------------------------------------------------------------------------


def _schema_text() -> str:
    return SCHEMA_FILE.read_text(encoding="utf-8")


def test_every_built_query_validates_against_the_reference_schema() -> None:
    plan = resolve(reference_schema(), statuses=("ORDERED",))
    docs = queries.build(plan)
    assert set(docs.texts) >= {"PurchaseOrders", "PurchaseOrderKeys", "PurchaseOrder", "Parts", "PartKeys", "Part",
                               "Users", "Me", "DispatchNotification"}
    assert queries.validate_documents(plan.schema, docs) == []


def test_every_ion_document_is_in_queries_module() -> None:
    """No query text hides in the client: every GraphQL keyword document lives in queries.py."""
    source = (SCHEMA_FILE.parents[1] / "ion" / "client.py").read_text(encoding="utf-8")
    assert not any(word in source for word in ("purchaseOrders(", "edges {", "{ id "))


def test_the_plan_is_read_by_introspection_when_none_is_given(rsps: responses.RequestsMock) -> None:
    sdl = SCHEMA_FILE.read_text(encoding="utf-8").replace("  accountingClass: String ", "  # gone ", 1)
    rsps.post(TOKEN_URL, json=token_reply())
    rsps.post(API, json={"data": introspection_from_schema(build_schema(sdl))})
    client = IonClient(Settings(ion_api_url=API, ion_token_url=TOKEN_URL, ion_client_id="cid",
                                ion_client_secret=SECRET, po_statuses=("ORDERED",)))
    plan = client.prepare()  # optional: does not stop
    assert [m.need.key for m in plan.missing] == ["line.accountingClass"]
    assert any("accounting class" in n for n in client.schema_notes())
    assert graphql_calls(rsps)[0]["operationName"] == "IntrospectionQuery"


def test_introspection_refused_assumes_the_reference_schema(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=token_reply())
    rsps.post(API, json={"errors": [{"message": "GraphQL introspection is not allowed"}]})
    client = IonClient(Settings(ion_api_url=API, ion_token_url=TOKEN_URL, ion_client_id="cid",
                                ion_client_secret=SECRET, po_statuses=("ORDERED",)))
    plan = client.plan()
    assert plan.missing == []
    assert any("introspection" in n for n in plan.notes)


def test_introspection_round_trip_matches_reference() -> None:
    """build_client_schema (what the client uses) loses nothing the resolution needs."""
    schema = build_client_schema(introspection_from_schema(reference_schema()))
    plan = resolve(schema, statuses=("ORDERED",))
    assert plan.missing == [] and plan.problems == []
    assert plan.po is not None and plan.po.keyset
