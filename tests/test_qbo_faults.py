"""QBO fault bodies (JSON, gateway JSON, XML, HTML, empty) -> typed errors; batch item parsing."""

from __future__ import annotations

import json

import pytest

from ionqbo.errors import AuthError, ExitCode, RetriableApiError
from ionqbo.qbo.models import (
    AmountMismatchError,
    BatchItem,
    BusinessValidationError,
    DuplicateDocNumberError,
    DuplicateNameError,
    InvalidReferenceError,
    ObjectNotFoundError,
    QboAuthenticationError,
    QboAuthorizationError,
    QboFault,
    QueryParseError,
    StaleObjectError,
    SystemFaultError,
    ThrottleError,
    parse_batch_item,
    parse_fault,
)

# docs/reference/qbo.md section 12 (d): a real 400 body
INVALID_REFERENCE = (
    '{"Fault":{"Error":[{"Message":"Invalid Reference Id","Detail":"Invalid Reference Id : Something you\'re '
    'trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or '
    'employees.","code":"2500","element":""}],"type":"ValidationFault"},"time":"2017-11-23T08:05:18.937-08:00"}'
)
# docs/reference/qbo.md section 10: the 429 body is XML even when JSON was asked for
THROTTLE_XML = """<IntuitResponse time="2017-07-30T22:45:22.933-07:00" xmlns="http://schema.intuit.com/finance/v3">
    <Fault type="SERVICE">
        <Error code="3001">
            <Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>
            <Detail>The request limit was reached.  Try again later</Detail>
        </Error>
    </Fault>
</IntuitResponse>"""
# docs/reference/qbo.md section 9: the gateway's lowercase envelope
GATEWAY_401 = (
    '{"warnings":null,"intuitObject":null,"fault":{"error":[{"message":"message=AuthenticationFailed; '
    'errorCode=003200; statusCode=401","detail":null,"code":"3200","element":null}],"type":"AUTHENTICATION"},'
    '"report":null,"queryResponse":null,"batchItemResponse":[],"attachableResponse":[],"syncErrorResponse":null,'
    '"requestId":null,"time":1533811101733,"status":null,"cdcresponse":[]}'
)
GATEWAY_403 = (
    '{"warnings":null,"intuitObject":null,"fault":{"error":[{"message":'
    '"message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403","detail":null,'
    '"code":"3100","element":null}],"type":"SERVICE"}}'
)
AUTH_XML_NO_NS = ('<IntuitResponse><Fault type="AuthenticationFault"><Error code="100">'
                  '<Message>General Authentication Error</Message><Detail>token expired</Detail></Error>'
                  '</Fault></IntuitResponse>')


def fault_json(code: str, message: str = "m", detail: str = "d", element: str = "",
               kind: str = "ValidationFault") -> str:
    error = {"Message": message, "Detail": detail, "code": code, "element": element}
    return json.dumps({"Fault": {"Error": [error], "type": kind}, "time": "2024-01-01T00:00:00Z"})


