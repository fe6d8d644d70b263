"""QboClient against `responses`: headers, query escaping and paging, retries, 401 refresh, pacing, batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from ionqbo.config import Settings
from ionqbo.errors import ApiError, ConsentRequiredError, ExitCode, PaginationLoopError, RetriableApiError
from ionqbo.http import RetryPolicy
from ionqbo.qbo.auth import QboAuth, TokenRecord, TokenStore
from ionqbo.qbo.client import QboClient, quote
from ionqbo.qbo.limiter import RateLimiter
from ionqbo.qbo.models import (
    BatchItem,
    DuplicateNameError,
    InvalidReferenceError,
    ObjectNotFoundError,
    QboAuthenticationError,
    StaleObjectError,
    ThrottleError,
    WriteOutcomeUnknownError,
)

REALM = "9130350000000001"
BASE = f"https://qbo.test/v3/company/{REALM}"
TOKEN_URL = "https://oauth.test/oauth2/v1/tokens/bearer"
NOW = 1_750_000_000.0
THROTTLE_XML = (
    '<IntuitResponse time="2017-07-30T22:45:22.933-07:00" xmlns="http://schema.intuit.com/finance/v3">'
    '<Fault type="SERVICE"><Error code="3001"><Message>message=ThrottleExceeded; errorCode=003001; '
    "statusCode=429</Message><Detail>The request limit was reached.  Try again later</Detail></Error></Fault>"
    "</IntuitResponse>"
)
GATEWAY_401 = ('{"warnings":null,"intuitObject":null,"fault":{"error":[{"message":'
               '"message=AuthenticationFailed; errorCode=003200; statusCode=401","detail":null,'
               '"code":"3200","element":null}],'
               '"type":"AUTHENTICATION"},"time":1533811101733}')
INVALID_REFERENCE = (
    '{"Fault":{"Error":[{"Message":"Invalid Reference Id","Detail":"Invalid Reference Id : Something you\'re '
    'trying to use has been made inactive.","code":"2500","element":""}],"type":"ValidationFault"},'
    '"time":"2017-11-23T08:05:18.937-08:00"}'
)
PO_READ = {"PurchaseOrder": {"DocNumber": "1005", "SyncToken": "0", "Id": "257", "TotalAmt": 25.0,
                             "POStatus": "Open", "VendorRef": {"name": "Hicks Hardware", "value": "41"}},
           "time": "2015-07-28T16:04:49.874-07:00"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(tmp_path: Path, *, tries: int = 3, access_expires_in: float = 3600,
                clock: FakeClock | None = None) -> tuple[QboClient, FakeClock, TokenStore]:
    settings = Settings.from_values({
        "QBO_CLIENT_ID": "client-id", "QBO_CLIENT_SECRET": "client-secret-xyz", "QBO_ENVIRONMENT": "sandbox",
        "QBO_TOKEN_URL": TOKEN_URL, "QBO_BASE_URL": "https://qbo.test", "IONQBO_STATE_DIR": str(tmp_path),
        "IONQBO_MAX_RETRIES": str(tries), "IONQBO_THROTTLE_WAIT": "60",
    })
    store = TokenStore(settings.token_store_path)
    store.save(TokenRecord(environment="sandbox", realm_id=REALM, refresh_token="rt-0", access_token="at-0",
                           access_expires_at=NOW + access_expires_in))
    auth = QboAuth(settings, store, clock=lambda: NOW, policy=RetryPolicy(tries=2, sleep=lambda s: None))
    clock = clock or FakeClock()
    client = QboClient(settings, auth, sleep=clock.sleep, clock=clock)
    client.policy.rng.seed(1)
    return client, clock, store


def params(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


# ---- headers and escaping -------------------------------------------------------------------------


def test_minorversion_and_accept_on_every_request(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.get(f"{BASE}/purchaseorder/257", json=PO_READ)
        rsps.post(f"{BASE}/query", json={"QueryResponse": {}, "time": "t"})
        rsps.post(f"{BASE}/item", json={"Item": {"Id": "19", "Name": "A"}, "time": "t"})
        rsps.post(f"{BASE}/purchaseorder", json=PO_READ)
        rsps.post(f"{BASE}/batch", json={"BatchItemResponse": [{"bId": "b1", "Vendor": {"Id": "1"}}]})
        rsps.get(f"{BASE}/preferences", json={"Preferences": {"CurrencyPrefs": {}}, "time": "t"})
        rsps.get(f"{BASE}/companyinfo/{REALM}", json={"CompanyInfo": {"CompanyName": "X"}, "time": "t"})
        rsps.get(f"{BASE}/cdc", json={"CDCResponse": [{"QueryResponse": [{"Item": [{"Id": "1"}]}, {}]}]})
        assert client.read("PurchaseOrder", "257")["DocNumber"] == "1005"
        assert client.query("select * from Item") == []
        assert client.create("Item", {"Name": "A"}, request_id="req-1")["Id"] == "19"
        assert client.update("PurchaseOrder", {"Id": "257", "SyncToken": "0"})["Id"] == "257"
        results = client.batch([BatchItem("b1", "create", "Vendor", {"DisplayName": "V"})])
        assert results[0].entity == {"Id": "1"}
        assert client.preferences() == {"CurrencyPrefs": {}}
        assert client.company_info() == {"CompanyName": "X"}
        assert client.cdc(["Item", "Vendor"], datetime(2025, 1, 1, tzinfo=UTC)) == {"Item": [{"Id": "1"}],
                                                                                      "Vendor": []}
        for call in rsps.calls:
            assert params(call)["minorversion"] == ["75"], call.request.url
            assert call.request.headers["Accept"] == "application/json"
            assert call.request.headers["Authorization"] == "Bearer at-0"
        assert rsps.calls[1].request.headers["Content-Type"] == "application/text"
        assert rsps.calls[2].request.headers["Content-Type"] == "application/json"
        assert params(rsps.calls[2])["requestid"] == ["req-1"]
        assert params(rsps.calls[7])["entities"] == ["Item,Vendor"]
    assert client.counts == {"read": 1, "query": 1, "create": 1, "update": 1, "batch": 1, "preferences": 1,
                             "companyinfo": 1, "cdc": 1}
    assert client.request_count == 8


@pytest.mark.parametrize(("value", "literal"), [
    pytest.param("Hicks Hardware", "'Hicks Hardware'", id="plain"),
    pytest.param("Adam's Candy Shop", r"'Adam\'s Candy Shop'", id="apostrophe"),
    pytest.param("back\\slash", r"'back\\slash'", id="backslash"),
    pytest.param("tail\\", r"'tail\\'", id="trailing-backslash-cannot-eat-the-quote"),
    pytest.param("\\'", r"'\\\''", id="backslash-then-quote"),
])
def test_quote(value: str, literal: str) -> None:
    assert quote(value) == literal


def test_query_sends_the_escaped_statement_as_text(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/query", json={"QueryResponse": {"Vendor": [{"Id": "41"}], "startPosition": 1,
                                                           "maxResults": 1}})
        name = quote(chr(92) + "O" + chr(39) + "Hara")
        rows = client.query(f"select * from Vendor where DisplayName = {name}")
        assert rsps.calls[0].request.body == b"select * from Vendor where DisplayName = '\\\\O\\'Hara'"
    assert rows == [{"Id": "41"}]


def test_money_is_decimal_both_ways(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/purchaseorder", json=PO_READ)
        po = client.create("PurchaseOrder", {"Line": [{"Amount": Decimal("12.50")}]}, request_id="r")
        assert json.loads(rsps.calls[0].request.body) == {"Line": [{"Amount": 12.5}]}
    assert po["TotalAmt"] == Decimal("25.0")


# ---- paging -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "pages"), [(2500, 3), (2000, 3), (0, 1), (999, 1)])
def test_query_all_pages_by_1000(tmp_path: Path, total: int, pages: int) -> None:
    client, _, _ = make_client(tmp_path)
    rows = [{"Id": str(i)} for i in range(1, total + 1)]

    def page(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        statement = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        words = statement.split()
        start = int(words[words.index("startposition") + 1])
        size = int(words[words.index("maxresults") + 1])
        chunk = rows[start - 1:start - 1 + size]
        qr: dict[str, Any] = {}
        if chunk:
            qr = {"Item": chunk, "startPosition": start, "maxResults": len(chunk)}
        return 200, {}, json.dumps({"QueryResponse": qr, "time": "t"})

    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.add_callback(responses.POST, f"{BASE}/query", callback=page)
        got = list(client.query_all("Item", where=f"Type = {quote('Inventory')}", order_by="Id"))
        statements = [c.request.body.decode() for c in rsps.calls]
    assert got == rows
    assert len(statements) == pages
    assert statements[0] == ("select * from Item where Type = 'Inventory' orderby Id "
                             "startposition 1 maxresults 1000")
    if pages > 1:
        assert statements[1].endswith("startposition 1001 maxresults 1000")


def test_query_all_stops_when_qbo_repeats_a_page(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path)
    rows = [{"Id": str(i)} for i in range(2)]
    same = {"QueryResponse": {"Item": rows, "startPosition": 1, "maxResults": 2}}
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/query", json=same)
        rsps.post(f"{BASE}/query", json=same)
        with pytest.raises(PaginationLoopError):
            list(client.query_all("Item", page_size=2))


# ---- 401: one refresh -----------------------------------------------------------------------------


def test_one_refresh_on_401_then_success(tmp_path: Path) -> None:
    client, _, store = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.get(f"{BASE}/purchaseorder/257", status=401, body=GATEWAY_401, content_type="application/json")
        rsps.post(TOKEN_URL, json={"access_token": "at-1", "refresh_token": "rt-1", "expires_in": 3600})
        rsps.get(f"{BASE}/purchaseorder/257", json=PO_READ)
        assert client.read("PurchaseOrder", "257")["Id"] == "257"
        assert rsps.calls[2].request.headers["Authorization"] == "Bearer at-1"
    saved = store.load()
    assert saved is not None
    assert saved.refresh_token == "rt-1"


def test_second_401_is_an_exit_4_error_after_exactly_one_refresh(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/purchaseorder", status=401, body=GATEWAY_401, content_type="application/json")
        rsps.post(TOKEN_URL, json={"access_token": "at-1", "refresh_token": "rt-1", "expires_in": 3600})
        rsps.post(f"{BASE}/purchaseorder", status=401, body=GATEWAY_401, content_type="application/json")
        with pytest.raises(QboAuthenticationError) as info:
            client.update("PurchaseOrder", {"Id": "1", "SyncToken": "0"})
        assert len([c for c in rsps.calls if c.request.url == TOKEN_URL]) == 1
    assert info.value.exit_code == ExitCode.AUTH
    assert "ionqbo connect" in str(info.value)
    assert "at-0" not in str(info.value)
    assert "at-1" not in str(info.value)


def test_401_with_a_dead_refresh_token_is_consent(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.get(f"{BASE}/preferences", status=401, body=GATEWAY_401)
        rsps.post(TOKEN_URL, status=400, json={"error": "invalid_grant"})
        with pytest.raises(ConsentRequiredError) as info:
            client.preferences()
    assert info.value.exit_code == ExitCode.AUTH


def test_expiring_token_is_refreshed_before_the_request(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path, access_expires_in=60)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "at-1", "refresh_token": "rt-1", "expires_in": 3600})
        rsps.get(f"{BASE}/preferences", json={"Preferences": {}})
        client.preferences()
        assert rsps.calls[1].request.headers["Authorization"] == "Bearer at-1"


# ---- retries ------------------------------------------------------------------------------------------


def test_writes_with_a_requestid_are_retried_with_the_same_one(tmp_path: Path) -> None:
    client, clock, _ = make_client(tmp_path, tries=4)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/purchaseorder", body=requests.ConnectionError("reset by peer"))
        rsps.post(f"{BASE}/purchaseorder", status=502, body="<html>bad gateway</html>",
                  content_type="text/html")
        rsps.post(f"{BASE}/purchaseorder", body='{"PurchaseOrder": {"Id": "9"',
                  content_type="application/json")
        rsps.post(f"{BASE}/purchaseorder", json={"PurchaseOrder": {"Id": "9"}})
        assert client.create("PurchaseOrder", {"DocNumber": "PO-1"}, request_id="ionqbo-po-1-v1")["Id"] == "9"
        assert [params(c)["requestid"] for c in rsps.calls] == [["ionqbo-po-1-v1"]] * 4
    assert len(clock.sleeps) == 3


@pytest.mark.parametrize("failure", [
    pytest.param(requests.ConnectionError("reset by peer"), id="reset"),
    pytest.param(requests.ReadTimeout("read timed out"), id="timeout"),
    pytest.param((500, '{"Fault":{"Error":[{"code":"10000","Message":"An application error"}],'
                       '"type":"SystemFault"}}'),
                 id="500"),
    pytest.param((503, "<html>unavailable</html>"), id="503"),
    pytest.param((200, '{"PurchaseOrder": {"Id": "9", "Sync'), id="truncated-200"),
])
def test_writes_without_a_requestid_are_never_resent_after_they_may_have_arrived(
        tmp_path: Path, failure: Any) -> None:
    client, clock, _ = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        if isinstance(failure, Exception):
            rsps.post(f"{BASE}/purchaseorder", body=failure)
        else:
            rsps.post(f"{BASE}/purchaseorder", status=failure[0], body=failure[1])
        with pytest.raises(WriteOutcomeUnknownError) as info:
            client.update("PurchaseOrder", {"Id": "9", "SyncToken": "3"})
        assert len(rsps.calls) == 1
    assert isinstance(info.value, RetriableApiError)
    assert clock.sleeps == []


def test_a_throttled_write_without_requestid_is_resent(tmp_path: Path) -> None:
    client, clock, _ = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/purchaseorder", status=429, body=THROTTLE_XML, content_type="application/xml")
        rsps.post(f"{BASE}/purchaseorder", json={"PurchaseOrder": {"Id": "9", "SyncToken": "4"}})
        assert client.update("PurchaseOrder", {"Id": "9", "SyncToken": "3"})["SyncToken"] == "4"
    assert clock.sleeps == [60.0]


@pytest.mark.parametrize("failure", [
    pytest.param(requests.ConnectionError("reset"), id="reset"),
    pytest.param(requests.ConnectTimeout("connect timeout"), id="connect-timeout"),
    pytest.param((502, "<html>bad gateway</html>"), id="502"),
    pytest.param((504, ""), id="504"),
    pytest.param((200, "<html>captive portal</html>"), id="html-200"),
])
def test_reads_are_retried(tmp_path: Path, failure: Any) -> None:
    client, clock, _ = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        if isinstance(failure, Exception):
            rsps.get(f"{BASE}/purchaseorder/257", body=failure)
        else:
            rsps.get(f"{BASE}/purchaseorder/257", status=failure[0], body=failure[1])
        rsps.get(f"{BASE}/purchaseorder/257", json=PO_READ)
        assert client.read("PurchaseOrder", "257")["Id"] == "257"
    assert len(clock.sleeps) == 1
    assert client.counts == {"read": 2}


def test_500_is_resubmitted_once_only(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path, tries=5)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        for _ in range(2):
            rsps.get(f"{BASE}/preferences", status=500, body="")
        with pytest.raises(RetriableApiError):
            client.preferences()
        assert len(rsps.calls) == 2


def test_unreadable_200_read_becomes_a_clear_error(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path, tries=2)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        for _ in range(2):
            rsps.get(f"{BASE}/purchaseorder/257", body='{"PurchaseOrder": {"Id"',
                     content_type="application/json")
        with pytest.raises(RetriableApiError, match="not complete JSON"):
            client.read("PurchaseOrder", "257")


def test_answer_without_the_entity_is_an_api_error(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.get(f"{BASE}/purchaseorder/257", json={"time": "t"})
        with pytest.raises(ApiError, match="no PurchaseOrder"):
            client.read("PurchaseOrder", "257")


def test_throttle_waits_then_succeeds_and_gives_up_after_the_tries(tmp_path: Path) -> None:
    client, clock, _ = make_client(tmp_path, tries=3)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/query", status=429, body=THROTTLE_XML, content_type="application/xml")
        rsps.post(f"{BASE}/query", status=200, body=THROTTLE_XML, content_type="application/xml")
        rsps.post(f"{BASE}/query", json={"QueryResponse": {"Item": [{"Id": "1"}]}})
        assert client.query("select * from Item") == [{"Id": "1"}]
    assert clock.sleeps == [60.0, 60.0]
    client, clock, _ = make_client(tmp_path / "2", tries=2)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        for _ in range(2):
            rsps.post(f"{BASE}/query", status=429, body=THROTTLE_XML, content_type="application/xml")
        with pytest.raises(ThrottleError) as info:
            client.query("select * from Item")
    assert info.value.exit_code == ExitCode.UNAVAILABLE


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    client, clock, _ = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.get(f"{BASE}/preferences", status=429, body="", headers={"Retry-After": "7"})
        rsps.get(f"{BASE}/preferences", json={"Preferences": {}})
        client.preferences()
    assert clock.sleeps == [7.0]


def test_validation_faults_are_raised_typed_and_not_retried(tmp_path: Path) -> None:
    client, clock, _ = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/purchaseorder", status=400, body=INVALID_REFERENCE,
                  content_type="application/json", headers={"intuit_tid": "1-abc-tid"})
        with pytest.raises(InvalidReferenceError) as info:
            client.create("PurchaseOrder", {"DocNumber": "1"}, request_id="r1")
    assert info.value.tid == "1-abc-tid"
    assert info.value.record_level
    assert clock.sleeps == []


def test_stale_sync_token(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path)
    body = {"Fault": {"Error": [{"Message": "Stale Object Error", "code": "5010", "Detail": "x"}],
                      "type": "ValidationFault"}}
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/purchaseorder", status=400, json=body)
        with pytest.raises(StaleObjectError):
            client.update("PurchaseOrder", {"Id": "1", "SyncToken": "0", "Line": []}, sparse=True)
        assert json.loads(rsps.calls[0].request.body)["sparse"] is True


@pytest.mark.parametrize(("call", "message"), [
    pytest.param(lambda c: c.create("Item", {}, request_id="x" * 51), "requestid", id="requestid-51"),
    pytest.param(lambda c: c.create("Item", {}, request_id=""), "requestid", id="requestid-empty"),
    pytest.param(lambda c: c.batch([BatchItem("b", "create", "Item", {})], request_id="x" * 37), "requestid",
                 id="batch-requestid-37"),
    pytest.param(lambda c: c.batch([BatchItem(str(i), "create", "Item", {}) for i in range(31)]),
                 "at most 30", id="31-items"),
    pytest.param(lambda c: c.batch([BatchItem("same", "create", "Item", {})] * 2), "unique", id="dup-bid"),
    pytest.param(lambda c: c.batch([BatchItem("b" * 11, "create", "Item", {})], request_id="r"), "at most 10",
                 id="long-bid-with-requestid"),
    pytest.param(lambda c: c.update("Item", {"Id": "1"}), "SyncToken", id="update-without-synctoken"),
    pytest.param(lambda c: c.read("Item; drop", "1"), "entity", id="bad-entity"),
])
def test_bad_arguments_are_refused_before_sending(tmp_path: Path, call: Any, message: str) -> None:
    client, _, _ = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True), pytest.raises(ValueError, match=message):
        call(client)


def test_sync_token_zero_is_a_valid_sync_token(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/item", json={"Item": {"Id": "1", "SyncToken": "1"}})
        assert client.update("Item", {"Id": "1", "SyncToken": "0"})["SyncToken"] == "1"


# ---- batch ----------------------------------------------------------------------------------------------


def test_batch_results_follow_the_items_with_their_own_faults(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path)
    answer = {"BatchItemResponse": [
        {"bId": "q", "QueryResponse": {"Item": [{"Id": "5"}], "startPosition": 1, "maxResults": 1}},
        {"Fault": {"type": "ValidationFault", "Error": [{"Message": "Duplicate Name Exists Error",
                                                         "code": "6240"}]}, "bId": "v1"},
        {"Fault": {"type": "ValidationFault", "Error": [{"Message": "Object Not Found", "code": "610"}]},
         "bId": "d1"},
        {"bId": "v2", "Vendor": {"Id": "8", "DisplayName": "B"}},
    ], "time": "t"}
    items = [
        BatchItem("v1", "create", "Vendor", {"DisplayName": "A"}),
        BatchItem("v2", "create", "Vendor", {"DisplayName": "B"}),
        BatchItem("d1", "delete", "Invoice", {"Id": "129", "SyncToken": "0"}),
        BatchItem("q", "query", "", "select * from Item where Name = 'X'"),
        BatchItem("lost", "create", "Vendor", {"DisplayName": "C"}),
    ]
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/batch", json=answer)
        results = client.batch(items, request_id="batch-1")
        sent = json.loads(rsps.calls[0].request.body)
        assert params(rsps.calls[0])["requestid"] == ["batch-1"]
    assert sent["BatchItemRequest"][0] == {"bId": "v1", "operation": "create", "Vendor": {"DisplayName": "A"}}
    assert sent["BatchItemRequest"][3] == {"bId": "q", "Query": "select * from Item where Name = 'X'"}
    assert [r.bid for r in results] == ["v1", "v2", "d1", "q", "lost"]
    assert isinstance(results[0].fault, DuplicateNameError)
    assert results[1].entity == {"Id": "8", "DisplayName": "B"}
    assert results[1].ok
    assert isinstance(results[2].fault, ObjectNotFoundError)
    assert results[3].rows == [{"Id": "5"}]
    assert results[4].fault is not None
    assert results[4].fault.retryable


def test_batch_top_level_fault_raises(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path)
    body = {"Fault": {"Error": [{"Message": "Batch size exceeds allowed limit", "code": "1040"}],
                      "type": "ValidationFault"}}
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/batch", status=400, json=body)
        with pytest.raises(ApiError, match="1040"):
            client.batch([BatchItem("b", "create", "Item", {})])


# ---- pacing ------------------------------------------------------------------------------------------------


def test_limiter_spreads_a_burst_of_12_over_more_than_a_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(12):
        limiter.acquire("read")
        times.append(clock.now)
    assert times[:9] == [0.0] * 9
    assert times[-1] - times[0] > 1.0
    for i in range(len(times) - 9):  # never 10 requests within one second
        assert times[i + 9] - times[i] > 1.0


def test_limiter_keeps_batches_under_40_a_minute() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(41):
        limiter.acquire("batch")
        times.append(clock.now)
    assert times[-1] - times[0] > 60.0
    for i in range(len(times) - 38):
        assert times[i + 38] - times[i] > 60.0
    assert limiter.waited == pytest.approx(clock.now)


def test_limiter_per_minute_budget() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    for _ in range(481):
        limiter.acquire("query")
    assert clock.now > 60.0


def test_client_requests_are_paced(tmp_path: Path) -> None:
    client, clock, _ = make_client(tmp_path)
    sent_at: list[float] = []

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        sent_at.append(clock.now)
        return 200, {}, json.dumps({"Preferences": {}})

    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.add_callback(responses.GET, f"{BASE}/preferences", callback=answer)
        for _ in range(12):
            client.preferences()
    assert sent_at[-1] - sent_at[0] > 1.0
    assert client.request_count == 12
