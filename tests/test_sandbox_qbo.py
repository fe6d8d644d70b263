"""The QBO emulator over real HTTP: OAuth, gateway faults, entity rules, query, batch, replay, throttling."""

from __future__ import annotations

import base64
import copy
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from ionqbo.sandbox.httpd import Server
from ionqbo.sandbox.qbo import QboEmulator

REALM = "9341455130"
START = 1_750_000_000.0  # 2025-06-15

ACCOUNTS = [
    {"Id": "33", "Name": "Accounts Payable (A/P)", "AccountType": "Accounts Payable", "AccountSubType": "AccountsPayable"},
    {"Id": "79", "Name": "Sales of Product Income", "AccountType": "Income"},
    {"Id": "80", "Name": "Cost of Goods Sold", "AccountType": "Cost of Goods Sold"},
    {"Id": "81", "Name": "Inventory Asset", "AccountType": "Other Current Asset"},
    {"Id": "7", "Name": "Office Expenses", "AccountType": "Expense", "AcctNum": "6100"},
    {"Id": "90", "Name": "Checking", "AccountType": "Bank"},
    {"Id": "91", "Name": "Old Expenses", "AccountType": "Expense", "Active": False},
]
BASE_DATA: dict[str, Any] = {
    "Account": ACCOUNTS,
    "Vendor": [
        {"Id": "41", "DisplayName": "Hicks Hardware"},
        {"Id": "42", "DisplayName": "Gone Vendor", "Active": False},
        {"Id": "43", "DisplayName": "O'Brien \\ Sons"},
    ],
    "Customer": [{"Id": "3", "DisplayName": "Cool Cars"}, {"Id": "4", "DisplayName": "Smith Family Store"}],
    "Employee": [{"Id": "55", "DisplayName": "Emma Employee"}],
    "Class": [{"Id": "5000000000000007280", "Name": "Engineering"},
              {"Id": "5000000000000007281", "Name": "Old Class", "Active": False}],
    "Item": [
        {"Id": "38", "Name": "Garden Supplies", "Type": "Inventory", "TrackQtyOnHand": True, "QtyOnHand": 10,
         "InvStartDate": "2015-01-01", "IncomeAccountRef": {"value": "79"}, "AssetAccountRef": {"value": "81"},
         "ExpenseAccountRef": {"value": "80"}},
        {"Id": "39", "Name": "No Expense Account", "Type": "NonInventory"},
        {"Id": "40", "Name": "Retired Part", "Type": "NonInventory", "Active": False,
         "ExpenseAccountRef": {"value": "80"}},
    ],
}


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Env:
    emu: QboEmulator
    server: Server
    clock: Clock
    http: requests.Session
    token: str

    @property
    def base(self) -> str:
        return f"{self.server.url}/v3/company/{REALM}"

    def call(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.token}", "Accept": "application/json"}
        headers.update(kw.pop("headers", {}))
        return self.http.request(method, self.base + path, headers=headers, timeout=10, **kw)

    def post(self, entity: str, body: dict[str, Any], **params: str) -> requests.Response:
        return self.call("POST", f"/{entity}", json=body, params=params)

    def query(self, statement: str) -> requests.Response:
        return self.call("GET", "/query", params={"query": statement})

    def token_call(self, data: dict[str, str], auth: Any = "basic", **headers: str) -> requests.Response:
        auth_arg = (self.emu.client_id, self.emu.client_secret) if auth == "basic" else auth
        return self.http.post(f"{self.server.url}/oauth2/v1/tokens/bearer", data=data, auth=auth_arg,
                              headers=headers, timeout=10)

    def refresh(self, refresh_token: str, **headers: str) -> requests.Response:
        return self.token_call({"grant_type": "refresh_token", "refresh_token": refresh_token}, **headers)


class Switch:
    """One server for the module (stopping a server takes 0.5 s); each test plugs in a fresh emulator."""

    emu: QboEmulator | None = None

    def __call__(self, request: Any) -> Any:
        assert self.emu is not None
        return self.emu(request)


@pytest.fixture(scope="module")
def served() -> Any:
    switch = Switch()
    with Server(switch) as server:
        yield switch, server


@pytest.fixture
def env(served: tuple[Switch, Server]) -> Any:
    switch, server = served
    clock = Clock()
    emu = QboEmulator(clock=clock, seed=7, client_secret="s3cret-s3cret")
    emu.load(copy.deepcopy(BASE_DATA))
    switch.emu = emu
    with requests.Session() as http:
        env = Env(emu, server, clock, http, "")
        answer = env.refresh(emu.issue_refresh_token())
        assert answer.status_code == 200, answer.text
        env.token = answer.json()["access_token"]
        emu.reset_counters()
        yield env


def item_line(amount: Any = 25.0, qty: Any = 1, price: Any = 25, item: str = "38", **detail: Any) -> dict[str, Any]:
    return {"DetailType": "ItemBasedExpenseLineDetail", "Amount": amount,
            "ItemBasedExpenseLineDetail": {"ItemRef": {"value": item}, "Qty": qty, "UnitPrice": price, **detail}}


def category_line(amount: Any = 10, account: str = "7", **detail: Any) -> dict[str, Any]:
    return {"DetailType": "AccountBasedExpenseLineDetail", "Amount": amount,
            "AccountBasedExpenseLineDetail": {"AccountRef": {"value": account}, **detail}}


def po_body(**over: Any) -> dict[str, Any]:
    body = {"VendorRef": {"value": "41"}, "APAccountRef": {"value": "33"}, "DocNumber": "PO-1",
            "Line": [item_line()]}
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


def inventory_item(**over: Any) -> dict[str, Any]:
    body = {"Name": "Widget Rev A", "Type": "Inventory", "TrackQtyOnHand": True, "QtyOnHand": 0,
            "InvStartDate": "2025-06-01", "IncomeAccountRef": {"value": "79"},
            "AssetAccountRef": {"value": "81"}, "ExpenseAccountRef": {"value": "80"}}
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


def fault_of(response: requests.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"Fault", "time"}
    assert body["Fault"]["type"] == "ValidationFault"
    error = body["Fault"]["Error"][0]
    assert set(error) == {"Message", "Detail", "code", "element"}
    assert isinstance(error["code"], str)
    return error


def quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---- OAuth --------------------------------------------------------------------------------------


def consent(env: Env, **over: str) -> requests.Response:
    params = {"client_id": env.emu.client_id, "response_type": "code", "scope": "com.intuit.quickbooks.accounting",
              "redirect_uri": "http://127.0.0.1:8765/callback", "state": "st-123"}
    params.update(over)
    params = {k: v for k, v in params.items() if v != "-"}
    return env.http.get(f"{env.server.url}/connect/oauth2", params=params, allow_redirects=False, timeout=10)


def test_consent_redirects_with_code_state_and_realm(env: Env) -> None:
    answer = consent(env)
    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "http://127.0.0.1:8765/callback"
    query = parse_qs(location.query)
    assert query["state"] == ["st-123"] and query["realmId"] == [REALM] and query["code"][0]


@pytest.mark.parametrize("override", [
    pytest.param({"client_id": "someone-else"}, id="unknown-client"),
    pytest.param({"state": "-"}, id="no-state"),
    pytest.param({"scope": "openid"}, id="no-accounting-scope"),
    pytest.param({"response_type": "token"}, id="bad-response-type"),
])
def test_consent_refuses_bad_requests_without_redirect(env: Env, override: dict[str, str]) -> None:
    answer = consent(env, **override)
    assert answer.status_code == 400
    assert "Location" not in answer.headers
    assert "text/html" in answer.headers["Content-Type"]


def test_code_exchange_with_basic_auth_is_single_use(env: Env) -> None:
    code = parse_qs(urlsplit(consent(env).headers["Location"]).query)["code"][0]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:8765/callback"}
    answer = env.token_call(data)
    assert answer.status_code == 200
    body = answer.json()
    assert list(body) == ["token_type", "expires_in", "refresh_token", "x_refresh_token_expires_in", "access_token"]
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert body["x_refresh_token_expires_in"] == 100 * 86400
    assert env.call("GET", "/preferences", token=body["access_token"]).status_code == 200
    again = env.token_call(data)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_code_exchange_checks_redirect_uri_and_client(env: Env) -> None:
    code = parse_qs(urlsplit(consent(env).headers["Location"]).query)["code"][0]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:9999/other"}
    wrong_secret = env.token_call(data, auth=(env.emu.client_id, "nope"))
    assert wrong_secret.status_code == 401 and wrong_secret.json() == {"error": "invalid_client"}
    mismatch = env.token_call(data)
    assert mismatch.status_code == 400 and mismatch.json()["error"] == "invalid_grant"


def test_client_secret_post_is_accepted(env: Env) -> None:
    data = {"grant_type": "refresh_token", "refresh_token": env.emu.issue_refresh_token(),
            "client_id": env.emu.client_id, "client_secret": env.emu.client_secret}
    assert env.token_call(data, auth=None).status_code == 200


def test_refresh_tokens_rotate_and_the_old_one_dies_once_the_new_one_is_used(env: Env) -> None:
    r0 = env.emu.issue_refresh_token()
    r1 = env.refresh(r0).json()["refresh_token"]
    assert r1 != r0
    # a retry with r0 before r1 was ever used returns r1 again (a client that lost the answer)
    assert env.refresh(r0).json()["refresh_token"] == r1
    r2 = env.refresh(r1).json()["refresh_token"]
    assert r2 not in (r0, r1)
    dead = env.refresh(r0)
    assert dead.status_code == 400
    assert dead.json()["error"] == "invalid_grant" and dead.json()["error_description"]
    assert env.refresh("AB11-never-issued").json()["error"] == "invalid_grant"


def test_refresh_grace_keeps_the_old_token_for_a_while(env: Env) -> None:
    env.emu.configure(refresh_grace=60)
    r0 = env.emu.issue_refresh_token()
    r1 = env.refresh(r0).json()["refresh_token"]
    env.refresh(r1)
    env.clock.advance(30)
    assert env.refresh(r0).status_code == 200
    env.clock.advance(31)
    assert env.refresh(r0).status_code == 400


def test_hard_expiry_only_when_asked(env: Env) -> None:
    plain = env.refresh(env.emu.issue_refresh_token()).json()
    assert "x_refresh_token_hard_expires_in" not in plain
    asked = env.refresh(env.emu.issue_refresh_token(), **{"x-include-refresh-token-hard-expires-in": "true"})
    assert asked.json()["x_refresh_token_hard_expires_in"] == 5 * 365 * 86400


def test_revoke_kills_the_family(env: Env) -> None:
    r0 = env.emu.issue_refresh_token()
    access = env.refresh(r0).json()["access_token"]
    answer = env.http.post(f"{env.server.url}/v2/oauth2/tokens/revoke", json={"token": r0},
                           auth=(env.emu.client_id, env.emu.client_secret), timeout=10)
    assert answer.status_code == 200
    assert env.call("GET", "/preferences", token=access).status_code == 401


# ---- gateway: 401, 403, intuit_tid ------------------------------------------------------------