CASES = [
    # (status, body, content type, class, code, retryable, record level, exit code)
    pytest.param(400, INVALID_REFERENCE, "application/json", InvalidReferenceError, "2500", False, True,
                 ExitCode.PARTIAL, id="12d-invalid-reference"),
    pytest.param(429, THROTTLE_XML, "application/xml", ThrottleError, "3001", True, False,
                 ExitCode.UNAVAILABLE, id="429-xml"),
    pytest.param(403, THROTTLE_XML.replace("statusCode=429", "statusCode=403"), "text/xml", ThrottleError,
                 "3001", True, False, ExitCode.UNAVAILABLE, id="old-403-throttle-xml"),
    pytest.param(200, THROTTLE_XML, "application/xml", ThrottleError, "3001", True, False,
                 ExitCode.UNAVAILABLE, id="throttle-fault-in-200"),
    pytest.param(401, GATEWAY_401, "application/json", QboAuthenticationError, "3200", False, False,
                 ExitCode.AUTH, id="gateway-401"),
    pytest.param(403, GATEWAY_403, "application/json", QboAuthorizationError, "3100", False, False,
                 ExitCode.AUTH, id="gateway-403"),
    pytest.param(401, AUTH_XML_NO_NS, "application/xml", QboAuthenticationError, "100", False, False,
                 ExitCode.AUTH, id="xml-auth-fault-no-namespace"),
    pytest.param(400, fault_json("5010", "Stale Object Error"), "application/json", StaleObjectError, "5010",
                 False, True, ExitCode.PARTIAL, id="stale"),
    pytest.param(400, fault_json("6140", "Duplicate Doc Num"), "application/json", DuplicateDocNumberError,
                 "6140", False, True, ExitCode.PARTIAL, id="duplicate-docnumber"),
    pytest.param(400, fault_json("6240"), "application/json", DuplicateNameError, "6240", False, True,
                 ExitCode.PARTIAL, id="duplicate-name"),
    pytest.param(400, fault_json("610"), "application/json", ObjectNotFoundError, "610", False, True,
                 ExitCode.PARTIAL, id="not-found"),
    pytest.param(400, fault_json("6070"), "application/json", AmountMismatchError, "6070", False, True,
                 ExitCode.PARTIAL, id="amount"),
    pytest.param(400, fault_json("6000", "A business validation error has occurred"), "application/json",
                 BusinessValidationError, "6000", False, True, ExitCode.PARTIAL, id="business-6000"),
    pytest.param(400, fault_json("2020", "Required param missing"), "application/json",
                 BusinessValidationError, "2020", False, True, ExitCode.PARTIAL, id="required-2020"),
    pytest.param(400, fault_json("6270"), "application/json", BusinessValidationError, "6270", False, True,
                 ExitCode.PARTIAL, id="inventory-date-6270"),
    pytest.param(400, fault_json("4000", "Error parsing query"), "application/json", QueryParseError, "4000",
                 False, False, ExitCode.BUG, id="query-parse"),
    pytest.param(500, fault_json("10000", kind="SystemFault"), "application/json", SystemFaultError, "10000",
                 True, False, ExitCode.UNAVAILABLE, id="system"),
    pytest.param(502, "<html><body>Bad Gateway</body></html>", "text/html", SystemFaultError, "502", True,
                 False, ExitCode.UNAVAILABLE, id="html-502"),
    pytest.param(503, "", "", SystemFaultError, "503", True, False, ExitCode.UNAVAILABLE, id="empty-503"),
    pytest.param(429, "", "", ThrottleError, "429", True, False, ExitCode.UNAVAILABLE, id="empty-429"),
    pytest.param(404, "<!DOCTYPE html><html>Not Found</html>", "text/html", QboFault, "404", False, False,
                 ExitCode.UNAVAILABLE, id="html-404"),
    pytest.param(400, '{"Fault": {"Error": [{"Message": "x", "code": "6240"}', "application/json", QboFault,
                 "400", False, False, ExitCode.UNAVAILABLE, id="truncated-json"),
    pytest.param(200, json.dumps({"QueryResponse": {"Fault": json.loads(fault_json("4001"))["Fault"]}}),
                 "application/json", QueryParseError, "4001", False, False, ExitCode.BUG,
                 id="fault-inside-query-response"),
]


@pytest.mark.parametrize(("status", "body", "ctype", "cls", "code", "retryable", "record_level", "exit_code"),
                         CASES)
def test_parse_fault(status: int, body: str, ctype: str, cls: type[QboFault], code: str, retryable: bool,
                     record_level: bool, exit_code: ExitCode) -> None:
    fault = parse_fault(status, body.encode(), ctype, tid="tid-1")
    assert type(fault) is cls
    assert fault is not None
    assert fault.code == code
    assert fault.retryable is retryable
    assert fault.record_level is record_level
    assert fault.exit_code == exit_code
    assert fault.status == status
    assert fault.tid == "tid-1"


def test_details_reach_the_message() -> None:
    fault = parse_fault(400, INVALID_REFERENCE, "application/json")
    assert fault is not None
    assert "Invalid Reference Id" in str(fault)
    assert "made inactive" in str(fault)
    assert fault.errors[0].element == ""
    xml = parse_fault(429, THROTTLE_XML, "application/xml")
    assert xml is not None
    assert "request limit was reached" in str(xml)


def test_types_are_catchable_by_what_the_caller_does() -> None:
    throttle = parse_fault(429, THROTTLE_XML, "application/xml")
    auth = parse_fault(401, GATEWAY_401, "application/json")
    assert isinstance(throttle, RetriableApiError)
    assert isinstance(auth, AuthError)


def test_every_error_entry_is_kept() -> None:
    body = json.dumps({"Fault": {"type": "ValidationFault", "Error": [
        {"Message": "Required param missing", "code": "2020", "element": "VendorRef"},
        {"Message": "Required param missing", "code": "2020", "element": "Line"}]}})
    fault = parse_fault(400, body, "application/json")
    assert fault is not None
    assert fault.codes == ["2020", "2020"]
    assert [e.element for e in fault.errors] == ["VendorRef", "Line"]


@pytest.mark.parametrize("body", ['{"Item": {"Id": "1"}}', "", '{"QueryResponse": {}}'])
def test_success_without_fault_is_none(body: str) -> None:
    assert parse_fault(200, body, "application/json") is None


def test_secrets_in_bodies_are_redacted() -> None:
    fault = parse_fault(500, "upstream said: Bearer eyJhbGciOiJIUzI1NiJ9.abcdefgh", "text/plain")
    assert fault is not None
    assert "eyJhbGciOiJIUzI1NiJ9" not in str(fault)


# docs/reference/qbo.md section 12 (e)
BATCH_RESPONSE = json.loads(r"""
{
  "BatchItemResponse": [
    {"Fault": {"type": "ValidationFault", "Error": [{"Message": "Duplicate Name Exists Error", "code": "6240",
      "Detail": "The name supplied already exists. : Another customer, vendor or employee is already using this \nname. Please use a different name.", "element": ""}]}, "bId": "bid1"},
    {"Fault": {"type": "ValidationFault", "Error": [{"Message": "Object Not Found", "code": "610",
      "Detail": "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees.", "element": ""}]}, "bId": "bid2"},
    {"Fault": {"type": "ValidationFault", "Error": [{"Message": "Stale Object Error", "code": "5010",
      "Detail": "Stale Object Error : You and root were working on this at the same time. root finished before you did, so your work was not saved.", "element": ""}]}, "bId": "bid3"},
    {"bId": "bid4", "QueryResponse": {"SalesReceipt": [{"DocNumber": "1003", "Id": "11"}],
      "startPosition": 1, "maxResults": 1}},
    {"bId": "bid5", "Vendor": {"Id": "77", "DisplayName": "Smith Family Store", "SyncToken": "0"}}
  ],
  "time": "2016-04-15T09:01:18.141-07:00"
}
""")  # quoted verbatim from docs/reference/qbo.md section 12 (e)


@pytest.mark.parametrize(("index", "cls", "code"), [
    pytest.param(0, DuplicateNameError, "6240", id="bid1"),
    pytest.param(1, ObjectNotFoundError, "610", id="bid2"),
    pytest.param(2, StaleObjectError, "5010", id="bid3"),
])
def test_batch_item_faults_are_parsed_one_by_one(index: int, cls: type[QboFault], code: str) -> None:
    result = parse_batch_item(BATCH_RESPONSE["BatchItemResponse"][index])  # type: ignore[index]
    assert type(result.fault) is cls
    assert result.fault is not None
    assert result.fault.code == code
    assert result.fault.record_level
    assert result.entity is None
    assert not result.ok


def test_batch_item_query_and_entity() -> None:
    rows = parse_batch_item(BATCH_RESPONSE["BatchItemResponse"][3], "SalesReceipt")  # type: ignore[index]
    assert rows.rows == [{"DocNumber": "1003", "Id": "11"}]
    assert rows.ok
    created = parse_batch_item(BATCH_RESPONSE["BatchItemResponse"][4])  # type: ignore[index]
    assert created.entity == {"Id": "77", "DisplayName": "Smith Family Store", "SyncToken": "0"}


@pytest.mark.parametrize(("item", "expected"), [
    pytest.param(BatchItem("b1", "create", "Vendor", {"DisplayName": "X"}),
                 {"bId": "b1", "operation": "create", "Vendor": {"DisplayName": "X"}}, id="create"),
    pytest.param(BatchItem("b4", "query", "", "select * from Item"),
                 {"bId": "b4", "Query": "select * from Item"}, id="query"),
])
def test_batch_item_request_json(item: BatchItem, expected: dict[str, object]) -> None:
    assert item.to_json() == expected


def test_batch_item_rejects_unknown_operations() -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        BatchItem("b1", "upsert", "Vendor", {}).to_json()