def test_expired_access_token_gets_the_gateway_401(env: Env) -> None:
    env.clock.advance(3601)
    answer = env.call("GET", "/preferences")
    assert answer.status_code == 401
    body = answer.json()
    assert body["fault"] == {"error": [{"message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                                        "detail": None, "code": "3200", "element": None}],
                             "type": "AUTHENTICATION"}
    assert body["time"] == int(env.clock.now * 1000)
    assert body["batchItemResponse"] == [] and body["cdcresponse"] == [] and body["intuitObject"] is None


@pytest.mark.parametrize("token", ["", "not-a-token"])
def test_missing_or_unknown_bearer_gets_401(env: Env, token: str) -> None:
    answer = env.http.get(f"{env.base}/preferences", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 401 and answer.json()["fault"]["error"][0]["code"] == "3200"


def test_expire_tokens_admin_and_unknown_realm(env: Env) -> None:
    other = env.http.get(f"{env.server.url}/v3/company/123/preferences",
                         headers={"Authorization": f"Bearer {env.token}"}, timeout=10)
    assert other.status_code == 403
    assert other.json()["fault"]["error"][0]["code"] == "3100" and other.json()["fault"]["type"] == "SERVICE"
    assert env.http.post(f"{env.server.url}/_admin/expire-tokens", timeout=10).status_code == 200
    assert env.call("GET", "/preferences").status_code == 401


def test_every_response_has_intuit_tid(env: Env) -> None:
    env.emu.configure(rate_limits=True)
    answers = [consent(env), env.refresh("bad"), env.call("GET", "/preferences"), env.call("GET", "/item/999"),
               env.call("GET", "/preferences", token="bad"), env.http.get(f"{env.server.url}/nowhere", timeout=10),
               env.http.get(f"{env.server.url}/_admin/counters", timeout=10)]
    answers += [env.call("GET", "/preferences") for _ in range(10)]
    assert answers[-1].status_code == 429
    tids = [a.headers.get("intuit_tid") for a in answers]
    assert all(tids) and len(set(tids)) == len(tids)


# ---- entity shapes, updates, delete ------------------------------------------------------------


def test_create_purchase_order_shape_and_read_only_fields(env: Env) -> None:
    body = po_body(TotalAmt=999, Id="77", MetaData={"CreateTime": "1999-01-01T00:00:00Z"},
                   Line=[item_line(), category_line(10.5)])
    answer = env.post("purchaseorder", body, minorversion="75")
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    assert set(payload) == {"PurchaseOrder", "time"}
    po = payload["PurchaseOrder"]
    assert po["Id"] == "1" and po["SyncToken"] == "0" and po["domain"] == "QBO" and po["sparse"] is False
    assert po["TotalAmt"] == 35.5
    assert po["MetaData"]["CreateTime"].endswith("-07:00") and po["MetaData"]["CreateTime"].startswith("2025-06")
    assert po["VendorRef"] == {"value": "41", "name": "Hicks Hardware"}
    assert po["CurrencyRef"]["value"] == "USD" and po["POStatus"] == "Open"
    assert [line["Id"] for line in po["Line"]] == ["1", "2"]
    assert po["Line"][0]["ItemBasedExpenseLineDetail"]["ItemRef"]["name"] == "Garden Supplies"
    assert env.call("GET", "/purchaseorder/1").json()["PurchaseOrder"] == po


def test_full_update_nulls_omitted_fields_and_drops_unsent_lines(env: Env) -> None:
    created = env.post("purchaseorder", po_body(Memo="hello", Line=[item_line(), category_line()])).json()
    po = created["PurchaseOrder"]
    kept = po["Line"][1]
    update = {"Id": po["Id"], "SyncToken": "0", "VendorRef": {"value": "41"}, "APAccountRef": {"value": "33"},
              "DocNumber": "PO-1", "Line": [dict(kept, Amount=12), {**item_line(50, 2, 25), "Id": "99"}]}
    answer = env.post("purchaseorder", update)
    assert answer.status_code == 200, answer.text
    new = answer.json()["PurchaseOrder"]
    assert new["SyncToken"] == "1" and "Memo" not in new
    assert [line["Id"] for line in new["Line"]] == ["2", "3"]  # "99" did not exist -> a new line
    assert new["TotalAmt"] == 62.0
    assert new["MetaData"]["CreateTime"] == po["MetaData"]["CreateTime"]


def test_sparse_update_changes_only_supplied_fields(env: Env) -> None:
    po = env.post("purchaseorder", po_body(Memo="keep me", Line=[item_line(), category_line()])).json()["PurchaseOrder"]
    answer = env.post("purchaseorder", {"Id": po["Id"], "SyncToken": "0", "sparse": True, "POStatus": "Closed"})
    new = answer.json()["PurchaseOrder"]
    assert new["POStatus"] == "Closed" and new["Memo"] == "keep me" and len(new["Line"]) == 2
    lines = env.post("purchaseorder", {"Id": po["Id"], "SyncToken": "1", "sparse": True,
                                       "Line": [category_line(7)]}).json()["PurchaseOrder"]
    assert len(lines["Line"]) == 1 and lines["TotalAmt"] == 7.0 and lines["Memo"] == "keep me"


def test_delete_purchase_order(env: Env) -> None:
    po = env.post("purchaseorder", po_body()).json()["PurchaseOrder"]
    answer = env.call("POST", "/purchaseorder", params={"operation": "delete"},
                      json={"Id": po["Id"], "SyncToken": "0"})
    assert answer.status_code == 200
    gone = answer.json()["PurchaseOrder"]
    assert gone["status"] == "Deleted" and gone["Id"] == po["Id"] and gone["domain"] == "QBO"
    assert fault_of(env.call("GET", f"/purchaseorder/{po['Id']}"))["code"] == "610"
    assert env.emu.dump()["deleted"]["PurchaseOrder"][0]["Id"] == po["Id"]
    vendor_delete = env.call("POST", "/vendor", params={"operation": "delete"}, json={"Id": "41", "SyncToken": "0"})
    assert vendor_delete.status_code == 400


def test_item_create_matches_the_reference_sample(env: Env) -> None:
    request = {"TrackQtyOnHand": True, "Name": "Garden Supplies 2", "QtyOnHand": 10,
               "IncomeAccountRef": {"name": "Sales of Product Income", "value": "79"},
               "AssetAccountRef": {"name": "Inventory Asset", "value": "81"}, "InvStartDate": "2015-01-01",
               "Type": "Inventory", "ExpenseAccountRef": {"name": "Cost of Goods Sold", "value": "80"}}
    item = env.post("item", request).json()["Item"]
    expected_keys = {"FullyQualifiedName", "domain", "Id", "Name", "TrackQtyOnHand", "UnitPrice", "PurchaseCost",
                     "QtyOnHand", "IncomeAccountRef", "AssetAccountRef", "Taxable", "sparse", "Active", "SyncToken",
                     "InvStartDate", "Type", "ExpenseAccountRef", "MetaData"}
    assert expected_keys <= set(item)
    assert item["FullyQualifiedName"] == "Garden Supplies 2" and item["Active"] is True and item["UnitPrice"] == 0


def test_item_update_rules(env: Env) -> None:
    item = env.post("item", inventory_item()).json()["Item"]
    to_service = env.post("item", {**item, "Type": "Service"})
    assert to_service.status_code == 400 and fault_of(to_service)["code"] == "6000"
    untrack = env.post("item", {**item, "TrackQtyOnHand": False})
    assert fault_of(untrack)["code"] == "6000"
    renamed = env.post("item", {**item, "Name": "Widget Rev B", "InvStartDate": "2030-01-01"})
    assert renamed.status_code == 200
    assert renamed.json()["Item"]["InvStartDate"] == "2025-06-01"  # reads keep the original start date
    stale = env.post("item", {**item, "Name": "Widget Rev C"})  # SyncToken "0" is now stale
    assert fault_of(stale)["code"] == "5010"


def test_vendor_currency_is_read_only_after_creation(env: Env) -> None:
    vendor = env.post("vendor", {"DisplayName": "New Vendor"}).json()["Vendor"]
    assert vendor["CurrencyRef"]["value"] == "USD"
    updated = env.post("vendor", {**vendor, "CurrencyRef": {"value": "EUR"}}).json()["Vendor"]
    assert updated["CurrencyRef"]["value"] == "USD"


# ---- the rules table ---------------------------------------------------------------------------

MULTI = {"CurrencyPrefs": {"MultiCurrencyEnabled": True}}
EUR = {"CompanyCurrency": [{"Id": "2", "Code": "EUR", "Name": "Euro"}]}
RULES = [
    # (entity, body, query params, load data, status, code, words in Detail)
    ("purchaseorder", po_body(VendorRef={"value": "999"}), {}, {}, "2500", "VendorRef"),
    ("purchaseorder", po_body(VendorRef={"value": "42"}), {}, {}, "2500", "made inactive"),
    ("purchaseorder", po_body(Line=[item_line(item="999")]), {}, {}, "2500", "ItemRef"),
    ("purchaseorder", po_body(Line=[item_line(item="40")]), {}, {}, "2500", "made inactive"),
    ("purchaseorder", po_body(Line=[category_line(account="999")]), {}, {}, "2500", "AccountRef"),
    ("purchaseorder", po_body(Line=[category_line(account="91")]), {}, {}, "2500", "made inactive"),
    ("purchaseorder", po_body(APAccountRef={"value": "999"}), {}, {}, "2500", "APAccountRef"),
    ("purchaseorder", po_body(Line=[category_line(ClassRef={"value": "1"})]), {}, {}, "2500", "ClassRef"),
    ("purchaseorder", po_body(Line=[category_line(ClassRef={"value": "5000000000000007281"})]), {}, {}, "2500",
     "made inactive"),
    ("purchaseorder", po_body(VendorRef=None), {}, {}, "2020", "VendorRef"),
    ("purchaseorder", po_body(Line=None), {}, {}, "2020", "Line"),
    ("purchaseorder", po_body(Line=[]), {}, {}, "2020", "Line"),
    ("purchaseorder", po_body(APAccountRef=None), {}, {}, "2020", "APAccountRef"),
    ("purchaseorder", po_body(Line=[{"DetailType": "ItemBasedExpenseLineDetail",
                                     "ItemBasedExpenseLineDetail": {"ItemRef": {"value": "38"}}}]), {}, {}, "2020",
     "Amount"),
    ("purchaseorder", po_body(APAccountRef={"value": "90"}), {}, {}, "6000", "Accounts Payable"),
    ("purchaseorder", po_body(DocNumber="X" * 22), {}, {}, "6000",
     "You cannot enter more than 21 characters in the doc_num field"),
    ("purchaseorder", po_body(), {}, {"Preferences": {"OtherPrefs": {"NameValue": [
        {"Name": "VendorAndPurchasesPrefs.PurchaseOrderEnabled", "Value": "false"}]}}}, "6000", "turned off"),
    ("purchaseorder", po_body(Line=[item_line(item="39")]), {}, {}, "6000",
     "You must select an account for this transaction."),
    ("purchaseorder", po_body(Line=[category_line(account="90")]), {}, {}, "6000", "expense account"),
    ("purchaseorder", po_body(Line=[category_line(ClassRef={"value": "5000000000000007280"})]), {},
     {"Preferences": {"AccountingInfoPrefs": {"ClassTrackingPerTxnLine": False}}}, "6000", "ClassTrackingPerTxnLine"),
    ("purchaseorder", po_body(), {}, {"Preferences": MULTI}, "2020", "CurrencyRef"),
    ("purchaseorder", po_body(CurrencyRef={"value": "GBP"}), {}, {"Preferences": MULTI, **EUR}, "2500",
     "CurrencyRef"),
    ("purchaseorder", po_body(CurrencyRef={"value": "EUR"}), {}, {"Preferences": MULTI, **EUR}, "6000",
     "vendor's currency"),
    ("purchaseorder", po_body(CurrencyRef={"value": "EUR"}), {}, {}, "6000", "Multicurrency"),
    ("purchaseorder", po_body(Line=[item_line(amount=26, qty=1, price=25)]), {}, {}, "6070", "Qty * UnitPrice"),
    ("purchaseorder", po_body(Line=[item_line(amount=10.01, qty=3, price=3.3333)]), {}, {}, "6070", "expected:10.00"),
    ("purchaseorder", po_body(Line=[category_line(amount=1234567890123456)]), {}, {}, "6000", "15 digits"),
    ("purchaseorder", po_body(ShipAddr={"Line1": "x" * 501}), {}, {}, "2050", "Max:500"),
    ("purchaseorder", po_body(ShipAddr={"City": "x" * 256}), {}, {}, "2050", "Max:255"),
    ("purchaseorder", po_body(ShipAddr={"PostalCode": "1" * 31}), {}, {}, "2050", "Max:30"),
    ("purchaseorder", po_body(Bogus=1), {}, {}, "2010", "Bogus"),
    ("item", inventory_item(Name="N" * 101), {}, {}, "2050", "Max:100"),
    ("item", inventory_item(Name="Parent:Child"), {}, {}, "6000", "colons"),
    ("item", inventory_item(Name="Tab\there"), {}, {}, "6000", "tabs"),
    ("item", inventory_item(Name="New\nline"), {}, {}, "6000", "new lines"),
    ("item", inventory_item(Name="garden SUPPLIES"), {}, {}, "6240", "already"),
    ("item", inventory_item(Name="Retired Part"), {}, {}, "6240", "already"),
    ("item", inventory_item(AssetAccountRef=None), {}, {}, "2020", "AssetAccountRef"),
    ("item", inventory_item(IncomeAccountRef=None), {}, {}, "2020", "IncomeAccountRef"),
    ("item", inventory_item(ExpenseAccountRef=None), {}, {}, "2020", "ExpenseAccountRef"),
    ("item", inventory_item(QtyOnHand=None), {}, {}, "2020", "QtyOnHand"),
    ("item", inventory_item(InvStartDate=None), {}, {}, "2020", "InvStartDate"),
    ("item", inventory_item(TrackQtyOnHand=None), {}, {}, "2020", "TrackQtyOnHand"),
    ("item", inventory_item(TrackQtyOnHand=False), {}, {}, "6000", "TrackQtyOnHand"),
    ("item", inventory_item(Name=None), {}, {}, "2020", "Name"),
    ("item", inventory_item(ExpenseAccountRef={"value": "91"}), {}, {}, "2500", "made inactive"),
    ("item", inventory_item(), {}, {"Preferences": {"ProductAndServicesPrefs": {"QuantityOnHand": False}}}, "6000",
     "Inventory"),
    ("vendor", {"DisplayName": "cool cars"}, {}, {}, "6240", "customer, vendor or employee"),
    ("vendor", {"DisplayName": "EMMA employee"}, {}, {}, "6240", "customer, vendor or employee"),
    ("vendor", {"DisplayName": "hicks hardware"}, {}, {}, "6240", "already"),
    ("vendor", {"Vendor1099": False}, {}, {}, "2020", "DisplayName"),
    ("customer", {"DisplayName": "Hicks Hardware"}, {}, {}, "6240", "already"),
]


@pytest.mark.parametrize(("entity", "body", "params", "data", "code", "words"), RULES,
                         ids=[f"{i}-{r[0]}-{r[4]}" for i, r in enumerate(RULES)])
def test_rule_violations_get_qbo_faults(env: Env, entity: str, body: dict[str, Any], params: dict[str, str],
                                        data: dict[str, Any], code: str, words: str) -> None:
    env.emu.load(copy.deepcopy(data))
    answer = env.post(entity, copy.deepcopy(body), **params)
    assert answer.status_code == 400, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    error = fault_of(answer)
    assert error["code"] == code
    assert words in error["Detail"], error
    assert error["Message"]
    assert not env.emu.dump()["PurchaseOrder"]


def test_valid_variants_of_the_rules_pass(env: Env) -> None:
    env.emu.load({"Preferences": MULTI, **EUR, "Vendor": [{"Id": "60", "DisplayName": "Euro GmbH",
                                                           "CurrencyRef": {"value": "EUR"}}]})
    ok = env.post("purchaseorder", po_body(VendorRef={"value": "60"}, CurrencyRef={"value": "EUR"},
                                           Line=[item_line(10, 3, 3.3333), category_line(
                                               ClassRef={"value": "5000000000000007280"})]))
    assert ok.status_code == 200, ok.text
    assert ok.json()["PurchaseOrder"]["CurrencyRef"] == {"value": "EUR", "name": "Euro"}


def test_duplicate_doc_number_and_allowduplicatedocnum(env: Env) -> None:
    assert env.post("purchaseorder", po_body(DocNumber="1042")).status_code == 200
    duplicate = env.post("purchaseorder", po_body(DocNumber="1042"))
    assert fault_of(duplicate)["code"] == "6140"
    allowed = env.post("purchaseorder", po_body(DocNumber="1042"), include="allowduplicatedocnum")
    assert allowed.status_code == 200


def test_duplicate_refusals_are_counted_and_lenient_docnumbers_are_accepted(env: Env) -> None:
    assert env.post("purchaseorder", po_body(DocNumber="1042")).status_code == 200
    assert fault_of(env.post("purchaseorder", po_body(DocNumber="1042")))["code"] == "6140"
    assert fault_of(env.post("purchaseorder", po_body(DocNumber="1042"), requestid="r1"))["code"] == "6140"
    env.post("purchaseorder", po_body(DocNumber="1042"), requestid="r1")  # a replay is not a new refusal
    env.post("purchaseorder", po_body(DocNumber="PO-" + "9" * 30))  # refused, but not as a duplicate
    batch = {"BatchItemRequest": [{"bId": "b1", "operation": "create", "Item": inventory_item(Name="garden supplies")},
                                  {"bId": "b2", "operation": "create", "PurchaseOrder": po_body(DocNumber="1042")}]}
    answers = env.call("POST", "/batch", json=batch).json()["BatchItemResponse"]
    assert [a["Fault"]["Error"][0]["code"] for a in answers] == ["6240", "6140"]
    counters = env.emu.counters
    assert (counters["refused_6140"], counters["refused_6240"], counters["duplicates_refused"]) == (3, 1, 4)

    # the lenient reading, switched on over the admin interface: a second DocNumber is accepted...
    settings = env.http.post(f"{env.server.url}/_admin/settings", json={"allow_duplicate_docnumbers": True},
                             timeout=10).json()
    assert settings["allow_duplicate_docnumbers"] is True
    again = env.post("purchaseorder", po_body(DocNumber="1042"))
    assert again.status_code == 200, again.text
    assert [p["DocNumber"] for p in env.emu.dump()["PurchaseOrder"]] == ["1042", "1042"]
    # ...and a full update keeping it; names stay unique (documented), and their refusals are still counted
    updated = env.post("purchaseorder", po_body(DocNumber="1042", Id=again.json()["PurchaseOrder"]["Id"],
                                                 SyncToken="0"))
    assert updated.status_code == 200, updated.text
    assert fault_of(env.post("item", inventory_item(Name="Garden Supplies")))["code"] == "6240"
    assert env.emu.counters["duplicates_refused"] == 5
    env.emu.configure(allow_duplicate_docnumbers=False)
    assert fault_of(env.post("purchaseorder", po_body(DocNumber="1042")))["code"] == "6140"


def test_stale_sync_token_and_unknown_ids(env: Env) -> None:
    po = env.post("purchaseorder", po_body()).json()["PurchaseOrder"]
    assert env.post("purchaseorder", {**po, "Memo": "one"}).status_code == 200
    stale = env.post("purchaseorder", {**po, "Memo": "two"})
    assert fault_of(stale)["code"] == "5010"
    assert fault_of(env.post("purchaseorder", {**po, "Id": "999"}))["code"] == "610"
    assert fault_of(env.call("GET", "/item/999"))["code"] == "610"


def test_doc_number_is_generated_when_custom_numbers_are_off(env: Env) -> None:
    env.emu.load({"Preferences": {"OtherPrefs": {"NameValue": [
        {"Name": "VendorAndPurchasesPrefs.UseCustomTxnNumbers", "Value": "false"}]}}})
    first = env.post("purchaseorder", po_body(DocNumber=None)).json()["PurchaseOrder"]
    second = env.post("purchaseorder", po_body(DocNumber=None)).json()["PurchaseOrder"]
    assert (first["DocNumber"], second["DocNumber"]) == ("1001", "1002")


# ---- query -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["O'Brien \\ Sons", "o'brien \\ SONS"])
def test_query_escaping_with_quote_and_backslash(env: Env, name: str) -> None:
    answer = env.query(f"select * from Vendor where DisplayName = {quote(name)}")
    assert answer.status_code == 200, answer.text
    assert [v["Id"] for v in answer.json()["QueryResponse"]["Vendor"]] == ["43"]


def test_query_paging_order_and_count(env: Env) -> None:
    env.emu.load({"Class": [{"Name": f"Class {n:02d}"} for n in range(1, 13)]})
    page = env.query("SELECT * FROM Class WHERE Name LIKE 'class%' ORDERBY Name DESC STARTPOSITION 3 MAXRESULTS 4")
    body = page.json()["QueryResponse"]
    assert [c["Name"] for c in body["Class"]] == ["Class 10", "Class 09", "Class 08", "Class 07"]
    assert body["startPosition"] == 3 and body["maxResults"] == 4
    count = env.query("select count(*) from Class").json()
    assert count["QueryResponse"] == {"totalCount": 13}  # 12 + Engineering; the inactive one is hidden
    everything = env.query("select count(*) from Class where Active IN (true, false)").json()
    assert everything["QueryResponse"]["totalCount"] == 14


def test_query_default_max_results_is_100(env: Env) -> None:
    env.emu.load({"Class": [{"Name": f"C{n:03d}"} for n in range(150)]})
    assert len(env.query("select * from Class").json()["QueryResponse"]["Class"]) == 100
    assert len(env.query("select * from Class maxresults 1000").json()["QueryResponse"]["Class"]) == 151


def test_query_operators_and_nested_names(env: Env) -> None:
    env.post("purchaseorder", po_body(DocNumber="A-1"))
    env.clock.advance(120)
    env.post("purchaseorder", po_body(DocNumber="A-2"))
    cut = time.strftime("%Y-%m-%dT%H:%M:%S-00:00", time.gmtime(START + 60))
    later = env.query(f"select * from PurchaseOrder where MetaData.LastUpdatedTime > '{cut}'").json()
    assert [p["DocNumber"] for p in later["QueryResponse"]["PurchaseOrder"]] == ["A-2"]
    both = env.query("Select * From purchaseorder Where DocNumber IN ('a-1', 'A-2') OrderBy DocNumber").json()
    assert [p["DocNumber"] for p in both["QueryResponse"]["PurchaseOrder"]] == ["A-1", "A-2"]
    inactive = env.query("select * from Item where Active = false").json()["QueryResponse"]["Item"]
    assert [i["Id"] for i in inactive] == ["40"]
    cogs = env.query("select * from Account where AccountType = 'Cost of Goods Sold'").json()
    assert [a["Id"] for a in cogs["QueryResponse"]["Account"]] == ["80"]
    prefs = env.query("select * from Preferences").json()["QueryResponse"]["Preferences"]
    assert prefs[0]["CurrencyPrefs"]["HomeCurrency"]["value"] == "USD"


def test_query_empty_result_and_post_form(env: Env) -> None:
    empty = env.query("select * from Vendor where DisplayName = 'Nobody'")
    assert set(empty.json()) == {"QueryResponse", "time"} and empty.json()["QueryResponse"] == {}
    posted = env.call("POST", "/query", data="select * from Vendor where Id = '41'",
                      headers={"Content-Type": "application/text"})
    assert posted.json()["QueryResponse"]["Vendor"][0]["DisplayName"] == "Hicks Hardware"


@pytest.mark.parametrize("statement", [
    "select * from Vendor where DisplayName = 'O'Brien'",
    "select * from Vendor where DisplayName = 'a' OR DisplayName = 'b'",
    "select * from Invoicez",
    "select * from Vendor where Colour = 'red'",
    "select Id from Vendor",
    "select * from Vendor where DisplayName = 'unterminated",
    "",
])
def test_query_parse_errors(env: Env, statement: str) -> None:
    answer = env.query(statement)
    assert answer.status_code == 400
    error = fault_of(answer)
    assert error["code"] == "4000" and error["Message"] == "Error parsing query"
    assert "QueryParserError" in error["Detail"]


# ---- batch, requestid ----------------------------------------------------------------------------


def test_batch_with_failing_items(env: Env) -> None:
    stale_item = env.post("item", inventory_item()).json()["Item"]
    env.post("item", {**stale_item, "Name": "Widget Rev Z"})
    items = [
        {"bId": "bid1", "operation": "create", "Vendor": {"DisplayName": "Smith Family Store"}},
        {"bId": "bid2", "operation": "delete", "PurchaseOrder": {"SyncToken": "0", "Id": "129"}},
        {"bId": "bid3", "operation": "update", "Item": {**stale_item, "sparse": True}},
        {"bId": "bid4", "Query": "select * from Vendor where DisplayName = 'Hicks Hardware'"},
        {"bId": "bid5", "operation": "create", "PurchaseOrder": po_body()},
    ]
    answer = env.call("POST", "/batch", json={"BatchItemRequest": items})
    assert answer.status_code == 200
    results = {r["bId"]: r for r in answer.json()["BatchItemResponse"]}
    assert results["bid1"]["Fault"]["Error"][0]["code"] == "6240"
    assert results["bid1"]["Fault"]["type"] == "ValidationFault"
    assert results["bid2"]["Fault"]["Error"][0]["code"] == "610"
    assert results["bid3"]["Fault"]["Error"][0]["code"] == "5010"
    assert results["bid4"]["QueryResponse"]["Vendor"][0]["Id"] == "41"
    assert results["bid5"]["PurchaseOrder"]["SyncToken"] == "0"
    counters = env.emu.counters
    assert counters["batch"] == 1 and counters["batch_items"] == 5 and counters["writes"] == 2 + 4


def test_batch_over_30_items_is_refused(env: Env) -> None:
    items = [{"bId": str(n), "Query": "select * from Vendor"} for n in range(31)]
    answer = env.call("POST", "/batch", json={"BatchItemRequest": items})
    assert answer.status_code == 400 and fault_of(answer)["code"] == "1040"


def test_requestid_replays_the_original_answer(env: Env) -> None:
    first = env.post("purchaseorder", po_body(), requestid="rid-1")
    env.clock.advance(5)
    again = env.post("purchaseorder", po_body(), requestid="rid-1")
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert len(env.emu.dump()["PurchaseOrder"]) == 1
    assert env.emu.counters["writes"] == 1 and env.emu.counters["replayed"] == 1
    fresh = env.post("purchaseorder", po_body(), requestid="rid-2")
    assert fault_of(fresh)["code"] == "6140"  # a new id is a new request
    batch = {"BatchItemRequest": [{"bId": "b1", "operation": "create", "Class": {"Name": "Batch Class"}}]}
    one = env.call("POST", "/batch", json=batch, params={"requestid": "rid-3"})
    two = env.call("POST", "/batch", json=batch, params={"requestid": "rid-3"})
    assert one.content == two.content and "Class" in one.json()["BatchItemResponse"][0]


# ---- CDC, preferences, companyinfo -------------------------------------------------------------


def test_cdc_lists_changes_and_deletions(env: Env) -> None:
    env.clock.advance(5)  # past the load
    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(START + 1))
    none = env.call("GET", "/cdc", params={"entities": "PurchaseOrder", "changedSince": since}).json()
    assert none["CDCResponse"] == [{"QueryResponse": [{}]}]
    po = env.post("purchaseorder", po_body()).json()["PurchaseOrder"]
    env.call("POST", "/purchaseorder", params={"operation": "delete"}, json={"Id": po["Id"], "SyncToken": "0"})
    env.post("vendor", {"DisplayName": "Fresh Vendor"})
    answer = env.call("GET", "/cdc", params={"entities": "purchaseorder,Vendor", "changedSince": since}).json()
    lists = answer["CDCResponse"][0]["QueryResponse"]
    assert lists[0]["PurchaseOrder"][0]["status"] == "Deleted" and lists[0]["PurchaseOrder"][0]["Id"] == po["Id"]
    assert lists[1]["Vendor"][0]["DisplayName"] == "Fresh Vendor"
    old = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(START - 31 * 86400))
    assert env.call("GET", "/cdc", params={"entities": "Vendor", "changedSince": old}).status_code == 400


def test_preferences_and_company_info(env: Env) -> None:
    prefs = env.call("GET", "/preferences").json()["Preferences"]
    other = {p["Name"]: p["Value"] for p in prefs["OtherPrefs"]["NameValue"]}
    assert other["VendorAndPurchasesPrefs.PurchaseOrderEnabled"] == "true"
    assert other["VendorAndPurchasesPrefs.UseCustomTxnNumbers"] == "true"
    assert prefs["ProductAndServicesPrefs"]["QuantityOnHand"] is True
    assert prefs["AccountingInfoPrefs"]["ClassTrackingPerTxnLine"] is True
    assert prefs["CurrencyPrefs"] == {"MultiCurrencyEnabled": False, "HomeCurrency": {"value": "USD"}}
    info = env.call("GET", f"/companyinfo/{REALM}").json()["CompanyInfo"]
    assert info["CompanyName"] and info["Id"] == "1"
    assert env.call("GET", "/companycurrency/1").status_code == 400  # multicurrency off


# ---- throttling and faults ---------------------------------------------------------------------

THROTTLE_XML = "<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"


def assert_throttled(answer: requests.Response) -> None:
    assert answer.status_code == 429
    assert answer.headers["Content-Type"].startswith("application/xml")
    assert "Retry-After" not in answer.headers
    assert '<Fault type="SERVICE"><Error code="3001">' in answer.text and THROTTLE_XML in answer.text


def test_ten_per_second(env: Env) -> None:
    env.emu.configure(rate_limits=True)
    assert all(env.call("GET", "/preferences").status_code == 200 for _ in range(10))
    assert_throttled(env.call("GET", "/preferences"))
    env.clock.advance(1.01)
    assert env.call("GET", "/preferences").status_code == 200
    assert env.emu.counters["throttled"] == 1


def test_five_hundred_per_minute(env: Env) -> None:
    env.emu.configure(rate_limits=True)
    for _ in range(500):
        env.clock.advance(0.11)
        assert env.call("GET", "/preferences").status_code == 200
    assert_throttled(env.call("GET", "/preferences"))
    env.clock.advance(6)
    assert env.call("GET", "/preferences").status_code == 200


def test_forty_batches_per_minute(env: Env) -> None:
    env.emu.configure(rate_limits=True)
    batch = {"BatchItemRequest": [{"bId": "1", "Query": "select * from Vendor"}]}
    for _ in range(40):
        env.clock.advance(0.2)
        assert env.call("POST", "/batch", json=batch).status_code == 200
    assert_throttled(env.call("POST", "/batch", json=batch))
    assert env.call("GET", "/preferences").status_code == 200  # plain requests still pass


def test_injected_faults(env: Env) -> None:
    env.http.post(f"{env.server.url}/_admin/faults", json={"fail_next": [429, 503, 500, 502, 504, 0]}, timeout=10)
    assert_throttled(env.call("GET", "/preferences"))
    for status in (503, 500):
        answer = env.call("GET", "/preferences")
        assert answer.status_code == status
        assert answer.json()["Fault"]["type"] == "SystemFault" and answer.json()["Fault"]["Error"][0]["code"] == "10000"
    for status in (502, 504):
        answer = env.call("GET", "/preferences")
        assert answer.status_code == status and answer.headers["Content-Type"].startswith("text/html")
    with pytest.raises(requests.ConnectionError):
        env.call("GET", "/preferences")
    assert env.call("GET", "/preferences").status_code == 200
    assert env.http.post(f"{env.server.url}/_admin/faults/clear", timeout=10).status_code == 200


def test_slow_answers_still_happen(env: Env) -> None:
    env.emu.faults.configure(slow_rate=1, slow_seconds=0.1)
    began = time.monotonic()
    answer = env.post("vendor", {"DisplayName": "Slow Vendor"})
    assert time.monotonic() - began >= 0.1
    assert answer.status_code == 200 and env.emu.dump()["Vendor"][-1]["DisplayName"] == "Slow Vendor"


def test_latency_knob(env: Env) -> None:
    env.http.post(f"{env.server.url}/_admin/settings", json={"latency": 0.15}, timeout=10)
    began = time.monotonic()
    env.call("GET", "/preferences")
    assert time.monotonic() - began >= 0.15
    env.emu.configure(latency=0)


# ---- counters and admin ------------------------------------------------------------------------


def test_counters_count_each_kind(env: Env) -> None:
    env.post("purchaseorder", po_body())
    env.post("purchaseorder", po_body(DocNumber="X" * 30))  # fails validation: still a create and a write
    env.call("GET", "/purchaseorder/1")
    env.query("select * from Vendor")
    env.call("GET", "/preferences")
    env.call("GET", f"/companyinfo/{REALM}")
    env.refresh(env.emu.issue_refresh_token())
    env.call("GET", "/preferences", token="bad")
    counters = env.http.get(f"{env.server.url}/_admin/counters", timeout=10).json()
    assert counters == {"total": 8, "token": 1, "read": 1, "query": 1, "create": 2, "update": 0, "delete": 0,
                        "batch": 0, "batch_items": 0, "cdc": 0, "preferences": 1, "companyinfo": 1, "writes": 2,
                        "throttled": 0, "replayed": 0, "refused_6140": 0, "refused_6240": 0,
                        "duplicates_refused": 0}
    env.http.post(f"{env.server.url}/_admin/counters/reset", timeout=10)
    assert env.emu.counters["total"] == 0


def test_http_admin_load_dump_reset_and_refresh_token(env: Env) -> None:
    url = env.server.url
    stored = env.http.post(f"{url}/_admin/load", json={"Vendor": [{"DisplayName": "Loaded"}],
                                                       "Preferences": {"CurrencyPrefs": {"HomeCurrency": {"value": "CAD"}}}},
                           timeout=10).json()["stored"]
    assert stored == {"Vendor": ["44"]}
    dump = env.http.get(f"{url}/_admin/dump", timeout=10).json()
    assert {v["DisplayName"] for v in dump["Vendor"]} >= {"Loaded", "Gone Vendor"}
    assert dump["Preferences"]["CurrencyPrefs"]["HomeCurrency"]["value"] == "CAD"
    token = env.http.post(f"{url}/_admin/refresh-token", timeout=10).json()["refresh_token"]
    assert env.refresh(token).status_code == 200
    assert env.http.post(f"{url}/_admin/settings", json={"nope": 1}, timeout=10).status_code == 400
    env.http.post(f"{url}/_admin/reset", timeout=10)
    assert env.emu.dump()["Vendor"] == []
    assert env.call("GET", "/preferences").status_code == 200  # tokens survive a reset


# ---- reference samples (docs/reference/qbo.md section 12) -----------------------------------------------


def test_sample_purchase_order_read(env: Env) -> None:
    sample = {
        "DocNumber": "1005", "SyncToken": "0", "POEmail": {"Address": "send_email@intuit.com"},
        "APAccountRef": {"name": "Accounts Payable (A/P)", "value": "33"},
        "CurrencyRef": {"name": "United States Dollar", "value": "USD"}, "TxnDate": "2015-07-28", "TotalAmt": 25.0,
        "ShipAddr": {"Line4": "Half Moon Bay, CA  94213", "Line3": "65 Ocean Dr.", "Id": "121",
                     "Line1": "Grace Pariente", "Line2": "Cool Cars"},
        "domain": "QBO", "Id": "257", "POStatus": "Open", "sparse": False, "EmailStatus": "NotSet",
        "VendorRef": {"name": "Hicks Hardware", "value": "41"},
        "Line": [{"DetailType": "ItemBasedExpenseLineDetail", "Amount": 25.0, "ProjectRef": {"value": "39298034"},
                  "Id": "1", "ItemBasedExpenseLineDetail": {
                      "ItemRef": {"name": "Garden Supplies", "value": "38"},
                      "CustomerRef": {"name": "Cool Cars", "value": "3"}, "Qty": 1,
                      "TaxCodeRef": {"value": "NON"}, "BillableStatus": "NotBillable", "UnitPrice": 25}}],
        "MetaData": {"CreateTime": "2015-07-28T16:01:47-07:00", "LastUpdatedTime": "2015-07-28T16:01:47-07:00"},
    }
    env.emu.load({"PurchaseOrder": [copy.deepcopy(sample)]})
    read = env.call("GET", "/purchaseorder/257").json()
    assert set(read) == {"PurchaseOrder", "time"}
    assert {k: v for k, v in read["PurchaseOrder"].items() if k != "Line"} == {
        k: v for k, v in sample.items() if k != "Line"}
    assert read["PurchaseOrder"]["Line"][0]["ItemBasedExpenseLineDetail"] == sample["Line"][0][
        "ItemBasedExpenseLineDetail"]
    by_query = env.query("select * from PurchaseOrder where Id = '257'").json()["QueryResponse"]
    assert by_query["startPosition"] == 1 and by_query["maxResults"] == 1 and by_query["totalCount"] == 1
    assert by_query["PurchaseOrder"][0]["DocNumber"] == "1005"


def test_sample_fault_for_inactive_reference(env: Env) -> None:
    error = fault_of(env.post("purchaseorder", po_body(VendorRef={"value": "42"})))
    assert error["Message"] == "Invalid Reference Id"
    assert error["Detail"] == ("Invalid Reference Id : Something you're trying to use has been made inactive. "
                               "Check the fields with accounts, customers, items, vendors or employees.")


def test_token_secret_is_checked_without_leaking_it(env: Env) -> None:
    header = base64.b64encode(f"{env.emu.client_id}:wrong".encode()).decode()
    answer = env.http.post(f"{env.server.url}/oauth2/v1/tokens/bearer",
                           data={"grant_type": "refresh_token", "refresh_token": "x"},
                           headers={"Authorization": f"Basic {header}"}, timeout=10)
    assert answer.status_code == 401 and "s3cret" not in answer.text
